use super::table::{Cell, ORDERS};
use super::*;
use crate::testing::TestDb;

const DAY: i64 = 86_400_000;
/// 2027-01-15T08:00:00Z.
const NOW: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY + 8 * 3_600_000;

async fn exec(db: &Db, sql: &str) {
    sqlx::query(sql).execute(db.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(db: &Db, sql: &str) -> i64 {
    let row = sqlx::query(sql).fetch_one(db.pool()).await.expect(sql);
    get(&row, "n").expect("n")
}

async fn ids(db: &Db, sql: &str) -> Vec<String> {
    let rows = sqlx::query(sql).fetch_all(db.pool()).await.expect(sql);
    rows.iter().map(|r| get::<String>(r, "id").expect("id")).collect()
}

async fn order(db: &Db, tenant: &str, id: &str, status: &str, updated_at: i64) {
    exec(
        db,
        &format!(
            "INSERT INTO orders (id, tenant_id, store_id, platform, platform_order_id, status, customer_json, \
             dropoff_json, dropoff_lat, items_json, totals_json, ready_at, created_at, updated_at, tracking_token) \
             VALUES ('{id}', '{tenant}', 's-{tenant}', 'native', '{id}', '{status}', '{{}}', '{{}}', 60.17, \
             '[{{\"sku\":\"A1\",\"name\":\"Soup\",\"quantity\":2,\"unit_price_minor\":450}},\
             {{\"sku\":null,\"name\":\"Bread\",\"quantity\":1,\"unit_price_minor\":120}}]', \
             '{{}}', 0, {created}, {updated_at}, 'tok-{id}')",
            created = updated_at - 3_600_000
        ),
    )
    .await;
}

async fn event(db: &Db, tenant: &str, subject: &str, n: usize, published: bool) {
    for _ in 0..n {
        let published = if published { "1" } else { "NULL" };
        exec(
            db,
            &format!(
                "INSERT INTO outbox (id, tenant_id, kind, subject_id, data, occurred_at, published_at) \
                 VALUES ('ev-{}', '{tenant}', 'order_updated', '{subject}', \
                 '{{\"step\":\"x\"}}', {NOW}, {published})",
                uuid::Uuid::new_v4().simple()
            ),
        )
        .await;
    }
}

/// Two tenants; finished orders before the cutoff (some held back by an unpublished event
/// or an unfinished sync job), an unfinished one, and a finished one after the cutoff.
async fn seed(db: &Db) {
    for t in ["t1", "t2"] {
        exec(db, &format!("INSERT INTO tenants (id, name, created_at) VALUES ('{t}', 'T', 0)")).await;
        exec(
            db,
            &format!(
                "INSERT INTO stores (id, tenant_id, name, platform, platform_store_id, webhook_secret_enc, pickup_lat, \
                 pickup_lng, pickup_address, tier, created_at, updated_at) \
                 VALUES ('s-{t}', '{t}', 'S', 'native', 's-{t}', 'x', 60.1, 24.9, 'a', 'standard', 0, 0)"
            ),
        )
        .await;
    }
    exec(
        db,
        "INSERT INTO drivers (id, tenant_id, name, phone, vehicle, capacity, token_hash, created_at, updated_at) \
         VALUES ('d1', 't1', 'D', '+358', 'bike', 2, 'h', 0, 0)",
    )
    .await;
    let old = NOW - 40 * DAY;
    order(db, "t1", "o-del", "delivered", old).await;
    order(db, "t1", "o-fail", "failed", old + 1).await;
    order(db, "t1", "o-can", "cancelled", old - DAY).await;
    order(db, "t1", "o-live", "dispatching", old).await;
    order(db, "t1", "o-new", "delivered", NOW - DAY).await;
    order(db, "t1", "o-sync", "delivered", old).await;
    order(db, "t1", "o-unpub", "delivered", old).await;
    order(db, "t2", "o-t2", "delivered", old).await;
    event(db, "t1", "o-del", 3, true).await;
    event(db, "t1", "o-fail", 1, true).await;
    event(db, "t1", "o-live", 2, true).await;
    event(db, "t1", "o-unpub", 1, false).await;
    event(db, "t1", "d1", 2, true).await;
    event(db, "t2", "o-t2", 1, true).await;
    sqlx::query(
        "INSERT INTO delivery_photos (id, tenant_id, order_id, driver_id, content_type, bytes, created_at) \
         VALUES ('pho_1', 't1', 'o-del', 'd1', 'image/jpeg', $1, 5)",
    )
    .bind(vec![0xffu8, 0xd8, 0, 1, 2])
    .execute(db.pool())
    .await
    .expect("photo");
    exec(
        db,
        "INSERT INTO offers (id, tenant_id, order_id, driver_id, state, expires_at, created_at, decided_at) \
         VALUES ('f1', 't1', 'o-del', 'd1', 'accepted', 0, 0, 1), ('f2', 't1', 'o-live', 'd1', 'declined', 0, 0, 1)",
    )
    .await;
    exec(
        db,
        "INSERT INTO assignments (order_id, tenant_id, driver_id, active, created_at, released_at) \
         VALUES ('o-del', 't1', 'd1', 0, 0, 1)",
    )
    .await;
    for (id, order, state) in [("j1", "o-del", "done"), ("j2", "o-sync", "pending")] {
        exec(
            db,
            &format!(
                "INSERT INTO sync_jobs (id, tenant_id, store_id, platform, order_id, platform_order_id, action, \
                 idempotency_key, state, next_attempt_at, created_at, updated_at) \
                 VALUES ('{id}', 't1', 's-t1', 'shopify', '{order}', '{order}', 'fulfill', 'k-{id}', '{state}', 0, 0, 0)"
            ),
        )
        .await;
    }
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut v = parquet_files(dir).expect("list");
    v.sort();
    v
}

#[tokio::test]
async fn finished_orders_move_to_verified_parquet_and_leave_the_live_tables() {
    for t in TestDb::all().await {
        let db = &t.db;
        let backend = t.backend();
        seed(db).await;
        let out = tempfile::tempdir().expect("dir");
        let dir = out.path();
        let report = db.archive_finished(dir, NOW - 30 * DAY).await.expect("archive");
        assert_eq!((report.orders, report.deleted), (4, 4), "{backend}: {report:?}");
        assert!(report.left_live.is_empty(), "{backend}");
        let run = report.run.clone().expect("a run");

        // Three partitions (t1 on two days, t2 on one), four files each.
        let files = files_under(dir);
        assert_eq!(files.len(), 12, "{backend}: {files:?}");
        let day = from_ms(NOW - 40 * DAY).format("%Y-%m-%d").to_string();
        for table in ["orders", "items", "events", "proof"] {
            let p = format!("tenant=t1/day={day}/{table}-{run}.parquet");
            assert!(files.contains(&p), "{backend}: {p} in {files:?}");
        }
        let manifest = &read_manifests(dir).expect("manifests")[0];
        assert_eq!(manifest.state, RunState::Complete, "{backend}");
        let rows_of = |table: &str, tenant: &str, day: &str| {
            manifest.files.iter().find(|f| f.table == table && f.tenant_id == tenant && f.day == day).map(|f| f.rows)
        };
        assert_eq!(rows_of("orders", "t1", &day), Some(2), "{backend}: o-del and o-fail");
        assert_eq!(rows_of("items", "t1", &day), Some(4), "{backend}");
        assert_eq!(rows_of("events", "t1", &day), Some(4), "{backend}");
        assert_eq!(rows_of("proof", "t1", &day), Some(1), "{backend}");
        assert_eq!(rows_of("orders", "t2", &day), Some(1), "{backend}");

        // The orders file holds the rows as they were, photo bytes in the proof file.
        let read =
            |rel: String, table: Table| table.read_parquet(fs::read(dir.join(rel)).expect("read")).expect("decode");
        let orders = read(format!("tenant=t1/day={day}/orders-{run}.parquet"), ORDERS);
        assert_eq!(orders[0][ORDERS.index("id")], Cell::Text("o-del".into()), "{backend}");
        assert_eq!(orders[0][ORDERS.index("dropoff_lat")], Cell::Float(60.17), "{backend}");
        assert_eq!(orders[0][ORDERS.index("dropoff_lng")], Cell::Null, "{backend}");
        let proof = read(format!("tenant=t1/day={day}/proof-{run}.parquet"), PROOF);
        assert_eq!(proof[0][PROOF.index("bytes")], Cell::Bytes(vec![0xff, 0xd8, 0, 1, 2]), "{backend}");

        let v = verify_archive(dir).expect("verify");
        assert!(v.problems.is_empty(), "{backend}: {:?}", v.problems);
        assert_eq!((v.runs, v.files), (1, 12), "{backend}");

        // Finished rows are gone with what hangs off them; the rest stays.
        assert_eq!(
            ids(db, "SELECT id FROM orders ORDER BY id").await,
            ["o-live", "o-new", "o-sync", "o-unpub"],
            "{backend}"
        );
        assert_eq!(
            count(db, "SELECT COUNT(*) AS n FROM outbox WHERE subject_id IN ('o-del', 'o-fail', 'o-t2')").await,
            0
        );
        assert_eq!(count(db, "SELECT COUNT(*) AS n FROM outbox").await, 5, "{backend}: o-live, o-unpub, d1 stay");
        assert_eq!(ids(db, "SELECT id FROM offers").await, ["f2"], "{backend}");
        assert_eq!(count(db, "SELECT COUNT(*) AS n FROM assignments").await, 0, "{backend}");
        assert_eq!(count(db, "SELECT COUNT(*) AS n FROM delivery_photos").await, 0, "{backend}");
        assert_eq!(ids(db, "SELECT id FROM sync_jobs").await, ["j2"], "{backend}");

        // Again: nothing more to export, no second copy.
        let again = db.archive_finished(dir, NOW - 30 * DAY).await.expect("archive again");
        assert_eq!((again.run.as_deref(), again.orders), (None, 0), "{backend}");
        assert_eq!(files_under(dir).len(), 12, "{backend}");

        // The held-back order goes once its event is published, in a run of its own.
        exec(db, "UPDATE outbox SET published_at = 2 WHERE subject_id = 'o-unpub'").await;
        let later = db.archive_finished(dir, NOW - 30 * DAY).await.expect("archive later");
        assert_eq!((later.orders, later.deleted), (1, 1), "{backend}");
        assert_eq!(files_under(dir).len(), 16, "{backend}");
        assert!(verify_archive(dir).expect("verify").problems.is_empty(), "{backend}");

        // Tampering with a file, or dropping one in unlisted, fails verification.
        let victim = dir.join(format!("tenant=t1/day={day}/events-{run}.parquet"));
        let mut bytes = fs::read(&victim).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        fs::write(&victim, bytes).expect("tamper");
        fs::write(dir.join(format!("tenant=t2/day={day}/extra.parquet")), b"PAR1").expect("stray");
        let v = verify_archive(dir).expect("verify");
        assert!(
            v.problems.iter().any(|p| p.contains("events-") && p.contains("SHA-256")),
            "{backend}: {:?}",
            v.problems
        );
        assert!(v.problems.iter().any(|p| p.contains("extra.parquet")), "{backend}: {:?}", v.problems);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn a_run_interrupted_while_writing_is_discarded_and_one_after_export_is_finished() {
    for t in TestDb::all().await {
        let db = &t.db;
        let backend = t.backend();
        seed(db).await;
        let out = tempfile::tempdir().expect("dir");
        let dir = out.path();
        let cutoff = NOW - 30 * DAY;

        // Interrupted while writing: a half-written file and its manifest.
        let m = Manifest {
            format: 1,
            run: "20270101T000000Z-dead".into(),
            state: RunState::Writing,
            cutoff_ms: cutoff,
            started_at: String::new(),
            files: Vec::new(),
            orders: 0,
            deleted: 0,
            left_live: Vec::new(),
        };
        fs::create_dir_all(dir.join("manifests")).expect("dir");
        write_manifest(dir, &m).expect("manifest");
        write_synced(&dir.join("tenant=t1/day=2026-12-01/orders-20270101T000000Z-dead.parquet"), b"PAR1")
            .expect("file");
        assert!(!verify_archive(dir).expect("verify").problems.is_empty(), "{backend}: an unfinished run is reported");

        // Interrupted after the export (files verified, nothing deleted yet): o-fail; and
        // o-del, which changed after its export and must stay live.
        let day = from_ms(NOW - 40 * DAY + 1).format("%Y-%m-%d").to_string();
        for (run, id) in [("20270101T000001Z-half", "o-fail"), ("20270101T000002Z-stale", "o-del")] {
            let one = BTreeMap::from([(("t1".to_owned(), day.clone()), vec![id.to_owned()])]);
            db.export_run(dir, run, cutoff, &one).await.expect("export");
        }
        event(db, "t1", "o-del", 1, true).await;
        exec(db, "UPDATE orders SET updated_at = updated_at + 1 WHERE id = 'o-del'").await;

        let report = db.archive_finished(dir, cutoff).await.expect("archive");
        assert_eq!(report.discarded_runs, ["20270101T000000Z-dead"], "{backend}");
        assert_eq!(report.resumed_runs, ["20270101T000001Z-half", "20270101T000002Z-stale"], "{backend}");
        assert!(!dir.join("tenant=t1/day=2026-12-01/orders-20270101T000000Z-dead.parquet").exists(), "{backend}");
        let manifests = read_manifests(dir).expect("manifests");
        let run = |id: &str| manifests.iter().find(|m| m.run == id).expect("a manifest").clone();
        assert_eq!(run("20270101T000001Z-half").deleted, 1, "{backend}: o-fail deleted by the resumed run");
        assert_eq!(run("20270101T000002Z-stale").left_live, ["o-del"], "{backend}: changed after its export");
        // The new run exports o-del (as it is now), o-can and o-t2, not o-fail again.
        assert_eq!(report.orders, 3, "{backend}: {report:?}");
        let exported_fail = manifests
            .iter()
            .flat_map(|m| m.files.iter().filter(|f| f.table == "orders").map(move |f| (m.run.clone(), f)))
            .filter(|(_, f)| {
                let rows = ORDERS.read_parquet(fs::read(dir.join(&f.path)).unwrap()).unwrap();
                rows.iter().any(|r| r[ORDERS.index("id")] == Cell::Text("o-fail".into()))
            })
            .count();
        assert_eq!(exported_fail, 1, "{backend}: o-fail is in one file only");
        assert_eq!(count(db, "SELECT COUNT(*) AS n FROM orders WHERE id IN ('o-del', 'o-fail')").await, 0);
        assert!(verify_archive(dir).expect("verify").problems.is_empty(), "{backend}");
        t.cleanup().await;
    }
}

//! The batched write path, on both databases: duplicates resolved inside a batch, a failing
//! job isolated, and — on PostgreSQL, where several writers and nodes commit at once — the
//! "another writer got there first" branches and the outbox horizon.

use crate::intake::{intake_batch_in, intake_one_in, IntakeItem};
use crate::testing::TestDb;
use crate::*;
use lastmile_core::*;
use std::time::Duration;
use tokio::sync::oneshot;

pub(crate) fn normalized(id: &str, version: i64) -> NormalizedOrder {
    NormalizedOrder {
        platform: Platform::Shopify,
        platform_order_id: id.into(),
        platform_order_number: Some(format!("#v{version}")),
        state: PlatformState::Open,
        customer: Customer { name: "Ada".into(), email: None, phone: None },
        dropoff: Dropoff {
            address: Address { line1: "Mannerheimintie 1".into(), city: "Helsinki".into(), ..Default::default() },
            lat: Some(60.17),
            lng: Some(24.94),
        },
        items: vec![LineItem { sku: None, name: "Soup".into(), quantity: 1, unit_price_minor: 900 }],
        totals: Totals {
            subtotal_minor: 900,
            shipping_minor: 0,
            tax_minor: 0,
            total_minor: 900,
            currency: "EUR".into(),
        },
        notes: None,
        placed_at: None,
        platform_updated_at: Some(from_ms(version)),
    }
}

pub(crate) fn item(src: &IntakeSource, id: &str, version: i64) -> IntakeItem {
    let body = format!("{{\"id\":\"{id}\",\"v\":{version}}}").into_bytes();
    IntakeItem { src: src.clone(), n: normalized(id, version), raw: RawDelivery { headers_json: "{}".into(), body } }
}

pub(crate) async fn seed(db: &Db) -> IntakeSource {
    let u = OrderId::generate().0;
    let tenant = db.create_tenant("acme", &format!("key_{u}"), &u).await.unwrap();
    let now = now_ms();
    let store = db
        .create_store(StoreRecord {
            id: StoreId::generate(),
            tenant_id: tenant.id.clone(),
            name: "Acme".into(),
            platform: Platform::Shopify,
            platform_store_id: format!("{u}.myshopify.com"),
            webhook_secret_enc: vec![1],
            api_base_url: None,
            api_credentials_enc: None,
            pickup_lat: 60.17,
            pickup_lng: 24.94,
            pickup_address: "Store street 1".into(),
            tier: "standard".into(),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    IntakeSource { tenant_id: tenant.id, store_id: store.id, platform: Platform::Shopify }
}

async fn count(db: &Db, sql: &str, tenant: &TenantId) -> i64 {
    let row = sqlx::query(sql).bind(tenant.as_str()).fetch_one(db.pool()).await.unwrap();
    get(&row, "n").unwrap()
}

async fn stored_version(db: &Db, src: &IntakeSource, id: &str) -> i64 {
    let o = db.find_platform_order(&src.tenant_id, src.platform, &src.store_id, id).await.unwrap();
    to_ms(o.platform_updated_at.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resolves_duplicates_inside_itself() {
    for t in TestDb::all().await {
        let db = &t.db;
        let src = seed(db).await;
        let items = [
            item(&src, "A", 10),
            item(&src, "B", 10),
            item(&src, "A", 10),
            item(&src, "A", 30),
            item(&src, "A", 20),
            item(&src, "C", 10),
            item(&src, "B", 10),
        ];
        let outcomes = db
            .write(move |c| {
                Box::pin(async move {
                    let refs: Vec<&IntakeItem> = items.iter().collect();
                    intake_batch_in(c, &refs).await
                })
            })
            .await
            .unwrap();
        let results: Vec<IntakeResult> = outcomes.iter().map(|o| o.result).collect();
        use IntakeResult::*;
        assert_eq!(results, vec![Created, Created, Duplicate, Updated, Stale, Created, Duplicate], "{}", t.backend());
        assert_eq!(outcomes[0].order_id, outcomes[3].order_id);
        assert_eq!(stored_version(db, &src, "A").await, 30);
        let tenant = &src.tenant_id;
        assert_eq!(count(db, "SELECT COUNT(*) AS n FROM orders WHERE tenant_id = $1", tenant).await, 3);
        assert_eq!(count(db, "SELECT COUNT(*) AS n FROM raw_payloads WHERE tenant_id = $1", tenant).await, 7);
        assert_eq!(count(db, "SELECT COUNT(*) AS n FROM raw_payload_bodies WHERE tenant_id = $1", tenant).await, 5);
        let created = "SELECT COUNT(*) AS n FROM outbox WHERE tenant_id = $1 AND kind = 'order_created'";
        assert_eq!(count(db, created, tenant).await, 3);
        let updated = "SELECT COUNT(*) AS n FROM outbox WHERE tenant_id = $1 AND kind = 'order_updated'";
        assert_eq!(count(db, updated, tenant).await, 1);
        // Every created order's archive row says so and points where the order does.
        let o = db.find_platform_order(tenant, src.platform, &src.store_id, "C").await.unwrap();
        assert!(!db.raw_payload_body(tenant, o.raw_payload_id.as_ref().unwrap()).await.unwrap().is_empty());
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_delivery_fails_alone_and_the_rest_commit() {
    for t in TestDb::all().await {
        let db = &t.db;
        let src = seed(db).await;
        // An unknown store breaks the orders table's foreign key: the batch statement fails,
        // and the writer retries job by job.
        let bad = IntakeSource { store_id: StoreId::generate(), ..src.clone() };
        let mut calls = Vec::new();
        for i in 0..40 {
            let it = if i % 10 == 7 { item(&bad, &format!("bad{i}"), 1) } else { item(&src, &format!("o{i}"), 1) };
            calls.push(db.intake_platform_order(it.src, it.n, it.raw));
        }
        let results = futures::future::join_all(calls).await;
        for (i, r) in results.iter().enumerate() {
            if i % 10 == 7 {
                assert!(r.is_err(), "{}: delivery {i} must fail", t.backend());
            } else {
                assert_eq!(r.as_ref().unwrap().result, IntakeResult::Created, "{}: delivery {i}", t.backend());
            }
        }
        let tenant = &src.tenant_id;
        assert_eq!(count(db, "SELECT COUNT(*) AS n FROM orders WHERE tenant_id = $1", tenant).await, 36);
        assert_eq!(count(db, "SELECT COUNT(*) AS n FROM raw_payloads WHERE tenant_id = $1", tenant).await, 36);
        let created = "SELECT COUNT(*) AS n FROM outbox WHERE tenant_id = $1 AND kind = 'order_created'";
        assert_eq!(count(db, created, tenant).await, 36);
        t.cleanup().await;
    }
}

/// Run `it` on `db` in a write job that stays open (its transaction uncommitted) until the
/// returned sender fires; returns once the job's statements ran.
async fn held_intake(
    db: &Db,
    it: IntakeItem,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Result<crate::IntakeOutcome>>) {
    let (ran_tx, ran_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let db = db.clone();
    let task = tokio::spawn(async move {
        db.write(move |c| {
            Box::pin(async move {
                let out = intake_one_in(c, &it).await?;
                let _ = ran_tx.send(());
                let _ = go_rx.await;
                Ok(out)
            })
        })
        .await
    });
    ran_rx.await.expect("held job ran");
    (go_tx, task)
}

/// Wait until some session of this database waits for a lock (the other node's write).
async fn until_blocked(db: &Db) {
    for _ in 0..1000 {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        if get::<i64>(&row, "n").unwrap() > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the second writer never waited for the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_never_write_an_older_version_over_a_newer() {
    let Some(t) = TestDb::postgres().await else { return };
    let node_a = t.db.clone();
    let node_b = Db::connect(&t.url, DbOptions::default()).await.unwrap();
    let src = seed(&node_a).await;

    // A inserts v3 and has not committed; B, with v2, finds nothing and inserts too: its
    // INSERT waits for A's, then does nothing, and B judges v2 against A's v3.
    let (go, a) = held_intake(&node_a, item(&src, "X", 3)).await;
    let b = tokio::spawn({
        let (b, it) = (node_b.clone(), item(&src, "X", 2));
        async move { b.intake_platform_order(it.src, it.n, it.raw).await }
    });
    until_blocked(&node_a).await;
    go.send(()).unwrap();
    assert_eq!(a.await.unwrap().unwrap().result, IntakeResult::Created);
    assert_eq!(b.await.unwrap().unwrap().result, IntakeResult::Stale, "B came second with an older version");
    assert_eq!(stored_version(&node_a, &src, "X").await, 3);

    // The same race with a newer version on B: B applies it over A's row.
    let (go, a) = held_intake(&node_a, item(&src, "Y", 3)).await;
    let b = tokio::spawn({
        let (b, it) = (node_b.clone(), item(&src, "Y", 4));
        async move { b.intake_platform_order(it.src, it.n, it.raw).await }
    });
    until_blocked(&node_a).await;
    go.send(()).unwrap();
    assert_eq!(a.await.unwrap().unwrap().result, IntakeResult::Created);
    assert_eq!(b.await.unwrap().unwrap().result, IntakeResult::Updated);
    assert_eq!(stored_version(&node_a, &src, "Y").await, 4);

    // Both update a stored v1: A writes v3 and holds its row lock; B read v1, decided that
    // v2 is newer, and its UPDATE waits. Once A commits, B's UPDATE finds v3 and changes
    // nothing (the freshness check is in its WHERE): v2 never lands on v3.
    node_a.intake_platform_order(src.clone(), normalized("Z", 1), item(&src, "Z", 1).raw).await.unwrap();
    let (go, a) = held_intake(&node_a, item(&src, "Z", 3)).await;
    let b = tokio::spawn({
        let (b, it) = (node_b.clone(), item(&src, "Z", 2));
        async move { b.intake_platform_order(it.src, it.n, it.raw).await }
    });
    until_blocked(&node_a).await;
    go.send(()).unwrap();
    assert_eq!(a.await.unwrap().unwrap().result, IntakeResult::Updated);
    assert_eq!(b.await.unwrap().unwrap().result, IntakeResult::Stale);
    assert_eq!(stored_version(&node_a, &src, "Z").await, 3);
    let o = node_a.find_platform_order(&src.tenant_id, src.platform, &src.store_id, "Z").await.unwrap();
    assert_eq!(o.platform_order_number.as_deref(), Some("#v3"));

    let tenant = &src.tenant_id;
    assert_eq!(count(&node_a, "SELECT COUNT(*) AS n FROM orders WHERE tenant_id = $1", tenant).await, 3);
    let created = "SELECT COUNT(*) AS n FROM outbox WHERE tenant_id = $1 AND kind = 'order_created'";
    assert_eq!(count(&node_a, created, tenant).await, 3, "one order_created per order");
    node_b.close().await;
    t.cleanup().await;
}

/// Write one event in a job that stays open until the returned sender fires.
async fn held_event(db: &Db, tenant: &TenantId) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
    let (ran_tx, ran_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (db, t) = (db.clone(), tenant.clone());
    // A transaction of its own connection, outside the writers: every writer batch takes
    // the batch lock, so a batch held open would stop the other writers; the horizon must
    // hold back for any open transaction, the writers' or another client's.
    let task = tokio::spawn(async move {
        let mut conn = db.pool.acquire().await?;
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        insert_event(&mut conn, &t, EventKind::OrderUpdated, "held", serde_json::json!({})).await?;
        let _ = ran_tx.send(());
        let _ = go_rx.await;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        Ok(())
    });
    ran_rx.await.expect("held job ran");
    (go_tx, task)
}

async fn write_event(db: &Db, tenant: &TenantId, subject: &str) {
    let (t, s) = (tenant.clone(), subject.to_owned());
    db.write(move |c| {
        Box::pin(async move { insert_event(c, &t, EventKind::OrderUpdated, &s, serde_json::json!({})).await })
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_never_publishes_past_a_transaction_in_flight() {
    let Some(t) = TestDb::postgres().await else { return };
    // Wait as long as it takes for older transactions (the default gives up after 2 s).
    let db = &Db::connect(&t.url, DbOptions { outbox_horizon_wait_ms: 600_000, ..DbOptions::default() }).await.unwrap();
    let tenant = TenantId::generate();
    // An earlier-sequenced event whose transaction is still open…
    let (go, held) = held_event(db, &tenant).await;
    // …and a later one, committed (another writer connection).
    write_event(db, &tenant, "later").await;
    let visible = db.unpublished_events(100).await.unwrap();
    assert!(
        visible.is_empty(),
        "published past an open transaction: {:?}",
        visible.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    go.send(()).unwrap();
    held.await.unwrap().unwrap();
    // Other write transactions of the cluster (other tests) may hold the horizon a moment.
    let mut events = Vec::new();
    for _ in 0..3000 {
        events = db.unpublished_events(100).await.unwrap();
        if events.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let subjects: Vec<&str> = events.iter().map(|e| e.subject_id.as_str()).collect();
    assert_eq!(subjects, vec!["held", "later"], "in seq order once the first committed");
    db.mark_published(events.iter().map(|e| e.seq).collect()).await.unwrap();
    assert!(db.unpublished_events(100).await.unwrap().is_empty());
    db.close().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_event_and_keep_each_subjects_order() {
    for t in TestDb::all().await {
        let db = t.db.clone();
        let tenant = TenantId::generate();
        const TOTAL: usize = 8 * 40;
        // The relay: publish what is publishable, mark exactly that, again and again, until
        // every event went out. (Publication waits for every older write transaction of the
        // PostgreSQL cluster, other tests' included, so it may lag the writers.)
        let relay = tokio::spawn({
            let db = db.clone();
            async move {
                let mut published: Vec<Event> = Vec::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while published.len() < TOTAL && tokio::time::Instant::now() < deadline {
                    let batch = db.next_publishable_events(37).await.unwrap();
                    if batch.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    db.mark_published(batch.iter().map(|e| e.seq).collect()).await.unwrap();
                    published.extend(batch);
                }
                published
            }
        });
        // Writers: each subject's events in its own order; subjects interleave freely.
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (db, tenant) = (db.clone(), tenant.clone());
                tokio::spawn(async move {
                    for i in 0..40 {
                        let (t, s) = (tenant.clone(), format!("w{w}"));
                        db.write(move |c| {
                            Box::pin(async move {
                                insert_event(c, &t, EventKind::OrderUpdated, &s, serde_json::json!({ "i": i })).await
                            })
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let published = relay.await.unwrap();
        assert_eq!(published.len(), TOTAL, "{}: every event exactly once", t.backend());
        assert!(db.unpublished_events(100).await.unwrap().is_empty(), "{}: nothing left behind", t.backend());
        let mut seqs: Vec<i64> = published.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), TOTAL, "{}: no event twice", t.backend());
        for w in 0..8 {
            let order: Vec<i64> = published
                .iter()
                .filter(|e| e.subject_id == format!("w{w}"))
                .map(|e| e.data["i"].as_i64().unwrap())
                .collect();
            assert_eq!(order, (0..40).collect::<Vec<_>>(), "{}: subject w{w} out of order", t.backend());
        }
        t.cleanup().await;
    }
}

/// A job that panics fails alone: its writes roll back, the writer keeps running, and the
/// jobs after it (and beside it in the same batch) commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_write_job_fails_alone_and_the_writer_carries_on() {
    for t in TestDb::all().await {
        let db = t.db.clone();
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ('t-ok', 'kept', 0)")
            .execute(db.pool())
            .await
            .expect("seed");
        let insert = |id: &'static str, panic: bool| {
            let db = db.clone();
            async move {
                db.write(move |c| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, 'x', 0)")
                            .bind(id)
                            .execute(&mut *c)
                            .await?;
                        assert!(!panic, "this job panics after its insert");
                        Ok(())
                    })
                })
                .await
            }
        };
        // Alone, then in one batch beside healthy jobs.
        let alone = insert("t-panic-1", true).await;
        assert!(matches!(alone, Err(StorageError::JobPanicked(ref m)) if m.contains("panics after")), "{alone:?}");
        let (a, b, c) = tokio::join!(insert("t-a", false), insert("t-panic-2", true), insert("t-c", false));
        assert!(a.is_ok() && c.is_ok(), "{}: {a:?} {c:?}", t.backend());
        assert!(matches!(b, Err(StorageError::JobPanicked(_))), "{b:?}");
        insert("t-after", false).await.expect("the writer still runs");
        let rows = sqlx::query("SELECT id FROM tenants WHERE id LIKE 't-%' ORDER BY id").fetch_all(db.pool()).await;
        let ids: Vec<String> = rows.expect("read").iter().map(|r| get(r, "id").expect("id")).collect();
        assert_eq!(ids, ["t-a", "t-after", "t-c", "t-ok"], "{}: the panicked jobs left nothing", t.backend());
        t.cleanup().await;
    }
}

/// Many intake batches at once on one PostgreSQL, from two nodes with several writers
/// each, over overlapping keys (new ones created by several batches at once, stored ones
/// updated in every order): no caller sees an error, every order exists once with its
/// newest version, and every delivery is archived once with exactly the events its
/// outcome implies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_intake_batches_on_postgres_lose_nothing_double_nothing_and_fail_nobody() {
    let Some(t) = TestDb::postgres().await else { return };
    let node_a = t.db.clone();
    let node_b = Db::connect(&t.url, DbOptions { max_batch: 16, ..DbOptions::default() }).await.unwrap();
    let src = seed(&node_a).await;
    const KEYS: usize = 24;
    const DELIVERIES: usize = 600;
    for k in 0..KEYS / 2 {
        let it = item(&src, &format!("K{k:02}"), 1);
        node_a.intake_platform_order(it.src, it.n, it.raw).await.unwrap();
    }
    let tasks: Vec<_> = (0..DELIVERIES)
        .map(|i| {
            let db = if i % 2 == 0 { node_a.clone() } else { node_b.clone() };
            // Keys in a scrambled order, so batches hold overlapping keys in different orders.
            let k = (i * 7) % KEYS;
            let version = 2 + i as i64;
            let it = item(&src, &format!("K{k:02}"), version);
            tokio::spawn(async move { (k, version, db.intake_platform_order(it.src, it.n, it.raw).await) })
        })
        .collect();
    let mut created = [0usize; KEYS];
    let mut newest = [1i64; KEYS];
    let mut updated = 0i64;
    for task in tasks {
        let (k, version, outcome) = task.await.unwrap();
        let outcome = outcome.unwrap_or_else(|e| panic!("delivery of K{k:02} v{version} failed: {e}"));
        newest[k] = newest[k].max(version);
        match outcome.result {
            IntakeResult::Created => created[k] += 1,
            IntakeResult::Updated => updated += 1,
            IntakeResult::Stale | IntakeResult::Duplicate => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    for k in 0..KEYS {
        let expected = usize::from(k >= KEYS / 2);
        assert_eq!(created[k], expected, "K{k:02} created exactly once when new, never when stored");
        assert_eq!(
            stored_version(&node_a, &src, &format!("K{k:02}")).await,
            newest[k],
            "K{k:02} holds its newest version"
        );
    }
    let tenant = &src.tenant_id;
    assert_eq!(count(&node_a, "SELECT COUNT(*) AS n FROM orders WHERE tenant_id = $1", tenant).await, KEYS as i64);
    let archived = count(&node_a, "SELECT COUNT(*) AS n FROM raw_payloads WHERE tenant_id = $1", tenant).await;
    assert_eq!(archived, (KEYS / 2 + DELIVERIES) as i64, "every delivery archived once");
    let events = "SELECT COUNT(*) AS n FROM outbox WHERE tenant_id = $1 AND kind = 'order_created'";
    assert_eq!(count(&node_a, events, tenant).await, KEYS as i64, "one order_created per order");
    let events = "SELECT COUNT(*) AS n FROM outbox WHERE tenant_id = $1 AND kind = 'order_updated'";
    assert_eq!(count(&node_a, events, tenant).await, updated, "one order_updated per applied update");
    node_b.close().await;
    t.cleanup().await;
}

/// Intake-only batches share the batch lock (several run at once, on every node); a batch
/// with closure jobs takes it alone. Shown with the lock held shared from outside: an
/// intake commits meanwhile, a closure job waits until it is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_batches_share_the_batch_lock_and_closure_batches_take_it_alone() {
    let Some(t) = TestDb::postgres().await else { return };
    let db = t.db.clone();
    let src = seed(&db).await;
    let mut holder = db.pool().acquire().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *holder).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(crate::writer::BATCH_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .unwrap();
    let it = item(&src, "S", 1);
    let out = tokio::time::timeout(Duration::from_secs(20), db.intake_platform_order(it.src, it.n, it.raw))
        .await
        .expect("an intake batch is not held up by another holder of the shared lock")
        .unwrap();
    assert_eq!(out.result, IntakeResult::Created);
    let closure = tokio::spawn({
        let db = db.clone();
        async move {
            db.write(|c| Box::pin(async move { Ok(sqlx::query("SELECT 1").execute(&mut *c).await?.rows_affected()) }))
                .await
        }
    });
    until_blocked(&db).await;
    assert!(!closure.is_finished(), "a closure batch waits for every batch holding the lock");
    sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
    closure.await.unwrap().unwrap();
    drop(holder);
    t.cleanup().await;
}

//! `lastmile archive` and `lastmile archive verify` from the command line, on SQLite and
//! PostgreSQL: finished orders before the date leave the live tables for Parquet files,
//! the rest stays, a second run exports nothing, and a damaged file makes `verify` fail.

// Each test binary uses a different part of the shared helpers.
#[allow(dead_code)]
mod common;

use common::run;
use lastmile_storage::testing::TestDb;
use serde_json::Value;

async fn exec(pool: &sqlx::AnyPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn live_orders(pool: &sqlx::AnyPool) -> Vec<String> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT id FROM orders ORDER BY id").fetch_all(pool).await.expect("orders");
    rows.iter().map(|r| r.get::<String, _>("id")).collect()
}

#[tokio::test]
async fn archive_moves_finished_orders_out_and_verify_catches_damage() {
    for t in TestDb::all().await {
        let backend = t.backend();
        let pool = t.db.pool().clone();
        let dir = tempfile::tempdir().unwrap();
        exec(&pool, "INSERT INTO tenants (id, name, created_at) VALUES ('ten_a', 'A', 0)").await;
        exec(
            &pool,
            "INSERT INTO stores (id, tenant_id, name, platform, platform_store_id, webhook_secret_enc, pickup_lat, \
             pickup_lng, pickup_address, tier, created_at, updated_at) \
             VALUES ('sto_1', 'ten_a', 'S', 'native', 'sto_1', 'x', 60.1, 24.9, 'a', 'standard', 0, 0)",
        )
        .await;
        let old = 1_700_000_000_000i64; // 2023-11-14
        let later = chrono::Utc::now().timestamp_millis();
        for (id, status, at) in [
            ("ord_done", "delivered", old),
            ("ord_gone", "cancelled", old),
            ("ord_open", "assigned", old),
            ("ord_new", "delivered", later),
        ] {
            exec(
                &pool,
                &format!(
                    "INSERT INTO orders (id, tenant_id, store_id, platform, platform_order_id, status, customer_json, \
                     dropoff_json, items_json, totals_json, ready_at, created_at, updated_at, tracking_token) \
                     VALUES ('{id}', 'ten_a', 'sto_1', 'native', '{id}', '{status}', '{{}}', '{{}}', \
                     '[{{\"sku\":\"A\",\"name\":\"Soup\",\"quantity\":1,\"unit_price_minor\":100}}]', '{{}}', 0, {at}, {at}, 't-{id}')"
                ),
            )
            .await;
            exec(
                &pool,
                &format!(
                    "INSERT INTO outbox (id, tenant_id, kind, subject_id, data, occurred_at, published_at) \
                     VALUES ('evt_{id}', 'ten_a', 'order_created', '{id}', '{{}}', {at}, {at})"
                ),
            )
            .await;
        }
        let out = dir.path().join("archive");
        let out_s = out.to_str().unwrap();
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let archive = |before: &str| {
            run(common::lastmile(dir.path(), &t.url).args(["archive", "--before", before, "--out", out_s]))
        };

        let (ok, stdout, err) = archive(&today);
        assert!(ok, "{backend}: {err}");
        let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
        assert_eq!((report["orders"].as_u64(), report["deleted"].as_u64()), (Some(2), Some(2)), "{backend}: {report}");
        assert_eq!(live_orders(&pool).await, ["ord_new", "ord_open"], "{backend}");
        let run_id = report["run"].as_str().expect("a run id");
        let orders_file = out.join(format!("tenant=ten_a/day=2023-11-14/orders-{run_id}.parquet"));
        assert!(orders_file.exists(), "{backend}: {}", orders_file.display());

        let verify = || run(common::lastmile(dir.path(), &t.url).args(["archive", "verify", out_s]));
        let (ok, stdout, err) = verify();
        assert!(ok, "{backend}: {stdout} {err}");

        // Twice: nothing more to export.
        let (ok, stdout, err) = archive(&today);
        assert!(ok, "{backend}: {err}");
        let again: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!((again["run"].is_null(), again["orders"].as_u64()), (true, Some(0)), "{backend}: {again}");

        // A date after today, or not a date: refused, nothing touched.
        let (ok, _, err) = archive("2999-01-01");
        assert!(!ok && err.contains("after today"), "{backend}: {err}");
        let (ok, _, err) = archive("yesterday");
        assert!(!ok && err.contains("YYYY-MM-DD"), "{backend}: {err}");
        assert_eq!(live_orders(&pool).await, ["ord_new", "ord_open"], "{backend}");

        // One flipped byte: verify exits non-zero and names the file.
        let mut bytes = std::fs::read(&orders_file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&orders_file, bytes).unwrap();
        let (ok, stdout, _) = verify();
        assert!(!ok, "{backend}: verify passed a damaged file");
        assert!(stdout.contains(&format!("orders-{run_id}.parquet")), "{backend}: {stdout}");
        t.cleanup().await;
    }
}

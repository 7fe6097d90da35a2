//! Invariant 1 with a real process: an order acknowledged to its sender is never lost,
//! even when the process is SIGKILLed right after the acknowledgement.
//!
//! The compiled `lastmile` binary serves a fresh database (SQLite always; PostgreSQL too
//! when `LASTMILE_TEST_DATABASE_URL` is set). Signed Shopify deliveries go in; the process
//! is killed right after each ack, and again while many deliveries are in flight; after
//! each restart every acknowledged order is there with the id it was acknowledged with,
//! and re-sending everything creates nothing twice.

mod common;

use base64::Engine;
use common::ChildServer;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECRET: &str = "shpss_kill_test";
const SHOP: &str = "kill-test.myshopify.com";

/// What every `lastmile` invocation of one test shares: database, key file, log folder.
struct Setup {
    dir: PathBuf,
    database_url: String,
    starts: usize,
}

impl Setup {
    /// `lastmile admin create-tenant`: (tenant_id, admin_key).
    fn create_tenant(&self) -> (String, String) {
        let out = common::lastmile(&self.dir, &self.database_url)
            .args(["admin", "create-tenant", "kill-test"])
            .output()
            .expect("run lastmile admin");
        assert!(out.status.success(), "create-tenant failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("create-tenant prints JSON");
        (v["tenant_id"].as_str().unwrap().to_owned(), v["admin_key"].as_str().unwrap().to_owned())
    }

    /// `lastmile serve` on a free port, once `/readyz` answers.
    async fn serve(&mut self) -> Server {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        self.starts += 1;
        let child = ChildServer::start(&self.dir, &self.database_url, &[], &self.starts.to_string(), &http).await;
        Server { base: child.base.clone(), child, http }
    }
}

struct Server {
    child: ChildServer,
    base: String,
    http: reqwest::Client,
}

impl Server {
    /// SIGKILL: no shutdown hook, no flush, no goodbye.
    fn kill(self) {
        self.child.kill();
    }

    async fn post(&self, path: &str, bearer: &str, body: &Value) -> (u16, Value) {
        let res = self.http.post(format!("{}{path}", self.base)).bearer_auth(bearer).json(body).send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, bearer: &str) -> (u16, Value) {
        let res = self.http.get(format!("{}{path}", self.base)).bearer_auth(bearer).send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }
}

/// A signed `orders/create` delivery for Shopify order `n` (the published sample with
/// another id, made open).
fn delivery(n: u64) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/ingest/tests/fixtures/shopify/orders_create.json");
    let mut order: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let id = 9_000_000_000_000_000_000 + n;
    order["id"] = json!(id);
    order["admin_graphql_api_id"] = json!(format!("gid://shopify/Order/{id}"));
    order["cancelled_at"] = Value::Null;
    let body = serde_json::to_vec(&order).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let hmac = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let headers = vec![
        ("Content-Type", "application/json".to_owned()),
        ("X-Shopify-Topic", "orders/create".to_owned()),
        ("X-Shopify-Hmac-Sha256", hmac),
        ("X-Shopify-Shop-Domain", SHOP.to_owned()),
        ("X-Shopify-API-Version", "2026-04".to_owned()),
        ("X-Shopify-Webhook-Id", format!("kill-{n}")),
    ];
    (headers, body)
}

fn platform_order_id(n: u64) -> String {
    (9_000_000_000_000_000_000 + n).to_string()
}

/// Send delivery `n`; `Some((result, order_id))` only for a complete 200 answer.
async fn send(http: &reqwest::Client, base: &str, store_id: &str, n: u64) -> Option<(String, String)> {
    let (headers, body) = delivery(n);
    let mut req = http.post(format!("{base}/v1/webhooks/shopify/{store_id}")).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = req.send().await.ok()?;
    if res.status() != 200 {
        return None;
    }
    let answer: Value = res.json().await.ok()?;
    Some((answer["result"].as_str()?.to_owned(), answer["order_id"].as_str()?.to_owned()))
}

/// Every acknowledged order is there, under the id it was acknowledged with.
async fn assert_all_present(server: &Server, admin: &str, acked: &HashMap<u64, String>) {
    for (n, order_id) in acked {
        let (status, order) = server.get(&format!("/v1/orders/{order_id}"), admin).await;
        assert_eq!(status, 200, "acknowledged order {n} ({order_id}) is lost: {order}");
        assert_eq!(order["platform_order_id"], platform_order_id(*n));
    }
}

async fn acknowledged_orders_survive_sigkill(database_url: String, dir: &Path) {
    let mut setup = Setup { dir: dir.to_owned(), database_url, starts: 0 };
    let (_, admin) = setup.create_tenant();
    let server = setup.serve().await;
    let (status, store) = server
        .post(
            "/v1/stores",
            &admin,
            &json!({"name": "Kill test", "platform": "shopify", "platform_store_id": SHOP,
            "webhook_secret": SECRET, "pickup": {"lat": 60.17, "lng": 24.94, "address": "Aleksanterinkatu 1"}}),
        )
        .await;
    assert_eq!(status, 201, "{store}");
    let store_id = store["id"].as_str().unwrap().to_owned();
    let mut acked: HashMap<u64, String> = HashMap::new();

    // 1. Killed right after each acknowledgement.
    let mut server = server;
    for n in 0..5 {
        let (result, order_id) = send(&server.http, &server.base, &store_id, n).await.expect("an answer");
        assert_eq!(result, "created");
        acked.insert(n, order_id);
        server.kill();
        server = setup.serve().await;
        assert_all_present(&server, &admin, &acked).await;
    }

    // 2. Killed at the first acknowledgement while 40 deliveries are in flight.
    let in_flight: Vec<u64> = (100..140).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for &n in &in_flight {
        let (http, base, store_id, tx) = (server.http.clone(), server.base.clone(), store_id.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send((n, send(&http, &base, &store_id, n).await));
        });
    }
    drop(tx);
    let mut alive = Some(server);
    while let Some((n, answer)) = rx.recv().await {
        if let Some((_, order_id)) = answer {
            acked.insert(n, order_id);
            if let Some(s) = alive.take() {
                s.kill();
            }
        }
    }
    if let Some(s) = alive.take() {
        s.kill();
    }
    assert!(acked.len() > 5, "at least one in-flight delivery was acknowledged before the kill");
    eprintln!("{} of {} in-flight deliveries were acknowledged before SIGKILL", acked.len() - 5, in_flight.len());
    let server = setup.serve().await;
    assert_all_present(&server, &admin, &acked).await;

    // 3. Re-sending every delivery creates none twice: acknowledged ones are duplicates
    //    with the same id; the rest are created now or were committed before the kill.
    for n in (0..5).chain(in_flight.iter().copied()) {
        let (result, order_id) = send(&server.http, &server.base, &store_id, n).await.expect("an answer");
        match acked.get(&n) {
            Some(first) => assert_eq!((result.as_str(), &order_id), ("duplicate", first), "order {n}"),
            None => assert!(result == "created" || result == "duplicate", "order {n}: {result}"),
        }
    }
    let (status, list) = server.get(&format!("/v1/orders?store_id={store_id}&limit=500"), &admin).await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> =
        list["orders"].as_array().unwrap().iter().map(|o| o["platform_order_id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!((ids.len(), unique.len()), (45, 45), "every delivery exactly once");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_orders_survive_sigkill_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lastmile.db").display());
    acknowledged_orders_survive_sigkill(url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_orders_survive_sigkill_on_postgres() {
    let Some(pg) = lastmile_storage::testing::TestDb::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    acknowledged_orders_survive_sigkill(pg.url.clone(), dir.path()).await;
    pg.cleanup().await;
}

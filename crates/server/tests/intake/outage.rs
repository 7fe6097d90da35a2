//! A PostgreSQL outage under intake. The app reaches PostgreSQL through a TCP proxy
//! written here (tokio, loopback) that the test cuts — every open connection closed, new
//! ones hung up on — and restores. Deliveries acknowledged during the outage must all be
//! in the database after recovery, none twice; the API answers `503
//! database_unavailable` meanwhile instead of hanging; `/readyz` and `/metrics` show the
//! spool; a full spool refuses with `503 spool_full` and `Retry-After`.

use crate::helpers::{Backend, TestApp};
use crate::{deliver, eventually, list_all, raw_payloads, shopify_order, store, webhook_path, Delivery};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A loopback TCP proxy to PostgreSQL that can be cut and restored.
struct PgProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl PgProxy {
    async fn start(upstream: String) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // hung up on: the database is "unreachable"
                    continue;
                }
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().unwrap().push(link.abort_handle());
            }
        });
        PgProxy { addr, up, links, accept: accept.abort_handle() }
    }

    /// Close every open connection and refuse new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `host:port` of a postgres:// URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let res = app.http.get(app.url(path)).send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let text = app.http.get(app.url("/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

const SHOP: &str = "outage.myshopify.com";

fn order_delivery(id: u64, version: &str, note: &str) -> Delivery {
    Delivery::shopify(&shopify_order(id, version, note), "s", SHOP, "orders/create")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_acked_during_a_database_outage_are_taken_in_once() {
    let Some(admin_url) = lastmile_storage::testing::postgres_url() else { return };
    let upstream = host_port(&admin_url);
    let proxy = PgProxy::start(upstream.clone()).await;
    let via = proxy.addr.to_string();
    // 31 spooled deliveries fill the spool exactly; the 32nd is refused.
    let spool_size = 31;
    let app = TestApp::spawn_with(Backend::Postgres, |cfg| {
        assert!(cfg.database_url.contains(&upstream), "{}", cfg.database_url);
        cfg.database_url = cfg.database_url.replacen(&upstream, &via, 1);
        cfg.storage.acquire_timeout_ms = 300;
        cfg.spool.probe_ms = 50;
        cfg.spool.max_entries = spool_size;
    })
    .await;
    assert!(app.cfg.database_url.contains(&via), "the app reaches PostgreSQL through the proxy");
    let (tenant, admin) = app.tenant("outage").await;
    let sid = store(&app, &admin, "shopify", SHOP, "s").await;
    let cold = store(&app, &admin, "shopify", "cold.myshopify.com", "c").await;
    let (_, driver_token) = app.driver(&admin, "Dana").await;
    let url = webhook_path("shopify", &sid);

    // Before: five orders committed; one more through the identity endpoint.
    for n in 1..=5 {
        let (status, body) = deliver(&app, &url, &order_delivery(n, "2026-01-01T10:00:00Z", "before")).await;
        assert_eq!((status, body["result"].as_str()), (200, Some("created")), "{body}");
    }
    let (status, body) = deliver(&app, "/v1/import-orders", &order_delivery(6, "2026-01-01T10:00:00Z", "before")).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("created")), "{body}");
    let (status, ready) = get(&app, "/readyz").await;
    assert_eq!(
        (status, ready["status"].as_str(), ready["spool"]["database"].as_str()),
        (200, Some("ready"), Some("up"))
    );

    proxy.cut();

    // During: every authenticated delivery is acknowledged from the spool.
    let mut spooled = Vec::new();
    for n in 101..=125 {
        spooled.push(order_delivery(n, "2026-01-01T11:00:00Z", "during"));
    }
    // Redeliveries: of an order committed before (same version), of one spooled just now,
    // and a newer version of order 2.
    spooled.push(order_delivery(1, "2026-01-01T10:00:00Z", "before"));
    spooled.push(order_delivery(101, "2026-01-01T11:00:00Z", "during"));
    spooled.push(order_delivery(102, "2026-01-01T11:00:00Z", "during"));
    spooled.push(order_delivery(2, "2026-01-01T12:00:00Z", "updated during the outage"));
    for d in &spooled {
        let (status, body) = deliver(&app, &url, d).await;
        assert_eq!((status, body["result"].as_str()), (202, Some("spooled")), "{body}");
    }
    // The identity endpoint verifies from its cache too.
    let (status, body) =
        deliver(&app, "/v1/import-orders", &order_delivery(126, "2026-01-01T11:00:00Z", "during")).await;
    assert_eq!((status, body["result"].as_str()), (202, Some("spooled")), "{body}");
    let (status, body) = deliver(&app, &url, &order_delivery(127, "2026-01-01T11:00:00Z", "during")).await;
    assert_eq!((status, body["result"].as_str()), (202, Some("spooled")), "{body}");
    let acked_during = spooled.len() + 2;
    assert_eq!(acked_during as u64, spool_size);

    // Bounded: the spool is full now.
    let res = crate::deliver_raw(&app, &url, &order_delivery(128, "2026-01-01T11:00:00Z", "too many")).await;
    assert_eq!(res.status().as_u16(), 503);
    assert!(res.headers().get("retry-after").is_some(), "a full spool says when to retry");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "spool_full", "{body}");
    // A store this node never looked up cannot be verified: refused, not spooled.
    let res = crate::deliver_raw(
        &app,
        &webhook_path("shopify", &cold),
        &Delivery::shopify(&shopify_order(9, "2026-01-01T11:00:00Z", ""), "c", "cold.myshopify.com", "orders/create"),
    )
    .await;
    assert_eq!(res.status().as_u16(), 503);
    assert!(res.headers().get("retry-after").is_some());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    // The API degrades with a clear error, not a hang.
    let (status, body) = app.get_json("/v1/orders", &admin).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("database_unavailable")), "{body}");
    let (status, body) = app.locate(&driver_token, 60.17, 24.94).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("database_unavailable")), "{body}");
    // Readiness and metrics tell what is going on.
    let (status, ready) = get(&app, "/readyz").await;
    assert_eq!(status, 503, "a full spool takes nothing more: {ready}");
    assert_eq!(ready["error"]["details"]["spool"]["database"], "down", "{ready}");
    assert_eq!(ready["error"]["details"]["spool"]["pending"], spool_size, "{ready}");
    assert_eq!(metric(&app, "lastmile_spool_pending").await, Some(spool_size as f64));
    assert_eq!(metric(&app, "lastmile_database_up").await, Some(0.0));

    proxy.restore();

    // After: the spool drains by itself through the normal intake path.
    eventually("the spool to drain", Duration::from_secs(30), || async {
        let (status, ready) = get(&app, "/readyz").await;
        (status == 200 && ready["spool"]["pending"] == 0 && ready["spool"]["database"] == "up").then_some(())
    })
    .await;
    assert_eq!(metric(&app, "lastmile_spool_pending").await, Some(0.0));
    assert_eq!(metric(&app, "lastmile_database_up").await, Some(1.0));
    let orders = list_all(&app, &admin, "", 100).await;
    let mut seen: HashMap<String, Value> = HashMap::new();
    for o in orders {
        let pid = o["platform_order_id"].as_str().expect("platform_order_id").to_owned();
        assert!(seen.insert(pid.clone(), o).is_none(), "order {pid} exists twice");
    }
    let mut want: Vec<String> = (1..=6).chain(101..=127).map(|n| n.to_string()).collect();
    let mut got: Vec<String> = seen.keys().cloned().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "every acknowledged order is there once, and nothing refused is");
    assert_eq!(seen["2"]["notes"], "updated during the outage", "the newer version spooled was applied");
    assert_eq!(seen["1"]["notes"], "before");
    // Every acknowledged delivery went through intake and its archive.
    assert_eq!(raw_payloads(&app, &tenant).await, 6 + acked_during as i64);
    // And new deliveries go straight to the database again.
    let (status, body) = deliver(&app, &url, &order_delivery(200, "2026-01-01T13:00:00Z", "after")).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("created")), "{body}");

    // A node stopped during an outage keeps its spool on disk and takes it in at start.
    proxy.cut();
    for n in 301..=303 {
        let (status, body) = deliver(&app, &url, &order_delivery(n, "2026-01-01T14:00:00Z", "restart")).await;
        assert_eq!((status, body["result"].as_str()), (202, Some("spooled")), "{body}");
    }
    let spool_file = app.dir.path().join("spool.db");
    let limits = lastmile_storage::SpoolLimits { max_bytes: u64::MAX, max_entries: u64::MAX, max_age_ms: i64::MAX };
    let app = app
        .restart_with(async {
            let spool = lastmile_storage::Spool::open(&spool_file, limits).await.expect("open the spool file");
            assert_eq!(spool.stats().await.pending, 3, "the spool survived the stop");
            spool.close().await;
            proxy.restore();
        })
        .await;
    eventually("the spool to drain after the restart", Duration::from_secs(30), || async {
        let (status, ready) = get(&app, "/readyz").await;
        (status == 200 && ready["spool"]["pending"] == 0).then_some(())
    })
    .await;
    let orders = list_all(&app, &admin, "", 100).await;
    let restarted: Vec<&Value> = orders.iter().filter(|o| o["notes"] == "restart").collect();
    assert_eq!(restarted.len(), 3, "the three spooled before the restart are in, once each");
    app.stop().await;
}

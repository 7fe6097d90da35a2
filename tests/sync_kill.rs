//! Sync-back survives SIGKILL (issue 5): the compiled `lastmile` binary is killed while
//! fulfilments are in flight, restarted, and every fulfilment reaches its platform exactly
//! once — none lost, none sent twice.
//!
//! Why it holds: jobs are rows committed with the status change; a running job is leased,
//! so a killed worker's jobs are claimed again when the lease runs out; and every sync
//! checks the platform's state before it acts, so a job whose write landed before the kill
//! finds it done. The lease (3 s here, 120 s by default) also outlasts any request the dead
//! process still had on the wire, so a retry's check comes after it landed or died.
//!
//! The platform stand-ins run in this test process; the server is a child process. On
//! SQLite always, on PostgreSQL too when `LASTMILE_TEST_DATABASE_URL` is set.

#[path = "../crates/server/tests/sync/support.rs"]
mod support;

use lastmile_core::{OrderId, Platform, TenantId};
use lastmile_server::config::Config;
use lastmile_standins::{Fault, StandIn};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{
    delivered_status, delivered_writes, eventually, integrations, platform_order, standin_store, writes, Api, Courier,
};
use tokio_util::sync::CancellationToken;

const ORDERS_PER_PLATFORM: usize = 8;

/// A `lastmile serve` child process on the test's database.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    /// Starts `lastmile serve` and waits (bounded) until `/readyz` answers.
    async fn start(database_url: &str, dir: &Path, n: usize, http: &reqwest::Client) -> Server {
        for attempt in 0..5 {
            // Free when chosen; if another process takes it first the child exits and we
            // try another port.
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = dir.join(format!("serve-{n}-{attempt}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_lastmile"))
                .arg("serve")
                .env_remove("LASTMILE_CONFIG")
                .env("LASTMILE_LISTEN", format!("127.0.0.1:{port}"))
                .env("LASTMILE_DATABASE_URL", database_url)
                .env("LASTMILE_SECRET_KEY_FILE", dir.join("lastmile.key"))
                .env("LASTMILE_LOG_FORMAT", "pretty")
                .env("LASTMILE_DISPATCH__ENABLED", "false")
                .env("LASTMILE_SYNC__POLL_MS", "20")
                .env("LASTMILE_SYNC__TIMEOUT_STANDARD_S", "2")
                .env("LASTMILE_SYNC__TIMEOUT_ENTERPRISE_S", "2")
                .env("LASTMILE_SYNC__LEASE_S", "3")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .expect("spawn lastmile serve");
            let mut server = Server { child, base: format!("http://127.0.0.1:{port}"), log };
            if server.ready(http).await {
                return server;
            }
        }
        panic!("lastmile serve did not start; see the logs in {}", dir.display());
    }

    /// Polls `/readyz` (a child process has no other readiness signal), bounded; false if
    /// the process exited first.
    async fn ready(&mut self, http: &reqwest::Client) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                eprintln!("lastmile serve exited with {status}:\n{}", self.log_text());
                return false;
            }
            if http.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status() == 200) {
                return true;
            }
            assert!(std::time::Instant::now() < deadline, "not ready within 60 s:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no recording of the calls in flight.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL lastmile");
        self.child.wait().expect("reap lastmile");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing assertion must not leave a server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stores, orders and their sync jobs, made by the library in this process on the
/// same database and key file the child will use (sync and dispatch off, so nothing is
/// sent yet). The jobs come from the real status changes, in their commits.
async fn prepare(
    database_url: &str,
    dir: &Path,
    standins: &[&StandIn],
    http: &reqwest::Client,
) -> (String, Vec<(Platform, String, OrderId)>) {
    let mut cfg = Config {
        listen: "127.0.0.1:0".into(),
        database_url: database_url.to_owned(),
        secret_key_file: Some(dir.join("lastmile.key")),
        ..Config::default()
    };
    cfg.sync.enabled = false;
    cfg.dispatch.enabled = false;
    let app = lastmile_server::build(cfg).await.expect("build the app");
    let (state, base) = (app.state.clone(), format!("http://{}", app.addr));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));

    let created = lastmile_server::admin::create_tenant(&state.db, "sync-kill").await.expect("tenant");
    let tenant = TenantId(created.tenant_id.clone());
    let api = Api { http, base: &base };
    let courier = Courier::new(&state, &tenant).await;
    let mut orders = Vec::new();
    for standin in standins {
        let platform = standin.platform();
        let store = standin_store(&api, &created.admin_key, standin, &format!("kill-{platform}"), "standard").await;
        for n in 0..ORDERS_PER_PLATFORM {
            let external = (40_000 + n).to_string();
            let order = platform_order(&state, &tenant, &store, standin, &external).await;
            courier.deliver_fully(&state, &order).await;
            orders.push((platform, external, order));
        }
    }
    shutdown.cancel();
    running.await.expect("app task").expect("app stopped cleanly");
    (created.admin_key, orders)
}

async fn fulfilments_survive_sigkill(database_url: &str, dir: &Path) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let shop = StandIn::start(Platform::Shopify).await;
    let woo = StandIn::start(Platform::Woocommerce).await;
    let bc = StandIn::start(Platform::Bigcommerce).await;
    let standin = |p: Platform| match p {
        Platform::Shopify => &shop,
        Platform::Woocommerce => &woo,
        _ => &bc,
    };
    let (admin, orders) = prepare(database_url, dir, &[&shop, &woo, &bc], &http).await;

    // Shopify and WooCommerce act on writes and never answer: the worker dies knowing
    // nothing of writes that landed. BigCommerce is slow: its requests are on the wire, not
    // yet acted on, when the worker dies.
    shop.set_fault(Fault::ApplyThenHang);
    woo.set_fault(Fault::ApplyThenHang);
    bc.set_fault(Fault::Slow(Duration::from_millis(800)));
    let server = Server::start(database_url, dir, 1, &http).await;
    eventually("writes landed and requests in flight on every platform", Duration::from_secs(30), || async {
        let landed =
            |s: &StandIn| orders.iter().filter(|(p, e, _)| *p == s.platform() && s.fulfilment_count(e) > 0).count();
        let bc_in_flight = bc.requests().iter().filter(|r| r.method == "PUT").count();
        (landed(&shop) >= 3 && landed(&woo) >= 3 && bc_in_flight >= 1).then_some(())
    })
    .await;
    server.kill();
    let landed_before: usize = orders.iter().map(|(p, e, _)| standin(*p).fulfilment_count(e)).sum();
    let total: usize = orders.iter().map(|(p, _, _)| delivered_writes(*p).len()).sum();
    eprintln!("sync kill: killed with {landed_before} of {total} writes landed and none of their answers recorded");
    assert!(landed_before < total, "the kill came while work remained");
    // The dead worker's jobs are still leased to it: only the lease's end frees them.
    let db = lastmile_storage::Db::connect(database_url, lastmile_storage::DbOptions::default()).await.unwrap();
    let queue = db.sync_queue(lastmile_storage::now_ms()).await.unwrap();
    db.close().await;
    assert!(queue.running >= 8 && queue.unfinished > queue.running, "jobs were in flight and queued: {queue:?}");

    // The platforms recover; the server restarts on the same database.
    for s in [&shop, &woo, &bc] {
        s.set_fault(Fault::None);
    }
    let server = Server::start(database_url, dir, 2, &http).await;
    let api = Api { http: &http, base: &server.base };
    eventually("every fulfilment to land and every job to finish", Duration::from_secs(60), || async {
        let all_there =
            orders.iter().all(|(p, e, _)| standin(*p).order_status(e).as_deref() == Some(delivered_status(*p)));
        let views = integrations(&api, &admin).await;
        let drained = views.values().all(|v| v["backlog"] == 0);
        (all_there && drained).then_some(())
    })
    .await;
    for (platform, external, _) in &orders {
        assert_eq!(writes(standin(*platform), external), delivered_writes(*platform), "{platform} order {external}");
    }
    for (store, view) in integrations(&api, &admin).await {
        assert_eq!((view["backlog"].as_i64(), view["dead_letters"].as_i64()), (Some(0), Some(0)), "{store}: {view}");
    }
    let (status, letters) = {
        let res = http.get(format!("{}/v1/dead-letters", server.base)).bearer_auth(&admin).send().await.unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!((status, letters["dead_letters"].as_array().map(Vec::len)), (200, Some(0)), "{letters}");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_sync_loses_no_fulfilment_and_sends_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("lastmile.db").display());
    eprintln!("sync kill on SQLite");
    fulfilments_survive_sigkill(&sqlite, dir.path()).await;

    if let Some(pg) = lastmile_storage::testing::TestDb::postgres().await {
        let dir = tempfile::tempdir().unwrap();
        eprintln!("sync kill on PostgreSQL");
        let url = pg.url.clone();
        // The child opens its own connections; the test's pool is not needed meanwhile.
        fulfilments_survive_sigkill(&url, dir.path()).await;
        pg.cleanup().await;
    }
}

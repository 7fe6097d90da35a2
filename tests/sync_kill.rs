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

mod common;
#[path = "../crates/server/tests/sync/support.rs"]
mod support;

use common::ChildServer;

use lastmile_core::{OrderId, Platform, TenantId};
use lastmile_server::config::Config;
use lastmile_standins::{Fault, StandIn};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::{
    delivered_status, delivered_writes, eventually, integrations, platform_order, standin_store, writes, Api, Courier,
};
use tokio_util::sync::CancellationToken;

const ORDERS_PER_PLATFORM: usize = 8;

/// `lastmile serve` on the test's database: sync fast and short-leased, dispatch off.
async fn serve(database_url: &str, dir: &Path, n: usize, http: &reqwest::Client) -> ChildServer {
    let env = [
        ("LASTMILE_DISPATCH__ENABLED", "false"),
        ("LASTMILE_SYNC__POLL_MS", "20"),
        ("LASTMILE_SYNC__TIMEOUT_STANDARD_S", "2"),
        ("LASTMILE_SYNC__TIMEOUT_ENTERPRISE_S", "2"),
        ("LASTMILE_SYNC__LEASE_S", "3"),
    ];
    ChildServer::start(dir, database_url, &env, &n.to_string(), http).await
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
        // The platform stand-ins listen on 127.0.0.1.
        allow_private_urls: true,
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
    let server = serve(database_url, dir, 1, &http).await;
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
    let server = serve(database_url, dir, 2, &http).await;
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

//! Cluster mode, in process: two nodes on one PostgreSQL and one NATS. A driver heard only
//! by node A is in node B's live index within a second, and node B — the one matching the
//! tenant — does not mark them offline while A hears them; once nobody hears them, it does.
//! (The three-process test with a SIGKILL is the root package's `tests/cluster.rs`.)
//!
//! Needs `LASTMILE_TEST_DATABASE_URL` and `LASTMILE_TEST_NATS_URL`; skipped, saying so,
//! when they are unset.

use lastmile_core::{DriverId, GeoPoint, TenantId};
use lastmile_server::config::Config;
use lastmile_server::state::AppState;
use lastmile_storage::testing::TestDb;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Node {
    state: AppState,
    base: String,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn node(
    pg: &TestDb,
    dir: &std::path::Path,
    nats: &str,
    cluster: &str,
    id: &str,
    matching: bool,
    stop: &CancellationToken,
) -> Node {
    let mut cfg = Config {
        listen: "127.0.0.1:0".into(),
        database_url: pg.url.clone(),
        secret_key_file: Some(dir.join("lastmile.key")),
        bus: nats.to_owned(),
        presence_timeout_s: 1,
        ..Config::default()
    };
    cfg.cluster.name = cluster.to_owned();
    cfg.cluster.node_id = Some(id.to_owned());
    cfg.cluster.lease_ttl_ms = 1500;
    cfg.dispatch.tick_ms = 100;
    // A node that does not dispatch never takes a lease: the other one matches.
    cfg.dispatch.enabled = matching;
    cfg.sync.enabled = false;
    let app = lastmile_server::build(cfg).await.expect("build node");
    let (state, base) = (app.state.clone(), format!("http://{}", app.addr));
    let task = tokio::spawn(app.run(stop.clone()));
    Node { state, base, task }
}

fn fix(lat: f64, lng: f64) -> Value {
    json!({"lat": lat, "lng": lng, "accuracy_m": 5.0, "recorded_at": chrono::Utc::now().to_rfc3339()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_heard_on_one_node_is_live_and_present_on_the_other() {
    let Ok(nats) = std::env::var("LASTMILE_TEST_NATS_URL") else {
        eprintln!(
            "!!! SKIPPED fleet sharing test: set LASTMILE_TEST_NATS_URL (and LASTMILE_TEST_DATABASE_URL) to run it !!!"
        );
        return;
    };
    let Some(pg) = TestDb::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("lmfleet{}", &TenantId::generate().0[4..]);
    let stop = CancellationToken::new();
    // A first, so it makes the shared key file.
    let a = node(&pg, dir.path(), &nats, &cluster, "a", false, &stop).await;
    let b = node(&pg, dir.path(), &nats, &cluster, "b", true, &stop).await;
    let http = reqwest::Client::new();

    let created = lastmile_server::admin::create_tenant(&pg.db, "fleet").await.unwrap();
    let tenant = TenantId(created.tenant_id.clone());
    let res = http
        .post(format!("{}/v1/drivers", a.base))
        .bearer_auth(&created.admin_key)
        .json(&json!({"name": "Ada", "phone": "+358401234567", "vehicle": "bike", "capacity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let d: Value = res.json().await.unwrap();
    let (driver, token) = (DriverId(d["id"].as_str().unwrap().to_owned()), d["token"].as_str().unwrap().to_owned());

    // B takes the tenant's lease (A does not dispatch).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.state.cluster.holds(&tenant) {
        assert!(Instant::now() < deadline, "node b never took the tenant's matching");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!a.state.cluster.holds(&tenant));

    // Online and a fix, on A only; B's live index has both within a second.
    let res = http
        .put(format!("{}/v1/driver/status", a.base))
        .bearer_auth(&token)
        .json(&json!({"status": "online"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent = Instant::now();
    let res = http
        .post(format!("{}/v1/driver/location", a.base))
        .bearer_auth(&token)
        .json(&fix(60.1701, 24.9402))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let want = GeoPoint::new(60.1701, 24.9402).unwrap();
    loop {
        let live = b.state.fleet.driver(&driver);
        if live.as_ref().is_some_and(|l| l.status == "online" && l.point == Some(want)) {
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(1), "node b's view after 1 s: {live:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let converged = sent.elapsed();
    assert!(
        b.state.fleet.nearest(&tenant, want, 1, 1000.0).iter().any(|(id, _)| *id == driver),
        "dispatchable from node b"
    );

    // A keeps hearing them for three presence timeouts: B, the matching node, keeps them online.
    let until = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let at = fix(60.1701 + n as f64 * 0.0001, 24.9402);
        let res =
            http.post(format!("{}/v1/driver/location", a.base)).bearer_auth(&token).json(&at).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(b.state.fleet.silent_drivers(Duration::from_secs(1)).is_empty(), "node b thinks the driver is silent");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        pg.db.get_driver(&tenant, &driver).await.unwrap().status,
        "online",
        "still online after 3 s heard only on a"
    );

    // Nobody hears them: B marks them offline.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pg.db.get_driver(&tenant, &driver).await.unwrap().status != "offline" {
        assert!(
            Instant::now() < deadline,
            "a driver nobody hears stays online: b holds {}, b sees {:?}, a sees {:?}",
            b.state.cluster.holds(&tenant),
            b.state.fleet.driver(&driver),
            a.state.fleet.driver(&driver)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("fleet sharing: a fix on node a was in node b's live index after {converged:?}");

    stop.cancel();
    a.task.await.unwrap().unwrap();
    b.task.await.unwrap().unwrap();
    pg.cleanup().await;
}

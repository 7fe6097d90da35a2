//! A ten-minute Shopify outage in paused time: the breaker opens, the backlog grows and
//! shows in `GET /v1/integrations` and `/metrics`, nothing is lost; on recovery the backlog
//! drains and each fulfilment reaches the platform exactly once.

use crate::dead_letters::dead_letters;
use crate::helpers::{self, Backend, TestApp};
use crate::support::{
    delivered_status, delivered_writes, integrations, platform_order, standin_store, writes, Courier,
};
use crate::{api, metric, TIMING};
use lastmile_core::{OrderId, Platform, TenantId};
use lastmile_standins::{Fault, StandIn};
use std::time::{Duration, Instant};

/// Move tokio's clock (and so `state.clock`, the breakers and the rate limits) by `by`,
/// then let the worker run everything that became due, in real time.
///
/// Why not leave time paused throughout: the app does real I/O (sockets to the stand-ins
/// and PostgreSQL, SQLite's worker thread), and a paused runtime that waits on I/O counts as
/// idle and jumps to the next timer — firing the tier timeouts and the pool's acquire
/// timeout in the middle of calls that are merely in flight. So time jumps only while the
/// worker is idle (nothing due, nothing running), and runs at its natural pace while it
/// works; a timer can never fire early.
async fn tick(app: &TestApp, by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
    settle(app).await;
}

/// Wait (bounded, checking every 2 ms: a tick is usually done in a few) until the worker
/// has nothing due and nothing running.
async fn settle(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = app.state.db.sync_queue(app.state.clock.now_ms()).await.expect("queue");
        if q.due == 0 && q.running == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the sync worker did not settle: {q:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn jobs_of(app: &TestApp, tenant: &TenantId, orders: &[OrderId]) -> Vec<(String, String, i64)> {
    let mut all = Vec::new();
    for o in orders {
        all.extend(app.state.db.sync_jobs_for_order(tenant, o).await.expect("jobs"));
    }
    all
}

async fn shopify_outage(backend: Backend) {
    let _quiet = TIMING.read().await;
    let shop = StandIn::start(Platform::Shopify).await;
    let woo = StandIn::start(Platform::Woocommerce).await;
    // Defaults: 15 s timeouts, the 24 h retry schedule, the 5-failure breaker probing after 30 s.
    let app = TestApp::spawn_with(backend, |cfg| cfg.dispatch.enabled = false).await;
    let (tenant, admin) = app.tenant("outage").await;
    let tenant = TenantId(tenant);
    let s_shop = standin_store(&api(&app), &admin, &shop, "outage-shop", "standard").await;
    let s_woo = standin_store(&api(&app), &admin, &woo, "outage-woo", "standard").await;
    let courier = Courier::new(&app.state, &tenant).await;

    shop.set_fault(Fault::Down);
    let mut shop_orders = Vec::new();
    for n in 0..20 {
        let o = platform_order(&app.state, &tenant, &s_shop, &shop, &format!("{}", 7000 + n)).await;
        courier.deliver_fully(&app.state, &o).await;
        shop_orders.push((format!("{}", 7000 + n), o));
    }
    let mut woo_orders = Vec::new();
    for n in 0..3 {
        let o = platform_order(&app.state, &tenant, &s_woo, &woo, &format!("{}", 8000 + n)).await;
        courier.deliver_fully(&app.state, &o).await;
        woo_orders.push(format!("{}", 8000 + n));
    }
    settle(&app).await;

    // Ten simulated minutes of outage, in 10 s steps.
    let mut saw_open = false;
    let mut minute = 0;
    for step in 1..=60 {
        tick(&app, Duration::from_secs(10)).await;
        if step % 6 != 0 {
            continue;
        }
        minute += 1;
        let ids: Vec<OrderId> = shop_orders.iter().map(|(_, o)| o.clone()).collect();
        let jobs = jobs_of(&app, &tenant, &ids).await;
        assert_eq!(jobs.len(), ids.len() * 2, "every status change has its job");
        assert!(jobs.iter().all(|(_, state, _)| state == "pending"), "nothing lost, nothing given up: {jobs:?}");
        let i = integrations(&api(&app), &admin).await;
        let s = &i[s_shop.as_str()];
        assert_eq!(s["backlog"].as_i64(), Some(jobs.len() as i64), "{s}");
        assert_eq!(s["dead_letters"], 0);
        let notice = s["degraded"].as_str().unwrap_or_default();
        assert!(notice.starts_with("Shopify sync delayed since "), "{s}");
        assert_ne!(s["breaker"], "closed", "{s}");
        saw_open |= s["breaker"] == "open";
        let w = &i[s_woo.as_str()];
        assert_eq!((w["breaker"].as_str(), w["backlog"].as_i64()), (Some("closed"), Some(0)), "{w}");
        if minute == 1 {
            let labels = [("platform", "shopify"), ("store", s_shop.as_str())];
            assert_eq!(metric(&app, "lastmile_integration_breaker_state", &labels).await, Some(2.0));
            assert_eq!(metric(&app, "lastmile_sync_backlog", &labels).await, Some(jobs.len() as f64));
        }
        if minute == 5 {
            // Mid-outage: more Shopify deliveries queue up (the backlog grows), while
            // WooCommerce keeps syncing at once.
            for n in 20..22 {
                let o = platform_order(&app.state, &tenant, &s_shop, &shop, &format!("{}", 7000 + n)).await;
                courier.deliver_fully(&app.state, &o).await;
                shop_orders.push((format!("{}", 7000 + n), o));
            }
            let o = platform_order(&app.state, &tenant, &s_woo, &woo, "8100").await;
            courier.deliver_fully(&app.state, &o).await;
            woo_orders.push("8100".into());
            settle(&app).await;
            assert_eq!(woo.order_status("8100").as_deref(), Some("completed"));
        }
    }
    assert!(saw_open, "the Shopify store's breaker opened");
    assert_eq!(shop.fulfilment_count("7000"), 0);
    let reached = shop.requests().len();
    assert!(reached == 0, "a Down stand-in records nothing, the attempts were refused: {reached}");

    let mut ticks = 0;
    // Shopify is back: step to each next due time until the backlog has drained.
    shop.set_fault(Fault::None);
    let recovered_at = app.state.clock.now_ms();
    loop {
        let q = app.state.db.sync_queue(app.state.clock.now_ms()).await.unwrap();
        if q.unfinished == 0 {
            break;
        }
        let now = app.state.clock.now_ms();
        assert!(now - recovered_at < 2 * 3600 * 1000, "the backlog drains within two simulated hours: {q:?}");
        let wait = q.next_attempt_at.map_or(1_000, |at| at - now).clamp(100, 60_000);
        tick(&app, Duration::from_millis(wait as u64)).await;
        ticks += 1;
    }
    let drained_in_s = (app.state.clock.now_ms() - recovered_at) / 1000;
    eprintln!(
        "shopify outage on {backend:?}: backlog drained {drained_in_s} simulated s after recovery ({ticks} steps)"
    );

    for (external, _) in &shop_orders {
        assert_eq!(writes(&shop, external), delivered_writes(Platform::Shopify), "order {external}: exactly once");
        assert_eq!(shop.order_status(external).as_deref(), Some(delivered_status(Platform::Shopify)));
    }
    for external in &woo_orders {
        assert_eq!(writes(&woo, external), delivered_writes(Platform::Woocommerce), "order {external}");
    }
    let i = integrations(&api(&app), &admin).await;
    let s = &i[s_shop.as_str()];
    assert_eq!((s["breaker"].as_str(), s["backlog"].as_i64()), (Some("closed"), Some(0)), "{s}");
    assert!(s["degraded"].is_null(), "{s}");
    assert!(dead_letters(&app, &admin, "").await.is_empty());
    app.stop().await;
}

/// Paused time needs the current-thread runtime; each backend in turn.
#[tokio::test]
async fn a_ten_minute_shopify_outage_loses_nothing_and_drains_exactly_once() {
    for backend in helpers::backends() {
        eprintln!("outage on {backend:?}");
        shopify_outage(backend).await;
    }
}

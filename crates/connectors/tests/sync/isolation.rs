//! One failing platform or store never delays the others (DESIGN invariant 8).

use crate::helpers::{config, health, hub, request};
use lastmile_connectors::{BreakerConfig, BreakerState, ConnectorConfig, ConnectorHub, SyncAction, SyncOutcome, Tier};
use lastmile_core::Platform;
use lastmile_standins::{Fault, StandIn};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test]
async fn the_store_breaker_opens_after_five_failures_and_half_opens_after_thirty_seconds() {
    let down = StandIn::start(Platform::Shopify).await;
    let healthy = StandIn::start(Platform::Shopify).await;
    down.seed_order("1", "OPEN");
    healthy.seed_order("1", "OPEN");
    down.set_fault(Fault::Down);
    let hub = hub();
    let req = request(&down, "down-store", "1", SyncAction::PickedUp);

    for attempt in 1..=5 {
        let outcome = hub.sync(&req).await;
        assert!(matches!(outcome, SyncOutcome::Retry { last_status: None, .. }), "attempt {attempt}: {outcome:?}");
        let expected = if attempt < 5 { BreakerState::Closed } else { BreakerState::Open };
        assert_eq!(health(&hub, Platform::Shopify, "down-store").breaker, expected, "after attempt {attempt}");
    }
    match hub.sync(&req).await {
        SyncOutcome::Deferred { until } => assert!(until > Duration::from_secs(29) && until <= Duration::from_secs(30)),
        other => panic!("expected Deferred with the breaker open, got {other:?}"),
    }
    // Another store of the same platform is untouched.
    let other = request(&healthy, "healthy-store", "1", SyncAction::PickedUp);
    assert!(matches!(hub.sync(&other).await, SyncOutcome::Done { .. }));

    // From here the clock is ours: no real waiting.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Deferred { .. }), "still open at 29 s");
    assert_eq!(health(&hub, Platform::Shopify, "down-store").breaker, BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(health(&hub, Platform::Shopify, "down-store").breaker, BreakerState::HalfOpen);

    // The platform is back: the probe succeeds and closes the breaker. Real time again for
    // the network round trip (a paused clock would fire the timeout while waiting on I/O).
    down.set_fault(Fault::None);
    tokio::time::resume();
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Done { .. }));
    let h = health(&hub, Platform::Shopify, "down-store");
    assert_eq!(h.breaker, BreakerState::Closed);
    assert_eq!(h.consecutive_failures, 0);
    assert_eq!(h.degraded_since, None);
    assert_eq!((h.attempts, h.failures), (6, 5), "deferred calls are not attempts");
    assert_eq!(down.fulfilment_count("1"), 1);
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker() {
    let s = StandIn::start(Platform::Woocommerce).await;
    s.seed_order("1", "processing");
    s.set_fault(Fault::Status5xx(503));
    let hub = hub();
    let req = request(&s, "wc", "1", SyncAction::Delivered);
    for _ in 0..5 {
        assert!(matches!(hub.sync(&req).await, SyncOutcome::Retry { .. }));
    }
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(30)).await;
    tokio::time::resume();
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Retry { last_status: Some(503), .. }), "the probe");
    assert_eq!(health(&hub, Platform::Woocommerce, "wc").breaker, BreakerState::Open);
    assert_eq!(s.requests().len(), 6);
}

#[tokio::test]
async fn a_hanging_shopify_store_does_not_delay_a_woocommerce_sync() {
    let shopify = StandIn::start(Platform::Shopify).await;
    let woo = StandIn::start(Platform::Woocommerce).await;
    shopify.seed_order("1", "OPEN");
    woo.seed_order("727", "processing");
    shopify.set_fault(Fault::Hang);
    let hub = ConnectorHub::new(ConnectorConfig { timeout_standard: Duration::from_secs(2), ..config() });

    let hanging = {
        let hub = hub.clone();
        let req = request(&shopify, "shop", "1", SyncAction::PickedUp);
        tokio::spawn(async move { hub.sync(&req).await })
    };
    let started = Instant::now();
    let woo_outcome = hub.sync(&request(&woo, "wc", "727", SyncAction::Delivered)).await;
    assert!(matches!(woo_outcome, SyncOutcome::Done { .. }), "{woo_outcome:?}");
    assert!(!hanging.is_finished(), "the Shopify call should still be hanging when WooCommerce is done");
    assert!(started.elapsed() < Duration::from_secs(2));

    match hanging.await.unwrap() {
        SyncOutcome::Retry { error, .. } => assert!(error.contains("timed out"), "{error}"),
        other => panic!("expected the tier timeout to fire, got {other:?}"),
    }
}

#[tokio::test]
async fn the_bulkhead_bounds_one_store_and_leaves_another_alone() {
    let stuck = StandIn::start(Platform::Shopify).await;
    let other = StandIn::start(Platform::Shopify).await;
    stuck.seed_order("1", "OPEN");
    other.seed_order("1", "OPEN");
    stuck.set_fault(Fault::Hang);
    let hub = ConnectorHub::new(ConnectorConfig {
        timeout_standard: Duration::from_secs(3),
        max_concurrency_per_store: 2,
        bulkhead_wait: Duration::from_millis(100),
        ..config()
    });

    let hanging: Vec<_> = (0..2)
        .map(|_| {
            let hub = hub.clone();
            let req = request(&stuck, "stuck", "1", SyncAction::PickedUp);
            tokio::spawn(async move { hub.sync(&req).await })
        })
        .collect();
    // Both hanging calls hold a bulkhead slot once the stand-in has their requests.
    tokio::time::timeout(Duration::from_secs(3), async {
        while stuck.requests().len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("both calls reach the stand-in");
    assert_eq!(health(&hub, Platform::Shopify, "stuck").in_flight, 2);

    let third = hub.sync(&request(&stuck, "stuck", "1", SyncAction::PickedUp)).await;
    assert!(matches!(third, SyncOutcome::Deferred { .. }), "the third call waits for a slot, then defers: {third:?}");
    assert_eq!(stuck.requests().len(), 2, "the deferred call never went out");

    let elsewhere = hub.sync(&request(&other, "other", "1", SyncAction::PickedUp)).await;
    assert!(matches!(elsewhere, SyncOutcome::Done { .. }), "{elsewhere:?}");
    for task in hanging {
        task.abort();
    }
}

#[tokio::test]
async fn the_tier_sets_the_timeout() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.seed_order("1", "11");
    s.seed_order("2", "11");
    s.set_fault(Fault::Slow(Duration::from_millis(300)));
    let hub = ConnectorHub::new(ConnectorConfig {
        timeout_standard: Duration::from_millis(200),
        timeout_enterprise: Duration::from_secs(5),
        ..config()
    });

    let standard = hub.sync(&request(&s, "std", "1", SyncAction::PickedUp)).await;
    assert!(matches!(&standard, SyncOutcome::Retry { error, .. } if error.contains("timed out")), "{standard:?}");
    let mut enterprise = request(&s, "ent", "2", SyncAction::PickedUp);
    enterprise.target.tier = Tier::Enterprise;
    assert!(matches!(hub.sync(&enterprise).await, SyncOutcome::Done { .. }));
}

#[tokio::test]
async fn the_platform_breaker_defers_every_store_of_a_failing_hosted_platform() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.set_fault(Fault::Status5xx(502));
    let hub = ConnectorHub::new(ConnectorConfig {
        platform_breaker: Some(BreakerConfig { min_calls: 4, ..BreakerConfig::platform_default() }),
        ..config()
    });
    s.seed_order("1", "11");
    // Four stores, one failure each: no store breaker opens, the platform's does.
    for store in ["a", "b", "c", "d"] {
        assert!(matches!(hub.sync(&request(&s, store, "1", SyncAction::PickedUp)).await, SyncOutcome::Retry { .. }));
    }
    let fresh = hub.sync(&request(&s, "e", "1", SyncAction::PickedUp)).await;
    assert!(matches!(fresh, SyncOutcome::Deferred { .. }), "{fresh:?}");
    let h = health(&hub, Platform::Bigcommerce, "a");
    assert_eq!((h.breaker, h.platform_breaker), (BreakerState::Closed, BreakerState::Open));
}

#[tokio::test]
async fn the_client_side_bucket_defers_a_store_that_would_exceed_its_budget() {
    let s = StandIn::start(Platform::Woocommerce).await;
    s.seed_order("1", "processing");
    let mut cfg = config();
    cfg.rate.woocommerce = lastmile_connectors::Bucket::new(0.1, 2);
    cfg.rate.max_wait = Duration::from_millis(50);
    let hub = ConnectorHub::new(cfg);
    let req = request(&s, "wc", "1", SyncAction::Delivered);

    assert!(matches!(hub.sync(&req).await, SyncOutcome::Done { .. }));
    match hub.sync(&req).await {
        SyncOutcome::Deferred { until } => assert!(until > Duration::from_secs(15), "{until:?}"),
        other => panic!("expected Deferred by the token bucket, got {other:?}"),
    }
    assert_eq!(s.requests().len(), 2);
}

use crate::helpers::{hub, request, target};
use lastmile_connectors::{Credentials, FetchError, SyncAction, SyncOutcome};
use lastmile_core::Platform;
use lastmile_standins::{Fault, StandIn, ACCESS_TOKEN, BIGCOMMERCE_STORE_HASH};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn picked_up_sets_shipped_with_the_documented_headers() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.seed_order("218", "11");
    let req = request(&s, "bc-1", "218", SyncAction::PickedUp);

    let outcome = hub().sync(&req).await;
    assert!(matches!(outcome, SyncOutcome::Done { status: 200, .. }), "{outcome:?}");
    assert_eq!(s.order_status("218").as_deref(), Some("2"));

    let requests = s.requests();
    let path = format!("/stores/{BIGCOMMERCE_STORE_HASH}/v2/orders/218");
    assert_eq!(requests.len(), 2);
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("GET", path.as_str()));
    assert_eq!((requests[1].method.as_str(), requests[1].path.as_str()), ("PUT", path.as_str()));
    assert_eq!(requests[1].json(), Some(json!({"status_id": 2})));
    assert!(requests[1].header("content-type").unwrap().starts_with("application/json"));
    for r in &requests {
        assert_eq!(r.header("x-auth-token"), Some(ACCESS_TOKEN));
        assert_eq!(r.header("accept"), Some("application/json"));
    }
}

#[tokio::test]
async fn delivered_completes_once_however_often_it_is_replayed() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.seed_order("219", "2");
    s.set_fault_times(Fault::ApplyThen5xx(504), 1);
    let hub = hub();
    let req = request(&s, "bc-1", "219", SyncAction::Delivered);

    assert!(matches!(hub.sync(&req).await, SyncOutcome::Retry { last_status: Some(504), .. }));
    assert_eq!(hub.sync(&req).await, SyncOutcome::AlreadyDone);
    assert_eq!(hub.sync(&req).await, SyncOutcome::AlreadyDone);
    assert_eq!(s.order_status("219").as_deref(), Some("10"));
    assert_eq!(s.fulfilment_count("219"), 1);

    // Picked up after completion (a late job) does not move the order back to Shipped.
    let late = request(&s, "bc-1", "219", SyncAction::PickedUp);
    assert_eq!(hub.sync(&late).await, SyncOutcome::AlreadyDone);
    assert_eq!(s.order_status("219").as_deref(), Some("10"));
}

#[tokio::test]
async fn a_cancelled_order_is_not_changed_and_failed_makes_no_call() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.seed_order("220", "5");
    let hub = hub();
    let outcome = hub.sync(&request(&s, "bc-1", "220", SyncAction::Delivered)).await;
    assert!(matches!(outcome, SyncOutcome::Permanent { .. }), "{outcome:?}");
    assert_eq!(s.fulfilment_count("220"), 0);

    s.clear_requests();
    let failed = SyncAction::Failed { reason: "address not found".into() };
    assert_eq!(hub.sync(&request(&s, "bc-1", "220", failed)).await, SyncOutcome::AlreadyDone);
    assert!(s.requests().is_empty());
}

#[tokio::test]
async fn a_429_waits_for_the_rate_limit_reset_header() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.seed_order("221", "11");
    // Longer than the hub's rate wait (5 s), so the next call is deferred, not held.
    s.set_fault(Fault::TooManyRequests { retry_after_s: 12 });
    let hub = hub();
    let req = request(&s, "bc-1", "221", SyncAction::PickedUp);
    match hub.sync(&req).await {
        SyncOutcome::Retry { retry_after, last_status: Some(429), .. } => {
            assert_eq!(retry_after, Some(Duration::from_millis(12_000)))
        }
        other => panic!("expected Retry with X-Rate-Limit-Time-Reset-Ms, got {other:?}"),
    }
    match hub.sync(&req).await {
        SyncOutcome::Deferred { until } => assert!(until > Duration::from_secs(11), "{until:?}"),
        other => panic!("expected Deferred while the store is paused, got {other:?}"),
    }
    assert_eq!(s.requests().len(), 1);
}

#[tokio::test]
async fn a_wrong_token_is_permanent_401() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.seed_order("222", "11");
    let mut req = request(&s, "bc-1", "222", SyncAction::PickedUp);
    req.target.credentials = Credentials::AccessToken("wrong".into());
    let outcome = hub().sync(&req).await;
    assert!(matches!(outcome, SyncOutcome::Permanent { last_status: Some(401), .. }), "{outcome:?}");
}

#[tokio::test]
async fn fetch_returns_the_order_products_and_addresses_for_that_id() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.seed_order("4242", "11");
    let bodies = hub().fetch_bigcommerce_order(&target(&s, "bc-1"), "4242").await.expect("fetch");

    let order: Value = serde_json::from_slice(&bodies.order).unwrap();
    assert_eq!(order["id"], 4242);
    assert_eq!(order["status_id"], 11);
    assert_eq!(order["billing_address"]["email"], "janedoe@example.com");
    let products: Value = serde_json::from_slice(&bodies.products).unwrap();
    assert_eq!(products.as_array().unwrap().len(), 2);
    assert!(products.as_array().unwrap().iter().all(|p| p["order_id"] == 4242));
    let addresses: Value = serde_json::from_slice(&bodies.shipping_addresses).unwrap();
    assert_eq!(addresses[0]["street_1"], "666 Sussex St");
    assert_eq!(addresses[0]["order_id"], 4242);

    let paths: Vec<String> = s.requests().into_iter().map(|r| r.path).collect();
    let base = format!("/stores/{BIGCOMMERCE_STORE_HASH}/v2/orders/4242");
    assert_eq!(paths, [base.clone(), format!("{base}/products"), format!("{base}/shipping_addresses")]);
}

#[tokio::test]
async fn fetch_errors_are_classified() {
    let s = StandIn::start(Platform::Bigcommerce).await;
    s.seed_order("4243", "11");
    let hub = hub();
    let target = target(&s, "bc-1");

    assert_eq!(hub.fetch_bigcommerce_order(&target, "9999").await, Err(FetchError::NotFound));
    s.set_fault(Fault::Malformed);
    assert!(matches!(hub.fetch_bigcommerce_order(&target, "4243").await, Err(FetchError::Retry { .. })));
    s.set_fault(Fault::None);
    let mut wrong = target.clone();
    wrong.credentials = Credentials::AccessToken("nope".into());
    assert!(matches!(
        hub.fetch_bigcommerce_order(&wrong, "4243").await,
        Err(FetchError::Permanent { last_status: Some(401), .. })
    ));
}

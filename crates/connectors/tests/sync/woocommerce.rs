use crate::helpers::{hub, request};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lastmile_connectors::{Credentials, SyncAction, SyncOutcome};
use lastmile_core::Platform;
use lastmile_standins::{Fault, StandIn, CONSUMER_KEY, CONSUMER_SECRET};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn delivered_completes_the_order_with_basic_auth() {
    let s = StandIn::start(Platform::Woocommerce).await;
    s.seed_order("727", "processing");
    let req = request(&s, "wc-1", "727", SyncAction::Delivered);

    let outcome = hub().sync(&req).await;
    assert!(matches!(outcome, SyncOutcome::Done { status: 200, .. }), "{outcome:?}");
    assert_eq!(s.order_status("727").as_deref(), Some("completed"));

    let requests = s.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("GET", "/wp-json/wc/v3/orders/727"));
    assert_eq!((requests[1].method.as_str(), requests[1].path.as_str()), ("PUT", "/wp-json/wc/v3/orders/727"));
    // The documented update body (woocommerce_update_order_727_request.json), nothing more.
    assert_eq!(requests[1].json(), Some(json!({"status": "completed"})));
    let basic = format!("Basic {}", STANDARD.encode(format!("{CONSUMER_KEY}:{CONSUMER_SECRET}")));
    for r in &requests {
        assert_eq!(r.header("authorization"), Some(basic.as_str()));
    }
    assert_eq!(requests[1].header("idempotency-key"), Some(req.idempotency_key.as_str()));
}

#[tokio::test]
async fn replays_and_lost_answers_complete_exactly_once() {
    let s = StandIn::start(Platform::Woocommerce).await;
    s.seed_order("728", "processing");
    s.set_fault_times(Fault::ApplyThen5xx(502), 1);
    let hub = hub();
    let req = request(&s, "wc-1", "728", SyncAction::Delivered);

    assert!(matches!(hub.sync(&req).await, SyncOutcome::Retry { last_status: Some(502), .. }));
    assert_eq!(hub.sync(&req).await, SyncOutcome::AlreadyDone);
    assert_eq!(hub.sync(&req).await, SyncOutcome::AlreadyDone);
    assert_eq!(s.fulfilment_count("728"), 1);
}

#[tokio::test]
async fn picked_up_makes_no_call_and_a_cancelled_order_is_not_reopened() {
    let s = StandIn::start(Platform::Woocommerce).await;
    s.seed_order("729", "cancelled");
    let hub = hub();

    assert_eq!(hub.sync(&request(&s, "wc-1", "729", SyncAction::PickedUp)).await, SyncOutcome::AlreadyDone);
    assert!(s.requests().is_empty());

    let outcome = hub.sync(&request(&s, "wc-1", "729", SyncAction::Delivered)).await;
    assert!(matches!(outcome, SyncOutcome::Permanent { .. }), "{outcome:?}");
    assert_eq!(s.order_status("729").as_deref(), Some("cancelled"));
    assert_eq!(s.fulfilment_count("729"), 0);
}

#[tokio::test]
async fn a_wrong_secret_is_permanent_401() {
    let s = StandIn::start(Platform::Woocommerce).await;
    s.seed_order("730", "processing");
    let mut req = request(&s, "wc-1", "730", SyncAction::Delivered);
    req.target.credentials = Credentials::ConsumerKey { key: CONSUMER_KEY.into(), secret: "cs_wrong".into() };
    match hub().sync(&req).await {
        SyncOutcome::Permanent { last_status: Some(401), last_body: Some(body), .. } => {
            assert!(body.contains("woocommerce_rest_authentication_error"), "{body}")
        }
        other => panic!("expected Permanent 401, got {other:?}"),
    }
    // A store configured with the wrong kind of credentials never reaches the platform.
    req.target.credentials = Credentials::AccessToken("x".into());
    s.clear_requests();
    assert!(matches!(hub().sync(&req).await, SyncOutcome::Permanent { last_status: None, .. }));
    assert!(s.requests().is_empty());
}

#[tokio::test]
async fn a_429_is_retry_after_its_delay() {
    let s = StandIn::start(Platform::Woocommerce).await;
    s.seed_order("731", "processing");
    s.set_fault(Fault::TooManyRequests { retry_after_s: 4 });
    match hub().sync(&request(&s, "wc-1", "731", SyncAction::Delivered)).await {
        SyncOutcome::Retry { retry_after, last_status: Some(429), .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(4)))
        }
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_and_5xx_are_retry() {
    let s = StandIn::start(Platform::Woocommerce).await;
    s.seed_order("732", "processing");
    let hub = hub();
    s.set_fault(Fault::Malformed);
    let req = request(&s, "wc-1", "732", SyncAction::Delivered);
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Retry { last_status: Some(200), .. }));
    s.set_fault(Fault::Status5xx(500));
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Retry { last_status: Some(500), .. }));
    assert_eq!(s.fulfilment_count("732"), 0);
}

#[tokio::test]
async fn a_short_429_pause_is_waited_out_rather_than_deferred() {
    let s = StandIn::start(Platform::Woocommerce).await;
    s.seed_order("733", "processing");
    s.set_fault_times(Fault::TooManyRequests { retry_after_s: 1 }, 1);
    let hub = hub();
    let req = request(&s, "wc-1", "733", SyncAction::Delivered);
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Retry { retry_after: Some(_), .. }));
    // 1 s is within the hub's rate wait: the next call holds until the pause ends, then goes.
    let started = tokio::time::Instant::now();
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Done { .. }));
    assert!(started.elapsed() >= Duration::from_millis(900), "the call went out before the pause ended");
}

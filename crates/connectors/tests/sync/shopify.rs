use crate::helpers::{health, hub, request};
use lastmile_connectors::{Credentials, SyncAction, SyncOutcome};
use lastmile_core::Platform;
use lastmile_standins::{AppliedWrite, Fault, StandIn, ACCESS_TOKEN};
use std::time::Duration;

const GRAPHQL_PATH: &str = "/admin/api/2025-01/graphql.json";

fn writes(s: &StandIn, order: &str) -> Vec<String> {
    s.writes(order).into_iter().map(|AppliedWrite { what, .. }| what).collect()
}

#[tokio::test]
async fn picked_up_fulfils_the_open_order_once_with_tracking() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("820982911946154508", "OPEN");
    let hub = hub();
    let req = request(&s, "store-1", "820982911946154508", SyncAction::PickedUp);

    let outcome = hub.sync(&req).await;
    assert!(matches!(outcome, SyncOutcome::Done { status: 200, .. }), "{outcome:?}");
    assert_eq!(s.order_status("820982911946154508").as_deref(), Some("FULFILLED"));
    assert_eq!(s.fulfilment_count("820982911946154508"), 1);

    let requests = s.requests();
    assert_eq!(requests.len(), 2, "one check, one write");
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, GRAPHQL_PATH);
        assert_eq!(r.header("x-shopify-access-token"), Some(ACCESS_TOKEN));
    }
    let check = requests[0].json().unwrap();
    assert_eq!(check["variables"]["id"], "gid://shopify/Order/820982911946154508");
    let create = requests[1].json().unwrap();
    assert!(create["query"].as_str().unwrap().contains("fulfillmentCreate(fulfillment: $fulfillment)"));
    let input = &create["variables"]["fulfillment"];
    assert!(input["lineItemsByFulfillmentOrder"][0]["fulfillmentOrderId"]
        .as_str()
        .unwrap()
        .starts_with("gid://shopify/FulfillmentOrder/"));
    assert_eq!(input["trackingInfo"]["url"], "https://lastmile.example/t/820982911946154508");
    assert_eq!(input["trackingInfo"]["number"], "LM-820982911946154508");
    assert_eq!(requests[1].header("idempotency-key"), Some(req.idempotency_key.as_str()));
}

#[tokio::test]
async fn replaying_picked_up_never_fulfils_twice() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("1001", "OPEN");
    let hub = hub();
    let req = request(&s, "store-1", "1001", SyncAction::PickedUp);

    assert!(matches!(hub.sync(&req).await, SyncOutcome::Done { .. }));
    assert_eq!(hub.sync(&req).await, SyncOutcome::AlreadyDone);
    assert_eq!(hub.sync(&req).await, SyncOutcome::AlreadyDone);
    assert_eq!(s.fulfilment_count("1001"), 1);
}

#[tokio::test]
async fn a_lost_answer_then_a_retry_fulfils_exactly_once() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("1002", "OPEN");
    // The platform fulfils, but the answer that comes back is a 502.
    s.set_fault_times(Fault::ApplyThen5xx(502), 1);
    let hub = hub();
    let req = request(&s, "store-1", "1002", SyncAction::PickedUp);

    match hub.sync(&req).await {
        SyncOutcome::Retry { last_status: Some(502), .. } => {}
        other => panic!("expected Retry after a 502, got {other:?}"),
    }
    assert_eq!(hub.sync(&req).await, SyncOutcome::AlreadyDone);
    assert_eq!(writes(&s, "1002"), ["fulfillmentCreate"]);
}

#[tokio::test]
async fn delivered_fulfils_if_needed_then_adds_one_delivered_event() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("2001", "OPEN");
    s.seed_order("2002", "FULFILLED");
    let hub = hub();

    // Never picked up (the pick-up sync was lost): fulfil, then mark delivered.
    let req = request(&s, "store-1", "2001", SyncAction::Delivered);
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Done { .. }));
    assert_eq!(hub.sync(&req).await, SyncOutcome::AlreadyDone);
    assert_eq!(writes(&s, "2001"), ["fulfillmentCreate", "fulfillmentEventCreate:DELIVERED"]);
    assert_eq!(s.order_status("2001").as_deref(), Some("DELIVERED"));

    // Already fulfilled: only the event.
    let req = request(&s, "store-1", "2002", SyncAction::Delivered);
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Done { .. }));
    assert_eq!(writes(&s, "2002"), ["fulfillmentEventCreate:DELIVERED"]);
    let event = s.requests().last().unwrap().json().unwrap();
    assert_eq!(event["variables"]["fulfillmentEvent"]["status"], "DELIVERED");
}

#[tokio::test]
async fn delivered_interrupted_between_fulfilment_and_event_resumes_without_refulfilling() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("2003", "OPEN");
    s.set_fault_times(Fault::ApplyThen5xx(503), 1);
    let hub = hub();
    let req = request(&s, "store-1", "2003", SyncAction::Delivered);

    assert!(matches!(hub.sync(&req).await, SyncOutcome::Retry { last_status: Some(503), .. }));
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Done { .. }));
    assert_eq!(hub.sync(&req).await, SyncOutcome::AlreadyDone);
    assert_eq!(writes(&s, "2003"), ["fulfillmentCreate", "fulfillmentEventCreate:DELIVERED"]);
}

#[tokio::test]
async fn failed_adds_a_failure_event_only_to_a_fulfilled_order_and_cancelled_makes_no_call() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("3001", "FULFILLED");
    s.seed_order("3002", "OPEN");
    let hub = hub();

    let failed = SyncAction::Failed { reason: "customer not home".into() };
    assert!(matches!(hub.sync(&request(&s, "store-1", "3001", failed.clone())).await, SyncOutcome::Done { .. }));
    assert_eq!(writes(&s, "3001"), ["fulfillmentEventCreate:FAILURE"]);
    let event = s.requests().last().unwrap().json().unwrap();
    assert_eq!(event["variables"]["fulfillmentEvent"]["message"], "customer not home");

    assert_eq!(hub.sync(&request(&s, "store-1", "3002", failed)).await, SyncOutcome::AlreadyDone);
    assert!(writes(&s, "3002").is_empty());

    s.clear_requests();
    assert_eq!(hub.sync(&request(&s, "store-1", "3002", SyncAction::Cancelled)).await, SyncOutcome::AlreadyDone);
    assert!(s.requests().is_empty(), "cancelled maps to no call");
}

#[tokio::test]
async fn a_wrong_token_is_permanent_401_and_shows_in_health() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("4001", "OPEN");
    let hub = hub();
    let mut req = request(&s, "store-1", "4001", SyncAction::PickedUp);
    req.target.credentials = Credentials::AccessToken("shpat_wrong".into());

    match hub.sync(&req).await {
        SyncOutcome::Permanent { last_status: Some(401), last_body: Some(body), .. } => {
            assert!(body.contains("Invalid API key or access token"), "{body}");
        }
        other => panic!("expected Permanent 401, got {other:?}"),
    }
    assert_eq!(s.fulfilment_count("4001"), 0);
    let h = health(&hub, Platform::Shopify, "store-1");
    assert_eq!((h.attempts, h.failures, h.consecutive_failures), (1, 1, 1));
    assert!(h.last_error.unwrap().contains("401"));
    assert!(h.degraded_since.is_some());
}

#[tokio::test]
async fn an_unknown_order_is_permanent() {
    let s = StandIn::start(Platform::Shopify).await;
    let outcome = hub().sync(&request(&s, "store-1", "999", SyncAction::PickedUp)).await;
    assert!(matches!(outcome, SyncOutcome::Permanent { .. }), "{outcome:?}");
}

#[tokio::test]
async fn a_429_is_retry_after_its_delay_and_pauses_the_store() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("5001", "OPEN");
    s.set_fault(Fault::TooManyRequests { retry_after_s: 7 });
    let hub = hub();
    let req = request(&s, "store-1", "5001", SyncAction::PickedUp);

    match hub.sync(&req).await {
        SyncOutcome::Retry { retry_after, last_status: Some(429), .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("expected Retry with Retry-After, got {other:?}"),
    }
    // Paused: the next call does not reach the platform.
    match hub.sync(&req).await {
        SyncOutcome::Deferred { until } => assert!(until > Duration::from_secs(6) && until <= Duration::from_secs(7)),
        other => panic!("expected Deferred while paused, got {other:?}"),
    }
    assert_eq!(s.requests().len(), 1);
    let h = health(&hub, Platform::Shopify, "store-1");
    assert!(h.rate_limited_until.is_some());
    assert_eq!(h.breaker, lastmile_connectors::BreakerState::Closed, "a 429 is not a health failure");
}

#[tokio::test]
async fn graphql_throttled_is_retry() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("5002", "OPEN");
    s.set_fault(Fault::GraphqlThrottled);
    let outcome = hub().sync(&request(&s, "store-1", "5002", SyncAction::PickedUp)).await;
    match outcome {
        // (2000-ish cost bucket has 2 left, query asks 12, restores 100/s): the 1 s floor.
        SyncOutcome::Retry { retry_after: Some(wait), last_status: Some(200), .. } => {
            assert_eq!(wait, Duration::from_secs(1))
        }
        other => panic!("expected Retry for THROTTLED, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_json_is_retry_and_writes_nothing() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("6001", "OPEN");
    s.set_fault(Fault::Malformed);
    let hub = hub();
    let req = request(&s, "store-1", "6001", SyncAction::PickedUp);
    match hub.sync(&req).await {
        SyncOutcome::Retry { error, last_status: Some(200), last_body: Some(_), .. } => {
            assert!(error.contains("malformed"), "{error}")
        }
        other => panic!("expected Retry for a malformed answer, got {other:?}"),
    }
    assert_eq!(s.fulfilment_count("6001"), 0);
    s.set_fault(Fault::None);
    assert!(matches!(hub.sync(&req).await, SyncOutcome::Done { .. }));
}

#[tokio::test]
async fn a_5xx_is_retry() {
    let s = StandIn::start(Platform::Shopify).await;
    s.seed_order("7001", "OPEN");
    s.set_fault(Fault::Status5xx(503));
    let outcome = hub().sync(&request(&s, "store-1", "7001", SyncAction::PickedUp)).await;
    assert!(matches!(outcome, SyncOutcome::Retry { last_status: Some(503), .. }), "{outcome:?}");
}

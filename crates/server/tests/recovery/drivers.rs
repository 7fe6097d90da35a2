//! A driver who signs off, is revoked or falls silent while holding an accepted order loses
//! it: the order is offered to another driver and the first one is told
//! (`assignment_cancelled`). A picked-up order is flagged for ops instead.

use super::support::*;
use crate::helpers::*;
use lastmile_core::{DriverId, OrderId};
use serde_json::json;

/// The near driver accepted the order; the far one is waiting, online.
async fn accepted_by_near(s: &Scene) -> (OnlineDriver, OnlineDriver, OrderId) {
    let mut near = s.online_driver("Pekka Lahtinen", NEAR).await;
    let far = s.online_driver("Ville Lahtinen", FAR).await;
    let order = s.order().await;
    near.accept(&order).await;
    assert_eq!(s.active_count(&near.id).await, 1);
    (near, far, order)
}

/// After losing `order`: nothing held, told why, and the order offered to `next`.
async fn assert_taken_back(s: &Scene, from: &DriverId, next: &mut OnlineDriver, order: &OrderId, why: &str) {
    next.offered(order).await;
    assert_eq!(s.active_count(from).await, 0, "capacity released");
    let msgs = s.app.state.db.inbox_after(&s.tenant, from, 0, 100).await.unwrap();
    let told = msgs.iter().find(|m| m.kind == "assignment_cancelled").expect("the driver is told");
    assert_eq!(told.data["order_id"], order.as_str(), "{told:?}");
    assert!(told.data["reason"].as_str().is_some_and(|r| r.contains(why)), "{told:?}");
    let timeline = s.timeline(order).await;
    assert!(timeline.iter().any(|k| k == "order_unassigned"), "{timeline:?}");
    let o = s.order_json(order).await;
    assert_ne!(o["driver_id"], from.as_str(), "{o}");
}

async fn offline_driver_loses_accepted_order(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let (mut near, mut far, order) = accepted_by_near(&s).await;
    s.app.driver_status(&near.token, "offline").await;
    // The one still connected hears it on their socket too.
    let (told, _) = ws_until(&mut near.ws, "assignment_cancelled", WAIT).await;
    assert_eq!(told["data"]["order_id"], order.as_str(), "{told}");
    assert_taken_back(&s, &near.id, &mut far, &order, "offline").await;
    s.app.stop().await;
}

/// Revocation takes the order back and ends every open connection of the driver at once:
/// WebSocket (close 1008), event stream and long-poll.
async fn revoked_driver_loses_order_and_connections(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let (mut near, mut far, order) = accepted_by_near(&s).await;
    let mut sse = SseStream::open(&s.app, "/v1/driver/events?after=1000", Some(&near.token), None).await;
    let poll = {
        let req = s.app.http.get(s.app.url("/v1/driver/poll?after=1000&wait=30")).bearer_auth(&near.token);
        tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
    };
    let res = s.app.http.delete(s.app.url(&format!("/v1/drivers/{}", near.id))).bearer_auth(&s.admin).send().await;
    assert_eq!(res.unwrap().status(), 204);

    assert_closed_with(&mut near.ws, 1008).await;
    assert!(sse.ended(WAIT).await, "the event stream ends");
    let polled = tokio::time::timeout(WAIT, poll).await.expect("long-poll answered at once").unwrap().unwrap();
    assert_eq!(polled, 401, "a revoked driver's long-poll is refused");
    assert_taken_back(&s, &near.id, &mut far, &order, "revoked").await;
    // The token is dead for new connections too.
    let (st, _) = s.app.get_json("/v1/driver/poll", &near.token).await;
    assert_eq!(st, 401);
    s.app.stop().await;
}

async fn assert_closed_with(ws: &mut Ws, code: u16) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("socket closed in time") {
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(code));
                return;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Silent past `dispatch.abandon_s` (paused time): the order goes to the other driver and
/// the silent one is marked offline; silent for less, nothing happens.
async fn silent_driver_loses_accepted_order(backend: Backend) {
    // Real time, a short grace: paused time raced the real database and socket I/O of the
    // matching round that follows (and the edge's timers), so this waits for the server's
    // own background sweep instead, bounded by `WAIT`.
    let app = TestApp::spawn_with(backend, |c| c.dispatch.abandon_s = 4).await;
    let s = scene(app).await;
    let (near, mut far, order) = accepted_by_near(&s).await;
    let r = lastmile_server::recovery::sweep_once(&s.app.state).await.unwrap();
    assert!(r.is_empty(), "a moment of silence is within the grace: {r:?}");
    assert_eq!(s.order_json(&order).await["status"], "assigned");

    // No word from the driver for longer than the grace: the background sweep (every
    // second) takes the order back and it is offered to the other driver.
    assert_taken_back(&s, &near.id, &mut far, &order, "no word").await;
    assert_eq!(s.app.state.db.get_driver(&s.tenant, &near.id).await.unwrap().status, "offline");
    s.app.stop().await;
}

/// A revoked driver's picked-up order stays with them, flagged for ops with a reason and an
/// event, and is not offered to anyone else.
async fn picked_up_then_revoked_is_flagged(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let (near, far, order) = accepted_by_near(&s).await;
    let (st, body) = s.app.post_json(&format!("/v1/driver/orders/{order}/pickup"), &near.token, &json!({})).await;
    assert_eq!(st, 200, "{body}");
    let res = s.app.http.delete(s.app.url(&format!("/v1/drivers/{}", near.id))).bearer_auth(&s.admin).send().await;
    assert_eq!(res.unwrap().status(), 204);

    let o = s.order_json(&order).await;
    assert_eq!(o["status"], "picked_up", "{o}");
    let attention = &o["attention"];
    assert!(attention["reason"].as_str().is_some_and(|r| r.contains("revoked")), "{o}");
    assert_eq!(attention["driver_id"], near.id.as_str(), "{o}");
    assert!(attention["flagged_at"].is_string(), "{o}");
    let timeline = s.timeline(&order).await;
    assert_eq!(timeline.iter().filter(|k| *k == "order_needs_attention").count(), 1, "{timeline:?}");
    // A sweep later changes nothing (flagged once), and nobody else is offered it.
    let r = lastmile_server::recovery::sweep_once(&s.app.state).await.unwrap();
    assert!(r.is_empty(), "{r:?}");
    assert!(s.app.state.db.dispatch_candidates(100).await.unwrap().iter().all(|c| c.order.id != order));
    assert!(s.inbox_kinds(&far.id).await.is_empty(), "the other driver was offered nothing");
    s.app.stop().await;
}

crate::on_backends!(
    offline_driver_loses_accepted_order_to_another_driver => offline_driver_loses_accepted_order,
    revoked_driver_loses_order_and_every_connection => revoked_driver_loses_order_and_connections,
    picked_up_order_of_revoked_driver_is_flagged_not_redispatched => picked_up_then_revoked_is_flagged,
    silent_driver_loses_accepted_order_after_grace => silent_driver_loses_accepted_order,
);

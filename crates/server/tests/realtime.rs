//! The driver's real-time channel (invariant 7): one persisted, ordered inbox per driver,
//! the same over WebSocket, SSE and long-poll. A client that reconnects with its last seen
//! seq gets exactly what it missed, in order — also across a server restart. And the
//! customer's tracking stream emits a new view when the order changes.

#[path = "api/helpers.rs"]
mod helpers;

use helpers::*;
use lastmile_core::{DriverId, TenantId};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
/// Messages published while the client is away.
const MISSED: i64 = 5;

struct Driver {
    tenant: TenantId,
    id: DriverId,
    token: String,
}

async fn driver(app: &TestApp) -> Driver {
    let (tenant, admin) = app.tenant("acme").await;
    let (id, token) = app.driver(&admin, "Pekka Lahtinen").await;
    Driver { tenant: TenantId(tenant), id: DriverId(id), token }
}

/// Publish `n` notices; returns their seqs.
async fn publish(app: &TestApp, d: &Driver, n: i64, label: &str) -> Vec<i64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        let seq = app.state.db.push_inbox(&d.tenant, &d.id, "notice", json!({"label": label, "i": i})).await.unwrap();
        seqs.push(seq);
    }
    seqs
}

/// `msgs` are exactly the notices `label` 0..n with seqs `seqs`, in order.
fn assert_exactly(msgs: &[Value], seqs: &[i64], label: &str) {
    let got: Vec<(i64, &str, &str, i64)> = msgs
        .iter()
        .map(|m| {
            (
                m["seq"].as_i64().unwrap(),
                m["type"].as_str().unwrap(),
                m["data"]["label"].as_str().unwrap_or(""),
                m["data"]["i"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let want: Vec<(i64, &str, &str, i64)> =
        seqs.iter().enumerate().map(|(i, s)| (*s, "notice", label, i as i64)).collect();
    assert_eq!(got, want);
}

async fn ws_read(ws: &mut Ws, n: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(ws_next(ws, WAIT).await);
    }
    out
}

/// After reading `expected`, a marker published now must be the very next message: nothing
/// extra (no duplicate, nothing skipped back to) came in between.
async fn ws_then_marker(app: &TestApp, d: &Driver, ws: &mut Ws) {
    let marker = publish(app, d, 1, "marker").await;
    assert_exactly(&[ws_next(ws, WAIT).await], &marker, "marker");
}

/// Restart the app, failing if open connections hold its graceful shutdown up.
async fn restart(app: TestApp) -> TestApp {
    tokio::time::timeout(WAIT, app.restart()).await.expect("restart with clients connected")
}

async fn stop(app: TestApp) {
    tokio::time::timeout(WAIT, app.stop()).await.expect("stop with clients connected");
}

async fn assert_closed_going_away(ws: &mut Ws) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("socket closed in time") {
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| f.code), Some(CloseCode::Away));
                return;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn websocket_resume(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let d = driver(&app).await;
    let early = publish(&app, &d, 2, "early").await;
    let mut ws = app.driver_ws(&d.token, 0).await;
    assert_exactly(&ws_read(&mut ws, 2).await, &early, "early");
    // Live: a message published while connected arrives without reconnecting.
    ws_then_marker(&app, &d, &mut ws).await;
    let last_seen = early[1] + 1;
    ws.close(None).await.unwrap();

    let missed = publish(&app, &d, MISSED, "missed").await;
    let mut ws = app.driver_ws(&d.token, last_seen).await;
    assert_exactly(&ws_read(&mut ws, MISSED).await, &missed, "missed");
    ws_then_marker(&app, &d, &mut ws).await;
    let last_seen = missed[MISSED as usize - 1] + 1;

    ws.close(None).await.unwrap();

    // Across a restart: the inbox is in the database. A socket still open does not hold
    // the shutdown up; it is closed as "going away".
    let across = publish(&app, &d, MISSED, "across").await;
    let mut open = app.driver_ws(&d.token, across[MISSED as usize - 1]).await;
    let app = restart(app).await;
    assert_closed_going_away(&mut open).await;
    let mut ws = app.driver_ws(&d.token, last_seen).await;
    assert_exactly(&ws_read(&mut ws, MISSED).await, &across, "across");
    ws_then_marker(&app, &d, &mut ws).await;
    stop(app).await;
}

async fn sse_read(sse: &mut SseStream, n: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        let ev = sse.next_event(WAIT).await;
        let msg: Value = serde_json::from_str(&ev.data).expect("JSON data");
        assert_eq!(ev.id.as_deref(), Some(msg["seq"].to_string().as_str()), "`id:` is the seq");
        assert_eq!(ev.event.as_deref(), msg["type"].as_str(), "`event:` is the type");
        out.push(msg);
    }
    out
}

async fn sse_then_marker(app: &TestApp, d: &Driver, sse: &mut SseStream) {
    let marker = publish(app, d, 1, "marker").await;
    assert_exactly(&sse_read(sse, 1).await, &marker, "marker");
}

async fn sse_resume(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let d = driver(&app).await;
    let early = publish(&app, &d, 2, "early").await;
    let mut sse = SseStream::open(&app, "/v1/driver/events", Some(&d.token), None).await;
    assert_exactly(&sse_read(&mut sse, 2).await, &early, "early");
    sse_then_marker(&app, &d, &mut sse).await;
    let last_seen = early[1] + 1;
    drop(sse);

    let missed = publish(&app, &d, MISSED, "missed").await;
    let mut sse = SseStream::open(&app, "/v1/driver/events", Some(&d.token), Some(last_seen)).await;
    assert_exactly(&sse_read(&mut sse, MISSED).await, &missed, "missed");
    sse_then_marker(&app, &d, &mut sse).await;
    let last_seen = missed[MISSED as usize - 1] + 1;

    let across = publish(&app, &d, MISSED, "across").await;
    let app = restart(app).await;
    assert!(sse.ended(WAIT).await, "the open stream ends at shutdown");
    let mut sse = SseStream::open(&app, "/v1/driver/events", Some(&d.token), Some(last_seen)).await;
    assert_exactly(&sse_read(&mut sse, MISSED).await, &across, "across");
    sse_then_marker(&app, &d, &mut sse).await;
    drop(sse);
    // `?after=` works too, for clients that cannot set Last-Event-ID on their first request.
    let path = format!("/v1/driver/events?after={}", across[MISSED as usize - 2]);
    let mut sse = SseStream::open(&app, &path, Some(&d.token), None).await;
    let last = sse_read(&mut sse, 1).await;
    let got = (last[0]["seq"].as_i64(), last[0]["data"]["label"].as_str(), last[0]["data"]["i"].as_i64());
    assert_eq!(got, (Some(across[MISSED as usize - 1]), Some("across"), Some(MISSED - 1)));
    stop(app).await;
}

async fn poll(app: &TestApp, d: &Driver, after: i64, wait_s: u64) -> (Vec<Value>, i64) {
    let path = format!("/v1/driver/poll?after={after}&wait={wait_s}");
    let (status, body) =
        tokio::time::timeout(WAIT, app.get_json(&path, &d.token)).await.expect("long-poll answered in time");
    assert_eq!(status, 200, "{body}");
    (body["messages"].as_array().unwrap().clone(), body["next"].as_i64().unwrap())
}

async fn long_poll_resume(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let d = driver(&app).await;
    let early = publish(&app, &d, 2, "early").await;
    // Messages waiting: answered at once even with a long wait (the wait is 30 s, our limit 10 s).
    let (msgs, next) = poll(&app, &d, 0, 30).await;
    assert_exactly(&msgs, &early, "early");
    assert_eq!(next, early[1]);

    let missed = publish(&app, &d, MISSED, "missed").await;
    let (msgs, next) = poll(&app, &d, next, 0).await;
    assert_exactly(&msgs, &missed, "missed");
    assert_eq!(next, missed[MISSED as usize - 1]);
    let (none, same) = poll(&app, &d, next, 0).await;
    assert!(none.is_empty() && same == next, "nothing new: {none:?}, next {same}");

    // A waiting poll is answered by the next message.
    let waiting = {
        let (app_http, url, token) =
            (app.http.clone(), app.url(&format!("/v1/driver/poll?after={next}&wait=30")), d.token.clone());
        tokio::spawn(async move {
            app_http.get(url).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap()
        })
    };
    // Let the poll reach its wait: it answers with whatever is after `next` either way.
    tokio::task::yield_now().await;
    let marker = publish(&app, &d, 1, "marker").await;
    let body = tokio::time::timeout(WAIT, waiting).await.expect("woken long-poll").unwrap();
    assert_exactly(body["messages"].as_array().unwrap(), &marker, "marker");
    let next = body["next"].as_i64().unwrap();

    // A poll waiting at shutdown is answered (empty) rather than holding the shutdown up.
    let waiting = {
        let (http, url, token) =
            (app.http.clone(), app.url(&format!("/v1/driver/poll?after={}&wait=30", next + 100)), d.token.clone());
        tokio::spawn(
            async move { http.get(url).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap() },
        )
    };
    let across = publish(&app, &d, MISSED, "across").await;
    let app = restart(app).await;
    let body = tokio::time::timeout(WAIT, waiting).await.expect("answered at shutdown").unwrap();
    assert_eq!(body["messages"], json!([]), "{body}");
    let (msgs, next) = poll(&app, &d, next, 0).await;
    assert_exactly(&msgs, &across, "across");
    assert_eq!(next, across[MISSED as usize - 1]);
    stop(app).await;
}

on_backends!(
    websocket_resumes_with_exactly_what_was_missed => websocket_resume,
    sse_resumes_from_last_event_id => sse_resume,
    long_poll_resumes_after_seq => long_poll_resume,
);

/// Views until one with status `want` (each checked for leaks).
async fn next_view(sse: &mut SseStream, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = sse.next_event(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
        assert_eq!(ev.event.as_deref(), Some("tracking"));
        let view: Value = serde_json::from_str(&ev.data).unwrap();
        assert_tracking_leaks_nothing(&view);
        if view["status"] == want {
            return view;
        }
    }
}

/// The customer's stream: a view now, then a new view at every change of the order, each
/// leaking nothing.
async fn tracking_stream(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("acme").await;
    let store = app.store(&admin, "native", "acme-kitchen", "unused-secret").await;
    let jwt = app.client_token(&admin).await;
    let (_, token) = app.driver(&admin, "Pekka Lahtinen").await;
    let order = app.native_order(&jwt, store["id"].as_str().unwrap(), 60.1810, 24.9500).await;
    let tracking = order["tracking_token"].as_str().unwrap();
    let mut sse = SseStream::open(&app, &format!("/v1/track/{tracking}/events"), None, None).await;
    let first = next_view(&mut sse, "received").await;
    assert!(first["driver"].is_null(), "{first}");

    app.driver_status(&token, "online").await;
    let (st, body) = app.locate(&token, 60.1705, 24.9390).await;
    assert_eq!(st, 200, "{body}");
    let offered = next_view(&mut sse, "dispatching").await;
    assert!(offered["driver"].is_null(), "an offered driver is not shown: {offered}");
    let (s, body) = app.get_json("/v1/driver/poll?after=0&wait=10", &token).await;
    assert_eq!(s, 200, "{body}");
    let msgs = body["messages"].as_array().unwrap();
    let offer_id =
        msgs.iter().find(|m| m["type"] == "offer").expect("an offer")["data"]["offer_id"].as_str().unwrap().to_owned();
    let (st, body) = app.post_json(&format!("/v1/driver/offers/{offer_id}/accept"), &token, &json!({})).await;
    assert_eq!(st, 200, "{body}");
    let assigned = next_view(&mut sse, "assigned").await;
    assert_eq!(assigned["driver"]["first_name"], "Pekka");
    assert!(assigned["driver"].get("location").is_none() && assigned["eta"].is_string(), "{assigned}");

    let order_id = order["id"].as_str().unwrap();
    let (st, _) = app.post_json(&format!("/v1/driver/orders/{order_id}/pickup"), &token, &json!({})).await;
    assert_eq!(st, 200);
    let on_its_way = next_view(&mut sse, "picked_up").await;
    assert!(on_its_way["driver"]["location"]["lat"].is_f64(), "{on_its_way}");

    let (st, _) =
        app.post_json(&format!("/v1/orders/{order_id}/cancel"), &jwt, &json!({"reason": "customer moved"})).await;
    assert_eq!(st, 200);
    let cancelled = next_view(&mut sse, "cancelled").await;
    assert!(cancelled["eta"].is_null() && cancelled["driver"].is_null(), "{cancelled}");
    stop(app).await;
}

on_backends!(tracking_stream_emits_a_view_per_change => tracking_stream);

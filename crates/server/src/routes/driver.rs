//! The driver app's API (device token): status, GPS, offers, the delivery lifecycle, and
//! the inbox over three transports — WebSocket, SSE and long-poll — all reading the same
//! persisted, per-driver ordered inbox.

use crate::auth::DriverAuth;
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::gps::{self, Fix, FixOutcome};
use crate::state::AppState;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use lastmile_core::{GeoPoint, OfferId, Order, OrderId, OrderStatus};
use lastmile_storage::{InboxMessage, StallPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/driver/status", put(set_status))
        .route("/v1/driver/location", post(post_location))
        .route("/v1/driver/offers/{offer_id}/accept", post(accept_offer))
        .route("/v1/driver/offers/{offer_id}/decline", post(decline_offer))
        .route("/v1/driver/orders/{order_id}/pickup", post(pickup))
        .route("/v1/driver/orders/{order_id}/deliver", post(deliver))
        .route("/v1/driver/orders/{order_id}/fail", post(fail))
        .route("/v1/driver/ws", get(ws))
        .route("/v1/driver/events", get(sse))
        .route("/v1/driver/poll", get(poll))
}

const PAGE: i64 = 500;

#[derive(Debug, Deserialize, ToSchema)]
pub struct StatusInput {
    /// `online`, `offline` or `break`.
    status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusSet {
    pub status: String,
}

/// One fix, or a batch of them (sent after being offline).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum LocationInput {
    One(Fix),
    Batch(Vec<Fix>),
}

/// What became of one fix, or of each fix in a batch (in time order).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LocationResult {
    One {
        /// `accepted` or `coalesced`.
        result: &'static str,
    },
    Batch {
        results: Vec<FixResult>,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FixResult {
    pub index: usize,
    /// `accepted`, `coalesced` or `rejected`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfferDeclined {
    /// `declined`.
    pub result: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboxPage {
    pub messages: Vec<InboxMessage>,
    /// Pass as `after` next time.
    pub next: i64,
}

#[utoipa::path(put, path = "/v1/driver/status", tag = "driver", request_body = StatusInput,
    responses((status = 200, description = "Status set", body = StatusSet), (status = 422, description = "validation_failed")), security(("driver_token" = [])))]
pub async fn set_status(
    State(state): State<AppState>,
    auth: DriverAuth,
    Json(input): Json<StatusInput>,
) -> ApiResult<Json<StatusSet>> {
    if !matches!(input.status.as_str(), "online" | "offline" | "break") {
        return Err(ApiError::validation(vec![("status".into(), "must be online, offline or break".into())]));
    }
    if input.status == "offline" {
        // Signing off hands back the orders not yet picked up, in the same transaction.
        crate::recovery::sign_off(&state, &auth.tenant_id, &auth.driver_id).await?;
    } else {
        state.db.set_driver_status(&auth.tenant_id, &auth.driver_id, &input.status).await?;
    }
    state.fleet.set_status(&auth.tenant_id, &auth.driver_id, &input.status);
    Ok(Json(StatusSet { status: input.status }))
}

fn outcome_json(index: usize, o: &FixOutcome) -> FixResult {
    match o {
        FixOutcome::Rejected { code, message } => {
            FixResult { index, result: "rejected", code: Some(code), message: Some(message.clone()) }
        }
        other => FixResult { index, result: other.label(), code: None, message: None },
    }
}

#[utoipa::path(post, path = "/v1/driver/location", tag = "driver",
    request_body = LocationInput,
    responses((status = 200, description = "accepted / coalesced per fix", body = LocationResult), (status = 422, description = "invalid_location, stale_location, timestamp_in_future, implausible_jump")), security(("driver_token" = [])))]
pub async fn post_location(
    State(state): State<AppState>,
    auth: DriverAuth,
    Json(body): Json<Value>,
) -> ApiResult<Json<LocationResult>> {
    let parse = |v: Value| {
        serde_json::from_value::<Fix>(v).map_err(|e| ApiError::unprocessable("invalid_location", e.to_string()))
    };
    match body {
        Value::Array(items) => {
            let mut fixes = items.into_iter().map(parse).collect::<Result<Vec<_>, _>>()?;
            fixes.sort_by_key(|f| f.recorded_at);
            let results = fixes
                .iter()
                .enumerate()
                .map(|(i, f)| outcome_json(i, &gps::accept(&state, &auth.tenant_id, &auth.driver_id, f)))
                .collect();
            Ok(Json(LocationResult::Batch { results }))
        }
        single => {
            let fix = parse(single)?;
            match gps::accept(&state, &auth.tenant_id, &auth.driver_id, &fix) {
                FixOutcome::Rejected { code, message } => Err(ApiError::unprocessable(code, message)),
                ok => Ok(Json(LocationResult::One { result: ok.label() })),
            }
        }
    }
}

#[utoipa::path(post, path = "/v1/driver/offers/{offer_id}/accept", tag = "driver", params(("offer_id" = String, Path)), responses((status = 200, description = "The assigned order", body = Order), (status = 404, description = "No such offer"), (status = 409, description = "offer_closed or driver_at_capacity")), security(("driver_token" = [])))]
pub async fn accept_offer(
    State(state): State<AppState>,
    auth: DriverAuth,
    Path(offer): Path<String>,
) -> ApiResult<Json<Order>> {
    Ok(Json(do_accept(&state, &auth, &OfferId(offer)).await?))
}

async fn do_accept(state: &AppState, auth: &DriverAuth, offer: &OfferId) -> ApiResult<Order> {
    let mut order = state
        .db
        .accept_offer(&auth.tenant_id, &auth.driver_id, offer, state.clock.now_ms())
        .await
        .map_err(crate::routes::admin::not_found("offer"))?;
    refresh_eta(state, &mut order).await;
    Ok(order)
}

/// Give an order its driver holds an ETA now, from the driver's live position, rather than
/// at the driver's next move. Best effort: the step it follows has already committed.
async fn refresh_eta(state: &AppState, order: &mut Order) {
    match gps::live_eta(state, order).await {
        Ok(Some(eta)) => match state.db.set_order_eta(&order.tenant_id, &order.id, eta).await {
            Ok(()) => order.eta = Some(gps::fmt_ms(eta)),
            Err(e) => tracing::warn!(error = %e, order = %order.id, "storing the ETA failed"),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), order = %order.id, "computing the ETA failed"),
    }
}

#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct DeclineInput {
    reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/driver/offers/{offer_id}/decline", tag = "driver", params(("offer_id" = String, Path)), request_body(content = Option<DeclineInput>, description = "optional"),
    responses((status = 200, description = "Declined", body = OfferDeclined), (status = 404, description = "No such offer"), (status = 409, description = "offer_closed"), (status = 422, description = "invalid_body")), security(("driver_token" = [])))]
pub async fn decline_offer(
    State(state): State<AppState>,
    auth: DriverAuth,
    Path(offer): Path<String>,
    body: Bytes,
) -> ApiResult<Json<OfferDeclined>> {
    let input: DeclineInput = if body.is_empty() {
        DeclineInput::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable("invalid_body", e.to_string()))?
    };
    do_decline(&state, &auth, &OfferId(offer), input.reason.as_deref().unwrap_or("declined")).await?;
    Ok(Json(OfferDeclined { result: "declined" }))
}

async fn do_decline(state: &AppState, auth: &DriverAuth, offer: &OfferId, reason: &str) -> ApiResult<()> {
    let policy = StallPolicy { max_attempts: state.cfg.dispatch.max_attempts };
    state
        .db
        .decline_offer(&auth.tenant_id, &auth.driver_id, offer, reason, policy)
        .await
        .map_err(crate::routes::admin::not_found("offer"))?;
    state.fleet.set_busy(&auth.driver_id, false);
    Ok(())
}

async fn step(
    state: &AppState,
    auth: &DriverAuth,
    order: String,
    to: OrderStatus,
    detail: Value,
) -> ApiResult<Json<Order>> {
    let mut order = state
        .db
        .driver_order_step(&auth.tenant_id, &auth.driver_id, &OrderId(order), to, detail)
        .await
        .map_err(crate::routes::admin::not_found("order"))?;
    match to {
        OrderStatus::PickedUp => crate::eta::after_pickup(state, &order).await,
        OrderStatus::Delivered => crate::eta::after_delivery(state, &order).await,
        _ => {}
    }
    if to.is_terminal() {
        state.fleet.set_busy(&auth.driver_id, false);
    } else {
        refresh_eta(state, &mut order).await;
    }
    Ok(Json(order))
}

#[utoipa::path(post, path = "/v1/driver/orders/{order_id}/pickup", tag = "driver", params(("order_id" = String, Path)), responses((status = 200, description = "picked_up", body = Order), (status = 404, description = "No such order held by this driver"), (status = 409, description = "invalid_transition")), security(("driver_token" = [])))]
pub async fn pickup(
    State(state): State<AppState>,
    auth: DriverAuth,
    Path(order): Path<String>,
) -> ApiResult<Json<Order>> {
    step(&state, &auth, order, OrderStatus::PickedUp, Value::Null).await
}

/// Optional proof of delivery.
#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct DeliverInput {
    photo_url: Option<String>,
    recipient_name: Option<String>,
    lat: Option<f64>,
    lng: Option<f64>,
}

#[utoipa::path(post, path = "/v1/driver/orders/{order_id}/deliver", tag = "driver", params(("order_id" = String, Path)),
    request_body(content = Option<DeliverInput>, description = "optional proof"),
    responses((status = 200, description = "delivered", body = Order), (status = 404, description = "No such order held by this driver"), (status = 409, description = "invalid_transition"), (status = 422, description = "invalid_body or invalid_location")),
    security(("driver_token" = [])))]
pub async fn deliver(
    State(state): State<AppState>,
    auth: DriverAuth,
    Path(order): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Order>> {
    let input: DeliverInput = if body.is_empty() {
        DeliverInput::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable("invalid_body", e.to_string()))?
    };
    // Where was the driver when they marked it delivered? Their fix, else the live index.
    let at = match (input.lat, input.lng) {
        (Some(a), Some(b)) => {
            Some(GeoPoint::new(a, b).map_err(|e| ApiError::unprocessable("invalid_location", e.to_string()))?)
        }
        _ => state.fleet.driver(&auth.driver_id).and_then(|d| d.point),
    };
    let current = state
        .db
        .get_order(&auth.tenant_id, &OrderId(order.clone()))
        .await
        .map_err(crate::routes::admin::not_found("order"))?;
    let distance = at.zip(current.dropoff.point()).map(|(a, d)| a.distance_m(&d));
    let far = distance.is_some_and(|d| d > state.cfg.dispatch.deliver_distance_flag_m);
    if far {
        tracing::warn!(order = %order, distance_m = distance, "delivery marked far from the dropoff");
    }
    let position = at.map(|p| json!({"lat": p.lat, "lng": p.lng}));
    let detail = json!({"photo_url": input.photo_url, "recipient_name": input.recipient_name, "position": position, "distance_from_dropoff_m": distance, "far_from_dropoff": far});
    step(&state, &auth, order, OrderStatus::Delivered, detail).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FailInput {
    reason: String,
}

#[utoipa::path(post, path = "/v1/driver/orders/{order_id}/fail", tag = "driver", params(("order_id" = String, Path)), request_body = FailInput,
    responses((status = 200, description = "failed", body = Order), (status = 404, description = "No such order held by this driver"), (status = 409, description = "invalid_transition")), security(("driver_token" = [])))]
pub async fn fail(
    State(state): State<AppState>,
    auth: DriverAuth,
    Path(order): Path<String>,
    Json(input): Json<FailInput>,
) -> ApiResult<Json<Order>> {
    if input.reason.trim().is_empty() {
        return Err(ApiError::validation(vec![("reason".into(), "must not be empty".into())]));
    }
    step(&state, &auth, order, OrderStatus::Failed, json!({"reason": input.reason})).await
}

#[derive(Debug, Deserialize, Default)]
pub struct AfterQuery {
    after: Option<i64>,
    wait: Option<u64>,
}

fn wire(m: &InboxMessage) -> Value {
    json!({"seq": m.seq, "type": m.kind, "data": m.data})
}

#[utoipa::path(get, path = "/v1/driver/poll", tag = "driver", params(("after" = Option<i64>, Query), ("wait" = Option<u64>, Query, description = "seconds, at most 30")),
    responses((status = 200, description = "The inbox after `after`", body = InboxPage)), security(("driver_token" = [])))]
pub async fn poll(
    State(state): State<AppState>,
    auth: DriverAuth,
    Query(q): Query<AfterQuery>,
) -> ApiResult<Json<InboxPage>> {
    let after = q.after.unwrap_or(0).max(0);
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(30));
    let mut rx = state.hub.subscribe_driver(&auth.driver_id);
    let mut msgs = state.db.inbox_after(&auth.tenant_id, &auth.driver_id, after, PAGE).await?;
    if msgs.is_empty() && !wait.is_zero() {
        let deadline = tokio::time::Instant::now() + wait;
        // Ends on shutdown and when the driver is revoked.
        let mut closed = std::pin::pin!(state.hub.driver_session(&auth.driver_id).cancelled_owned());
        while msgs.is_empty() {
            tokio::select! {
                woken = tokio::time::timeout_at(deadline, rx.changed()) => match woken {
                    Ok(Ok(())) => msgs = state.db.inbox_after(&auth.tenant_id, &auth.driver_id, after, PAGE).await?,
                    _ => break,
                },
                // Shutting down: answer now (empty); the client polls again elsewhere.
                _ = &mut closed => {
                    if !state.hub.is_closing() {
                        return Err(ApiError::unauthorized("the driver token was revoked"));
                    }
                    break;
                }
            }
        }
    }
    let next = msgs.last().map(|m| m.seq).unwrap_or(after);
    Ok(Json(InboxPage { messages: msgs, next }))
}

#[utoipa::path(get, path = "/v1/driver/events", tag = "driver", params(("after" = Option<i64>, Query)),
    responses((status = 200, description = "`id:` is the seq; resume with Last-Event-ID", content_type = "text/event-stream", body = String)), security(("driver_token" = [])))]
pub async fn sse(
    State(state): State<AppState>,
    auth: DriverAuth,
    headers: HeaderMap,
    Query(q): Query<AfterQuery>,
) -> Response {
    let last_event_id =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<i64>().ok());
    let after = last_event_id.or(q.after).unwrap_or(0).max(0);
    let rx = state.hub.subscribe_driver(&auth.driver_id);
    // Ends on shutdown and when the driver is revoked.
    let closed = state.hub.driver_session(&auth.driver_id).cancelled_owned();
    let st = (state, auth, rx, after, std::collections::VecDeque::<InboxMessage>::new());
    let stream = futures::stream::unfold(st, |(state, auth, mut rx, mut after, mut queue)| async move {
        loop {
            if let Some(m) = queue.pop_front() {
                after = m.seq;
                let ev = SseEvent::default().id(m.seq.to_string()).event(m.kind.clone()).data(wire(&m).to_string());
                return Some((Ok::<_, Infallible>(ev), (state, auth, rx, after, queue)));
            }
            match state.db.inbox_after(&auth.tenant_id, &auth.driver_id, after, PAGE).await {
                Ok(msgs) if !msgs.is_empty() => queue.extend(msgs),
                Ok(_) => {
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SSE inbox read failed");
                    return None;
                }
            }
        }
    });
    let stream = stream.take_until(closed);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

#[utoipa::path(get, path = "/v1/driver/ws", tag = "driver", params(("after" = Option<i64>, Query), ("token" = Option<String>, Query, description = "for clients that cannot set headers")),
    responses((status = 101, description = "WebSocket: server sends {seq, type, data}; client sends ack, location, accept, decline"),
              (status = 405, description = "Not a GET"), (status = 426, description = "The connection cannot be upgraded")), security(("driver_token" = [])))]
pub async fn ws(
    State(state): State<AppState>,
    auth: DriverAuth,
    Query(q): Query<AfterQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let after = q.after.unwrap_or(0).max(0);
    // Small buffers: a node holds thousands of mostly idle driver sockets (budget ≤ 20 KiB each).
    upgrade
        .max_message_size(64 * 1024)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| driver_socket(state, auth, socket, after))
}

/// One message up the socket. A flat struct rather than an internally tagged enum: serde
/// would first buffer every message into a generic tree, and location messages are the hot
/// path — their `data` is kept as raw JSON and decoded once, straight into a [`Fix`].
#[derive(Debug, Deserialize)]
struct Upstream<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: Option<&'a serde_json::value::RawValue>,
    seq: Option<i64>,
    offer_id: Option<String>,
    reason: Option<String>,
}

/// Whether a socket read failed because a frame or message exceeded the size limit.
/// axum hides the WebSocket library's error type, so this reads its message.
fn is_too_big(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("too long") || text.contains("too big") || text.contains("Space limit")
}

fn ws_error(code: &str, message: &str) -> Message {
    Message::Text(json!({"type": "error", "data": {"code": code, "message": message}}).to_string().into())
}

async fn driver_socket(state: AppState, auth: DriverAuth, socket: WebSocket, mut after: i64) {
    let (mut tx, mut rx) = socket.split();
    let mut wake = state.hub.subscribe_driver(&auth.driver_id);
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    let mut last_heard = tokio::time::Instant::now();
    // Ends on shutdown and when the driver is revoked.
    let mut closed = std::pin::pin!(state.hub.driver_session(&auth.driver_id).cancelled_owned());
    metrics::gauge!("lastmile_driver_sockets").increment(1.0);
    // Wake at once so the backlog after `after` goes out first.
    wake.mark_changed();
    // The inbox read in flight, if any. It runs alongside the upstream branch: a fix that
    // arrives while the database answers goes into the live index at once instead of
    // waiting behind the read (an offer on its way must not delay the driver's GPS).
    let mut reading: Option<futures::future::BoxFuture<'static, lastmile_storage::Result<Vec<InboxMessage>>>> = None;
    loop {
        tokio::select! {
            changed = wake.changed(), if reading.is_none() => {
                if changed.is_err() { break; }
                let (db, tenant, driver) = (state.db.clone(), auth.tenant_id.clone(), auth.driver_id.clone());
                reading = Some(Box::pin(async move { db.inbox_after(&tenant, &driver, after, PAGE).await }));
            }
            read = async { reading.as_mut().expect("guarded by the branch condition").await }, if reading.is_some() => {
                reading = None;
                let msgs = match read {
                    Ok(m) => m,
                    Err(e) => { tracing::warn!(error = %e, "inbox read failed"); break; }
                };
                if msgs.len() as i64 == PAGE { wake.mark_changed(); }
                let mut failed = false;
                for m in &msgs {
                    if tx.send(Message::Text(wire(m).to_string().into())).await.is_err() { failed = true; break; }
                    after = m.seq;
                }
                if failed { break; }
            }
            incoming = rx.next() => {
                let msg = match incoming {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        // A frame over the size limit closes with 1009 "message too big", so
                        // the app knows why; other read errors mean the peer is gone.
                        if is_too_big(&e) {
                            let bye = CloseFrame { code: close_code::SIZE, reason: "message over 64 KiB".into() };
                            let _ = tx.send(Message::Close(Some(bye))).await;
                        }
                        break;
                    }
                    None => break,
                };
                last_heard = tokio::time::Instant::now();
                state.fleet.heard_from(&auth.driver_id);
                let reply = match msg {
                    Message::Text(text) => handle_upstream(&state, &auth, text.as_str()).await,
                    Message::Binary(_) => Some(ws_error("unsupported", "send JSON text messages")),
                    Message::Close(_) => break,
                    _ => None,
                };
                if let Some(r) = reply {
                    if tx.send(r).await.is_err() { break; }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > Duration::from_secs(60) { break; }
                if tx.send(Message::Ping(Bytes::new())).await.is_err() { break; }
            }
            _ = &mut closed => {
                // 1001 "going away": the app reconnects (to another node) with its last seq.
                // 1008 "policy": the driver was revoked; reconnecting is refused.
                let bye = if state.hub.is_closing() {
                    CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() }
                } else {
                    CloseFrame { code: close_code::POLICY, reason: "driver token revoked".into() }
                };
                let _ = tx.send(Message::Close(Some(bye))).await;
                break;
            }
        }
    }
    metrics::gauge!("lastmile_driver_sockets").decrement(1.0);
}

/// One message up the driver socket, decoded.
#[derive(Debug, Clone)]
pub enum DriverMessage {
    Location(Fix),
    Ack(i64),
    Accept { offer_id: String },
    Decline { offer_id: String, reason: Option<String> },
}

/// Decode one text frame from a driver's socket. `Err((code, message))` is what the
/// error frame sent back says. Pure, so the fuzz targets run it on arbitrary text.
pub fn decode_upstream(text: &str) -> Result<DriverMessage, (&'static str, String)> {
    if lastmile_core::text::json_has_nul(text.as_bytes()) {
        return Err(("invalid_text", "text fields must not contain the NUL character (U+0000)".into()));
    }
    let msg: Upstream = serde_json::from_str(text).map_err(|e| ("invalid_message", e.to_string()))?;
    let missing = |field: &str| ("invalid_message", format!("a `{}` message needs `{field}`", msg.kind));
    match msg.kind.as_ref() {
        "location" => {
            let data = msg.data.ok_or_else(|| missing("data"))?;
            serde_json::from_str(data.get())
                .map(DriverMessage::Location)
                .map_err(|e| ("invalid_location", e.to_string()))
        }
        "ack" => msg.seq.map(DriverMessage::Ack).ok_or_else(|| missing("seq")),
        "accept" => {
            let offer_id = msg.offer_id.clone().ok_or_else(|| missing("offer_id"))?;
            Ok(DriverMessage::Accept { offer_id })
        }
        "decline" => {
            let offer_id = msg.offer_id.clone().ok_or_else(|| missing("offer_id"))?;
            Ok(DriverMessage::Decline { offer_id, reason: msg.reason.clone() })
        }
        other => Err((
            "invalid_message",
            format!("unknown message type `{other}`; expected location, ack, accept or decline"),
        )),
    }
}

async fn handle_upstream(state: &AppState, auth: &DriverAuth, text: &str) -> Option<Message> {
    let msg = match decode_upstream(text) {
        Ok(m) => m,
        Err((code, message)) => return Some(ws_error(code, &message)),
    };
    match msg {
        DriverMessage::Location(fix) => match gps::accept(state, &auth.tenant_id, &auth.driver_id, &fix) {
            FixOutcome::Rejected { code, message } => Some(ws_error(code, &message)),
            _ => None,
        },
        DriverMessage::Ack(seq) => {
            tracing::trace!(seq, "driver acked");
            None
        }
        DriverMessage::Accept { offer_id } => Some(match do_accept(state, auth, &OfferId(offer_id.clone())).await {
            Ok(order) => Message::Text(
                json!({"type": "accepted", "data": {"offer_id": offer_id, "order": order}}).to_string().into(),
            ),
            Err(e) => ws_error(e.code, &e.message),
        }),
        DriverMessage::Decline { offer_id, reason } => {
            let reason = reason.as_deref().unwrap_or("declined");
            Some(match do_decline(state, auth, &OfferId(offer_id.clone()), reason).await {
                Ok(()) => Message::Text(json!({"type": "declined", "data": {"offer_id": offer_id}}).to_string().into()),
                Err(e) => ws_error(e.code, &e.message),
            })
        }
    }
}

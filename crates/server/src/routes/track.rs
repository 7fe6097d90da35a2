//! Customer tracking by unguessable token: status, ETA, the driver's first name, and the
//! driver's location only while the order is on its way. Nothing else leaks.

use crate::error::{ApiError, ApiResult, Path};
use crate::state::AppState;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lastmile_core::{Order, OrderStatus};
use lastmile_storage::{now_ms, ActiveDelivery};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/track/{token}", get(track)).route("/v1/track/{token}/events", get(track_events))
}

async fn load(state: &AppState, token: &str) -> ApiResult<Order> {
    // Tokens are 48 hex characters; anything else cannot match and costs no query.
    if token.len() != 48 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("tracking link"));
    }
    state.db.get_order_by_tracking_token(token).await.map_err(crate::routes::admin::not_found("tracking link"))
}

async fn view(state: &AppState, order: &Order) -> ApiResult<Value> {
    let mut driver = Value::Null;
    let mut eta = order.eta;
    if let Some(id) = &order.driver_id {
        let d = state.db.get_driver(&order.tenant_id, id).await.ok();
        let first_name = d.as_ref().map(|d| d.name.split_whitespace().next().unwrap_or("").to_owned());
        let live = state.fleet.driver(id).and_then(|l| l.point);
        let on_its_way = order.status == OrderStatus::PickedUp;
        if let (Some(point), true) = (live, order.status.holds_driver()) {
            let store = state.db.get_store(&order.tenant_id, &order.store_id).await?;
            let a = ActiveDelivery {
                tenant_id: order.tenant_id.clone(),
                driver_id: id.clone(),
                order_id: order.id.clone(),
                status: order.status,
                pickup_lat: store.pickup_lat,
                pickup_lng: store.pickup_lng,
                dropoff_lat: order.dropoff.lat,
                dropoff_lng: order.dropoff.lng,
                ready_at: lastmile_storage::to_ms(order.ready_at),
            };
            eta = crate::gps::eta_for(state, &a, point, now_ms()).map(crate::gps::fmt_ms).or(eta);
        }
        driver = json!({
            "first_name": first_name,
            "location": if on_its_way { live.map(|p| json!({"lat": p.lat, "lng": p.lng})) } else { None },
        });
    }
    if order.status.is_terminal() {
        eta = None;
    }
    Ok(json!({"status": order.status, "eta": eta, "driver": driver, "updated_at": order.updated_at}))
}

#[utoipa::path(get, path = "/v1/track/{token}", tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "{status, eta, driver: {first_name, location?}, updated_at}"), (status = 404, description = "Unknown link")))]
pub async fn track(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Json<Value>> {
    let order = load(&state, &token).await?;
    Ok(Json(view(&state, &order).await?))
}

#[utoipa::path(get, path = "/v1/track/{token}/events", tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "text/event-stream of tracking views, one per change")))]
pub async fn track_events(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Response> {
    let order = load(&state, &token).await?;
    let rx = state.hub.subscribe_order(&order.id);
    let first = view(&state, &order).await?;
    let stream = futures::stream::unfold(
        (state, token, rx, Some(first), Value::Null),
        |(state, token, mut rx, pending, last)| async move {
            let mut pending = pending;
            loop {
                if let Some(v) = pending.take() {
                    if v != last {
                        let ev = SseEvent::default().event("tracking").data(v.to_string());
                        return Some((Ok::<_, Infallible>(ev), (state, token, rx, None, v)));
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
                let order = load(&state, &token).await.ok()?;
                pending = view(&state, &order).await.ok();
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

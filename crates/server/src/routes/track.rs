//! Customer tracking by unguessable token: status, ETA, the driver's first name, and the
//! driver's location only while the order is on its way. Nothing else leaks.

use crate::error::{ApiError, ApiResult, Path};
use crate::state::AppState;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use lastmile_core::{Order, OrderStatus};
use lastmile_storage::from_ms;
use serde::Serialize;
use std::convert::Infallible;
use std::time::Duration;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/track/{token}", get(track).options(preflight))
        .route("/v1/track/{token}/events", get(track_events).options(preflight))
}

/// Browsers' CORS preflight; [`cors`] answers it before this runs, so a route must exist
/// for OPTIONS (otherwise the method router refuses it first).
async fn preflight() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}

/// CORS for the tracking API, so a store's order-status page can read it from the
/// customer's browser: GET (and its preflight) from `tracking.cors_origins`. No credentials
/// are involved — the token in the path is the whole authority.
pub fn cors(cfg: &crate::config::TrackingConfig) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origin = if cfg.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(cfg.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers([header::ACCEPT, header::CACHE_CONTROL, HeaderName::from_static("last-event-id")])
        .max_age(Duration::from_secs(3600))
}

pub(crate) async fn load(state: &AppState, token: &str) -> ApiResult<Order> {
    // Tokens are 48 hex characters; anything else cannot match and costs no query.
    if token.len() != 48 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("tracking link"));
    }
    state.db.get_order_by_tracking_token(token).await.map_err(crate::routes::admin::not_found("tracking link"))
}

/// What a customer may see: status, ETA, the driver's first name, and the driver's
/// location only while the order is on its way (`picked_up`). Nothing else.
/// What a customer's tracking page shows: nothing about the order beyond its progress.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TrackingView {
    pub status: OrderStatus,
    pub eta: Option<DateTime<Utc>>,
    /// Null until a driver has the order.
    pub driver: Option<TrackedDriver>,
    pub updated_at: DateTime<Utc>,
    /// The slow-dispatch notice and the customer's choice (routes/track_choice.rs).
    #[serde(flatten)]
    pub choice: crate::routes::track_choice::ChoiceExtras,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TrackedDriver {
    pub first_name: Option<String>,
    /// Only once the order is picked up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<crate::routes::admin::LatLng>,
}

async fn view(state: &AppState, order: &Order) -> ApiResult<TrackingView> {
    let mut driver = None;
    if let Some(id) = &order.driver_id {
        let first_name = state.db.get_driver(&order.tenant_id, id).await.ok().map(|d| first_name(&d.name));
        let mut location = None;
        if order.status == OrderStatus::PickedUp {
            if let Some(p) = state.fleet.driver(id).and_then(|l| l.point) {
                location = Some(crate::routes::admin::LatLng { lat: p.lat, lng: p.lng });
            }
        }
        driver = Some(TrackedDriver { first_name, location });
    }
    let eta = if order.status.holds_driver() {
        let live = crate::gps::live_eta(state, order).await.unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), order = %order.id, "live ETA failed; showing the stored one");
            None
        });
        live.map(from_ms).or(order.eta)
    } else {
        None
    };
    Ok(TrackingView {
        status: order.status,
        eta,
        driver,
        updated_at: order.updated_at,
        choice: crate::routes::track_choice::view_extras(state, order).await?,
    })
}

fn first_name(full: &str) -> String {
    full.split_whitespace().next().unwrap_or("").to_owned()
}

#[utoipa::path(get, path = "/v1/track/{token}", tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "The order's progress", body = TrackingView), (status = 404, description = "Unknown link")))]
pub async fn track(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Json<TrackingView>> {
    let order = load(&state, &token).await?;
    Ok(Json(view(&state, &order).await?))
}

#[utoipa::path(get, path = "/v1/track/{token}/events", tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "Tracking views (event `tracking`), one per change", content_type = "text/event-stream", body = String), (status = 404, description = "Unknown link")))]
pub async fn track_events(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Response> {
    let order = load(&state, &token).await?;
    let rx = state.hub.subscribe_order(&order.id);
    let closed = state.hub.closed();
    let first = view(&state, &order).await?;
    let stream = futures::stream::unfold(
        (state, token, rx, Some(first), None::<TrackingView>),
        |(state, token, mut rx, pending, last)| async move {
            let mut pending = pending;
            loop {
                if let Some(v) = pending.take() {
                    if last.as_ref() != Some(&v) {
                        let ev = SseEvent::default().event("tracking").data(serde_json::to_string(&v).ok()?);
                        return Some((Ok::<_, Infallible>(ev), (state, token, rx, None, Some(v))));
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
    let stream = futures::StreamExt::take_until(stream, closed);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

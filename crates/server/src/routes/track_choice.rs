//! The customer's choices on a slow delivery: after `dispatch.slow_notice_s` without a
//! driver, the tracking page offers to keep waiting or to cancel. Cancelling is allowed
//! only before pickup and goes through the normal cancel path (which tells the store
//! platform through sync-back); both choices are recorded for ops to see.

use crate::error::{ApiError, ApiResult, Path};
use crate::state::AppState;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use lastmile_core::{Order, OrderStatus};
use lastmile_storage::{to_ms, CustomerChoice};
use serde::Serialize;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/track/{token}/cancel", post(cancel))
        .route("/v1/track/{token}/keep-waiting", post(keep_waiting))
}

/// Still waiting for a driver (the only time the slow notice applies).
fn waiting_for_driver(s: OrderStatus) -> bool {
    matches!(s, OrderStatus::Received | OrderStatus::Dispatching)
}

/// A customer may cancel until the driver has the parcel.
fn cancellable(s: OrderStatus) -> bool {
    matches!(s, OrderStatus::NeedsLocation | OrderStatus::Received | OrderStatus::Dispatching | OrderStatus::Assigned)
}

/// When the page should say "taking longer than usual": `slow_notice_s` after the order
/// became ready (or arrived, if later) — or after the customer last chose to keep waiting.
pub fn slow_notice_at(
    state: &AppState,
    order: &Order,
    choice: Option<&CustomerChoice>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    if !waiting_for_driver(order.status) {
        return None;
    }
    let since = to_ms(order.ready_at).max(to_ms(order.created_at));
    let since = match choice {
        Some(c) if c.choice == "keep_waiting" => since.max(to_ms(c.created_at)),
        _ => since,
    };
    Some(lastmile_storage::from_ms(since + state.cfg.dispatch.slow_notice_s as i64 * 1000))
}

/// The fields the tracking view adds for these choices.
/// The customer's choices on the tracking page.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChoiceExtras {
    /// When the page offers to keep waiting or cancel; null once a driver has it.
    pub slow_notice_at: Option<DateTime<Utc>>,
    pub can_cancel: bool,
    /// The customer's latest choice: `keep_waiting` or `cancel`.
    pub choice: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerCancelled {
    pub status: OrderStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeptWaiting {
    /// `keep_waiting`.
    pub choice: &'static str,
    pub slow_notice_at: Option<DateTime<Utc>>,
}

pub async fn view_extras(state: &AppState, order: &Order) -> ApiResult<ChoiceExtras> {
    let choice = state.db.latest_customer_choice(&order.tenant_id, &order.id).await?;
    Ok(ChoiceExtras {
        slow_notice_at: slow_notice_at(state, order, choice.as_ref()),
        can_cancel: cancellable(order.status),
        choice: choice.map(|c| c.choice),
    })
}

async fn load(state: &AppState, token: &str) -> ApiResult<Order> {
    crate::routes::track::load(state, token).await
}

#[utoipa::path(post, path = "/v1/track/{token}/cancel", tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "Cancelled", body = CustomerCancelled), (status = 409, description = "too_late_to_cancel: picked up or finished"), (status = 404, description = "Unknown link")))]
pub async fn cancel(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Json<CustomerCancelled>> {
    let order = load(&state, &token).await?;
    if !cancellable(order.status) {
        return Err(ApiError::conflict(
            "too_late_to_cancel",
            format!("the order is {} and can no longer be cancelled", order.status),
        ));
    }
    let cancelled =
        state.db.cancel_order(&order.tenant_id, &order.id, "cancelled by the customer").await.map_err(|e| match e {
            lastmile_storage::StorageError::InvalidTransition { .. } => {
                ApiError::conflict("too_late_to_cancel", "the order can no longer be cancelled")
            }
            other => other.into(),
        })?;
    state.db.record_customer_choice(&order.tenant_id, &order.id, "cancel").await?;
    crate::payments::refund_captured(&state, &order.tenant_id, &order.id).await;
    Ok(Json(CustomerCancelled { status: cancelled.status }))
}

#[utoipa::path(post, path = "/v1/track/{token}/keep-waiting", tag = "tracking", params(("token" = String, Path)),
    responses((status = 200, description = "Noted; the slow notice moves on", body = KeptWaiting), (status = 404, description = "Unknown link"), (status = 409, description = "not_waiting: a driver has it or it is finished")))]
pub async fn keep_waiting(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult<Json<KeptWaiting>> {
    let order = load(&state, &token).await?;
    if !waiting_for_driver(order.status) {
        return Err(ApiError::conflict("not_waiting", format!("the order is {}: nothing to wait for", order.status)));
    }
    state.db.record_customer_choice(&order.tenant_id, &order.id, "keep_waiting").await?;
    // Tracking streams show the choice (and the next notice time) at once.
    state.hub.bump_order(&order.id);
    let extras = view_extras(&state, &order).await?;
    Ok(Json(KeptWaiting { choice: "keep_waiting", slow_notice_at: extras.slow_notice_at }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_cancel_only_before_pickup() {
        assert!(cancellable(OrderStatus::Dispatching) && cancellable(OrderStatus::Assigned));
        assert!(!cancellable(OrderStatus::PickedUp) && !cancellable(OrderStatus::Delivered));
        assert!(waiting_for_driver(OrderStatus::Received) && !waiting_for_driver(OrderStatus::Assigned));
    }
}

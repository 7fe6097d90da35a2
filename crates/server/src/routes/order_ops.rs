//! Ops acting on one order (admin key): give it to a chosen driver (an offer, or with
//! `force` the assignment itself), take it back from its driver, and read its timeline.
//! Tenant-scoped: another tenant's order or driver answers exactly like a missing one.

use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, Json, Path};
use crate::routes::admin::not_found;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use lastmile_core::{DriverId, EventId, EventKind, OfferId, Order, OrderId};
use lastmile_storage::OpsAssignment;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct Assignment {
    /// `offered`, `assigned` or `unchanged`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<OfferId>,
    pub order: Order,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderEvent {
    pub id: EventId,
    pub seq: i64,
    pub kind: EventKind,
    #[schema(value_type = Object)]
    pub data: Value,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderEvents {
    pub order_id: OrderId,
    pub events: Vec<OrderEvent>,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orders/{id}/assign", post(assign))
        .route("/v1/orders/{id}/unassign", post(unassign))
        .route("/v1/orders/{id}/events", get(events))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AssignInput {
    driver_id: String,
    #[serde(default)]
    force: bool,
}

#[utoipa::path(post, path = "/v1/orders/{id}/assign", tag = "ops", params(("id" = String, Path)),
    request_body(content = AssignInput, description = "An offer to that driver, or with force the assignment itself"),
    responses((status = 200, description = "What was done", body = Assignment), (status = 404, description = "Order or driver not found"),
              (status = 409, description = "driver_at_capacity, driver_unavailable or invalid_transition")), security(("admin_key" = [])))]
pub async fn assign(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Json(input): Json<AssignInput>,
) -> ApiResult<Json<Assignment>> {
    let order_id = OrderId(id);
    // Both looked up in the caller's tenant first, so each missing one is named.
    state.db.get_order(&auth.tenant_id, &order_id).await.map_err(not_found("order"))?;
    let driver_id = DriverId(input.driver_id);
    let driver = state.db.get_driver(&auth.tenant_id, &driver_id).await.map_err(not_found("driver"))?;
    if !input.force && driver.status != "online" {
        return Err(ApiError::conflict(
            "driver_unavailable",
            format!(
                "the driver is {}; an offer needs an online driver (or assign with \"force\": true)",
                driver.status
            ),
        ));
    }
    let ttl_ms = state.cfg.dispatch.offer_ttl_s as i64 * 1000;
    let done = crate::audit::db(&state, &auth, "order.assign", Some(order_id.as_str()))
        .ops_assign(&auth.tenant_id, &order_id, &driver_id, input.force, state.clock.now_ms(), ttl_ms)
        .await
        .map_err(not_found("order"))?;
    let body = match done {
        OpsAssignment::Offered { offer_id, order } => {
            state.fleet.set_busy(&driver_id, true);
            Assignment { result: "offered", offer_id: Some(offer_id), order }
        }
        OpsAssignment::Assigned(order) => Assignment { result: "assigned", offer_id: None, order },
        OpsAssignment::Unchanged(order) => Assignment { result: "unchanged", offer_id: None, order },
    };
    Ok(Json(body))
}

#[utoipa::path(post, path = "/v1/orders/{id}/unassign", tag = "ops", params(("id" = String, Path)),
    responses((status = 200, description = "The order, back in matching", body = Order), (status = 404, description = "Not found"),
              (status = 409, description = "invalid_transition: nobody holds it, or it is picked up or finished")), security(("admin_key" = [])))]
pub async fn unassign(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Order>> {
    let audited = crate::audit::db(&state, &auth, "order.unassign", Some(&id));
    let order = audited.ops_unassign(&auth.tenant_id, &OrderId(id)).await.map_err(not_found("order"))?;
    Ok(Json(order))
}

#[utoipa::path(get, path = "/v1/orders/{id}/events", tag = "ops", params(("id" = String, Path)),
    responses((status = 200, description = "The order's events, oldest first", body = OrderEvents), (status = 404, description = "Not found")), security(("admin_key" = [])))]
pub async fn events(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<OrderEvents>> {
    let order_id = OrderId(id);
    state.db.get_order(&auth.tenant_id, &order_id).await.map_err(not_found("order"))?;
    let events = state.db.order_events(&auth.tenant_id, &order_id).await?;
    let events = events
        .into_iter()
        .map(|e| OrderEvent { id: e.id, seq: e.seq, kind: e.kind, data: e.data, occurred_at: e.occurred_at })
        .collect();
    Ok(Json(OrderEvents { order_id, events }))
}

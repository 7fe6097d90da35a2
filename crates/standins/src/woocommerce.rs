//! WooCommerce REST API v3 stand-in: `GET` and `PUT /wp-json/wc/v3/orders/{id}` with HTTP
//! Basic auth (consumer key as user, consumer secret as password), answering with the
//! documented order shape (`fixtures/woocommerce_order_retrieve_727.json`) for the stored
//! id and status, and WordPress REST error bodies (`{"code", "message", "data": {"status"}}`).

use crate::fault::WriteApplied;
use crate::{Shared, CONSUMER_KEY, CONSUMER_SECRET};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

/// Order statuses WooCommerce core registers (`wc_get_order_statuses`, without the `wc-` prefix).
pub(crate) const STATUSES: &[&str] =
    &["pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed", "checkout-draft"];

const ORDER_FIXTURE: &str = include_str!("../fixtures/woocommerce_order_retrieve_727.json");

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new().route("/wp-json/wc/v3/orders/{id}", get(get_order).put(update_order))
}

fn wp_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message, "data": {"status": status.as_u16()}}))).into_response()
}

/// HTTP Basic with the consumer key and secret (`_authentication.md`, "over HTTPS").
fn check_auth(headers: &HeaderMap) -> Result<(), Response> {
    let unauthorized = |code: &str, message: &str| wp_error(StatusCode::UNAUTHORIZED, code, message);
    let Some(encoded) =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "))
    else {
        return Err(unauthorized("woocommerce_rest_cannot_view", "Sorry, you cannot view this resource."));
    };
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok().and_then(|b| String::from_utf8(b).ok());
    let Some((key, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(unauthorized("woocommerce_rest_authentication_error", "Consumer key is invalid."));
    };
    if key != CONSUMER_KEY {
        return Err(unauthorized("woocommerce_rest_authentication_error", "Consumer key is invalid."));
    }
    if secret != CONSUMER_SECRET {
        return Err(unauthorized("woocommerce_rest_authentication_error", "Consumer secret is invalid."));
    }
    Ok(())
}

fn order_json(id: &str, status: &str) -> Value {
    let mut order: Value = serde_json::from_str(ORDER_FIXTURE).expect("fixture is JSON");
    let numeric: Value = id.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::from(id));
    order["id"] = numeric;
    order["number"] = Value::from(id);
    order["status"] = Value::from(status);
    order["_links"]["self"] = json!([{"href": format!("https://example.com/wp-json/wc/v3/orders/{id}")}]);
    order
}

fn invalid_id() -> Response {
    wp_error(StatusCode::NOT_FOUND, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
}

async fn get_order(State(shared): State<Arc<Shared>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(response) = check_auth(&headers) {
        return response;
    }
    match shared.lock().woocommerce.get(&id) {
        Some(status) => Json(order_json(&id, status)).into_response(),
        None => invalid_id(),
    }
}

async fn update_order(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = check_auth(&headers) {
        return response;
    }
    let is_json =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let parsed = if is_json { serde_json::from_slice::<Value>(&body).ok() } else { None };
    let Some(Value::Object(update)) = parsed else {
        return wp_error(StatusCode::BAD_REQUEST, "rest_invalid_json", "Invalid JSON body passed.");
    };
    let status = match update.get("status") {
        None => None,
        Some(Value::String(s)) if STATUSES.contains(&s.as_str()) => Some(s.clone()),
        Some(_) => {
            let message = format!("status is not one of {}.", STATUSES.join(", "));
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "code": "rest_invalid_param",
                    "message": "Invalid parameter(s): status",
                    "data": {"status": 400, "params": {"status": message}}
                })),
            )
                .into_response();
        }
    };
    let mut state = shared.lock();
    let Some(current) = state.woocommerce.get(&id).cloned() else {
        return invalid_id();
    };
    let new_status = status.unwrap_or(current);
    state.woocommerce.insert(id.clone(), new_status.clone());
    state.record_write(&id, format!("status:{new_status}"));
    let mut response = Json(order_json(&id, &new_status)).into_response();
    response.extensions_mut().insert(WriteApplied);
    response
}

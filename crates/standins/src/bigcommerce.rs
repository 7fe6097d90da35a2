//! BigCommerce V2 Orders API stand-in, under `/stores/{store_hash}/v2/orders/{id}`:
//! `GET` and `PUT` the order, `GET .../products` and `GET .../shipping_addresses`.
//! Requests need `X-Auth-Token` and `Accept: application/json` (writes also
//! `Content-Type: application/json`), as the API reference's examples send them. Answers
//! are the reference's examples (`fixtures/v2_*.json`) with the stored id and status put in.

use crate::fault::WriteApplied;
use crate::{Shared, ACCESS_TOKEN, BIGCOMMERCE_STORE_HASH};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

const ORDER_FIXTURE: &str = include_str!("../fixtures/v2_order_get_response.json");
const PRODUCTS_FIXTURE: &str = include_str!("../fixtures/v2_order_products_response.json");
const SHIPPING_ADDRESSES_FIXTURE: &str = include_str!("../fixtures/v2_order_shipping_addresses_response.json");

/// V2 order status names by `status_id` (`orderStatusCollection_Resp`).
pub(crate) fn status_name(id: u32) -> Option<&'static str> {
    const NAMES: [&str; 15] = [
        "Incomplete",
        "Pending",
        "Shipped",
        "Partially Shipped",
        "Refunded",
        "Cancelled",
        "Declined",
        "Awaiting Payment",
        "Awaiting Pickup",
        "Awaiting Shipment",
        "Completed",
        "Awaiting Fulfillment",
        "Manual Verification Required",
        "Disputed",
        "Partially Refunded",
    ];
    NAMES.get(id as usize).copied()
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/stores/{hash}/v2/orders/{id}", get(get_order).put(update_order))
        .route("/stores/{hash}/v2/orders/{id}/products", get(get_products))
        .route("/stores/{hash}/v2/orders/{id}/shipping_addresses", get(get_shipping_addresses))
}

fn v2_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!([{"status": status.as_u16(), "message": message}]))).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Store hash, token and `Accept` checks shared by every route.
fn check(hash: &str, headers: &HeaderMap) -> Result<(), Response> {
    if hash != BIGCOMMERCE_STORE_HASH {
        return Err(v2_error(StatusCode::NOT_FOUND, "The requested resource was not found."));
    }
    if header(headers, "x-auth-token") != Some(ACCESS_TOKEN) {
        return Err(v2_error(StatusCode::UNAUTHORIZED, "You are not authorized to access this resource."));
    }
    if !header(headers, "accept").is_some_and(|v| v.contains("application/json")) {
        return Err(v2_error(StatusCode::NOT_ACCEPTABLE, "Accept must be application/json."));
    }
    Ok(())
}

fn numeric_id(id: &str) -> Result<u64, Response> {
    id.parse().map_err(|_| v2_error(StatusCode::NOT_FOUND, "The requested resource was not found."))
}

fn order_json(id: u64, status_id: u32) -> Value {
    let mut order: Value = serde_json::from_str(ORDER_FIXTURE).expect("fixture is JSON");
    let name = status_name(status_id).unwrap_or("Incomplete");
    order["id"] = json!(id);
    order["status_id"] = json!(status_id);
    order["status"] = json!(name);
    order["custom_status"] = json!(name);
    let base = format!("https://api.bigcommerce.com/stores/{BIGCOMMERCE_STORE_HASH}/v2/orders/{id}");
    order["products"] = json!({"url": format!("{base}/products"), "resource": format!("/orders/{id}/products")});
    order["shipping_addresses"] =
        json!({"url": format!("{base}/shipping_addresses"), "resource": format!("/orders/{id}/shipping_addresses")});
    order["coupons"] = json!({"url": format!("{base}/coupons"), "resource": format!("/orders/{id}/coupons")});
    order
}

fn known_order(shared: &Shared, id: &str) -> Result<(u64, u32), Response> {
    let numeric = numeric_id(id)?;
    match shared.lock().bigcommerce.get(id) {
        Some(status_id) => Ok((numeric, *status_id)),
        None => Err(v2_error(StatusCode::NOT_FOUND, "The requested resource was not found.")),
    }
}

/// A GET of one known order's resource: authorize, look the order up, render it.
fn read_order(
    shared: &Shared,
    hash: &str,
    headers: &HeaderMap,
    id: &str,
    render: impl FnOnce(u64, u32) -> Value,
) -> Response {
    if let Err(response) = check(hash, headers) {
        return response;
    }
    match known_order(shared, id) {
        Ok((numeric, status_id)) => Json(render(numeric, status_id)).into_response(),
        Err(response) => response,
    }
}

async fn get_order(
    State(shared): State<Arc<Shared>>,
    Path((hash, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_order(&shared, &hash, &headers, &id, order_json)
}

async fn update_order(
    State(shared): State<Arc<Shared>>,
    Path((hash, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = check(&hash, &headers) {
        return response;
    }
    if !header(&headers, "content-type").is_some_and(|v| v.starts_with("application/json")) {
        return v2_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json.");
    }
    let Ok(Value::Object(update)) = serde_json::from_slice::<Value>(&body) else {
        return v2_error(StatusCode::BAD_REQUEST, "The request body is not valid JSON.");
    };
    let status_id = match update.get("status_id") {
        None => None,
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| status_name(*n).is_some()) {
            Some(n) => Some(n),
            None => return v2_error(StatusCode::BAD_REQUEST, "The field 'status_id' is invalid."),
        },
    };
    let (numeric, current) = match known_order(&shared, &id) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let new_status = status_id.unwrap_or(current);
    {
        let mut state = shared.lock();
        state.bigcommerce.insert(id.clone(), new_status);
        state.record_write(&id, format!("status_id:{new_status}"));
    }
    let mut response = Json(order_json(numeric, new_status)).into_response();
    response.extensions_mut().insert(WriteApplied);
    response
}

/// The fixture collection with every item's `order_id` (and nested links) set to `id`.
fn collection(fixture: &str, id: u64) -> Value {
    let mut items: Value = serde_json::from_str(fixture).expect("fixture is JSON");
    for item in items.as_array_mut().into_iter().flatten() {
        item["order_id"] = json!(id);
        if let (Some(address_id), Some(quotes)) = (item["id"].as_u64(), item.get_mut("shipping_quotes")) {
            let path = format!("/orders/{id}/shipping_addresses/{address_id}/shipping_quotes");
            *quotes = json!({
                "url": format!("https://api.bigcommerce.com/stores/{BIGCOMMERCE_STORE_HASH}/v2{path}"),
                "resource": path,
            });
        }
    }
    items
}

async fn get_products(
    State(shared): State<Arc<Shared>>,
    Path((hash, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_order(&shared, &hash, &headers, &id, |n, _| collection(PRODUCTS_FIXTURE, n))
}

async fn get_shipping_addresses(
    State(shared): State<Arc<Shared>>,
    Path((hash, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let address = shared.lock().bigcommerce_shipping.get(&id).cloned();
    read_order(&shared, &hash, &headers, &id, |n, _| {
        let list = collection(SHIPPING_ADDRESSES_FIXTURE, n);
        match (address, list.get(0).cloned()) {
            (Some(Value::Object(fields)), Some(mut first)) => {
                for (k, v) in fields {
                    first[k] = v;
                }
                json!([first])
            }
            _ => list,
        }
    })
}

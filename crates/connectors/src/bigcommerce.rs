//! BigCommerce V2 Orders API: status changes (read `status_id`, set it only if it differs)
//! and the three reads behind an order webhook, which carries only the order id.
//! `base_url` is `.../stores/{store_hash}`; every request sends `X-Auth-Token` and
//! `Accept: application/json`.

use crate::http::{self, base, path_segment, CallError, Reply};
use crate::hub::Applied;
use crate::{Credentials, StoreTarget, SyncRequest};
use serde::Deserialize;

/// Refunded, Cancelled, Declined: closed at the store; we report, we do not reopen.
const CLOSED: &[u32] = &[4, 5, 6];
const SHIPPED: u32 = 2;
const COMPLETED: u32 = 10;

/// HTTP calls one status change may make (for the rate limiter).
pub(crate) const STATUS_CALLS: u32 = 2;
/// HTTP calls of one order fetch.
pub(crate) const FETCH_CALLS: u32 = 3;

#[derive(Deserialize)]
struct OrderStatus {
    status_id: u32,
    #[serde(default)]
    status: String,
}

fn authed(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    target: &StoreTarget,
) -> Result<reqwest::RequestBuilder, CallError> {
    let Credentials::AccessToken(token) = &target.credentials else {
        return Err(CallError::permanent("BigCommerce needs an access token"));
    };
    Ok(client.request(method, url).header("X-Auth-Token", token).header("Accept", "application/json"))
}

fn order_url(target: &StoreTarget, order_id: &str) -> Result<String, CallError> {
    Ok(format!("{}/v2/orders/{}", base(&target.base_url), path_segment(order_id)?))
}

/// Is the order already where `wanted` would put it? Shipped counts as done once completed.
fn reached(current: u32, wanted: u32) -> bool {
    current == wanted || (wanted == SHIPPED && current == COMPLETED)
}

pub(crate) async fn set_status(client: &reqwest::Client, req: &SyncRequest, wanted: u32) -> Result<Applied, CallError> {
    let url = order_url(&req.target, &req.platform_order_id)?;
    let reply = http::send(authed(client, reqwest::Method::GET, &url, &req.target)?, "GET order").await?;
    let current: OrderStatus = http::json(&reply, "GET order")?;
    if reached(current.status_id, wanted) {
        return Ok(Applied::AlreadyDone);
    }
    if CLOSED.contains(&current.status_id) {
        return Err(CallError::Permanent {
            error: format!("order is {} ({}) at BigCommerce; not changing it", current.status_id, current.status),
            status: Some(reply.status),
            body: None,
        });
    }
    let put = authed(client, reqwest::Method::PUT, &url, &req.target)?
        .header("Idempotency-Key", &req.idempotency_key)
        .json(&serde_json::json!({ "status_id": wanted }));
    let reply = http::send(put, "PUT order status").await?;
    let updated: OrderStatus = http::json(&reply, "PUT order status")?;
    if updated.status_id != wanted {
        return Err(CallError::Permanent {
            error: format!("BigCommerce kept status_id {} after we set {wanted}", updated.status_id),
            status: Some(reply.status),
            body: None,
        });
    }
    Ok(Applied::Changed {
        status: reply.status,
        summary: format!("status_id {} → {wanted} ({})", current.status_id, updated.status),
    })
}

/// The raw bodies of an order and its two sub-resources, checked to be JSON of the
/// documented shape (an object, then two arrays; 204 No Content is an empty array).
pub(crate) async fn fetch_order(
    client: &reqwest::Client,
    target: &StoreTarget,
    order_id: &str,
) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>), CallError> {
    let url = order_url(target, order_id)?;
    let order = get(client, target, &url, "GET order").await?;
    expect_shape(&order, "GET order", serde_json::Value::is_object)?;
    let products = get(client, target, &format!("{url}/products"), "GET order products").await?;
    let addresses = get(client, target, &format!("{url}/shipping_addresses"), "GET order shipping addresses").await?;
    Ok((
        order.body,
        collection(products, "GET order products")?,
        collection(addresses, "GET order shipping addresses")?,
    ))
}

async fn get(client: &reqwest::Client, target: &StoreTarget, url: &str, what: &str) -> Result<Reply, CallError> {
    http::send(authed(client, reqwest::Method::GET, url, target)?, what).await
}

fn collection(reply: Reply, what: &str) -> Result<Vec<u8>, CallError> {
    if reply.status == 204 || reply.body.is_empty() {
        return Ok(b"[]".to_vec());
    }
    expect_shape(&reply, what, serde_json::Value::is_array)?;
    Ok(reply.body)
}

fn expect_shape(reply: &Reply, what: &str, shape: fn(&serde_json::Value) -> bool) -> Result<(), CallError> {
    let value: serde_json::Value = http::json(reply, what)?;
    if shape(&value) {
        Ok(())
    } else {
        Err(CallError::Transient {
            error: format!("{what}: unexpected JSON shape"),
            retry_after: None,
            status: Some(reply.status),
            body: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_counts_as_shipped_but_not_the_reverse() {
        assert!(reached(10, 2));
        assert!(reached(2, 2));
        assert!(!reached(2, 10));
        assert!(!reached(11, 2));
    }
}

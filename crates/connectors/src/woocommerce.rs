//! WooCommerce REST API v3: read the order's status, and set it only if it differs.
//! `GET`/`PUT {site}/wp-json/wc/v3/orders/{id}`, HTTP Basic with the consumer key and secret.

use crate::http::{self, base, path_segment, CallError};
use crate::hub::Applied;
use crate::{Credentials, SyncRequest};
use serde::Deserialize;

/// Statuses in which the order is closed at the store: we report, we do not reopen.
const CLOSED: &[&str] = &["cancelled", "refunded", "failed", "trash"];

/// HTTP calls one status change may make (for the rate limiter).
pub(crate) const CALLS: u32 = 2;

#[derive(Deserialize)]
struct OrderStatus {
    status: String,
}

pub(crate) async fn set_status(
    client: &reqwest::Client,
    req: &SyncRequest,
    wanted: &str,
) -> Result<Applied, CallError> {
    let Credentials::ConsumerKey { key, secret } = &req.target.credentials else {
        return Err(CallError::permanent("WooCommerce needs a consumer key and secret"));
    };
    let url = format!("{}/wp-json/wc/v3/orders/{}", base(&req.target.base_url), path_segment(&req.platform_order_id)?);

    let reply = http::send(client.get(&url).basic_auth(key, Some(secret)), "GET order").await?;
    let current: OrderStatus = http::json(&reply, "GET order")?;
    if current.status == wanted {
        return Ok(Applied::AlreadyDone);
    }
    if CLOSED.contains(&current.status.as_str()) {
        return Err(CallError::Permanent {
            error: format!("order is {} at WooCommerce; not changing it to {wanted}", current.status),
            status: Some(reply.status),
            body: None,
        });
    }

    let put = client
        .put(&url)
        .basic_auth(key, Some(secret))
        .header("Idempotency-Key", &req.idempotency_key)
        .json(&serde_json::json!({ "status": wanted }));
    let reply = http::send(put, "PUT order status").await?;
    let updated: OrderStatus = http::json(&reply, "PUT order status")?;
    if updated.status != wanted {
        return Err(CallError::Permanent {
            error: format!("WooCommerce kept the order {} after we set {wanted}", updated.status),
            status: Some(reply.status),
            body: None,
        });
    }
    Ok(Applied::Changed { status: reply.status, summary: format!("status {} → {wanted}", current.status) })
}

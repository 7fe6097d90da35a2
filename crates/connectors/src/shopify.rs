//! Shopify GraphQL Admin API (2025-01): fulfil an order and add fulfilment events, checking
//! the order's fulfilments first so a retry or replay never fulfils twice.
//! `POST {shop}/admin/api/2025-01/graphql.json` with `X-Shopify-Access-Token`.

use crate::http::{self, base, CallError, Reply};
use crate::hub::Applied;
use crate::{Credentials, SyncRequest};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

pub(crate) const API_VERSION: &str = "2025-01";

/// HTTP calls an operation may make (for the rate limiter): query, create, event.
pub(crate) const FULFIL_CALLS: u32 = 2;
pub(crate) const EVENT_CALLS: u32 = 3;

const ORDER_QUERY: &str = "query LastmileOrderFulfillments($id: ID!) { \
order(id: $id) { id \
fulfillments(first: 50) { id status displayStatus events(first: 50) { nodes { status } } } \
fulfillmentOrders(first: 10) { nodes { id status } } } }";

const FULFILLMENT_CREATE: &str = "mutation LastmileFulfillmentCreate($fulfillment: FulfillmentInput!) { \
fulfillmentCreate(fulfillment: $fulfillment) { fulfillment { id status } userErrors { field message } } }";

const FULFILLMENT_EVENT_CREATE: &str =
    "mutation LastmileFulfillmentEventCreate($fulfillmentEvent: FulfillmentEventInput!) { \
fulfillmentEventCreate(fulfillmentEvent: $fulfillmentEvent) { fulfillmentEvent { id status } userErrors { field message } } }";

/// Fulfillment orders in these statuses can still be fulfilled.
const FULFILLABLE: &[&str] = &["OPEN", "IN_PROGRESS"];

#[derive(Deserialize)]
struct Nodes<T> {
    nodes: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderData {
    order: Option<OrderNode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderNode {
    fulfillments: Vec<FulfillmentNode>,
    fulfillment_orders: Nodes<FulfillmentOrderNode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FulfillmentNode {
    id: String,
    status: String,
    display_status: Option<String>,
    events: Option<Nodes<EventNode>>,
}

impl FulfillmentNode {
    fn has_event(&self, status: &str) -> bool {
        self.display_status.as_deref() == Some(status)
            || self.events.as_ref().is_some_and(|e| e.nodes.iter().any(|n| n.status == status))
    }
}

#[derive(Deserialize)]
struct EventNode {
    status: String,
}

#[derive(Deserialize)]
struct FulfillmentOrderNode {
    id: String,
    status: String,
}

#[derive(Deserialize)]
struct UserError {
    #[serde(default)]
    field: Option<Vec<String>>,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateData {
    fulfillment_create: Option<Payload<IdNode>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventData {
    fulfillment_event_create: Option<Payload<IdNode>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload<T> {
    #[serde(alias = "fulfillmentEvent")]
    fulfillment: Option<T>,
    #[serde(default)]
    user_errors: Vec<UserError>,
}

#[derive(Deserialize)]
struct IdNode {
    id: String,
}

struct Shop<'a> {
    client: &'a reqwest::Client,
    url: String,
    token: &'a str,
    idempotency_key: &'a str,
}

pub(crate) fn order_gid(id: &str) -> Result<String, CallError> {
    if id.starts_with("gid://shopify/Order/") {
        return Ok(id.to_owned());
    }
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(format!("gid://shopify/Order/{id}"));
    }
    Err(CallError::permanent(format!("invalid Shopify order id {id:?}")))
}

impl<'a> Shop<'a> {
    fn new(client: &'a reqwest::Client, req: &'a SyncRequest) -> Result<Self, CallError> {
        let Credentials::AccessToken(token) = &req.target.credentials else {
            return Err(CallError::permanent("Shopify needs an access token"));
        };
        let url = format!("{}/admin/api/{API_VERSION}/graphql.json", base(&req.target.base_url));
        Ok(Shop { client, url, token, idempotency_key: &req.idempotency_key })
    }

    async fn graphql<T: DeserializeOwned>(
        &self,
        what: &str,
        query: &str,
        variables: Value,
        write: bool,
    ) -> Result<T, CallError> {
        let mut request = self
            .client
            .post(&self.url)
            .header("X-Shopify-Access-Token", self.token)
            .json(&json!({"query": query, "variables": variables}));
        if write {
            request = request.header("Idempotency-Key", self.idempotency_key);
        }
        let reply = http::send(request, what).await?;
        data(&reply, what)
    }

    async fn order(&self, gid: &str) -> Result<OrderNode, CallError> {
        let data: OrderData = self.graphql("query order", ORDER_QUERY, json!({"id": gid}), false).await?;
        data.order.ok_or_else(|| CallError::permanent(format!("Shopify has no order {gid}")))
    }

    /// Fulfils every open fulfillment order; returns the new fulfilment's id.
    async fn fulfil(&self, order: &OrderNode, req: &SyncRequest, notify: bool) -> Result<String, CallError> {
        let open: Vec<&FulfillmentOrderNode> =
            order.fulfillment_orders.nodes.iter().filter(|fo| FULFILLABLE.contains(&fo.status.as_str())).collect();
        if open.is_empty() {
            let statuses: Vec<&str> = order.fulfillment_orders.nodes.iter().map(|fo| fo.status.as_str()).collect();
            return Err(CallError::permanent(format!("no fulfillable fulfillment order (statuses: {statuses:?})")));
        }
        let mut fulfillment = json!({
            "lineItemsByFulfillmentOrder": open.iter().map(|fo| json!({"fulfillmentOrderId": fo.id})).collect::<Vec<_>>(),
            "notifyCustomer": notify,
        });
        let mut tracking = serde_json::Map::new();
        if let Some(url) = &req.tracking_url {
            tracking.insert("url".into(), url.clone().into());
        }
        if let Some(number) = &req.tracking_number {
            tracking.insert("number".into(), number.clone().into());
        }
        if !tracking.is_empty() {
            fulfillment["trackingInfo"] = Value::Object(tracking);
        }
        let data: CreateData =
            self.graphql("fulfillmentCreate", FULFILLMENT_CREATE, json!({"fulfillment": fulfillment}), true).await?;
        let payload = data.fulfillment_create.ok_or_else(|| CallError::transient("fulfillmentCreate: no payload"))?;
        check_user_errors("fulfillmentCreate", &payload.user_errors)?;
        payload
            .fulfillment
            .map(|f| f.id)
            .ok_or_else(|| CallError::transient("fulfillmentCreate: no fulfillment returned"))
    }

    async fn event(&self, fulfillment_id: &str, status: &str, message: Option<&str>) -> Result<(), CallError> {
        let mut event = json!({
            "fulfillmentId": fulfillment_id,
            "status": status,
            "happenedAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        if let Some(message) = message {
            event["message"] = message.into();
        }
        let data: EventData = self
            .graphql("fulfillmentEventCreate", FULFILLMENT_EVENT_CREATE, json!({"fulfillmentEvent": event}), true)
            .await?;
        let payload =
            data.fulfillment_event_create.ok_or_else(|| CallError::transient("fulfillmentEventCreate: no payload"))?;
        check_user_errors("fulfillmentEventCreate", &payload.user_errors)
    }
}

/// PickedUp: fulfil with tracking, unless a fulfilment already exists and nothing is open.
pub(crate) async fn fulfil(client: &reqwest::Client, req: &SyncRequest, notify: bool) -> Result<Applied, CallError> {
    let shop = Shop::new(client, req)?;
    let order = shop.order(&order_gid(&req.platform_order_id)?).await?;
    let fulfilled = order.fulfillments.iter().any(|f| f.status == "SUCCESS");
    let open = order.fulfillment_orders.nodes.iter().any(|fo| FULFILLABLE.contains(&fo.status.as_str()));
    if fulfilled && !open {
        return Ok(Applied::AlreadyDone);
    }
    let id = shop.fulfil(&order, req, notify).await?;
    Ok(Applied::Changed { status: 200, summary: format!("fulfilled: {id}") })
}

/// Delivered / Failed: an event on the latest successful fulfilment, unless it already has one
/// with that status. With `fulfil_first`, an unfulfilled order is fulfilled first.
pub(crate) async fn event(
    client: &reqwest::Client,
    req: &SyncRequest,
    status: &str,
    fulfil_first: bool,
    notify: bool,
) -> Result<Applied, CallError> {
    let shop = Shop::new(client, req)?;
    let order = shop.order(&order_gid(&req.platform_order_id)?).await?;
    let done: Vec<&FulfillmentNode> = order.fulfillments.iter().filter(|f| f.status == "SUCCESS").collect();
    if done.iter().any(|f| f.has_event(status)) {
        return Ok(Applied::AlreadyDone);
    }
    let (fulfillment_id, fulfilled_now) = match done.last() {
        Some(f) => (f.id.clone(), false),
        None if fulfil_first => (shop.fulfil(&order, req, notify).await?, true),
        // Nothing was fulfilled, so there is nothing to annotate.
        None => return Ok(Applied::AlreadyDone),
    };
    let message = match &req.action {
        crate::SyncAction::Failed { reason } => Some(reason.as_str()),
        _ => None,
    };
    shop.event(&fulfillment_id, status, message).await?;
    let summary = if fulfilled_now {
        format!("fulfilled {fulfillment_id}, event {status}")
    } else {
        format!("event {status} on {fulfillment_id}")
    };
    Ok(Applied::Changed { status: 200, summary })
}

fn check_user_errors(what: &str, errors: &[UserError]) -> Result<(), CallError> {
    if errors.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = errors
        .iter()
        .map(|e| match &e.field {
            Some(field) => format!("{}: {}", field.join("."), e.message),
            None => e.message.clone(),
        })
        .collect();
    Err(CallError::permanent(format!("{what}: {}", text.join("; "))))
}

/// The `data` of a GraphQL answer, after classifying top-level `errors`: THROTTLED is a rate
/// limit (wait computed from the cost extension), INTERNAL_SERVER_ERROR is transient, anything
/// else (access denied, bad query, invalid variables) is permanent.
fn data<T: DeserializeOwned>(reply: &Reply, what: &str) -> Result<T, CallError> {
    let body: Value = http::json(reply, what)?;
    let keep = || Some(String::from_utf8_lossy(&reply.body[..reply.body.len().min(2048)]).into_owned());
    if let Some(errors) = body.get("errors").filter(|e| !e.is_null()) {
        let list = errors.as_array().cloned().unwrap_or_else(|| vec![json!({"message": errors})]);
        let code = |e: &Value| e.pointer("/extensions/code").and_then(Value::as_str).map(str::to_owned);
        let messages: Vec<String> = list
            .iter()
            .map(|e| {
                e.get("message").map_or_else(|| e.to_string(), |m| m.as_str().map_or(m.to_string(), str::to_owned))
            })
            .collect();
        let error = format!("{what}: {}", messages.join("; "));
        let status = Some(reply.status);
        if list.iter().any(|e| code(e).as_deref() == Some("THROTTLED")) {
            return Err(CallError::RateLimited {
                error,
                retry_after: Some(throttle_wait(&body)),
                status,
                body: keep(),
            });
        }
        if list.iter().any(|e| code(e).as_deref() == Some("INTERNAL_SERVER_ERROR")) {
            return Err(CallError::Transient { error, retry_after: None, status, body: keep() });
        }
        return Err(CallError::Permanent { error, status, body: keep() });
    }
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    serde_json::from_value(data).map_err(|e| CallError::Transient {
        error: format!("{what}: unexpected answer shape: {e}"),
        retry_after: None,
        status: Some(reply.status),
        body: keep(),
    })
}

/// Time for the cost bucket to hold the query again: (requested − available) / restore rate.
fn throttle_wait(body: &Value) -> Duration {
    let cost = |p: &str| body.pointer(&format!("/extensions/cost{p}")).and_then(Value::as_f64);
    let wait = match (
        cost("/requestedQueryCost"),
        cost("/throttleStatus/currentlyAvailable"),
        cost("/throttleStatus/restoreRate"),
    ) {
        (Some(requested), Some(available), Some(rate)) if rate > 0.0 => (requested - available).max(0.0) / rate,
        _ => 1.0,
    };
    Duration::from_secs_f64(wait.clamp(1.0, 60.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: Value) -> Reply {
        Reply { status: 200, body: body.to_string().into_bytes() }
    }

    #[test]
    fn order_ids_become_gids() {
        assert_eq!(order_gid("820982911946154508").unwrap(), "gid://shopify/Order/820982911946154508");
        assert_eq!(order_gid("gid://shopify/Order/1").unwrap(), "gid://shopify/Order/1");
        assert!(order_gid("1 OR 1").is_err());
    }

    #[test]
    fn throttled_is_a_rate_limit_with_the_cost_wait() {
        let body = json!({
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {"cost": {"requestedQueryCost": 502, "throttleStatus": {"currentlyAvailable": 2, "restoreRate": 100.0}}}
        });
        match data::<Value>(&reply(body), "q") {
            Err(CallError::RateLimited { retry_after, .. }) => assert_eq!(retry_after, Some(Duration::from_secs(5))),
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }

    #[test]
    fn access_denied_is_permanent_and_internal_error_transient() {
        let denied = json!({"errors": [{"message": "Access denied", "extensions": {"code": "ACCESS_DENIED"}}]});
        assert!(matches!(data::<Value>(&reply(denied), "q"), Err(CallError::Permanent { .. })));
        let internal = json!({"errors": [{"message": "oops", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]});
        assert!(matches!(data::<Value>(&reply(internal), "q"), Err(CallError::Transient { .. })));
    }

    #[test]
    fn user_errors_are_permanent_with_their_fields() {
        let errors = vec![UserError { field: Some(vec!["fulfillment".into(), "x".into()]), message: "bad".into() }];
        let err = check_user_errors("fulfillmentCreate", &errors).unwrap_err();
        assert!(matches!(&err, CallError::Permanent { .. }));
        assert_eq!(err.message(), "fulfillmentCreate: fulfillment.x: bad");
    }
}

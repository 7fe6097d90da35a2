//! Shopify GraphQL Admin API stand-in: `POST /admin/api/{version}/graphql.json` with
//! `X-Shopify-Access-Token`, answering the three operations the connector sends:
//! the `order(id:)` query (fulfillments with their events, fulfillment orders),
//! `fulfillmentCreate(fulfillment: FulfillmentInput!)` and
//! `fulfillmentEventCreate(fulfillmentEvent: FulfillmentEventInput!)`.
//!
//! It is not a GraphQL engine: it recognises the operation by its root field, reads the
//! variables strictly (unknown input fields are rejected, as GraphQL coercion does), and
//! answers with every field the connector may select.

use crate::fault::WriteApplied;
use crate::{Shared, State, ACCESS_TOKEN};
use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::sync::Arc;

const ORDER_GID: &str = "gid://shopify/Order/";
const FULFILLMENT_ORDER_GID: &str = "gid://shopify/FulfillmentOrder/";
const FULFILLMENT_GID: &str = "gid://shopify/Fulfillment/";

/// `FulfillmentEventStatus` values in the 2025-01 schema.
const EVENT_STATUSES: &[&str] = &[
    "ATTEMPTED_DELIVERY",
    "CARRIER_PICKED_UP",
    "CONFIRMED",
    "DELAYED",
    "DELIVERED",
    "FAILURE",
    "IN_TRANSIT",
    "LABEL_PRINTED",
    "LABEL_PURCHASED",
    "OUT_FOR_DELIVERY",
    "PICKED_UP",
    "READY_FOR_PICKUP",
];

#[derive(Debug, Clone)]
pub(crate) struct FulfillmentOrder {
    pub id: u64,
    pub status: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Fulfillment {
    pub id: u64,
    pub status: String,
    pub events: Vec<String>,
    pub tracking: Value,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Order {
    pub fulfillment_orders: Vec<FulfillmentOrder>,
    pub fulfillments: Vec<Fulfillment>,
}

impl Order {
    /// The seed vocabulary: DELIVERED, FULFILLED, or the first fulfillment order's status.
    pub fn summary_status(&self) -> String {
        if self.fulfillments.iter().any(|f| f.events.iter().any(|e| e == "DELIVERED")) {
            "DELIVERED".into()
        } else if !self.fulfillments.is_empty() {
            "FULFILLED".into()
        } else {
            self.fulfillment_orders.first().map(|fo| fo.status.clone()).unwrap_or_default()
        }
    }

    fn to_json(&self, order_id: &str) -> Value {
        let fulfillments: Vec<Value> = self
            .fulfillments
            .iter()
            .map(|f| {
                let delivered = f.events.iter().any(|e| e == "DELIVERED");
                json!({
                    "id": format!("{FULFILLMENT_GID}{}", f.id),
                    "status": f.status,
                    "displayStatus": if delivered { "DELIVERED" } else { "FULFILLED" },
                    "trackingInfo": [f.tracking],
                    "events": {"nodes": f.events.iter().map(|s| json!({"status": s})).collect::<Vec<_>>()},
                })
            })
            .collect();
        let fulfillment_orders: Vec<Value> = self
            .fulfillment_orders
            .iter()
            .map(|fo| json!({"id": format!("{FULFILLMENT_ORDER_GID}{}", fo.id), "status": fo.status}))
            .collect();
        json!({
            "id": format!("{ORDER_GID}{order_id}"),
            "fulfillments": fulfillments,
            "fulfillmentOrders": {"nodes": fulfillment_orders},
        })
    }
}

pub(crate) fn seed(state: &mut State, order_id: &str, status: &str) {
    let fo_id = state.fresh_id();
    let mut order = Order::default();
    match status {
        "OPEN" | "IN_PROGRESS" | "ON_HOLD" | "CANCELLED" | "SCHEDULED" | "INCOMPLETE" => {
            order.fulfillment_orders.push(FulfillmentOrder { id: fo_id, status: status.into() });
        }
        "FULFILLED" | "DELIVERED" => {
            order.fulfillment_orders.push(FulfillmentOrder { id: fo_id, status: "CLOSED".into() });
            let events = if status == "DELIVERED" { vec!["DELIVERED".to_owned()] } else { vec![] };
            let id = state.fresh_id();
            order.fulfillments.push(Fulfillment { id, status: "SUCCESS".into(), events, tracking: json!({}) });
        }
        other => panic!("unknown Shopify seed status {other}"),
    }
    state.shopify.insert(order_id.to_owned(), order);
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new().route("/admin/api/{version}/graphql.json", post(graphql))
}

async fn graphql(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("x-shopify-access-token").and_then(|v| v.to_str().ok()) != Some(ACCESS_TOKEN) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"})),
        )
            .into_response();
    }
    if !is_api_version(&version) {
        return (StatusCode::NOT_FOUND, Json(json!({"errors": "Not Found"}))).into_response();
    }
    let is_json =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Json(json!({"errors": "Unsupported Content-Type"})))
            .into_response();
    }
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return bad_request();
    };
    let Some(query) = request.get("query").and_then(Value::as_str) else {
        return bad_request();
    };
    let variables = match request.get("variables") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(v)) => v.clone(),
        Some(_) => return bad_request(),
    };
    let mut state = shared.lock();
    let (data, wrote) = if query.contains("fulfillmentCreateV2") {
        return graphql_error("Field 'fulfillmentCreateV2' doesn't exist on type 'Mutation'", "undefinedField");
    } else if query.contains("fulfillmentCreate(") {
        match fulfillment_create(&mut state, &variables) {
            Ok(result) => result,
            Err(response) => return response,
        }
    } else if query.contains("fulfillmentEventCreate(") {
        match fulfillment_event_create(&mut state, &variables) {
            Ok(result) => result,
            Err(response) => return response,
        }
    } else if query.contains("order(id:") {
        match order_query(&state, &variables) {
            Ok(data) => (data, false),
            Err(response) => return response,
        }
    } else {
        return graphql_error("the stand-in does not implement this operation", "undefinedField");
    };
    let mut response = Json(json!({"data": data, "extensions": cost()})).into_response();
    if wrote {
        response.extensions_mut().insert(WriteApplied);
    }
    response
}

fn is_api_version(version: &str) -> bool {
    let b = version.as_bytes();
    b.len() == 7 && b[4] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || c.is_ascii_digit())
}

fn bad_request() -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"errors": {"query": "Required parameter missing or invalid"}})))
        .into_response()
}

fn graphql_error(message: &str, code: &str) -> Response {
    Json(json!({"errors": [{"message": message, "extensions": {"code": code}}]})).into_response()
}

fn invalid_variable(name: &str, problem: &str) -> Response {
    graphql_error(&format!("Variable ${name} was provided invalid value: {problem}"), "INVALID_VARIABLE")
}

fn cost() -> Value {
    json!({"cost": {
        "requestedQueryCost": 12,
        "actualQueryCost": 10,
        "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 1990, "restoreRate": 100.0}
    }})
}

fn order_query(state: &State, variables: &Map<String, Value>) -> Result<Value, Response> {
    let gid = variables.get("id").and_then(Value::as_str).ok_or_else(|| invalid_variable("id", "expected an ID"))?;
    let order_id = gid
        .strip_prefix(ORDER_GID)
        .ok_or_else(|| graphql_error(&format!("Invalid global id '{gid}'"), "argumentLiteralsIncompatible"))?;
    Ok(json!({"order": state.shopify.get(order_id).map(|o| o.to_json(order_id))}))
}

/// Rejects input objects with fields the schema does not define, as GraphQL coercion does.
fn check_fields(name: &str, input: &Map<String, Value>, allowed: &[&str]) -> Result<(), Response> {
    match input.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(invalid_variable(name, &format!("Field is not defined on the input type: {unknown}"))),
        None => Ok(()),
    }
}

fn user_errors(root: &str, field: &[&str], message: &str) -> (Value, bool) {
    (json!({root: {"userErrors": [{"field": field, "message": message}]}}), false)
}

fn fulfillment_create(state: &mut State, variables: &Map<String, Value>) -> Result<(Value, bool), Response> {
    let input = variables
        .get("fulfillment")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid_variable("fulfillment", "expected FulfillmentInput!"))?;
    check_fields(
        "fulfillment",
        input,
        &["lineItemsByFulfillmentOrder", "trackingInfo", "notifyCustomer", "originAddress"],
    )?;
    // A single object is coerced into a one-element list, as GraphQL does for list inputs.
    let groups: Vec<&Value> = match input.get("lineItemsByFulfillmentOrder") {
        Some(Value::Array(items)) if !items.is_empty() => items.iter().collect(),
        Some(item @ Value::Object(_)) => vec![item],
        _ => return Err(invalid_variable("fulfillment", "lineItemsByFulfillmentOrder is required")),
    };
    let mut fo_ids = Vec::new();
    for group in groups {
        let group = group
            .as_object()
            .ok_or_else(|| invalid_variable("fulfillment", "expected FulfillmentOrderLineItemsInput"))?;
        check_fields("fulfillment", group, &["fulfillmentOrderId", "fulfillmentOrderLineItems"])?;
        let id = group
            .get("fulfillmentOrderId")
            .and_then(Value::as_str)
            .and_then(|gid| gid.strip_prefix(FULFILLMENT_ORDER_GID))
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| invalid_variable("fulfillment", "fulfillmentOrderId must be a FulfillmentOrder ID"))?;
        fo_ids.push(id);
    }
    let tracking = match input.get("trackingInfo") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(t)) => {
            check_fields("fulfillment", t, &["company", "number", "numbers", "url", "urls"])?;
            let strings_ok =
                ["company", "number", "url"].iter().all(|k| t.get(*k).is_none_or(|v| v.is_string() || v.is_null()));
            if !strings_ok {
                return Err(invalid_variable("fulfillment", "trackingInfo fields must be strings"));
            }
            Value::Object(t.clone())
        }
        Some(_) => return Err(invalid_variable("fulfillment", "trackingInfo must be FulfillmentTrackingInput")),
    };
    if input.get("notifyCustomer").is_some_and(|v| !v.is_boolean()) {
        return Err(invalid_variable("fulfillment", "notifyCustomer must be a Boolean"));
    }
    let field = ["fulfillment", "lineItemsByFulfillmentOrder"];
    let found = state.shopify.iter().find(|(_, o)| o.fulfillment_orders.iter().any(|fo| fo.id == fo_ids[0]));
    let Some((order_id, _)) = found else {
        return Ok(user_errors("fulfillmentCreate", &field, "Fulfillment order does not exist."));
    };
    let order_id = order_id.clone();
    let new_id = state.fresh_id();
    let order = state.shopify.get_mut(&order_id).expect("found above");
    for id in &fo_ids {
        match order.fulfillment_orders.iter().find(|fo| fo.id == *id) {
            None => return Ok(user_errors("fulfillmentCreate", &field, "Fulfillment order does not exist.")),
            Some(fo) if fo.status != "OPEN" && fo.status != "IN_PROGRESS" => {
                let message =
                    format!("Fulfillment order {id} has an unfulfillable status= {}.", fo.status.to_lowercase());
                return Ok(user_errors("fulfillmentCreate", &field, &message));
            }
            Some(_) => {}
        }
    }
    for fo in order.fulfillment_orders.iter_mut().filter(|fo| fo_ids.contains(&fo.id)) {
        fo.status = "CLOSED".into();
    }
    order.fulfillments.push(Fulfillment { id: new_id, status: "SUCCESS".into(), events: vec![], tracking });
    state.record_write(&order_id, "fulfillmentCreate");
    let data = json!({"fulfillmentCreate": {
        "fulfillment": {"id": format!("{FULFILLMENT_GID}{new_id}"), "status": "SUCCESS"},
        "userErrors": [],
    }});
    Ok((data, true))
}

fn fulfillment_event_create(state: &mut State, variables: &Map<String, Value>) -> Result<(Value, bool), Response> {
    let input = variables
        .get("fulfillmentEvent")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid_variable("fulfillmentEvent", "expected FulfillmentEventInput!"))?;
    let allowed = [
        "fulfillmentId",
        "status",
        "happenedAt",
        "message",
        "estimatedDeliveryAt",
        "address1",
        "city",
        "province",
        "country",
        "zip",
        "latitude",
        "longitude",
    ];
    check_fields("fulfillmentEvent", input, &allowed)?;
    let status = input
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| EVENT_STATUSES.contains(s))
        .ok_or_else(|| invalid_variable("fulfillmentEvent", "status must be a FulfillmentEventStatus"))?;
    let fulfillment_id = input
        .get("fulfillmentId")
        .and_then(Value::as_str)
        .and_then(|gid| gid.strip_prefix(FULFILLMENT_GID))
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or_else(|| invalid_variable("fulfillmentEvent", "fulfillmentId must be a Fulfillment ID"))?;
    let event_id = state.fresh_id();
    let found = state.shopify.iter_mut().find_map(|(order_id, o)| {
        o.fulfillments.iter_mut().find(|f| f.id == fulfillment_id).map(|f| (order_id.clone(), f))
    });
    let Some((order_id, fulfillment)) = found else {
        return Ok(user_errors(
            "fulfillmentEventCreate",
            &["fulfillmentEvent", "fulfillmentId"],
            "Fulfillment does not exist.",
        ));
    };
    fulfillment.events.push(status.to_owned());
    state.record_write(&order_id, format!("fulfillmentEventCreate:{status}"));
    let data = json!({"fulfillmentEventCreate": {
        "fulfillmentEvent": {"id": format!("gid://shopify/FulfillmentEvent/{event_id}"), "status": status},
        "userErrors": [],
    }});
    Ok((data, true))
}

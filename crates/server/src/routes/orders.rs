//! The ordering API: `POST /v1/orders` (client JWT + Idempotency-Key, per the IETF
//! Idempotency-Key draft), reading and listing orders, and ops changes (locate, readiness,
//! cancel, clear a dispatch stall).

use crate::auth::{AdminAuth, ClientAuth, TenantAuth};
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::routes::admin::not_found;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lastmile_core::*;
use lastmile_storage::{now_ms, to_ms, IdempotencyBegin, IdempotencyRef, IntakeResult, IntakeSource, OrderFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orders", post(create_order).get(list_orders))
        .route("/v1/orders/{id}", get(get_order).patch(patch_order))
        .route("/v1/orders/{id}/cancel", post(cancel_order))
        .route("/v1/orders/{id}/unstall", post(unstall_order))
}

/// Idempotency keys live at least this long (the draft suggests 24 h).
const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

/// Reads a JSON object field by field, collecting per-field errors instead of stopping.
struct Fields<'a> {
    root: &'a Value,
    errors: Vec<(String, String)>,
}

impl<'a> Fields<'a> {
    fn at(&self, path: &str) -> Option<&'a Value> {
        path.split('.').try_fold(self.root, |v, k| v.get(k)).filter(|v| !v.is_null())
    }
    fn err(&mut self, path: &str, msg: &str) {
        self.errors.push((path.to_owned(), msg.to_owned()));
    }
    fn string(&mut self, path: &str, required: bool) -> Option<String> {
        match self.at(path) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(Value::String(_)) | None if required => {
                self.err(path, "is required");
                None
            }
            Some(Value::String(_)) | None => None,
            Some(_) => {
                self.err(path, "must be a string");
                None
            }
        }
    }
    fn number(&mut self, path: &str) -> Option<f64> {
        match self.at(path) {
            Some(Value::Number(n)) => n.as_f64(),
            None => {
                self.err(path, "is required");
                None
            }
            Some(_) => {
                self.err(path, "must be a number");
                None
            }
        }
    }
    fn integer(&mut self, v: &Value, path: &str, min: i64) -> Option<i64> {
        match v.as_i64() {
            Some(n) if n >= min => Some(n),
            Some(_) => {
                self.err(path, &format!("must be at least {min}"));
                None
            }
            None => {
                self.err(path, "must be an integer");
                None
            }
        }
    }
}

/// `POST /v1/orders`' body. The handler reads it field by field with [`parse_native`], so
/// that every bad field is reported at once; these types describe what that reading
/// accepts. Items that name `item_id` make it a catalog order (prices from the menu).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct OrderInput {
    store_id: String,
    /// Your own id; repeats with the same id update rather than duplicate.
    external_id: Option<String>,
    customer: CustomerInput,
    dropoff: DropoffInput,
    #[schema(min_items = 1)]
    items: Vec<OrderItemInput>,
    /// ISO 4217, e.g. `EUR` (catalog orders take the menu's).
    currency: Option<String>,
    notes: Option<String>,
    /// When the order can be picked up; now when absent.
    ready_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
struct CustomerInput {
    name: String,
    phone: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
struct DropoffInput {
    address: Address,
    lat: f64,
    lng: f64,
}

#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum OrderItemInput {
    /// A line with its own name and price.
    Line { sku: Option<String>, name: String, quantity: i64, unit_price_minor: i64 },
    /// A dish from the store's catalog menu.
    Dish { item_id: String, quantity: i64, notes: Option<String> },
}

/// An order with what ops need beside it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDetail {
    #[serde(flatten)]
    pub order: Order,
    /// How it was delivered, once it is.
    pub proof: Option<lastmile_storage::DeliveryProof>,
    /// Set when ops should look at it.
    pub attention: Option<lastmile_storage::Attention>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

pub(crate) struct NativeOrder {
    pub(crate) store_id: StoreId,
    pub(crate) order: NormalizedOrder,
    pub(crate) ready_at: i64,
}

pub(crate) fn parse_native(body: &Value) -> Result<NativeOrder, ApiError> {
    if !body.is_object() {
        return Err(ApiError::unprocessable("invalid_body", "the body must be a JSON object"));
    }
    let mut f = Fields { root: body, errors: Vec::new() };
    let store_id = f.string("store_id", true);
    let external_id = f.string("external_id", false);
    let name = f.string("customer.name", true);
    let phone = f.string("customer.phone", false);
    let email = f.string("customer.email", false);
    if let Some(e) = &email {
        if !e.contains('@') {
            f.err("customer.email", "must be an email address");
        }
    }
    let line1 = f.string("dropoff.address.line1", true);
    let line2 = f.string("dropoff.address.line2", false);
    let city = f.string("dropoff.address.city", true);
    let region = f.string("dropoff.address.region", false);
    let postal = f.string("dropoff.address.postal_code", true);
    let country = f.string("dropoff.address.country", true);
    let (lat, lng) = (f.number("dropoff.lat"), f.number("dropoff.lng"));
    let point = match (lat, lng) {
        (Some(a), Some(b)) => match GeoPoint::new(a, b) {
            Ok(p) => Some(p),
            Err(e) => {
                f.err("dropoff", &e.to_string());
                None
            }
        },
        _ => None,
    };
    let currency = f.string("currency", true);
    if let Some(c) = &currency {
        if c.len() != 3 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
            f.err("currency", "must be an ISO 4217 code such as EUR");
        }
    }
    let notes = f.string("notes", false);
    let ready_at = match f.at("ready_at") {
        None => Some(now_ms()),
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(to_ms(t.with_timezone(&Utc))),
            Err(_) => {
                f.err("ready_at", "must be an RFC 3339 time");
                None
            }
        },
        Some(_) => {
            f.err("ready_at", "must be an RFC 3339 time");
            None
        }
    };
    let mut items = Vec::new();
    match f.at("items") {
        Some(Value::Array(list)) if !list.is_empty() => {
            for (i, it) in list.iter().enumerate() {
                let p = |k: &str| format!("items[{i}].{k}");
                let sku = it.get("sku").and_then(Value::as_str).map(str::to_owned);
                let name = it.get("name").and_then(Value::as_str).filter(|s| !s.trim().is_empty()).map(str::to_owned);
                if name.is_none() {
                    f.err(&p("name"), "is required");
                }
                let qty = f.integer(it.get("quantity").unwrap_or(&Value::Null), &p("quantity"), 1);
                let price = f.integer(it.get("unit_price_minor").unwrap_or(&Value::Null), &p("unit_price_minor"), 0);
                if let (Some(name), Some(quantity), Some(unit_price_minor)) = (name, qty, price) {
                    items.push(LineItem { sku, name, quantity, unit_price_minor });
                }
            }
        }
        Some(Value::Array(_)) | None => f.err("items", "must list at least one item"),
        Some(_) => f.err("items", "must be an array"),
    }
    if !f.errors.is_empty() {
        return Err(ApiError::validation(f.errors));
    }
    let subtotal: i64 =
        items.iter().map(|i| i.quantity.saturating_mul(i.unit_price_minor)).fold(0i64, i64::saturating_add);
    let point = point.expect("validated above");
    let order = NormalizedOrder {
        platform: Platform::Native,
        platform_order_id: external_id.unwrap_or_else(|| OrderId::generate().0),
        platform_order_number: None,
        state: PlatformState::Open,
        customer: Customer { name: name.unwrap_or_default(), email, phone },
        dropoff: Dropoff {
            address: Address {
                line1: line1.unwrap_or_default(),
                line2,
                city: city.unwrap_or_default(),
                region,
                postal_code: postal.unwrap_or_default(),
                country: country.unwrap_or_default(),
            },
            lat: Some(point.lat),
            lng: Some(point.lng),
        },
        items,
        totals: Totals {
            subtotal_minor: subtotal,
            shipping_minor: 0,
            tax_minor: 0,
            total_minor: subtotal,
            currency: currency.unwrap_or_default(),
        },
        notes,
        placed_at: Some(Utc::now()),
        platform_updated_at: None,
    };
    Ok(NativeOrder {
        store_id: StoreId(store_id.unwrap_or_default()),
        order,
        ready_at: ready_at.unwrap_or_else(now_ms),
    })
}

fn replay(status: u16, body: String) -> Response {
    let mut res =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), [("content-type", "application/json")], body)
            .into_response();
    res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    res
}

#[utoipa::path(post, path = "/v1/orders", tag = "orders",
    params(("Idempotency-Key" = String, Header, description = "Required; same key + same body replays the first answer")),
    request_body = OrderInput,
    responses((status = 201, description = "The order", body = Order), (status = 200, description = "The same order again (a repeated external_id)", body = Order),
              (status = 409, description = "idempotency_key_in_use, or out_of_stock for a catalog order"), (status = 422, description = "validation_failed or idempotency_key_reused")),
    security(("client_jwt" = [])))]
pub async fn create_order(
    State(state): State<AppState>,
    auth: ClientAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("idempotency_key_missing", "the Idempotency-Key header is required"))?;
    if key.len() > 255 {
        return Err(ApiError::bad_request(
            "idempotency_key_invalid",
            "the Idempotency-Key must be at most 255 characters",
        ));
    }
    let idem = IdempotencyRef { client_id: auth.client_id.0.clone(), key };
    let fingerprint = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body));
    match state.db.begin_idempotency(&auth.tenant_id, &idem, &fingerprint, IDEMPOTENCY_TTL_MS).await? {
        IdempotencyBegin::Fresh => {}
        IdempotencyBegin::InFlight => {
            return Err(ApiError::conflict(
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed",
            ))
        }
        IdempotencyBegin::Mismatch => {
            return Err(ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            ))
        }
        IdempotencyBegin::Completed { status, body } => return Ok(replay(status, body)),
    }
    match create_order_inner(&state, &auth, &body, &idem).await {
        Ok(res) => Ok(res),
        Err(e) if e.status.is_client_error() => {
            // Client errors are part of the key's answer: replay them too.
            let body = serde_json::to_string(&e.body()).map_err(ApiError::internal)?;
            state.db.complete_idempotency(&auth.tenant_id, &idem, e.status.as_u16(), &body).await?;
            Err(e)
        }
        Err(e) => {
            let _ = state.db.release_idempotency(&auth.tenant_id, &idem).await;
            Err(e)
        }
    }
}

async fn create_order_inner(
    state: &AppState,
    auth: &ClientAuth,
    body: &[u8],
    idem: &IdempotencyRef,
) -> ApiResult<Response> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    if crate::routes::catalog::is_catalog_order(&value) {
        return crate::routes::catalog::create_catalog_order(state, auth, &value, idem).await;
    }
    let native = parse_native(&value)?;
    let store = state.db.get_store(&auth.tenant_id, &native.store_id).await.map_err(|e| match e {
        lastmile_storage::StorageError::NotFound => {
            ApiError::validation(vec![("store_id".into(), "no such store".into())])
        }
        other => other.into(),
    })?;
    let src =
        IntakeSource { tenant_id: auth.tenant_id.clone(), store_id: store.id.clone(), platform: Platform::Native };
    let (order, result) = state.db.create_native_order(src, native.order, native.ready_at, Some(idem.clone())).await?;
    metrics::counter!("lastmile_orders_ingested_total", "platform" => "native", "result" => result.as_str())
        .increment(1);
    let status = if result == IntakeResult::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(order)).into_response())
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", params(("id" = String, Path)), responses((status = 200, description = "The order, with `proof` (of delivery) and `attention` (ops flag), each null when absent", body = OrderDetail), (status = 404, description = "Not found")), security(("client_jwt" = []), ("admin_key" = [])))]
pub async fn get_order(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<OrderDetail>> {
    let order = state.db.get_order(&auth.tenant_id, &OrderId(id)).await.map_err(not_found("order"))?;
    // What ops need beside the order: how it was delivered, and whether it needs them.
    let proof = state.db.delivery_proof(&auth.tenant_id, &order.id).await?;
    let attention = state.db.order_attention(&auth.tenant_id, &order.id).await?;
    Ok(Json(OrderDetail { order, proof, attention }))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    store_id: Option<String>,
    updated_since: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

fn encode_cursor(o: &Order) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{}", to_ms(o.updated_at), o.id))
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let text = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let (t, id) = text.split_once('|')?;
    Some((t.parse().ok()?, id.to_owned()))
}

#[utoipa::path(get, path = "/v1/orders", tag = "orders",
    params(("status" = Option<String>, Query), ("store_id" = Option<String>, Query), ("updated_since" = Option<String>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "Oldest change first", body = OrderPage), (status = 422, description = "validation_failed")), security(("client_jwt" = []), ("admin_key" = [])))]
pub async fn list_orders(
    State(state): State<AppState>,
    auth: TenantAuth,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<OrderPage>> {
    let (filter, limit) = q.filter()?;
    let mut orders = state.db.list_orders(&auth.tenant_id, &filter).await?;
    let next = if orders.len() as i64 > limit {
        orders.truncate(limit as usize);
        orders.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(OrderPage { orders, next_cursor: next }))
}

impl ListQuery {
    /// The storage filter (one more than the page, to tell whether another follows) and
    /// the page size, or every bad parameter.
    pub fn filter(self) -> ApiResult<(OrderFilter, i64)> {
        let q = self;
        let mut fields = Vec::new();
        let status = q.status.as_deref().map(|s| s.parse::<OrderStatus>()).transpose().unwrap_or_else(|_| {
            fields.push(("status".to_string(), "unknown status".to_string()));
            None
        });
        let updated_since =
            q.updated_since.as_deref().map(DateTime::parse_from_rfc3339).transpose().unwrap_or_else(|_| {
                fields.push(("updated_since".to_string(), "must be an RFC 3339 time".to_string()));
                None
            });
        let after = q.cursor.as_deref().map(|c| decode_cursor(c).ok_or(())).transpose().unwrap_or_else(|_| {
            fields.push(("cursor".to_string(), "is not a cursor this API issued".to_string()));
            None
        });
        let limit = q.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            fields.push(("limit".into(), "must be between 1 and 500".into()));
        }
        if !fields.is_empty() {
            return Err(ApiError::validation(fields));
        }
        let filter = OrderFilter {
            status,
            store_id: q.store_id.map(StoreId),
            updated_since: updated_since.map(|t| to_ms(t.with_timezone(&Utc))),
            after,
            limit: limit + 1,
        };
        Ok((filter, limit))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PatchInput {
    dropoff: Option<PatchDropoff>,
    ready_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PatchDropoff {
    lat: f64,
    lng: f64,
}

#[utoipa::path(patch, path = "/v1/orders/{id}", tag = "orders", params(("id" = String, Path)),
    request_body(content = PatchInput, description = "dropoff coordinates and/or ready_at"),
    responses((status = 200, description = "The order", body = Order), (status = 404, description = "Not found"), (status = 409, description = "The order is past the point of change"), (status = 422, description = "validation_failed")),
    security(("admin_key" = [])))]
pub async fn patch_order(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Json(input): Json<PatchInput>,
) -> ApiResult<Json<Order>> {
    let location = match &input.dropoff {
        Some(d) => Some(
            GeoPoint::new(d.lat, d.lng).map_err(|e| ApiError::validation(vec![("dropoff".into(), e.to_string())]))?,
        ),
        None => None,
    };
    if location.is_none() && input.ready_at.is_none() {
        return Err(ApiError::validation(vec![("dropoff".into(), "give dropoff coordinates or ready_at".into())]));
    }
    let order = state
        .db
        .patch_order(&auth.tenant_id, &OrderId(id), location.map(|p| (p.lat, p.lng)), input.ready_at.map(to_ms))
        .await
        .map_err(not_found("order"))?;
    Ok(Json(order))
}

#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct CancelInput {
    reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", params(("id" = String, Path)), request_body(content = Option<CancelInput>, description = "optional"), responses((status = 200, description = "The cancelled order", body = Order), (status = 404, description = "Not found"), (status = 409, description = "Already finished"), (status = 422, description = "invalid_body")), security(("client_jwt" = []), ("admin_key" = [])))]
pub async fn cancel_order(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Order>> {
    let input: CancelInput = if body.is_empty() {
        CancelInput::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::unprocessable("invalid_body", e.to_string()))?
    };
    let reason = input.reason.unwrap_or_else(|| "cancelled by the store".into());
    let order = state.db.cancel_order(&auth.tenant_id, &OrderId(id), &reason).await.map_err(not_found("order"))?;
    // A catalog order gave its stock back: this node's menu copy goes now (others' on the event).
    state.catalog.forget_menu(&auth.tenant_id, &order.store_id);
    crate::payments::refund_captured(&state, &auth.tenant_id, &order.id).await;
    Ok(Json(order))
}

#[utoipa::path(post, path = "/v1/orders/{id}/unstall", tag = "orders", params(("id" = String, Path)), responses((status = 200, description = "Back in matching", body = Order), (status = 404, description = "Not found"), (status = 409, description = "Not stalled, or finished")), security(("admin_key" = [])))]
pub async fn unstall_order(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Order>> {
    let id = OrderId(id);
    state.db.unstall_order(&auth.tenant_id, &id).await.map_err(not_found("order"))?;
    Ok(Json(state.db.get_order(&auth.tenant_id, &id).await?))
}

//! The restaurant catalog over HTTP: menus (admin), the store list, menus with live
//! availability (ETag / 304), typo-tolerant search, and catalog orders (the branch of
//! `POST /v1/orders` whose items name dishes by `item_id`).

use crate::auth::{AdminAuth, ClientAuth, TenantAuth};
use crate::catalog::{Cached, CachedMenu};
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::routes::admin::not_found;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, put};
use axum::Router;
use bytes::Bytes;
use chrono::Utc;
use lastmile_catalog::{ItemPatch, Menu, SearchQuery, Stock, StoreHit, StoreQuery};
use lastmile_core::{GeoPoint, Platform, StoreId, TenantId};
use lastmile_storage::{CatalogOrderOutcome, IdempotencyRef, IntakeResult, IntakeSource, MenuView, StoredItem};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/stores/{id}/menu", put(put_menu))
        .route("/v1/stores/{id}/menu/items/{item_id}", patch(patch_item))
        .route("/v1/catalog/stores", get(list_stores))
        .route("/v1/catalog/stores/{id}/menu", get(get_menu))
        .route("/v1/catalog/search", get(search))
        .route("/v1/orders/{id}/payments", get(order_payments))
        .route("/v1/eta/learned", get(learned_etas))
}

const DEFAULT_RADIUS_M: f64 = 5_000.0;
const MAX_RADIUS_M: f64 = 50_000.0;
const HOUR_MS: i64 = 3_600_000;

fn fields(list: Vec<(String, String)>) -> ApiError {
    ApiError::validation(list)
}

/// A dish as the API shows it: the admin's fields plus live availability.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemView {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub aliases: Vec<String>,
    pub tags: Vec<String>,
    pub price_minor: i64,
    pub currency: String,
    pub prep_time_s: i64,
    pub photo_url: Option<String>,
    /// The admin's switch.
    pub enabled: bool,
    /// Whether at least one can be ordered now.
    pub available: bool,
    pub stock: StockView,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StockView {
    Count { quantity: i64 },
    MadeToOrder { per_hour: i64, remaining_this_hour: i64 },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CategoryView {
    pub name: String,
    pub items: Vec<ItemView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MenuJson {
    pub store_id: String,
    pub name: String,
    pub cuisine: Vec<String>,
    pub hours: Vec<lastmile_catalog::OpeningHours>,
    pub delivery_radius_m: Option<f64>,
    pub version: i64,
    pub categories: Vec<CategoryView>,
}

fn item_json(s: &StoredItem) -> ItemView {
    let it = &s.item;
    let stock = match it.stock {
        Stock::Count { quantity } => StockView::Count { quantity },
        Stock::MadeToOrder { per_hour } => {
            StockView::MadeToOrder { per_hour, remaining_this_hour: (per_hour - s.reserved_this_hour).max(0) }
        }
    };
    ItemView {
        id: s.id.clone(),
        sku: it.sku.clone(),
        name: it.name.clone(),
        description: it.description.clone(),
        aliases: it.aliases.clone(),
        tags: it.tags.clone(),
        price_minor: it.price_minor,
        currency: it.currency.clone(),
        prep_time_s: it.prep_time_s,
        photo_url: it.photo_url.clone(),
        enabled: it.available,
        available: s.orderable() > 0,
        stock,
    }
}

fn menu_json(m: &MenuView) -> MenuJson {
    let mut categories: Vec<CategoryView> = Vec::new();
    for s in &m.items {
        match categories.iter_mut().find(|c| c.name == s.category) {
            Some(c) => c.items.push(item_json(s)),
            None => categories.push(CategoryView { name: s.category.clone(), items: vec![item_json(s)] }),
        }
    }
    let s = &m.store;
    MenuJson {
        store_id: s.id.clone(),
        name: s.name.clone(),
        cuisine: s.cuisine.clone(),
        hours: s.hours.clone(),
        delivery_radius_m: s.delivery_radius_m,
        version: m.version,
        categories,
    }
}

#[utoipa::path(put, path = "/v1/stores/{id}/menu", tag = "catalog", params(("id" = String, Path)),
    request_body = lastmile_catalog::Menu,
    responses((status = 200, description = "The stored menu, dishes with ids", body = MenuJson), (status = 404, description = "No such store"), (status = 422, description = "validation_failed")),
    security(("admin_key" = [])))]
pub async fn put_menu(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<MenuJson>> {
    let menu: Menu = serde_json::from_slice(&body).map_err(|e| fields(vec![("body".into(), e.to_string())]))?;
    let menu = menu.validate().map_err(fields)?;
    let audited = crate::audit::db(&state, &auth, "menu.put", Some(&id));
    let view = audited.put_menu(&auth.tenant_id, &StoreId(id), menu).await.map_err(not_found("store"))?;
    state.catalog.store_changed(&auth.tenant_id, view.store.clone());
    Ok(Json(menu_json(&view)))
}

#[utoipa::path(patch, path = "/v1/stores/{id}/menu/items/{item_id}", tag = "catalog",
    params(("id" = String, Path), ("item_id" = String, Path)),
    request_body = ItemPatch,
    responses((status = 200, description = "The dish", body = ItemView), (status = 404, description = "No such dish"), (status = 422, description = "validation_failed")), security(("admin_key" = [])))]
pub async fn patch_item(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path((id, item_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<ItemView>> {
    let patch: ItemPatch = serde_json::from_slice(&body).map_err(|e| fields(vec![("body".into(), e.to_string())]))?;
    patch.validate().map_err(fields)?;
    let view = crate::audit::db(&state, &auth, "menu_item.update", Some(&item_id))
        .patch_menu_item(&auth.tenant_id, &StoreId(id), &item_id, patch)
        .await
        .map_err(not_found("menu item"))?;
    state.catalog.store_changed(&auth.tenant_id, view.store.clone());
    let item = view.items.iter().find(|i| i.id == item_id).ok_or_else(|| ApiError::not_found("menu item"))?;
    Ok(Json(item_json(item)))
}

#[derive(Debug, Deserialize)]
pub struct PlaceParams {
    lat: Option<String>,
    lng: Option<String>,
    radius_m: Option<String>,
    cuisine: Option<String>,
    open_now: Option<String>,
    q: Option<String>,
    tags: Option<String>,
    max_price_minor: Option<String>,
    limit: Option<String>,
}

impl PlaceParams {
    /// Where the shopper is and what places qualify; every bad parameter is reported.
    pub(crate) fn place(&self, tenant: &TenantId, errors: &mut Vec<(String, String)>) -> Option<StoreQuery> {
        let mut num = |name: &str, v: &Option<String>| -> Option<f64> {
            let v = v.as_deref()?;
            let n = v.parse::<f64>().ok().filter(|n| n.is_finite());
            if n.is_none() {
                errors.push((name.into(), "must be a number".into()));
            }
            n
        };
        let (lat, lng, radius) = (num("lat", &self.lat), num("lng", &self.lng), num("radius_m", &self.radius_m));
        let near = match (lat, lng) {
            (Some(a), Some(b)) => GeoPoint::new(a, b).map_err(|e| errors.push(("lat".into(), e.to_string()))).ok(),
            _ => {
                if self.lat.is_none() || self.lng.is_none() {
                    errors.push(("lat".into(), "lat and lng are required".into()));
                }
                None
            }
        };
        let radius_m = radius.unwrap_or(DEFAULT_RADIUS_M);
        if !(radius_m > 0.0 && radius_m <= MAX_RADIUS_M) {
            errors.push(("radius_m".into(), format!("must be above 0 and at most {MAX_RADIUS_M}")));
        }
        let open_now = match self.open_now.as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => {
                errors.push(("open_now".into(), "must be true or false".into()));
                false
            }
        };
        Some(StoreQuery {
            tenant_id: tenant.0.clone(),
            near: near?,
            radius_m,
            cuisine: self.cuisine.as_deref().map(|c| c.trim().to_lowercase()).filter(|c| !c.is_empty()),
            open_now,
            now: Utc::now(),
        })
    }

    pub(crate) fn limit(&self, errors: &mut Vec<(String, String)>) -> usize {
        match self.limit.as_deref().map(str::parse::<usize>) {
            None => 20,
            Some(Ok(n)) if (1..=100).contains(&n) => n,
            Some(_) => {
                errors.push(("limit".into(), "must be between 1 and 100".into()));
                20
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogStoreView {
    pub id: String,
    pub name: String,
    pub cuisine: Vec<String>,
    pub distance_m: f64,
    pub open_now: bool,
    pub eta_s: i64,
    /// Relevance, in search results only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogStoreList {
    pub stores: Vec<CatalogStoreView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DishView {
    pub id: String,
    pub store_id: String,
    pub store_name: String,
    pub name: String,
    pub category: String,
    pub tags: Vec<String>,
    pub price_minor: i64,
    pub currency: String,
    pub enabled: bool,
    pub distance_m: f64,
    pub eta_s: i64,
    pub score: f32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    pub stores: Vec<CatalogStoreView>,
    pub dishes: Vec<DishView>,
}

fn store_json(state: &AppState, q: &StoreQuery, h: &StoreHit) -> CatalogStoreView {
    let eta = state.etas.delivery_eta_s(
        &TenantId(q.tenant_id.clone()),
        &h.store.id,
        &h.store.location,
        &q.near,
        h.store.typical_prep_s(),
        state.clock.now_ms(),
    );
    CatalogStoreView {
        id: h.store.id.clone(),
        name: h.store.name.clone(),
        cuisine: h.store.cuisine.clone(),
        distance_m: h.distance_m.round(),
        open_now: h.open_now,
        eta_s: eta,
        score: None,
    }
}

#[utoipa::path(get, path = "/v1/catalog/stores", tag = "catalog",
    params(("lat" = f64, Query), ("lng" = f64, Query), ("radius_m" = Option<f64>, Query), ("cuisine" = Option<String>, Query), ("open_now" = Option<bool>, Query), ("limit" = Option<i64>, Query, description = "1 to 100, default 20")),
    responses((status = 200, description = "Nearest first", body = CatalogStoreList), (status = 422, description = "validation_failed")),
    security(("client_jwt" = []), ("admin_key" = [])))]
pub async fn list_stores(
    State(state): State<AppState>,
    auth: TenantAuth,
    Query(p): Query<PlaceParams>,
) -> ApiResult<Json<CatalogStoreList>> {
    let mut errors = Vec::new();
    let place = p.place(&auth.tenant_id, &mut errors);
    let limit = p.limit(&mut errors);
    let Some(q) = place.filter(|_| errors.is_empty()) else { return Err(fields(errors)) };
    let snap = state.catalog.snapshot();
    let stores = snap.nearby(&q).iter().take(limit).map(|h| store_json(&state, &q, h)).collect();
    Ok(Json(CatalogStoreList { stores }))
}

#[utoipa::path(get, path = "/v1/catalog/search", tag = "catalog",
    params(("q" = String, Query), ("lat" = f64, Query), ("lng" = f64, Query), ("radius_m" = Option<f64>, Query), ("cuisine" = Option<String>, Query),
        ("tags" = Option<String>, Query, description = "comma-separated; a dish must carry all"), ("max_price_minor" = Option<i64>, Query), ("open_now" = Option<bool>, Query), ("limit" = Option<i64>, Query, description = "1 to 100, default 20")),
    responses((status = 200, description = "By relevance then distance", body = SearchResults), (status = 422, description = "validation_failed")),
    security(("client_jwt" = []), ("admin_key" = [])))]
pub async fn search(
    State(state): State<AppState>,
    auth: TenantAuth,
    Query(p): Query<PlaceParams>,
) -> ApiResult<Json<SearchResults>> {
    let mut errors = Vec::new();
    let place = p.place(&auth.tenant_id, &mut errors);
    let limit = p.limit(&mut errors);
    let text = p.q.as_deref().map(str::trim).unwrap_or_default().to_owned();
    if text.is_empty() || text.chars().count() > 200 {
        errors.push(("q".into(), "is required (at most 200 characters)".into()));
    }
    let max_price_minor = match p.max_price_minor.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(n)) if n >= 0 => Some(n),
        Some(_) => {
            errors.push(("max_price_minor".into(), "must be a whole number of minor units".into()));
            None
        }
    };
    let tags: Vec<String> = p
        .tags
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let Some(place) = place.filter(|_| errors.is_empty()) else { return Err(fields(errors)) };
    let q = SearchQuery { text, place, tags, max_price_minor, limit };
    let snap = state.catalog.snapshot();
    let hits = snap.search(&q);
    let stores = hits
        .stores
        .iter()
        .map(|h| CatalogStoreView { score: Some(h.score), ..store_json(&state, &q.place, h) })
        .collect();
    let dishes = hits
        .dishes
        .iter()
        .map(|h| {
            let d = &h.store.dishes[h.dish];
            DishView {
                id: d.id.clone(),
                store_id: h.store.id.clone(),
                store_name: h.store.name.clone(),
                name: d.name.clone(),
                category: d.category.clone(),
                tags: d.tags.clone(),
                price_minor: d.price_minor,
                currency: d.currency.clone(),
                enabled: d.available,
                distance_m: h.distance_m.round(),
                eta_s: state.etas.delivery_eta_s(
                    &TenantId(q.place.tenant_id.clone()),
                    &h.store.id,
                    &h.store.location,
                    &q.place.near,
                    d.prep_time_s,
                    state.clock.now_ms(),
                ),
                score: h.score,
            }
        })
        .collect();
    Ok(Json(SearchResults { stores, dishes }))
}

#[utoipa::path(get, path = "/v1/catalog/stores/{id}/menu", tag = "catalog", params(("id" = String, Path)),
    responses((status = 200, description = "The menu with live availability; ETag", body = MenuJson), (status = 304, description = "Unchanged since If-None-Match"), (status = 404, description = "No menu")),
    security(("client_jwt" = []), ("admin_key" = [])))]
pub async fn get_menu(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let store = StoreId(id);
    let tenant = &auth.tenant_id;
    let hour = lastmile_storage::now_ms().div_euclid(HOUR_MS);
    let cached = match state.catalog.cached_menu(tenant, &store, hour) {
        Cached::Fresh(m) => Some(m),
        Cached::Unchecked(m) => {
            let version = state.db.menu_version(tenant, &store).await.map_err(not_found("menu"))?;
            (version == m.version).then(|| {
                state.catalog.menu_checked(tenant, &store, version);
                m
            })
        }
        Cached::Missing => None,
    };
    let menu = match cached {
        Some(m) => m,
        None => {
            let view = state.db.menu_view(tenant, &store).await.map_err(not_found("menu"))?;
            let m = CachedMenu {
                version: view.version,
                hour,
                etag: format!("\"{}-{}\"", view.version, hour),
                body: Bytes::from(serde_json::to_vec(&menu_json(&view)).map_err(ApiError::internal)?),
            };
            state.catalog.cache_menu(tenant, &store, m.clone());
            m
        }
    };
    let etag = HeaderValue::from_str(&menu.etag).map_err(ApiError::internal)?;
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == menu.etag || t.trim() == "*"));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::ETAG, etag), (header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], menu.body)
        .into_response())
}

/// Whether a `POST /v1/orders` body orders dishes from a catalog (items name `item_id`).
pub fn is_catalog_order(body: &Value) -> bool {
    body.get("items").and_then(Value::as_array).is_some_and(|items| items.iter().any(|i| i.get("item_id").is_some()))
}

/// The catalog branch of `POST /v1/orders`: customer and dropoff are checked exactly as
/// for native orders; items, prices, totals and readiness come from the catalog.
pub async fn create_catalog_order(
    state: &AppState,
    auth: &ClientAuth,
    body: &Value,
    idem: &IdempotencyRef,
) -> ApiResult<Response> {
    let mut errors = Vec::new();
    let mut lines = Vec::new();
    let mut line_notes = Vec::new();
    let items = body.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, it) in items.iter().enumerate() {
        let id = it.get("item_id").and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        if id.is_none() {
            errors.push((format!("items[{i}].item_id"), "is required on every item of a catalog order".into()));
        }
        let qty = it.get("quantity").and_then(Value::as_i64);
        if !qty.is_some_and(|q| (1..=1000).contains(&q)) {
            errors.push((format!("items[{i}].quantity"), "must be an integer from 1 to 1000".into()));
        }
        match it.get("notes") {
            None | Some(Value::Null) => {}
            Some(Value::String(n)) if n.chars().count() <= 500 => {
                if !n.trim().is_empty() {
                    line_notes.push(format!("item {}: {}", i + 1, n.trim()));
                }
            }
            Some(_) => errors.push((format!("items[{i}].notes"), "must be a string of at most 500 characters".into())),
        }
        if let (Some(id), Some(q)) = (id, qty) {
            lines.push((id.to_owned(), q));
        }
    }
    let payment: Option<crate::payments::PaymentInput> = match body.get("payment") {
        None | Some(Value::Null) => None,
        Some(p) => match serde_json::from_value(p.clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(("payment".into(), format!("must be {{\"provider\", \"token\"}}: {e}")));
                None
            }
        },
    };
    if payment.is_none() && state.cfg.payments.required && !errors.iter().any(|(k, _)| k == "payment") {
        errors.push(("payment".into(), "is required: {\"provider\", \"token\"}".into()));
    }
    // The native parser checks customer, dropoff and readiness; the catalog sets the rest.
    let mut shaped = body.clone();
    if let Some(o) = shaped.as_object_mut() {
        o.remove("payment");
    }
    shaped["items"] = json!([{"name": "catalog", "quantity": 1, "unit_price_minor": 0}]);
    if shaped.get("currency").is_none_or(Value::is_null) {
        shaped["currency"] = json!("XXX");
    }
    let mut native = match crate::routes::orders::parse_native(&shaped) {
        Ok(n) => n,
        Err(mut e) if e.code == "validation_failed" && !errors.is_empty() => {
            if let Some(map) = e.details["fields"].as_object_mut() {
                map.extend(errors.into_iter().map(|(k, v)| (k, Value::String(v))));
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if !errors.is_empty() {
        return Err(fields(errors));
    }
    if !line_notes.is_empty() {
        let all = native.order.notes.iter().cloned().chain(line_notes).collect::<Vec<_>>().join("\n");
        native.order.notes = Some(all);
    }
    let store = state.db.get_store(&auth.tenant_id, &native.store_id).await.map_err(|e| match e {
        lastmile_storage::StorageError::NotFound => fields(vec![("store_id".into(), "no such store".into())]),
        other => other.into(),
    })?;
    let src =
        IntakeSource { tenant_id: auth.tenant_id.clone(), store_id: store.id.clone(), platform: Platform::Native };
    // The card is authorized for the menu price before anything is reserved: a declined
    // payment leaves no order and holds no stock.
    let held = match &payment {
        None => None,
        Some(p) => match state.db.quote_catalog_order(&auth.tenant_id, &store.id, &lines).await? {
            lastmile_storage::CatalogQuote::UnknownItems(idx) => return Err(unknown_items(idx)),
            lastmile_storage::CatalogQuote::Priced { total_minor, currency } => {
                Some(crate::payments::authorize(state, &auth.tenant_id, &store.id, p, total_minor, &currency).await?)
            }
        },
    };
    let plan = lastmile_storage::ReadyPlan {
        not_before: native.ready_at,
        placed_at: state.clock.now_ms(),
        prep_factor: state.etas.prep_factor(&auth.tenant_id, store.id.as_str()),
        load_per_order_s: state.etas.load_per_order_s(),
    };
    let outcome = state.db.create_catalog_order(src, native.order, lines, plan, Some(idem.clone())).await;
    if matches!(outcome, Ok(CatalogOrderOutcome::Placed(_, IntakeResult::Created))) {
        // Stock moved: this node's copy goes now; other nodes' on the `menu_changed` event.
        state.catalog.forget_menu(&auth.tenant_id, &store.id);
    }
    let outcome = match (outcome, &held) {
        (Ok(CatalogOrderOutcome::Placed(order, IntakeResult::Created)), Some(h)) => {
            if order.totals.total_minor > h.amount_minor {
                // A price went up between the quote and the order: do not charge more than
                // was authorized; the order is withdrawn and the client may order again.
                h.void(state, &auth.tenant_id).await;
                let _ = state.db.cancel_order(&auth.tenant_id, &order.id, "the price changed while ordering").await;
                state.catalog.forget_menu(&auth.tenant_id, &store.id);
                return Err(ApiError::conflict("price_changed", "a dish's price changed while ordering; order again"));
            }
            h.capture(state, &auth.tenant_id, &order.id, order.totals.total_minor).await;
            Ok(CatalogOrderOutcome::Placed(order, IntakeResult::Created))
        }
        (other, Some(h)) => {
            // Not placed (out of stock, unknown dish, an error), or a repeat whose first
            // order holds its own payment: release the hold.
            h.void(state, &auth.tenant_id).await;
            other
        }
        (other, None) => other,
    };
    match outcome? {
        CatalogOrderOutcome::Placed(order, result) => {
            metrics::counter!("lastmile_orders_ingested_total", "platform" => "native", "result" => result.as_str())
                .increment(1);
            let status = if result == IntakeResult::Created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(*order)).into_response())
        }
        CatalogOrderOutcome::OutOfStock(short) => {
            let items: Vec<Value> = short
                .iter()
                .map(|s| json!({"item_id": s.item_id, "requested": s.requested, "available": s.available}))
                .collect();
            Err(ApiError::conflict("out_of_stock", "some items are not available in the quantity ordered")
                .with_details(json!({"items": items})))
        }
        CatalogOrderOutcome::UnknownItems(idx) => Err(unknown_items(idx)),
    }
}

fn unknown_items(idx: Vec<usize>) -> ApiError {
    fields(
        idx.into_iter().map(|i| (format!("items[{i}].item_id"), "no such item on this store's menu".into())).collect(),
    )
}

#[utoipa::path(get, path = "/v1/orders/{id}/payments", tag = "catalog", params(("id" = String, Path)),
    responses((status = 200, description = "The order's payments, oldest first", body = PaymentList),
              (status = 404, description = "No such order")),
    security(("client_jwt" = []), ("admin_key" = [])))]
pub async fn order_payments(
    State(state): State<AppState>,
    auth: TenantAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<PaymentList>> {
    let order = lastmile_core::OrderId(id);
    state.db.get_order(&auth.tenant_id, &order).await.map_err(not_found("order"))?;
    let list = state.db.payments_for_order(&auth.tenant_id, &order).await?;
    let payments = list
        .into_iter()
        .map(|p| PaymentView {
            id: p.id,
            provider: p.provider,
            provider_ref: p.provider_ref,
            amount_minor: p.amount_minor,
            currency: p.currency,
            state: p.state,
            decline_code: p.decline_code,
            created_at: lastmile_storage::from_ms(p.created_at),
            updated_at: lastmile_storage::from_ms(p.updated_at),
        })
        .collect();
    Ok(Json(PaymentList { payments }))
}

/// A payment of an order.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub id: String,
    pub provider: String,
    /// The processor's reference.
    pub provider_ref: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    /// authorized, captured, voided or refunded (declined attempts name no order).
    pub state: String,
    pub decline_code: Option<String>,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PaymentList {
    pub payments: Vec<PaymentView>,
}

/// One kitchen's learned pace.
#[derive(Debug, Serialize, ToSchema)]
pub struct LearnedPrep {
    pub store_id: String,
    /// Observed ÷ planned prep time (2.0: the kitchen takes twice the menu's time).
    pub factor: f64,
    pub samples: i64,
    /// Whether ETAs use it yet (it has `eta.min_samples` deliveries).
    pub in_use: bool,
}

/// One learned driving speed.
#[derive(Debug, Serialize, ToSchema)]
pub struct LearnedSpeed {
    /// The zone (`row:col` of the ~1 km grid), or null for the whole city.
    pub zone: Option<String>,
    /// The UTC hour of day, or null for all day.
    pub hour: Option<u8>,
    /// Metres per second, in the model's metres (road metres where a road graph is configured).
    pub speed_mps: f64,
    pub samples: i64,
    pub in_use: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LearnedEtas {
    /// Whether learning is on (`eta.learning`).
    pub learning: bool,
    pub prep: Vec<LearnedPrep>,
    pub speed: Vec<LearnedSpeed>,
}

#[utoipa::path(get, path = "/v1/eta/learned", tag = "catalog",
    responses((status = 200, description = "What the ETA model learned for this tenant: each kitchen's prep factor, driving speed per zone and hour", body = LearnedEtas)),
    security(("admin_key" = [])))]
pub async fn learned_etas(State(state): State<AppState>, auth: AdminAuth) -> Json<LearnedEtas> {
    let known = crate::eta::snapshot(&state, &auth.tenant_id);
    let min = state.cfg.eta.min_samples;
    let mut prep: Vec<LearnedPrep> = known
        .prep
        .iter()
        .map(|(store, e)| LearnedPrep {
            store_id: store.clone(),
            factor: e.mean,
            samples: e.samples,
            in_use: e.samples >= min,
        })
        .collect();
    prep.sort_by(|a, b| a.store_id.cmp(&b.store_id));
    let mut speed: Vec<LearnedSpeed> = known
        .speed
        .iter()
        .map(|(k, e)| LearnedSpeed {
            zone: k.zone.map(|z| z.key()),
            hour: (k.hour != lastmile_core::learned::ALL_HOURS).then_some(k.hour),
            speed_mps: e.mean,
            samples: e.samples,
            in_use: e.samples >= min,
        })
        .collect();
    speed.sort_by(|a, b| (&a.zone, a.hour).cmp(&(&b.zone, b.hour)));
    Json(LearnedEtas { learning: state.cfg.eta.learning, prep, speed })
}

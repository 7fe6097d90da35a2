//! Tenant administration (admin API key): stores, drivers and API clients. Secrets are
//! accepted, encrypted or hashed, and never echoed back (tokens are shown once).

use crate::auth::AdminAuth;
use crate::crypto::{argon2_hash, lookup_hash, new_token};
use crate::error::{ApiError, ApiResult, Json, Path};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::Router;
use chrono::{DateTime, Utc};
use lastmile_core::{DriverId, GeoPoint, Platform, StoreId};
use lastmile_storage::{from_ms, now_ms, DriverRecord, StorePatch, StoreRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/stores", get(list_stores).post(create_store))
        .route("/v1/stores/{id}", get(get_store).patch(patch_store).delete(delete_store))
        .route("/v1/drivers", get(list_drivers).post(create_driver))
        .route("/v1/drivers/{id}", delete(revoke_driver))
        .route("/v1/api-clients", axum::routing::post(create_api_client))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PickupInput {
    /// Optional when `address` can be geocoded (see `geocoding` in the configuration).
    pub lat: Option<f64>,
    pub lng: Option<f64>,
    pub address: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema, Default, Clone)]
pub struct ApiInput {
    pub base_url: Option<String>,
    pub access_token: Option<String>,
    pub consumer_key: Option<String>,
    pub consumer_secret: Option<String>,
    /// BigCommerce: a custom header the store sends with callbacks, accepted instead of a signature.
    pub custom_auth_header: Option<CustomHeader>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema, Clone)]
pub struct CustomHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StoreInput {
    pub name: String,
    pub platform: String,
    pub platform_store_id: String,
    pub webhook_secret: String,
    pub pickup: PickupInput,
    pub tier: Option<String>,
    pub api: Option<ApiInput>,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
pub struct StorePatchInput {
    pub name: Option<String>,
    pub platform_store_id: Option<String>,
    pub webhook_secret: Option<String>,
    pub pickup: Option<PickupInput>,
    pub tier: Option<String>,
    pub api: Option<ApiInput>,
}

/// The same identity the ingest adapters read from deliveries.
pub fn normalize_identity(platform: Platform, id: &str) -> String {
    match platform {
        Platform::Woocommerce => lastmile_ingest::normalize_site_url(id),
        _ => id.trim().to_ascii_lowercase(),
    }
}

fn check_pickup(p: &PickupInput, fields: &mut Vec<(String, String)>) {
    if let Err(e) = GeoPoint::new(p.lat.unwrap_or(0.0), p.lng.unwrap_or(0.0)) {
        fields.push(("pickup".into(), e.to_string()));
    }
    if p.address.trim().is_empty() {
        fields.push(("pickup.address".into(), "must not be empty".into()));
    }
}

fn check_tier(t: &str, fields: &mut Vec<(String, String)>) {
    if t != "standard" && t != "enterprise" {
        fields.push(("tier".into(), "must be standard or enterprise".into()));
    }
}

/// A store API URL must not lead the server into its own or the operator's network.
async fn check_api_host(state: &AppState, api: Option<&ApiInput>, fields: &mut Vec<(String, String)>) {
    if let Some(u) = api.and_then(|a| a.base_url.as_deref()).filter(|u| u.starts_with("http")) {
        if let Some(why) = crate::outbound::refuse_private(u, state.cfg.allow_private_urls).await {
            fields.push(("api.base_url".into(), why));
        }
    }
}

fn check_api(platform: Platform, api: &ApiInput, fields: &mut Vec<(String, String)>) {
    if let Some(u) = &api.base_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            fields.push(("api.base_url".into(), "must be an http(s) URL".into()));
        }
    }
    if platform == Platform::Woocommerce && api.consumer_key.is_some() != api.consumer_secret.is_some() {
        fields.push(("api.consumer_secret".into(), "consumer_key and consumer_secret go together".into()));
    }
}

/// A store as the API shows it: secrets never, only which kind of credentials is set.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreView {
    pub id: StoreId,
    pub name: String,
    pub platform: Platform,
    pub platform_store_id: String,
    pub pickup: PickupView,
    pub tier: String,
    pub api: StoreApiView,
    /// Where the platform sends this store's webhooks.
    pub webhook_url: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PickupView {
    pub lat: f64,
    pub lng: f64,
    pub address: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreApiView {
    pub base_url: Option<String>,
    /// `access_token`, `consumer_key` or `none`.
    pub credentials: &'static str,
    /// The custom header's name (never its value).
    pub custom_auth_header: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreList {
    pub stores: Vec<StoreView>,
}

fn store_view(s: &StoreRecord, creds: Option<&ApiInput>) -> StoreView {
    let kind = creds.map(|c| {
        if c.access_token.is_some() {
            "access_token"
        } else if c.consumer_key.is_some() {
            "consumer_key"
        } else {
            "none"
        }
    });
    StoreView {
        id: s.id.clone(),
        name: s.name.clone(),
        platform: s.platform,
        platform_store_id: s.platform_store_id.clone(),
        pickup: PickupView { lat: s.pickup_lat, lng: s.pickup_lng, address: s.pickup_address.clone() },
        tier: s.tier.clone(),
        api: StoreApiView {
            base_url: s.api_base_url.clone(),
            credentials: kind.unwrap_or("none"),
            custom_auth_header: creds.and_then(|c| c.custom_auth_header.as_ref()).map(|h| h.name.clone()),
        },
        webhook_url: format!("/v1/webhooks/{}/{}", s.platform, s.id),
        created_at: from_ms(s.created_at),
        updated_at: from_ms(s.updated_at),
    }
}

/// Decrypt a store's outbound credentials.
pub fn store_credentials(state: &AppState, s: &StoreRecord) -> anyhow::Result<Option<ApiInput>> {
    match &s.api_credentials_enc {
        Some(enc) => Ok(Some(serde_json::from_slice(&state.keys.decrypt(enc)?)?)),
        None => Ok(None),
    }
}

fn encrypt_api(state: &AppState, api: &ApiInput) -> ApiResult<Vec<u8>> {
    let mut secret_part = api.clone();
    secret_part.base_url = None;
    Ok(state.keys.encrypt(&serde_json::to_vec(&secret_part).map_err(ApiError::internal)?))
}

#[utoipa::path(post, path = "/v1/stores", tag = "admin", request_body = StoreInput,
    responses((status = 201, description = "Store created", body = StoreView), (status = 409, description = "Identity already registered"), (status = 422, description = "Invalid fields"), (status = 503, description = "The pickup address could not be geocoded now")),
    security(("admin_key" = [])))]
pub async fn create_store(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(input): Json<StoreInput>,
) -> ApiResult<(StatusCode, Json<StoreView>)> {
    let mut fields = Vec::new();
    let platform: Option<Platform> = input.platform.parse().ok();
    if platform.is_none() {
        fields.push(("platform".into(), "must be shopify, woocommerce, bigcommerce or native".into()));
    }
    if input.name.trim().is_empty() {
        fields.push(("name".into(), "must not be empty".into()));
    }
    if input.platform_store_id.trim().is_empty() {
        fields.push(("platform_store_id".into(), "must not be empty".into()));
    }
    if input.webhook_secret.is_empty() && platform != Some(Platform::Native) {
        fields.push(("webhook_secret".into(), "must not be empty".into()));
    }
    check_pickup(&input.pickup, &mut fields);
    let tier = input.tier.clone().unwrap_or_else(|| "standard".into());
    check_tier(&tier, &mut fields);
    if let (Some(p), Some(api)) = (platform, &input.api) {
        check_api(p, api, &mut fields);
    }
    check_api_host(&state, input.api.as_ref(), &mut fields).await;
    let Some(platform) = platform.filter(|_| fields.is_empty()) else {
        return Err(ApiError::validation(fields));
    };
    let (pickup_lat, pickup_lng) =
        crate::geocoder::pickup_point(&state, input.pickup.lat, input.pickup.lng, &input.pickup.address).await?;
    let now = now_ms();
    let record = StoreRecord {
        id: StoreId::generate(),
        tenant_id: auth.tenant_id.clone(),
        name: input.name.trim().into(),
        platform,
        platform_store_id: normalize_identity(platform, &input.platform_store_id),
        webhook_secret_enc: state.keys.encrypt(input.webhook_secret.as_bytes()),
        api_base_url: input.api.as_ref().and_then(|a| a.base_url.clone()),
        api_credentials_enc: input.api.as_ref().map(|a| encrypt_api(&state, a)).transpose()?,
        pickup_lat,
        pickup_lng,
        pickup_address: input.pickup.address,
        tier,
        created_at: now,
        updated_at: now,
    };
    let audited = crate::audit::db(&state, &auth, "store.create", Some(record.id.as_str()));
    let created = audited.create_store(record).await.map_err(|e| match e {
        lastmile_storage::StorageError::Conflict(_) => {
            ApiError::conflict("store_exists", "a store with this platform and platform_store_id already exists")
        }
        other => other.into(),
    })?;
    Ok((StatusCode::CREATED, Json(store_view(&created, input.api.as_ref()))))
}

#[utoipa::path(get, path = "/v1/stores", tag = "admin", responses((status = 200, description = "The tenant's stores", body = StoreList)), security(("admin_key" = [])))]
pub async fn list_stores(State(state): State<AppState>, auth: AdminAuth) -> ApiResult<Json<StoreList>> {
    let stores = state.db.list_stores(&auth.tenant_id).await?;
    let views: Vec<StoreView> =
        stores.iter().map(|s| store_view(s, store_credentials(&state, s).ok().flatten().as_ref())).collect();
    Ok(Json(StoreList { stores: views }))
}

#[utoipa::path(get, path = "/v1/stores/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 200, description = "The store", body = StoreView), (status = 404, description = "Not found")), security(("admin_key" = [])))]
pub async fn get_store(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<StoreView>> {
    let s = state.db.get_store(&auth.tenant_id, &StoreId(id)).await.map_err(not_found("store"))?;
    Ok(Json(store_view(&s, store_credentials(&state, &s)?.as_ref())))
}

#[utoipa::path(patch, path = "/v1/stores/{id}", tag = "admin", params(("id" = String, Path)), request_body = StorePatchInput,
    responses((status = 200, description = "The updated store", body = StoreView), (status = 404, description = "Not found"), (status = 409, description = "Identity already registered"), (status = 422, description = "Invalid fields"), (status = 503, description = "The pickup address could not be geocoded now")),
    security(("admin_key" = [])))]
pub async fn patch_store(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Json(input): Json<StorePatchInput>,
) -> ApiResult<Json<StoreView>> {
    let id = StoreId(id);
    let current = state.db.get_store(&auth.tenant_id, &id).await.map_err(not_found("store"))?;
    let mut fields = Vec::new();
    if let Some(p) = &input.pickup {
        check_pickup(p, &mut fields);
    }
    if let Some(t) = &input.tier {
        check_tier(t, &mut fields);
    }
    if let Some(api) = &input.api {
        check_api(current.platform, api, &mut fields);
    }
    check_api_host(&state, input.api.as_ref(), &mut fields).await;
    if !fields.is_empty() {
        return Err(ApiError::validation(fields));
    }
    let pickup = match input.pickup {
        Some(p) => Some((crate::geocoder::pickup_point(&state, p.lat, p.lng, &p.address).await?, p.address)),
        None => None,
    };
    let patch = StorePatch {
        name: input.name,
        platform_store_id: input.platform_store_id.map(|p| normalize_identity(current.platform, &p)),
        webhook_secret_enc: input.webhook_secret.map(|s| state.keys.encrypt(s.as_bytes())),
        api_base_url: input.api.as_ref().and_then(|a| a.base_url.clone()),
        api_credentials_enc: input.api.as_ref().map(|a| encrypt_api(&state, a)).transpose()?,
        pickup: pickup.map(|((lat, lng), address)| (lat, lng, address)),
        tier: input.tier,
    };
    let audited = crate::audit::db(&state, &auth, "store.update", Some(id.as_str()));
    let s = audited.patch_store(&auth.tenant_id, &id, patch).await.map_err(not_found("store"))?;
    Ok(Json(store_view(&s, store_credentials(&state, &s)?.as_ref())))
}

#[utoipa::path(delete, path = "/v1/stores/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 204, description = "Deleted"), (status = 404, description = "Not found")), security(("admin_key" = [])))]
pub async fn delete_store(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let audited = crate::audit::db(&state, &auth, "store.delete", Some(&id));
    audited.delete_store(&auth.tenant_id, &StoreId(id)).await.map_err(not_found("store"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DriverInput {
    pub name: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub vehicle: String,
    pub capacity: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DriverView {
    pub id: DriverId,
    pub name: String,
    pub phone: String,
    pub vehicle: String,
    pub capacity: i64,
    pub active_orders: i64,
    /// `online`, `offline` or `break`.
    pub status: String,
    pub location: Option<LatLng>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct LatLng {
    pub lat: f64,
    pub lng: f64,
}

/// A new driver: its device token is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedDriver {
    #[serde(flatten)]
    pub driver: DriverView,
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DriverList {
    pub drivers: Vec<DriverView>,
}

pub fn driver_view(d: &DriverRecord) -> DriverView {
    DriverView {
        id: d.id.clone(),
        name: d.name.clone(),
        phone: d.phone.clone(),
        vehicle: d.vehicle.clone(),
        capacity: d.capacity,
        active_orders: d.active_count,
        status: d.status.clone(),
        location: d.last_lat.zip(d.last_lng).map(|(lat, lng)| LatLng { lat, lng }),
        last_seen_at: d.last_seen_at.map(from_ms),
        created_at: from_ms(d.created_at),
    }
}

#[utoipa::path(post, path = "/v1/drivers", tag = "admin", request_body = DriverInput, responses((status = 201, description = "Driver created; `token` is shown once", body = CreatedDriver), (status = 422, description = "Invalid fields")), security(("admin_key" = [])))]
pub async fn create_driver(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(input): Json<DriverInput>,
) -> ApiResult<(StatusCode, Json<CreatedDriver>)> {
    let mut fields = Vec::new();
    if input.name.trim().is_empty() {
        fields.push(("name".into(), "must not be empty".into()));
    }
    let capacity = input.capacity.unwrap_or(1);
    if !(1..=50).contains(&capacity) {
        fields.push(("capacity".into(), "must be between 1 and 50".into()));
    }
    if !fields.is_empty() {
        return Err(ApiError::validation(fields));
    }
    let token = new_token("lm_drv");
    let d = crate::audit::db(&state, &auth, "driver.create", None)
        .create_driver(&auth.tenant_id, input.name.trim(), &input.phone, &input.vehicle, capacity, &lookup_hash(&token))
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedDriver { driver: driver_view(&d), token })))
}

#[utoipa::path(get, path = "/v1/drivers", tag = "admin", responses((status = 200, description = "The tenant's drivers", body = DriverList)), security(("admin_key" = [])))]
pub async fn list_drivers(State(state): State<AppState>, auth: AdminAuth) -> ApiResult<Json<DriverList>> {
    let drivers = state.db.list_drivers(&auth.tenant_id).await?;
    Ok(Json(DriverList { drivers: drivers.iter().map(driver_view).collect() }))
}

#[utoipa::path(delete, path = "/v1/drivers/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 204, description = "Token revoked"), (status = 404, description = "Not found")), security(("admin_key" = [])))]
pub async fn revoke_driver(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = DriverId(id);
    let audited = crate::audit::db(&state, &auth, "driver.revoke", Some(id.as_str()));
    let recovered = audited.revoke_driver(&auth.tenant_id, &id).await.map_err(not_found("driver"))?;
    state.fleet.remove(&id);
    state.hub.disconnect_driver(&id);
    crate::recovery::log_recovered(&id, lastmile_storage::Abandon::Revoked, &recovered);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ApiClientInput {
    pub name: String,
}

/// A new API client: `client_secret` is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiClient {
    pub client_id: lastmile_core::ApiClientId,
    pub client_secret: String,
    pub name: String,
}

#[utoipa::path(post, path = "/v1/api-clients", tag = "admin", request_body = ApiClientInput, responses((status = 201, description = "`client_id` and `client_secret` (shown once)", body = CreatedApiClient), (status = 422, description = "Invalid fields")), security(("admin_key" = [])))]
pub async fn create_api_client(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(input): Json<ApiClientInput>,
) -> ApiResult<(StatusCode, Json<CreatedApiClient>)> {
    if input.name.trim().is_empty() {
        return Err(ApiError::validation(vec![("name".into(), "must not be empty".into())]));
    }
    let secret = new_token("lm_cs");
    let s2 = secret.clone();
    let hash = tokio::task::spawn_blocking(move || argon2_hash(&s2)).await.map_err(ApiError::internal)??;
    let audited = crate::audit::db(&state, &auth, "api_client.create", None);
    let c = audited.create_api_client(&auth.tenant_id, input.name.trim(), &hash).await?;
    Ok((StatusCode::CREATED, Json(CreatedApiClient { client_id: c.id, client_secret: secret, name: c.name })))
}

/// Map NotFound to a 404 naming the resource; other errors pass through.
pub fn not_found(what: &'static str) -> impl Fn(lastmile_storage::StorageError) -> ApiError {
    move |e| match e {
        lastmile_storage::StorageError::NotFound => ApiError::not_found(what),
        other => other.into(),
    }
}

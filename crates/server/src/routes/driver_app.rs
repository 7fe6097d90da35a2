//! What the driver web app needs beyond the driver API: signing in with a one-time code
//! from the console (exchanged for a new device token), who am I and what do I hold, and
//! uploading a proof-of-delivery photo (size-limited, kept in the database, shown to the
//! console; its URL then goes into `deliver`'s `photo_url`).

use crate::auth::DriverAuth;
use crate::crypto::{lookup_hash, new_token};
use crate::error::{ApiError, ApiResult, Json, Path};
use crate::routes::console::{check_sign_in_rate, normalize_login_code};
use crate::state::AppState;
use crate::web::WebConfig;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use lastmile_core::{DriverId, Order, OrderId};
use lastmile_storage::{now_ms, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use utoipa::ToSchema;

pub fn router(cfg: &WebConfig) -> Router<AppState> {
    Router::new().route("/v1/driver/login", post(login)).route("/v1/driver/me", get(me)).route(
        "/v1/driver/orders/{order_id}/photo",
        // Over the general body limit on purpose (photos); the handler answers 413 past it.
        post(upload_photo).layer(DefaultBodyLimit::max(cfg.photo_max_bytes)),
    )
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginInput {
    /// The one-time code, e.g. `ABCD-EFGH` (case, spaces and dashes do not matter).
    code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DriverSignedIn {
    /// A new device token; the previous one stops working.
    pub token: String,
    pub driver: DriverName,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DriverName {
    pub id: DriverId,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DriverMe {
    pub id: DriverId,
    pub name: String,
    pub status: String,
    pub capacity: i64,
    /// The orders the driver holds now.
    pub orders: Vec<Order>,
    /// Pickup places of those orders, by store id.
    pub pickups: BTreeMap<String, PickupPlace>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PickupPlace {
    pub name: String,
    pub address: String,
    pub lat: f64,
    pub lng: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadedPhoto {
    pub id: String,
    /// Pass as deliver's `photo_url`.
    pub url: String,
}

#[utoipa::path(post, path = "/v1/driver/login", tag = "driver", request_body = LoginInput,
    responses((status = 200, description = "Signed in", body = DriverSignedIn), (status = 401, description = "Unknown, used or expired code"), (status = 429, description = "Too many sign-in attempts; see Retry-After")))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(input): Json<LoginInput>,
) -> ApiResult<Json<DriverSignedIn>> {
    check_sign_in_rate(&state, &format!("driver code from {}", peer.ip()))?;
    let code = normalize_login_code(&input.code);
    if code.len() != 8 {
        return Err(ApiError::unauthorized("unknown, used or expired code"));
    }
    let token = new_token("lm_drv");
    let (tenant, driver) =
        match state.db.redeem_driver_login_code(&lookup_hash(&code), &lookup_hash(&token), now_ms()).await {
            Ok(v) => v,
            Err(StorageError::NotFound) => {
                tracing::info!("driver sign-in code refused");
                return Err(ApiError::unauthorized("unknown, used or expired code"));
            }
            Err(e) => return Err(e.into()),
        };
    let d = state.db.get_driver(&tenant, &driver).await?;
    Ok(Json(DriverSignedIn { token, driver: DriverName { id: d.id, name: d.name } }))
}

#[utoipa::path(get, path = "/v1/driver/me", tag = "driver", responses((status = 200, description = "The driver and the orders they hold now", body = DriverMe)), security(("driver_token" = [])))]
pub async fn me(State(state): State<AppState>, auth: DriverAuth) -> ApiResult<Json<DriverMe>> {
    let d = state.db.get_driver(&auth.tenant_id, &auth.driver_id).await?;
    let orders = state.db.driver_active_orders(&auth.tenant_id, &auth.driver_id).await?;
    let store_ids: std::collections::BTreeSet<_> = orders.iter().map(|o| o.store_id.clone()).collect();
    let mut pickups = BTreeMap::new();
    for id in store_ids {
        if let Ok(s) = state.db.get_store(&auth.tenant_id, &id).await {
            let place = PickupPlace { name: s.name, address: s.pickup_address, lat: s.pickup_lat, lng: s.pickup_lng };
            pickups.insert(id.0, place);
        }
    }
    Ok(Json(DriverMe { id: d.id, name: d.name, status: d.status, capacity: d.capacity, orders, pickups }))
}

const PHOTO_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// Does the body start like the image type it claims? (Stops storing arbitrary files.)
fn looks_like(content_type: &str, b: &[u8]) -> bool {
    match content_type {
        "image/jpeg" => b.starts_with(&[0xFF, 0xD8, 0xFF]),
        "image/png" => b.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/webp" => b.len() > 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP",
        _ => false,
    }
}

#[utoipa::path(post, path = "/v1/driver/orders/{order_id}/photo", tag = "driver", params(("order_id" = String, Path)),
    request_body(description = "the image, at most web.photo_max_bytes", content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/webp"))),
    responses((status = 201, description = "Stored", body = UploadedPhoto), (status = 404, description = "No such order held by this driver"), (status = 413, description = "Too large"), (status = 415, description = "Not a JPEG, PNG or WebP")),
    security(("driver_token" = [])))]
pub async fn upload_photo(
    State(state): State<AppState>,
    auth: DriverAuth,
    Path(order): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<UploadedPhoto>)> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if !PHOTO_TYPES.contains(&ct) || !looks_like(ct, &body) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_photo",
            "send a JPEG, PNG or WebP image with its Content-Type",
        ));
    }
    let id = state
        .db
        .save_delivery_photo(&auth.tenant_id, &auth.driver_id, &OrderId(order), ct, body.to_vec())
        .await
        .map_err(crate::routes::admin::not_found("order"))?;
    Ok((StatusCode::CREATED, Json(UploadedPhoto { url: format!("/v1/photos/{id}"), id })))
}

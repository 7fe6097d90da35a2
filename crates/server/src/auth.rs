//! Authentication extractors: admin API keys (or a console session), API-client JWTs,
//! driver device tokens.
//! Each rejection is logged with its reason and answered 401 without detail; each
//! credential is rate limited on its own.

use crate::crypto::lookup_hash;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use lastmile_core::{ApiClientId, DriverId, TenantId};
use lastmile_storage::StorageError;

#[derive(Debug, Clone)]
pub struct AdminAuth {
    pub tenant_id: TenantId,
    /// The admin key's id, or the console user's (`usr_...`).
    pub key_id: String,
    /// The peer address, for the audit log.
    pub source_ip: Option<std::net::IpAddr>,
}

/// The connection's peer address (set by the server for every request).
pub fn source_ip(parts: &Parts) -> Option<std::net::IpAddr> {
    parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())
}

/// `last_used_at` is kept to the minute: one write per key per minute at most.
const KEY_USE_RESOLUTION_MS: i64 = 60_000;

#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub tenant_id: TenantId,
    pub client_id: ApiClientId,
}

#[derive(Debug, Clone)]
pub struct DriverAuth {
    pub tenant_id: TenantId,
    pub driver_id: DriverId,
    pub name: String,
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// `?token=` for clients that cannot set headers (browsers' WebSocket and EventSource).
fn query_token(parts: &Parts) -> Option<String> {
    let q = parts.uri.query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok()?.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v)
}

fn reject(why: &str, parts: &Parts) -> ApiError {
    tracing::info!(reason = why, path = %parts.uri.path(), "authentication rejected");
    ApiError::unauthorized("missing or invalid credentials")
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(parts) else {
            // The console signs in once and then sends its session cookie (+ CSRF header).
            return crate::web::session::admin_from_session(parts, state).await;
        };
        if !token.starts_with("lm_admin_") {
            return Err(reject("not an admin key", parts));
        }
        let key = match state.db.admin_key_by_hash(&lookup_hash(token)).await {
            Ok(k) => k,
            Err(StorageError::NotFound) => return Err(reject("unknown or revoked admin key", parts)),
            Err(e) => return Err(e.into()),
        };
        state.limits.check_credential(&key.id)?;
        let now = lastmile_storage::now_ms();
        if key.last_used_at.is_none_or(|t| now - t >= KEY_USE_RESOLUTION_MS) {
            // Off the request's path: a lost update only makes the time a minute older.
            let (db, id) = (state.db.clone(), key.id.clone());
            tokio::spawn(async move {
                if let Err(e) = db.touch_admin_key(&id, now).await {
                    tracing::warn!(error = %e, "recording an admin key's last use failed");
                }
            });
        }
        Ok(AdminAuth { tenant_id: key.tenant_id, key_id: key.id, source_ip: source_ip(parts) })
    }
}

impl FromRequestParts<AppState> for ClientAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| reject("no bearer token", parts))?;
        let claims = state
            .keys
            .verify_jwt_fresh(&state.db, token)
            .await
            .ok_or_else(|| reject("invalid or expired JWT", parts))?;
        state.limits.check_credential(&claims.sub)?;
        Ok(ClientAuth { tenant_id: TenantId(claims.tid), client_id: ApiClientId(claims.sub) })
    }
}

impl FromRequestParts<AppState> for DriverAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = match bearer(parts) {
            Some(t) => t.to_owned(),
            None => query_token(parts).ok_or_else(|| reject("no driver token", parts))?,
        };
        if !token.starts_with("lm_drv_") {
            return Err(reject("not a driver token", parts));
        }
        let d = match state.db.driver_for_token(&lookup_hash(&token)).await {
            Ok(d) => d,
            Err(StorageError::NotFound) => return Err(reject("unknown or revoked driver token", parts)),
            Err(e) => return Err(e.into()),
        };
        state.limits.check_credential(d.id.as_str())?;
        // Any request from the driver's app is a sign of life (see `dispatch.abandon_s`).
        state.fleet.heard_from(&d.id);
        Ok(DriverAuth { tenant_id: d.tenant_id, driver_id: d.id, name: d.name })
    }
}

/// Either an admin of the tenant or one of its API clients (ordering endpoints both use).
#[derive(Debug, Clone)]
pub struct TenantAuth {
    pub tenant_id: TenantId,
    pub client_id: Option<ApiClientId>,
}

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let console = bearer(parts).is_none() && crate::web::session::has_session_cookie(parts);
        if console || bearer(parts).is_some_and(|t| t.starts_with("lm_admin_")) {
            let a = AdminAuth::from_request_parts(parts, state).await?;
            return Ok(TenantAuth { tenant_id: a.tenant_id, client_id: None });
        }
        let c = ClientAuth::from_request_parts(parts, state).await?;
        Ok(TenantAuth { tenant_id: c.tenant_id, client_id: Some(c.client_id) })
    }
}

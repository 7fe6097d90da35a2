//! `POST /oauth/token`: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4). Client
//! authentication by HTTP Basic or by form fields; errors in the RFC's own JSON format
//! (§5.2), which OAuth client libraries expect instead of our usual error shape.

use crate::crypto::argon2_verify;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use serde_json::json;

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth/token", post(token))
}

fn oauth_error(status: StatusCode, error: &str, description: &str, basic: bool) -> Response {
    let mut res = (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    if basic && status == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"lastmile\""));
    }
    res
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded inside Basic.
    let unescape =
        |s: &str| serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}")).ok()?.pop().map(|(_, v)| v);
    Some((unescape(id)?, unescape(secret)?))
}

#[utoipa::path(post, path = "/oauth/token", tag = "auth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "grant_type=client_credentials&client_id=..&client_secret=.."),
    responses((status = 200, description = "An access token"), (status = 400, description = "RFC 6749 error"), (status = 401, description = "invalid_client")))]
pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
                false,
            )
        }
    };
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let basic = basic_credentials(&headers);
    let used_basic = basic.is_some();
    match field("grant_type").as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
                false,
            )
        }
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required", false),
    }
    if basic.is_some() && field("client_secret").is_some() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "use one client authentication method, not two",
            false,
        );
    }
    let Some((client_id, secret)) = basic.or_else(|| Some((field("client_id")?, field("client_secret")?))) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication is required",
            used_basic,
        );
    };
    if let Err(e) = state.limits.check_credential(&format!("oauth:{client_id}")) {
        return e.into_response();
    }
    let client = match state.db.get_api_client(&client_id).await {
        Ok(c) => Some(c),
        Err(lastmile_storage::StorageError::NotFound) => None,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    // Verify even for unknown clients (against a dummy hash) so timing does not reveal ids.
    let hash = client.as_ref().map(|c| c.secret_hash.clone()).unwrap_or_else(|| DUMMY_HASH.to_owned());
    let ok = tokio::task::spawn_blocking(move || argon2_verify(&secret, &hash)).await.unwrap_or(false);
    let Some(client) = client.filter(|_| ok) else {
        tracing::info!(client_id = %client_id, "token request with bad client credentials");
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed", used_basic);
    };
    let ttl = state.cfg.token_ttl_s;
    match state.keys.issue_jwt(client.id.as_str(), client.tenant_id.as_str(), ttl) {
        Ok(jwt) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
            Json(json!({"access_token": jwt, "token_type": "Bearer", "expires_in": ttl})),
        )
            .into_response(),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}

/// An Argon2 hash of a random string nobody knows.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$O2ieg8HDdGTHdFyoyb6wQHXWdHBy7LNkBrCWX9VhY3Y";

//! `POST /oauth/token`: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4). Client
//! authentication by HTTP Basic or by form fields; errors in the RFC's own JSON format
//! (§5.2), which OAuth client libraries expect instead of our usual error shape.

use crate::crypto::argon2_verify;
use crate::state::AppState;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth/token", post(token))
}

/// The token endpoint's form (RFC 6749 §4.4). Client credentials may come in the form or
/// as HTTP Basic, never both.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    /// `client_credentials`.
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: u64,
}

/// RFC 6749 §5.2 error.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

/// A refused token request: the RFC's shape from the endpoint itself, the API's error
/// shape from the edge (NUL in the form, a body over the limit) and the rate limiter.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum TokenError {
    OAuth(OAuthError),
    Api(crate::error::ErrorBody),
}

fn oauth_error(status: StatusCode, error: &str, description: &str, basic: bool) -> Response {
    let body = OAuthError { error: error.to_owned(), error_description: description.to_owned() };
    let mut res = (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response();
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
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "An access token", body = TokenResponse),
              (status = 400, description = "RFC 6749 error (invalid_request, unsupported_grant_type), or NUL in the form", body = TokenError),
              (status = 401, description = "invalid_client", body = OAuthError), (status = 413, description = "The body is over the size limit"),
              (status = 429, description = "Rate limited; see Retry-After")))]
pub async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    // Pre-authentication work is bounded: absurd lengths are refused before any lookup,
    // unknown ids before any Argon2 check, and the rate limiter is keyed on the caller's
    // address (which a caller cannot inflate at will) until the client id is known to exist.
    if client_id.len() > MAX_CLIENT_ID_LEN || secret.len() > MAX_CLIENT_SECRET_LEN {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed", used_basic);
    }
    if let Err(e) = state.limits.check_credential(&format!("oauth-peer:{}", peer_key(peer.ip()))) {
        return e.into_response();
    }
    let client = match state.db.get_api_client(&client_id).await {
        Ok(c) => c,
        Err(lastmile_storage::StorageError::NotFound) => {
            tracing::info!(client_id_len = client_id.len(), "token request for an unknown client id");
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed", used_basic);
        }
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    if let Err(e) = state.limits.check_credential(&format!("oauth:{}", client.id.as_str())) {
        return e.into_response();
    }
    let hash = client.secret_hash.clone();
    let ok = tokio::task::spawn_blocking(move || argon2_verify(&secret, &hash)).await.unwrap_or(false);
    if !ok {
        tracing::info!(client_id = %client.id.as_str(), "token request with a bad client secret");
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed", used_basic);
    }
    let ttl = state.cfg.token_ttl_s;
    match state.keys.issue_jwt_current(&state.db, client.id.as_str(), client.tenant_id.as_str(), ttl).await {
        Ok(jwt) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
            Json(TokenResponse { access_token: jwt, token_type: "Bearer", expires_in: ttl }),
        )
            .into_response(),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}

/// Issued client ids are short (`cli_` + a UUID); secrets are 43 characters of base64.
/// Generous bounds, far below anything that costs memory or hashing time.
const MAX_CLIENT_ID_LEN: usize = 128;
const MAX_CLIENT_SECRET_LEN: usize = 512;

/// The rate-limit key for a caller: its IPv4 address, or its IPv6 /64 (one subscriber
/// usually holds a whole /64, so keying on the full address would let it mint keys).
fn peer_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

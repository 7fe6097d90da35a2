//! Console sessions: an HttpOnly, SameSite=Strict cookie naming a stored session, and a
//! double-submitted CSRF token (a readable cookie the page copies into `X-CSRF-Token` on
//! every request that changes something; the server checks both against the session's
//! stored hash). Roles: `admin` may do everything, `dispatcher` may change orders, drivers
//! and dead letters, `viewer` may only read. An admin API key signs in as `admin`.

use crate::auth::AdminAuth;
use crate::crypto::lookup_hash;
use crate::error::ApiError;
use crate::state::AppState;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method};
use lastmile_storage::StorageError;

pub const SESSION_COOKIE: &str = "lm_session";
pub const CSRF_COOKIE: &str = "lm_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const ROLES: [&str; 3] = ["admin", "dispatcher", "viewer"];

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn has_session_cookie(parts: &Parts) -> bool {
    cookie(&parts.headers, SESSION_COOKIE).is_some()
}

/// What a role may do: `method` on `path`.
pub fn role_allows(role: &str, method: &Method, path: &str) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD);
    // Credentials and the audit trail are the tenant admin's alone.
    if ["/v1/users", "/v1/admin-keys", "/v1/audit-log"].iter().any(|p| path.starts_with(p)) {
        return role == "admin";
    }
    match role {
        "admin" => true,
        "dispatcher" => {
            read || ["/v1/orders", "/v1/drivers", "/v1/dead-letters", "/v1/console/"]
                .iter()
                .any(|p| path.starts_with(p))
        }
        "viewer" => read || path.starts_with("/v1/console/"),
        _ => false,
    }
}

fn reject(why: &str, parts: &Parts) -> ApiError {
    tracing::info!(reason = why, path = %parts.uri.path(), "console session rejected");
    ApiError::unauthorized("missing or invalid credentials")
}

/// The admin identity behind a console session cookie, with CSRF and role checked.
pub async fn admin_from_session(parts: &Parts, state: &AppState) -> Result<AdminAuth, ApiError> {
    let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(|| reject("no bearer token or session", parts))?;
    let session = match state.db.session(&lookup_hash(token), lastmile_storage::now_ms()).await {
        Ok(s) => s,
        Err(StorageError::NotFound) => return Err(reject("unknown or expired session", parts)),
        Err(e) => return Err(e.into()),
    };
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let header = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        let cookie = cookie(&parts.headers, CSRF_COOKIE).unwrap_or("");
        let ok = !header.is_empty()
            && subtle::ConstantTimeEq::ct_eq(header.as_bytes(), cookie.as_bytes()).into()
            && subtle::ConstantTimeEq::ct_eq(lookup_hash(header).as_bytes(), session.csrf_hash.as_bytes()).into();
        if !ok {
            tracing::info!(path = %parts.uri.path(), "CSRF token missing or wrong");
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "csrf_failed",
                "send the X-CSRF-Token header from the lm_csrf cookie",
            ));
        }
    }
    if !role_allows(&session.role, &parts.method, parts.uri.path()) {
        tracing::info!(role = %session.role, path = %parts.uri.path(), "role may not do this");
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("the {} role may not do this", session.role),
        ));
    }
    let key_id = session.user_id.or(session.admin_key_id).unwrap_or_default();
    state.limits.check_credential(&key_id)?;
    Ok(AdminAuth { tenant_id: session.tenant_id, key_id, source_ip: crate::auth::source_ip(parts) })
}

/// `Set-Cookie` values for a new session (or, with `max_age` 0, for signing out).
pub fn cookies(token: &str, csrf: &str, max_age: u64, secure: bool) -> [HeaderValue; 2] {
    let secure = if secure { "; Secure" } else { "" };
    let session = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    // Readable by the page (not HttpOnly): it is the double-submitted half.
    let csrf = format!("{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict; Max-Age={max_age}{secure}");
    [
        HeaderValue::from_str(&session).unwrap_or(HeaderValue::from_static("")),
        HeaderValue::from_str(&csrf).unwrap_or(HeaderValue::from_static("")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_they_say() {
        let post = Method::POST;
        assert!(role_allows("admin", &post, "/v1/stores"));
        assert!(role_allows("dispatcher", &post, "/v1/orders/ord_1/cancel"));
        assert!(role_allows("dispatcher", &post, "/v1/dead-letters/replay"));
        assert!(!role_allows("dispatcher", &post, "/v1/stores"));
        assert!(!role_allows("dispatcher", &Method::GET, "/v1/users"));
        assert!(role_allows("viewer", &Method::GET, "/v1/orders"));
        assert!(!role_allows("viewer", &Method::PATCH, "/v1/orders/ord_1"));
        assert!(!role_allows("nobody", &Method::GET, "/v1/orders"));
    }
}

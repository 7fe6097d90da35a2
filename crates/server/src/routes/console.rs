//! The console's API: signing in and out (a session cookie, see `web::session`), people
//! and their roles, one-time sign-in codes for the driver app, delivery photos, customers'
//! choices on the tracking page, and the operating numbers. Every route here except
//! sign-in is admin-authenticated (admin key or console session), with role checks.

use crate::auth::AdminAuth;
use crate::crypto::{argon2_hash, argon2_verify, lookup_hash, new_token};
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::routes::admin::not_found;
use crate::state::AppState;
use crate::web::session::{self, ROLES};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use lastmile_core::{DriverId, TenantId};
use lastmile_storage::{from_ms, now_ms, ConsoleSession, NewSession, StorageError, UserRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/console/login", post(login))
        .route("/v1/console/logout", post(logout))
        .route("/v1/console/session", get(current_session))
        .route("/v1/users", get(list_users).post(create_user_route))
        .route("/v1/users/{id}", delete(disable_user))
        .route("/v1/drivers/{id}/login-code", post(driver_login_code))
        .route("/v1/photos/{id}", get(photo))
        .route("/v1/orders/{id}/photos", get(order_photos))
        .route("/v1/customer-choices", get(customer_choices))
        .route("/v1/stats", get(stats))
}

pub(crate) fn check_sign_in_rate(state: &AppState, key: &str) -> ApiResult<()> {
    state.web.sign_in.check_key(&key.to_owned()).map_err(|_| ApiError::rate_limited(6))
}

/// Create a console user (the API and `lastmile admin create-user` both come here).
pub async fn create_user(
    db: &lastmile_storage::Db,
    tenant: &TenantId,
    email: &str,
    password: &str,
    role: &str,
) -> ApiResult<UserRecord> {
    let email = email.trim().to_ascii_lowercase();
    let mut fields = Vec::new();
    if !email.contains('@') || email.len() > 254 {
        fields.push(("email".into(), "must be an email address".into()));
    }
    if password.chars().count() < 10 {
        fields.push(("password".into(), "must be at least 10 characters".into()));
    }
    if !ROLES.contains(&role) {
        fields.push(("role".into(), "must be admin, dispatcher or viewer".into()));
    }
    if !fields.is_empty() {
        return Err(ApiError::validation(fields));
    }
    let pw = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || argon2_hash(&pw)).await.map_err(ApiError::internal)??;
    db.create_user(tenant, &email, &hash, role).await.map_err(|e| match e {
        StorageError::Conflict(_) => ApiError::conflict("user_exists", "a user with this email already exists"),
        other => other.into(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    /// `admin`, `dispatcher` or `viewer`.
    pub role: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

fn user_view(u: &UserRecord) -> UserView {
    UserView { id: u.id.clone(), email: u.email.clone(), role: u.role.clone(), created_at: from_ms(u.created_at) }
}

/// Email and password, or an admin key.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginInput {
    email: Option<String>,
    password: Option<String>,
    admin_key: Option<String>,
}

/// Sign in with an email and password, or with an admin API key. Sets the session cookie
/// (HttpOnly) and the CSRF cookie; the key itself is never stored by the browser.
#[utoipa::path(post, path = "/v1/console/login", tag = "console",
    request_body = LoginInput,
    responses((status = 200, description = "Signed in; Set-Cookie lm_session, lm_csrf", body = SignedIn), (status = 401, description = "Wrong credentials"),
              (status = 422, description = "Neither email and password nor admin_key"), (status = 429, description = "Too many sign-in attempts; see Retry-After")))]
pub async fn login(State(state): State<AppState>, Json(input): Json<LoginInput>) -> ApiResult<Response> {
    let now = now_ms();
    let expires_at = now + state.cfg.web.session_ttl_s as i64 * 1000;
    let wrong = || ApiError::unauthorized("wrong email, password or key");
    let session = match (&input.admin_key, &input.email, &input.password) {
        (Some(key), _, _) => {
            check_sign_in_rate(&state, "admin key")?;
            if !key.starts_with("lm_admin_") {
                return Err(wrong());
            }
            let (tenant_id, key_id) = match state.db.tenant_for_admin_key(&lookup_hash(key.trim())).await {
                Ok(v) => v,
                Err(StorageError::NotFound) => return Err(wrong()),
                Err(e) => return Err(e.into()),
            };
            ConsoleSession {
                tenant_id,
                user_id: None,
                admin_key_id: Some(key_id),
                role: "admin".into(),
                csrf_hash: String::new(),
                expires_at,
            }
        }
        (None, Some(email), Some(password)) => {
            let email = email.trim().to_ascii_lowercase();
            check_sign_in_rate(&state, &email)?;
            let user = match state.db.user_by_email(&email).await {
                Ok(u) => Some(u),
                Err(StorageError::NotFound) => None,
                Err(e) => return Err(e.into()),
            };
            // Verify against a real hash even for unknown names, so timing tells nothing.
            let hash = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| DUMMY_HASH.clone());
            let pw = password.clone();
            let ok =
                tokio::task::spawn_blocking(move || argon2_verify(&pw, &hash)).await.map_err(ApiError::internal)?;
            let Some(user) = user.filter(|_| ok) else {
                tracing::info!(email = %email, "console sign-in refused");
                return Err(wrong());
            };
            ConsoleSession {
                tenant_id: user.tenant_id,
                user_id: Some(user.id),
                admin_key_id: None,
                role: user.role,
                csrf_hash: String::new(),
                expires_at,
            }
        }
        _ => return Err(ApiError::validation(vec![("email".into(), "give email and password, or admin_key".into())])),
    };
    let token = new_token("lm_ses");
    let csrf = new_token("lm_csrf");
    let mut session = session;
    session.csrf_hash = lookup_hash(&csrf);
    let body = SignedIn {
        role: session.role.clone(),
        tenant_id: session.tenant_id.clone(),
        user_id: session.user_id.clone(),
        csrf_token: csrf.clone(),
        expires_at: from_ms(expires_at),
    };
    state.db.create_session(NewSession { token_hash: lookup_hash(&token), session }).await?;
    let mut res = Json(body).into_response();
    for c in session::cookies(&token, &csrf, state.cfg.web.session_ttl_s, state.cfg.web.secure_cookies) {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(res)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignedIn {
    pub role: String,
    pub tenant_id: TenantId,
    /// Null when signed in with an admin key.
    pub user_id: Option<String>,
    /// Send it back as the X-CSRF-Token header on every change.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub role: String,
    pub user_id: Option<String>,
    pub expires_at: DateTime<Utc>,
}

static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| argon2_hash("not a password anyone has").unwrap_or_default());

#[utoipa::path(post, path = "/v1/console/logout", tag = "console", responses((status = 204, description = "Signed out; cookies cleared")))]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = session::cookie(&headers, session::SESSION_COOKIE) {
        state.db.delete_session(&lookup_hash(token)).await?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    for c in session::cookies("", "", 0, state.cfg.web.secure_cookies) {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(res)
}

#[utoipa::path(get, path = "/v1/console/session", tag = "console", responses((status = 200, description = "The signed-in session", body = SessionView), (status = 401, description = "Not signed in")))]
pub async fn current_session(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<SessionView>> {
    let token =
        session::cookie(&headers, session::SESSION_COOKIE).ok_or_else(|| ApiError::unauthorized("not signed in"))?;
    let s = state.db.session(&lookup_hash(token), now_ms()).await.map_err(|e| match e {
        StorageError::NotFound => ApiError::unauthorized("not signed in"),
        other => other.into(),
    })?;
    let tenant = state.db.get_tenant(&s.tenant_id).await?;
    Ok(Json(SessionView {
        tenant_id: s.tenant_id,
        tenant_name: tenant.name,
        role: s.role,
        user_id: s.user_id,
        expires_at: from_ms(s.expires_at),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UserInput {
    email: String,
    password: String,
    role: String,
}

#[utoipa::path(post, path = "/v1/users", tag = "console", request_body(content = UserInput, description = "role: admin, dispatcher or viewer"),
    responses((status = 201, description = "The user", body = UserView), (status = 409, description = "Email taken"), (status = 422, description = "validation_failed")), security(("admin_key" = [])))]
pub async fn create_user_route(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(input): Json<UserInput>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let audited = crate::audit::db(&state, &auth, "user.create", None);
    let u = create_user(&audited, &auth.tenant_id, &input.email, &input.password, &input.role).await?;
    Ok((StatusCode::CREATED, Json(user_view(&u))))
}

#[utoipa::path(get, path = "/v1/users", tag = "console", responses((status = 200, description = "The tenant's console users", body = UserList)), security(("admin_key" = [])))]
pub async fn list_users(State(state): State<AppState>, auth: AdminAuth) -> ApiResult<Json<UserList>> {
    let users = state.db.list_users(&auth.tenant_id).await?;
    Ok(Json(UserList { users: users.iter().map(user_view).collect() }))
}

#[utoipa::path(delete, path = "/v1/users/{id}", tag = "console", params(("id" = String, Path)), responses((status = 204, description = "Disabled; their sessions end"), (status = 404, description = "Not found")), security(("admin_key" = [])))]
pub async fn disable_user(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let audited = crate::audit::db(&state, &auth, "user.disable", Some(&id));
    audited.disable_user(&auth.tenant_id, &id).await.map_err(not_found("user"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unambiguous characters for codes people type from a screen (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// `XXXX-XXXX`: 31^8 ≈ 8.5e11 possibilities, single use, minutes long, rate limited.
fn new_login_code() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    let chars: String = (0..8).map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char).collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// How a typed code is compared: case, spaces and dashes do not matter.
pub fn normalize_login_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

#[utoipa::path(post, path = "/v1/drivers/{id}/login-code", tag = "console", params(("id" = String, Path)),
    responses((status = 201, description = "Shown once; signs the driver's previous device out when used", body = LoginCode), (status = 404, description = "No such driver")), security(("admin_key" = [])))]
pub async fn driver_login_code(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<LoginCode>)> {
    let code = new_login_code();
    let expires_at = now_ms() + state.cfg.web.login_code_ttl_s as i64 * 1000;
    state
        .db
        .create_driver_login_code(
            &auth.tenant_id,
            &DriverId(id.clone()),
            &lookup_hash(&normalize_login_code(&code)),
            expires_at,
        )
        .await
        .map_err(not_found("driver"))?;
    Ok((
        StatusCode::CREATED,
        Json(LoginCode {
            driver_id: DriverId(id),
            app_url: format!("/driver/#code={code}"),
            code,
            expires_at: from_ms(expires_at),
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginCode {
    pub driver_id: DriverId,
    /// `XXXX-XXXX`, single use.
    pub code: String,
    pub expires_at: DateTime<Utc>,
    /// The driver app's page with the code filled in.
    pub app_url: String,
}

#[utoipa::path(get, path = "/v1/photos/{id}", tag = "console", params(("id" = String, Path)),
    responses((status = 200, description = "The image", content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/webp"))), (status = 404, description = "Not found")),
    security(("admin_key" = [])))]
pub async fn photo(State(state): State<AppState>, auth: AdminAuth, Path(id): Path<String>) -> ApiResult<Response> {
    let p = state.db.delivery_photo(&auth.tenant_id, &id).await.map_err(not_found("photo"))?;
    let mut res = p.bytes.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, p.content_type.parse().map_err(ApiError::internal)?);
    h.insert(header::CACHE_CONTROL, "private, max-age=86400".parse().map_err(ApiError::internal)?);
    h.insert("x-content-type-options", "nosniff".parse().map_err(ApiError::internal)?);
    Ok(res)
}

#[utoipa::path(get, path = "/v1/orders/{id}/photos", tag = "console", params(("id" = String, Path)),
    responses((status = 200, description = "Proof-of-delivery photos drivers uploaded", body = PhotoList), (status = 404, description = "Not found")), security(("admin_key" = [])))]
pub async fn order_photos(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<PhotoList>> {
    let order = state.db.get_order(&auth.tenant_id, &lastmile_core::OrderId(id)).await.map_err(not_found("order"))?;
    let list = state.db.order_photos(&auth.tenant_id, &order.id).await?;
    let photos = list
        .into_iter()
        .map(|(id, content_type, at)| PhotoRef {
            url: format!("/v1/photos/{id}"),
            id,
            content_type,
            created_at: from_ms(at),
        })
        .collect();
    Ok(Json(PhotoList { photos }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PhotoRef {
    pub id: String,
    pub url: String,
    pub content_type: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PhotoList {
    pub photos: Vec<PhotoRef>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChoiceList {
    /// Newest first.
    pub choices: Vec<lastmile_storage::CustomerChoice>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub hours: i64,
    pub orders: i64,
    pub orders_per_hour: f64,
    pub time_to_assign_s: Percentiles,
    pub delivered: i64,
    /// Null before the first delivery in the window.
    pub on_time_pct: Option<f64>,
    pub on_time_within_s: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub count: usize,
}

#[derive(Debug, Deserialize, Default)]
pub struct WindowQuery {
    hours: Option<i64>,
}

impl WindowQuery {
    pub(crate) fn since(&self) -> (i64, i64) {
        let hours = self.hours.unwrap_or(24).clamp(1, 24 * 31);
        (hours, now_ms() - hours * 3_600_000)
    }
}

#[utoipa::path(get, path = "/v1/customer-choices", tag = "console", params(("hours" = Option<i64>, Query)),
    responses((status = 200, description = "Choices customers made on the tracking page (keep_waiting or cancel), newest first", body = ChoiceList)), security(("admin_key" = [])))]
pub async fn customer_choices(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<WindowQuery>,
) -> ApiResult<Json<ChoiceList>> {
    let (_, since) = q.since();
    let choices = state.db.customer_choices(&auth.tenant_id, since, 500).await?;
    Ok(Json(ChoiceList { choices }))
}

/// The `p`-th percentile (0..=100) of sorted values, nearest rank.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[utoipa::path(get, path = "/v1/stats", tag = "console", params(("hours" = Option<i64>, Query, description = "window, default 24")),
    responses((status = 200, description = "The operating numbers over the window", body = Stats)), security(("admin_key" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<WindowQuery>,
) -> ApiResult<Json<Stats>> {
    let (hours, since) = q.since();
    let mut f = state.db.ops_figures(&auth.tenant_id, since, state.cfg.web.on_time_s as i64 * 1000).await?;
    f.assign_waits_ms.sort_unstable();
    let secs = |v: Option<i64>| v.map(|ms| (ms as f64 / 100.0).round() / 10.0);
    let on_time = (f.delivered > 0).then(|| (f.delivered_on_time as f64 * 1000.0 / f.delivered as f64).round() / 10.0);
    Ok(Json(Stats {
        hours,
        orders: f.orders_created,
        orders_per_hour: (f.orders_created as f64 * 10.0 / hours as f64).round() / 10.0,
        time_to_assign_s: Percentiles {
            p50: secs(percentile(&f.assign_waits_ms, 50.0)),
            p95: secs(percentile(&f.assign_waits_ms, 95.0)),
            count: f.assign_waits_ms.len(),
        },
        delivered: f.delivered,
        on_time_pct: on_time,
        on_time_within_s: state.cfg.web.on_time_s,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_codes_are_typeable_and_compared_loosely() {
        let c = new_login_code();
        assert_eq!(c.len(), 9);
        assert!(c.chars().all(|ch| ch == '-' || CODE_ALPHABET.contains(&(ch as u8))));
        assert_eq!(normalize_login_code(&c.to_lowercase().replace('-', " ")), normalize_login_code(&c));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 95.0), Some(95));
        assert_eq!(percentile(&[7], 95.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }
}

//! A tenant's admin keys (several, named, revocable) and its audit log (admin only).
//! A key is shown once, when created; only its hash and first characters are kept.

use crate::auth::AdminAuth;
use crate::crypto::{lookup_hash, new_token};
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::Router;
use lastmile_storage::{from_ms, AdminKey, AuditRecord, NewAdminKey, StorageError};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin-keys", get(list_admin_keys).post(create_admin_key))
        .route("/v1/admin-keys/{id}", delete(revoke_admin_key))
        .route("/v1/audit-log", get(audit_log))
}

/// Issued keys start `lm_admin_`; the prefix shown keeps four characters of the secret part.
const PREFIX_LEN: usize = "lm_admin_".len() + 4;
const MAX_NAME_LEN: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
pub struct AdminKeyInput {
    /// What the key is for (`ci`, `backup script`); 1–100 characters.
    pub name: String,
}

/// An admin key as the API shows it: never the key itself, except `key` right after a create.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AdminKeyView {
    pub id: String,
    pub name: String,
    /// The key's first characters (none for keys issued before prefixes were kept).
    pub prefix: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The key: in the answer to a create only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AdminKeyList {
    pub admin_keys: Vec<AdminKeyView>,
}

/// One audit-log entry.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub id: String,
    pub at: chrono::DateTime<chrono::Utc>,
    pub action: String,
    pub target_id: Option<String>,
    pub actor: AuditActor,
    pub source_ip: Option<String>,
    /// `tenant`, or `system` for operator-wide actions.
    pub scope: String,
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditActor {
    /// `admin_key`, `user` or `operator`.
    pub kind: String,
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditView>,
    /// Pass as `before` for the next page; none on the last.
    pub next_before: Option<String>,
}

fn key_view(k: &AdminKey) -> AdminKeyView {
    AdminKeyView {
        id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        created_at: from_ms(k.created_at),
        last_used_at: k.last_used_at.map(from_ms),
        revoked_at: k.revoked_at.map(from_ms),
        key: None,
    }
}

/// A new admin key: `(id, key, prefix)`; only the hash of `key` may be stored.
pub fn new_admin_key() -> (String, String, String) {
    let key = new_token("lm_admin");
    let prefix = key[..PREFIX_LEN].to_owned();
    (format!("key_{}", uuid::Uuid::now_v7().simple()), key, prefix)
}

#[utoipa::path(post, path = "/v1/admin-keys", tag = "admin", request_body = AdminKeyInput,
    responses((status = 201, description = "The key, shown once as `key`", body = AdminKeyView), (status = 422, description = "validation_failed")),
    security(("admin_key" = [])))]
pub async fn create_admin_key(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(input): Json<AdminKeyInput>,
) -> ApiResult<(StatusCode, Json<AdminKeyView>)> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.contains('\0') {
        return Err(ApiError::validation(vec![("name".into(), format!("must be 1 to {MAX_NAME_LEN} characters"))]));
    }
    let (id, key, prefix) = new_admin_key();
    let new = NewAdminKey { id: id.clone(), name: name.to_owned(), key_hash: lookup_hash(&key), prefix: Some(prefix) };
    let mut entry = crate::audit::entry(&auth, "admin_key.create", Some(&id));
    entry.details = Some(json!({"name": name}));
    let created = state.db.with_audit(entry).create_admin_key(&auth.tenant_id, new).await?;
    let mut view = key_view(&created);
    view.key = Some(key);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/admin-keys", tag = "admin",
    responses((status = 200, description = "The tenant's admin keys, never the keys themselves", body = AdminKeyList)),
    security(("admin_key" = [])))]
pub async fn list_admin_keys(State(state): State<AppState>, auth: AdminAuth) -> ApiResult<Json<AdminKeyList>> {
    let keys = state.db.list_admin_keys(&auth.tenant_id).await?;
    Ok(Json(AdminKeyList { admin_keys: keys.iter().map(key_view).collect() }))
}

#[utoipa::path(delete, path = "/v1/admin-keys/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "Revoked: the key is refused from now on"), (status = 404, description = "No such live key"),
              (status = 409, description = "last_admin_key: the tenant's last live key cannot be revoked")),
    security(("admin_key" = [])))]
pub async fn revoke_admin_key(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let db = crate::audit::db(&state, &auth, "admin_key.revoke", Some(&id));
    db.revoke_admin_key(&auth.tenant_id, &id).await.map_err(|e| match e {
        StorageError::NotFound => ApiError::not_found("admin key"),
        StorageError::Conflict(_) => ApiError::conflict(
            "last_admin_key",
            "this is the tenant's last live admin key: create another before revoking it",
        ),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    limit: Option<String>,
    before: Option<String>,
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

fn audit_view(r: &AuditRecord) -> AuditView {
    let e = &r.entry;
    AuditView {
        id: r.id.clone(),
        at: from_ms(r.created_at),
        action: e.action.clone(),
        target_id: e.target_id.clone(),
        actor: AuditActor { kind: e.actor_kind.clone(), id: e.actor_id.clone(), name: r.actor_name.clone() },
        source_ip: e.source_ip.clone(),
        scope: if e.tenant_id.is_some() { "tenant" } else { "system" }.into(),
        details: e.details.clone(),
    }
}

#[utoipa::path(get, path = "/v1/audit-log", tag = "admin",
    params(("limit" = Option<i64>, Query, description = "1–500, default 50"), ("before" = Option<String>, Query, description = "`next_before` of the previous page")),
    responses((status = 200, description = "Entries newest first, and `next_before` for the next page", body = AuditPage),
              (status = 422, description = "validation_failed")),
    security(("admin_key" = [])))]
pub async fn audit_log(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => l.parse::<i64>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
            ApiError::validation(vec![("limit".into(), format!("must be a whole number from 1 to {MAX_LIMIT}"))])
        })?,
    };
    let before = q.before.as_deref().filter(|b| !b.is_empty());
    if before.is_some_and(|b| b.len() > 64 || !b.starts_with("aud_")) {
        return Err(ApiError::validation(vec![("before".into(), "must be an entry id (`next_before`)".into())]));
    }
    let records = state.db.audit_log(&auth.tenant_id, before, limit).await?;
    let next = (records.len() as i64 == limit).then(|| records.last().map(|r| r.id.clone())).flatten();
    Ok(Json(AuditPage { entries: records.iter().map(audit_view).collect(), next_before: next }))
}

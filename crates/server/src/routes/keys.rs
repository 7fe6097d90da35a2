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

fn key_view(k: &AdminKey) -> Value {
    json!({"id": k.id, "name": k.name, "prefix": k.prefix, "created_at": from_ms(k.created_at),
           "last_used_at": k.last_used_at.map(from_ms), "revoked_at": k.revoked_at.map(from_ms)})
}

/// A new admin key: `(id, key, prefix)`; only the hash of `key` may be stored.
pub fn new_admin_key() -> (String, String, String) {
    let key = new_token("lm_admin");
    let prefix = key[..PREFIX_LEN].to_owned();
    (format!("key_{}", uuid::Uuid::now_v7().simple()), key, prefix)
}

#[utoipa::path(post, path = "/v1/admin-keys", tag = "admin", request_body = AdminKeyInput,
    responses((status = 201, description = "{id, name, prefix, created_at, key}: the key is shown once"), (status = 422, description = "validation_failed")),
    security(("admin_key" = [])))]
pub async fn create_admin_key(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(input): Json<AdminKeyInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
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
    view["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/admin-keys", tag = "admin",
    responses((status = 200, description = "{admin_keys: [{id, name, prefix, created_at, last_used_at, revoked_at}]}, never the keys")),
    security(("admin_key" = [])))]
pub async fn list_admin_keys(State(state): State<AppState>, auth: AdminAuth) -> ApiResult<Json<Value>> {
    let keys = state.db.list_admin_keys(&auth.tenant_id).await?;
    Ok(Json(json!({"admin_keys": keys.iter().map(key_view).collect::<Vec<_>>()})))
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

fn audit_view(r: &AuditRecord) -> Value {
    let e = &r.entry;
    json!({"id": r.id, "at": from_ms(r.created_at), "action": e.action, "target_id": e.target_id,
           "actor": {"kind": e.actor_kind, "id": e.actor_id, "name": r.actor_name},
           "source_ip": e.source_ip, "scope": if e.tenant_id.is_some() { "tenant" } else { "system" },
           "details": e.details})
}

#[utoipa::path(get, path = "/v1/audit-log", tag = "admin",
    params(("limit" = Option<i64>, Query, description = "1–500, default 50"), ("before" = Option<String>, Query, description = "`next_before` of the previous page")),
    responses((status = 200, description = "{entries: [{id, at, action, target_id, actor: {kind, id, name}, source_ip, scope, details}], next_before}, newest first"),
              (status = 422, description = "validation_failed")),
    security(("admin_key" = [])))]
pub async fn audit_log(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({"entries": records.iter().map(audit_view).collect::<Vec<_>>(), "next_before": next})))
}

//! Events out (admin key): a tenant's webhook endpoints — create (the signing secret is
//! shown then), list, read, change, delete, rotate the secret — and each endpoint's recent
//! deliveries. Delivery itself is `webhooks_out`. Tenant-scoped: another tenant's endpoint
//! answers exactly like a missing one.

use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::routes::admin::not_found;
use crate::state::AppState;
use crate::webhooks_out::new_secret;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use lastmile_core::WebhookDeliveryId;
use lastmile_core::{EventKind, WebhookEndpointId};
use lastmile_storage::{from_ms, NewWebhookEndpoint, WebhookEndpoint, WebhookEndpointPatch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest endpoint URL accepted.
const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhook-endpoints", post(create).get(list))
        .route("/v1/webhook-endpoints/{id}", get(read).patch(update).delete(remove))
        .route("/v1/webhook-endpoints/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/webhook-endpoints/{id}/deliveries", get(deliveries))
}

/// A new endpoint: where to send, and which event kinds (`["*"]` for all).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A change to an endpoint; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatchInput {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// An endpoint as the API shows it; `secret` only when it was just made.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    #[schema(value_type = String)]
    pub id: WebhookEndpointId,
    pub url: String,
    pub description: String,
    /// Event kinds, or `["*"]`.
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The signing secret (`whsec_...`): in the answer to a create only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointView>,
    /// The kinds an endpoint may subscribe to.
    pub event_kinds: Vec<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    pub secret: String,
    /// Until then the previous secret signs beside the new one.
    pub previous_valid_until: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    #[schema(value_type = String)]
    pub id: WebhookDeliveryId,
    pub event_id: String,
    pub event_kind: String,
    /// pending, running, done, dead or cancelled.
    pub state: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

fn view(e: &WebhookEndpoint) -> EndpointView {
    EndpointView {
        id: e.id.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        events: e.events.clone(),
        enabled: e.enabled,
        created_at: from_ms(e.created_at),
        updated_at: from_ms(e.updated_at),
        secret: None,
    }
}

/// The event kinds an endpoint may subscribe to.
pub fn subscribable_kinds() -> Vec<&'static str> {
    EventKind::ALL.iter().filter(|k| k.subscribable()).map(|k| k.as_str()).collect()
}

async fn check_url(state: &AppState, url: &str, fields: &mut Vec<(String, String)>) {
    if url.len() > MAX_URL {
        fields.push(("url".into(), format!("must be at most {MAX_URL} characters")));
    } else if !(url.starts_with("https://") || url.starts_with("http://")) {
        fields.push(("url".into(), "must be an http(s) URL".into()));
    } else if let Some(why) = crate::outbound::refuse_private(url, state.cfg.allow_private_urls).await {
        fields.push(("url".into(), why));
    }
}

fn check_events(events: &[String], fields: &mut Vec<(String, String)>) {
    let known = subscribable_kinds();
    if events.is_empty() {
        fields.push(("events".into(), "must name at least one event kind, or \"*\"".into()));
    }
    if let Some(bad) = events.iter().find(|e| *e != "*" && !known.contains(&e.as_str())) {
        fields.push(("events".into(), format!("unknown event kind `{bad}`; known: * or {}", known.join(", "))));
    }
}

fn check_description(d: Option<&String>, fields: &mut Vec<(String, String)>) {
    if d.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
        fields.push(("description".into(), format!("must be at most {MAX_DESCRIPTION} characters")));
    }
}

#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "events-out", request_body = EndpointInput,
    responses((status = 201, description = "Endpoint created; its signing secret (`whsec_...`) is shown once, as `secret`", body = EndpointView),
              (status = 422, description = "Invalid URL (not http(s), or a private address) or unknown event kind")),
    security(("admin_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: AdminAuth,
    Json(input): Json<EndpointInput>,
) -> ApiResult<(StatusCode, Json<EndpointView>)> {
    let mut fields = Vec::new();
    check_url(&state, &input.url, &mut fields).await;
    check_events(&input.events, &mut fields);
    check_description(input.description.as_ref(), &mut fields);
    if !fields.is_empty() {
        return Err(ApiError::validation(fields));
    }
    let secret = new_secret();
    let new = NewWebhookEndpoint {
        url: input.url,
        description: input.description.unwrap_or_default(),
        events: input.events,
        secret_enc: state.keys.encrypt(secret.as_bytes()),
    };
    let audited = crate::audit::db(&state, &auth, "webhook_endpoint.create", None);
    let endpoint = audited.create_webhook_endpoint(&auth.tenant_id, new).await?;
    let mut out = view(&endpoint);
    out.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "events-out",
    responses((status = 200, description = "The tenant's endpoints (no secrets)", body = EndpointList)), security(("admin_key" = [])))]
pub async fn list(State(state): State<AppState>, auth: AdminAuth) -> ApiResult<Json<EndpointList>> {
    let list = state.db.list_webhook_endpoints(&auth.tenant_id).await?;
    Ok(Json(EndpointList { endpoints: list.iter().map(view).collect(), event_kinds: subscribable_kinds() }))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "events-out", params(("id" = String, Path)),
    responses((status = 200, description = "The endpoint (no secret)", body = EndpointView), (status = 404, description = "No such endpoint")),
    security(("admin_key" = [])))]
pub async fn read(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointView>> {
    let e = state
        .db
        .get_webhook_endpoint(&auth.tenant_id, &WebhookEndpointId(id))
        .await
        .map_err(not_found("webhook endpoint"))?;
    Ok(Json(view(&e)))
}

#[utoipa::path(patch, path = "/v1/webhook-endpoints/{id}", tag = "events-out", params(("id" = String, Path)),
    request_body = EndpointPatchInput,
    responses((status = 200, description = "The endpoint as changed", body = EndpointView), (status = 404, description = "No such endpoint"),
              (status = 422, description = "Invalid fields")),
    security(("admin_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Json(input): Json<EndpointPatchInput>,
) -> ApiResult<Json<EndpointView>> {
    let mut fields = Vec::new();
    if let Some(u) = &input.url {
        check_url(&state, u, &mut fields).await;
    }
    if let Some(e) = &input.events {
        check_events(e, &mut fields);
    }
    check_description(input.description.as_ref(), &mut fields);
    if !fields.is_empty() {
        return Err(ApiError::validation(fields));
    }
    let patch = WebhookEndpointPatch {
        url: input.url,
        description: input.description,
        events: input.events,
        enabled: input.enabled,
    };
    let e = crate::audit::db(&state, &auth, "webhook_endpoint.update", Some(&id))
        .update_webhook_endpoint(&auth.tenant_id, &WebhookEndpointId(id.clone()), patch)
        .await
        .map_err(not_found("webhook endpoint"))?;
    Ok(Json(view(&e)))
}

#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "events-out", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; its unfinished deliveries are cancelled"), (status = 404, description = "No such endpoint")),
    security(("admin_key" = [])))]
pub async fn remove(State(state): State<AppState>, auth: AdminAuth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    crate::audit::db(&state, &auth, "webhook_endpoint.delete", Some(&id))
        .delete_webhook_endpoint(&auth.tenant_id, &WebhookEndpointId(id.clone()))
        .await
        .map_err(not_found("webhook endpoint"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "events-out", params(("id" = String, Path)),
    responses((status = 200, description = "The new secret; the previous one keeps signing beside it until `previous_valid_until`", body = RotatedSecret),
              (status = 404, description = "No such endpoint")),
    security(("admin_key" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<RotatedSecret>> {
    let secret = new_secret();
    let until = lastmile_storage::now_ms() + (state.cfg.webhooks.rotation_overlap_s as i64) * 1000;
    crate::audit::db(&state, &auth, "webhook_endpoint.rotate_secret", Some(&id))
        .rotate_webhook_secret(
            &auth.tenant_id,
            &WebhookEndpointId(id.clone()),
            state.keys.encrypt(secret.as_bytes()),
            until,
        )
        .await
        .map_err(not_found("webhook endpoint"))?;
    Ok(Json(RotatedSecret { secret, previous_valid_until: from_ms(until) }))
}

#[derive(Debug, Deserialize, Default)]
pub struct DeliveriesQuery {
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/deliveries", tag = "events-out",
    params(("id" = String, Path), ("limit" = Option<i64>, Query)),
    responses((status = 200, description = "Newest first: state (pending, running, done, dead, cancelled), attempts, last status and error", body = DeliveryList),
              (status = 404, description = "No such endpoint")),
    security(("admin_key" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<Json<DeliveryList>> {
    let id = WebhookEndpointId(id);
    state.db.get_webhook_endpoint(&auth.tenant_id, &id).await.map_err(not_found("webhook endpoint"))?;
    let list = state.db.list_webhook_deliveries(&auth.tenant_id, &id, q.limit.unwrap_or(50).clamp(1, 500)).await?;
    let deliveries = list
        .into_iter()
        .map(|d| DeliveryView {
            id: d.id,
            event_id: d.event_id,
            event_kind: d.event_kind,
            state: d.state,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            next_attempt_at: from_ms(d.next_attempt_at),
            created_at: from_ms(d.created_at),
            completed_at: d.completed_at.map(from_ms),
        })
        .collect();
    Ok(Json(DeliveryList { deliveries }))
}

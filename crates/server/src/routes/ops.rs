//! Operations: integration health (`GET /v1/integrations`), dead letters and their replay.

use crate::auth::AdminAuth;
use crate::error::{ApiResult, Json, Path, Query};
use crate::routes::admin::not_found;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use lastmile_core::{DeadLetterId, Platform, StoreId, SyncJobId};
use lastmile_storage::{from_ms, to_ms, DeadLetter, DeadLetterFilter};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/integrations", get(integrations))
        .route("/v1/dead-letters", get(list_dead_letters))
        .route("/v1/dead-letters/replay", post(bulk_replay))
        .route("/v1/dead-letters/{id}/replay", post(replay_one))
}

/// One store's sync-back health.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationView {
    pub store_id: StoreId,
    pub store_name: String,
    pub platform: Platform,
    pub tier: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    pub platform_breaker: &'static str,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub attempts: u64,
    pub failures: u64,
    /// Sync jobs waiting.
    pub backlog: i64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
    pub dead_letters: i64,
    /// A sentence for the console when sync is delayed.
    pub degraded: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationList {
    pub integrations: Vec<IntegrationView>,
}

#[utoipa::path(get, path = "/v1/integrations", tag = "ops", responses((status = 200, description = "Per store: breaker state, last success and error, backlog, degraded notice", body = IntegrationList)), security(("admin_key" = [])))]
pub async fn integrations(State(state): State<AppState>, auth: AdminAuth) -> ApiResult<Json<IntegrationList>> {
    let stores = state.db.list_stores(&auth.tenant_id).await?;
    let backlog: HashMap<String, lastmile_storage::SyncBacklog> =
        state.db.sync_backlog(&auth.tenant_id).await?.into_iter().map(|b| (b.store_id.clone(), b)).collect();
    let health: HashMap<String, lastmile_connectors::IntegrationHealth> =
        state.connectors.snapshot().into_iter().map(|h| (h.store_key.clone(), h)).collect();
    let mut out = Vec::new();
    for s in stores.iter().filter(|s| s.platform != lastmile_core::Platform::Native) {
        let h = health.get(s.id.as_str());
        let b = backlog.get(s.id.as_str());
        let pretty = match s.platform {
            lastmile_core::Platform::Shopify => "Shopify",
            lastmile_core::Platform::Woocommerce => "WooCommerce",
            lastmile_core::Platform::Bigcommerce => "BigCommerce",
            lastmile_core::Platform::Native => "Native",
        };
        let oldest = b.and_then(|b| b.oldest_pending_at);
        let degraded_since = h.and_then(|h| h.degraded_since).or_else(|| {
            // A backlog older than a minute is a delay even if no call failed yet. The worker's
            // clock, so the notice follows the schedule when tests move tokio time.
            oldest.filter(|t| state.clock.now_ms() - t > 60_000).map(from_ms)
        });
        let notice = degraded_since.map(|t| format!("{pretty} sync delayed since {}", t.to_rfc3339()));
        out.push(IntegrationView {
            store_id: s.id.clone(),
            store_name: s.name.clone(),
            platform: s.platform,
            tier: s.tier.clone(),
            breaker: h.map(|h| h.breaker.as_str()).unwrap_or("closed"),
            platform_breaker: h.map(|h| h.platform_breaker.as_str()).unwrap_or("closed"),
            last_success_at: h.and_then(|h| h.last_success_at),
            last_error: h.and_then(|h| h.last_error.clone()),
            last_error_at: h.and_then(|h| h.last_error_at),
            attempts: h.map(|h| h.attempts).unwrap_or(0),
            failures: h.map(|h| h.failures).unwrap_or(0),
            backlog: b.map(|b| b.pending).unwrap_or(0),
            oldest_pending_at: oldest.map(from_ms),
            dead_letters: b.map(|b| b.dead).unwrap_or(0),
            degraded: notice,
        });
    }
    Ok(Json(IntegrationList { integrations: out }))
}

#[derive(Debug, Deserialize, Default)]
pub struct DeadLetterQuery {
    kind: Option<String>,
    platform: Option<String>,
    store_id: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: Option<i64>,
    include_replayed: Option<bool>,
}

impl DeadLetterQuery {
    pub(crate) fn filter(&self) -> DeadLetterFilter {
        DeadLetterFilter {
            kind: self.kind.clone(),
            platform: self.platform.clone(),
            store_id: self.store_id.clone(),
            since: self.since.map(to_ms),
            until: self.until.map(to_ms),
            include_replayed: self.include_replayed.unwrap_or(false),
            limit: self.limit.unwrap_or(100).clamp(1, 1000),
        }
    }
}

/// A dead letter with its context and, for a sync letter, its job as it stands now.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    pub id: DeadLetterId,
    /// `intake` or `sync`.
    pub kind: String,
    pub platform: String,
    pub store_id: String,
    #[schema(value_type = Object)]
    pub headers: Value,
    /// The delivery's body as text.
    pub body: String,
    pub error: String,
    #[schema(value_type = Object)]
    pub context: Value,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replay_outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<SyncJobView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SyncJobView {
    pub id: SyncJobId,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// The platform's last HTTP status.
    pub last_status: Option<i64>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterView>,
}

/// What a replay did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    pub id: DeadLetterId,
    /// `succeeded`, `failed` or `unchanged`.
    pub outcome: &'static str,
    pub changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The replay's own answer (an order intake result, or the requeued job).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkReplay {
    pub replayed: usize,
    pub succeeded: usize,
    pub results: Vec<ReplayResult>,
}

fn dl_view(d: &DeadLetter) -> DeadLetterView {
    DeadLetterView {
        id: d.id.clone(),
        kind: d.kind.clone(),
        platform: d.platform.clone(),
        store_id: d.store_id.clone(),
        headers: d.headers.clone(),
        body: String::from_utf8_lossy(&d.body).into_owned(),
        error: d.error.clone(),
        context: d.context.clone(),
        attempts: d.attempts,
        created_at: from_ms(d.created_at),
        replayed_at: d.replayed_at.map(from_ms),
        replay_outcome: d.replay_outcome.clone(),
        job: None,
    }
}

#[utoipa::path(get, path = "/v1/dead-letters", tag = "ops",
    params(("kind" = Option<String>, Query), ("platform" = Option<String>, Query), ("store_id" = Option<String>, Query), ("since" = Option<DateTime<Utc>>, Query), ("until" = Option<DateTime<Utc>>, Query),
        ("limit" = Option<i64>, Query, description = "1 to 1000, default 100"), ("include_replayed" = Option<bool>, Query)),
    responses((status = 200, description = "Dead letters with their context", body = DeadLetterList)), security(("admin_key" = [])))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<DeadLetterQuery>,
) -> ApiResult<Json<DeadLetterList>> {
    let list = state.db.list_dead_letters(&auth.tenant_id, &q.filter()).await?;
    // A sync letter shows its job as it stands now: after a replay, whether it got through.
    let jobs: Vec<SyncJobId> = list.iter().filter(|d| d.kind == "sync").filter_map(sync_job_of).collect();
    let statuses: HashMap<String, SyncJobView> = state
        .db
        .sync_job_statuses(&auth.tenant_id, &jobs)
        .await?
        .into_iter()
        .map(|j| {
            let view = SyncJobView {
                id: j.id.clone(),
                state: j.state,
                attempts: j.attempts,
                last_error: j.last_error,
                last_status: j.last_status,
                completed_at: j.completed_at.map(from_ms),
            };
            (j.id.0, view)
        })
        .collect();
    let views = list
        .iter()
        .map(|d| DeadLetterView { job: sync_job_of(d).and_then(|j| statuses.get(j.as_str())).cloned(), ..dl_view(d) })
        .collect();
    Ok(Json(DeadLetterList { dead_letters: views }))
}

fn sync_job_of(d: &DeadLetter) -> Option<SyncJobId> {
    d.context.get("job_id").and_then(|j| j.as_str()).map(|s| SyncJobId(s.to_owned()))
}

/// Replay one dead letter; idempotent (a succeeded replay is not repeated). A sync letter's
/// job is queued again and runs through the worker like any job (breakers, rate limits,
/// check-before-act); if it fails again it comes back as a new dead letter, and the job's
/// standing shows beside this one in `GET /v1/dead-letters`.
pub async fn replay(state: &AppState, auth: &AdminAuth, d: &DeadLetter) -> ApiResult<ReplayResult> {
    let result = |outcome, changed, note: Option<String>, detail| ReplayResult {
        id: d.id.clone(),
        outcome,
        changed,
        note,
        detail,
    };
    if d.replay_outcome.as_deref() == Some("succeeded") {
        return Ok(result("succeeded", false, Some("already replayed".into()), None));
    }
    let outcome: Result<Value, String> = match d.kind.as_str() {
        "sync" => match sync_job_of(d) {
            Some(job) => match state.db.requeue_sync_job(&d.tenant_id, &job).await {
                Ok(true) => Ok(json!({"job_id": job, "requeued": true})),
                Ok(false) => {
                    // The job is not dead (another letter of it was replayed, or it is done):
                    // nothing to send. A done job settles this letter; a queued one leaves it.
                    let job_state = state.db.sync_job_state(&d.tenant_id, &job).await?;
                    let note = format!("the job is {job_state}: nothing to replay");
                    if job_state != "done" {
                        return Ok(result("unchanged", false, Some(note), None));
                    }
                    Ok(json!({"job_id": job, "requeued": false, "note": note}))
                }
                Err(e) => Err(e.to_string()),
            },
            None => Err("the dead letter names no job".into()),
        },
        "webhook" => match d.context.get("delivery_id").and_then(|v| v.as_str()) {
            Some(id) => {
                let id = lastmile_core::WebhookDeliveryId(id.to_owned());
                match state.db.requeue_webhook_delivery(&d.tenant_id, &id).await {
                    Ok(true) => Ok(json!({"delivery_id": id, "requeued": true})),
                    Ok(false) => {
                        let now = state.db.get_webhook_delivery(&d.tenant_id, &id).await.map(|s| s.state);
                        let delivery_state = now.unwrap_or_else(|_| "gone".into());
                        let note = format!("the delivery is {delivery_state}: nothing to replay");
                        if delivery_state != "done" {
                            return Ok(result("unchanged", false, Some(note), None));
                        }
                        Ok(json!({"delivery_id": id, "requeued": false, "note": note}))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            None => Err("the dead letter names no delivery".into()),
        },
        _ => {
            let store =
                state.db.get_store(&d.tenant_id, &StoreId(d.store_id.clone())).await.map_err(not_found("store"))?;
            let headers: Vec<(String, String)> = d
                .headers
                .as_object()
                .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
                .unwrap_or_default();
            // A delivery that still fails is recorded on this dead letter, never kept twice.
            crate::routes::webhooks::replay_delivery(state, &store, &headers, d.body.clone())
                .await?
                .map_err(|e| format!("still failing: {e}"))
        }
    };
    let (label, detail) = match &outcome {
        Ok(v) => ("succeeded", v.clone()),
        Err(e) => ("failed", json!({"error": e})),
    };
    let mut entry = crate::audit::entry(auth, "dead_letter.replay", Some(d.id.as_str()));
    entry.details = Some(json!({"outcome": label, "kind": d.kind}));
    state.db.with_audit(entry).record_replay(&d.tenant_id, &d.id, label).await?;
    // Only a letter settled by an already-done job sent nothing.
    let changed = detail.get("requeued") != Some(&Value::Bool(false));
    Ok(result(label, changed, None, Some(detail)))
}

#[utoipa::path(post, path = "/v1/dead-letters/{id}/replay", tag = "ops", params(("id" = String, Path)),
    responses((status = 200, description = "What the replay did", body = ReplayResult), (status = 404, description = "No such dead letter, or its store is gone")), security(("admin_key" = [])))]
pub async fn replay_one(
    State(state): State<AppState>,
    auth: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<ReplayResult>> {
    let d = state.db.get_dead_letter(&auth.tenant_id, &DeadLetterId(id)).await.map_err(not_found("dead letter"))?;
    Ok(Json(replay(&state, &auth, &d).await?))
}

#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "ops",
    params(("kind" = Option<String>, Query), ("platform" = Option<String>, Query), ("store_id" = Option<String>, Query), ("since" = Option<DateTime<Utc>>, Query), ("until" = Option<DateTime<Utc>>, Query),
        ("limit" = Option<i64>, Query, description = "1 to 1000, default 100"), ("include_replayed" = Option<bool>, Query)),
    responses((status = 200, description = "Every matching dead letter replayed, with outcomes", body = BulkReplay), (status = 404, description = "A letter's store is gone")), security(("admin_key" = [])))]
pub async fn bulk_replay(
    State(state): State<AppState>,
    auth: AdminAuth,
    Query(q): Query<DeadLetterQuery>,
) -> ApiResult<Json<BulkReplay>> {
    let list = state.db.list_dead_letters(&auth.tenant_id, &q.filter()).await?;
    let mut results = Vec::with_capacity(list.len());
    for d in &list {
        results.push(replay(&state, &auth, d).await?);
    }
    let succeeded = results.iter().filter(|r| r.outcome == "succeeded").count();
    Ok(Json(BulkReplay { replayed: results.len(), succeeded, results }))
}

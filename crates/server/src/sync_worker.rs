//! The sync-back worker: claims due jobs from the database (leases; `SKIP LOCKED` on
//! PostgreSQL), runs each through the connector hub (bulkheads, timeouts, rate limits and
//! breakers per store), and records the outcome: done, retry on the schedule, or a dead
//! letter with the full context. BigCommerce order fetches that failed at intake run
//! through here too.

use crate::config::Config;
use crate::error::ApiResult;
use crate::routes::admin::store_credentials;
use crate::state::AppState;
use lastmile_connectors::{
    ConnectorConfig, ConnectorHub, Credentials, RetrySchedule, StoreTarget, SyncAction, SyncOutcome, SyncRequest, Tier,
};
use lastmile_core::Platform;
use lastmile_storage::{now_ms, IntakeSource, RawDelivery, StoreRecord, SyncJob};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub fn connector_hub(cfg: &Config) -> ConnectorHub {
    ConnectorHub::new(ConnectorConfig {
        timeout_standard: Duration::from_secs(cfg.sync.timeout_standard_s),
        timeout_enterprise: Duration::from_secs(cfg.sync.timeout_enterprise_s),
        max_concurrency_per_store: cfg.sync.max_concurrency_per_store,
        ..ConnectorConfig::default()
    })
}

pub fn schedule(cfg: &Config) -> RetrySchedule {
    let steps: Vec<Duration> = cfg.sync.retry_schedule_s.iter().map(|s| Duration::from_secs(*s)).collect();
    let total: Duration = steps.iter().sum();
    RetrySchedule { steps, then_every: None, give_up_after: total, ..RetrySchedule::default() }
}

pub fn store_target(state: &AppState, store: &StoreRecord) -> ApiResult<StoreTarget> {
    let creds = store_credentials(state, store)?;
    let credentials = match creds {
        Some(c) if c.access_token.is_some() => Credentials::AccessToken(c.access_token.unwrap_or_default()),
        Some(c) if c.consumer_key.is_some() => Credentials::ConsumerKey {
            key: c.consumer_key.unwrap_or_default(),
            secret: c.consumer_secret.unwrap_or_default(),
        },
        _ => Credentials::None,
    };
    Ok(StoreTarget {
        platform: store.platform,
        store_key: store.id.0.clone(),
        base_url: store.api_base_url.clone().unwrap_or_default(),
        credentials,
        tier: store.tier.parse().unwrap_or(Tier::Standard),
    })
}

/// Jobs handled at once by this node (each store is further bounded by its bulkhead).
const IN_FLIGHT: usize = 64;
/// A claimed job is someone else's to retry if its worker is silent this long.
const LEASE_MS: i64 = 120_000;

pub async fn run(state: AppState, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let poll = Duration::from_millis(state.cfg.sync.poll_ms);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let free = slots.available_permits() as i64;
        if free > 0 {
            match state.db.claim_sync_jobs(now_ms(), free, LEASE_MS).await {
                Ok(jobs) => {
                    for job in jobs {
                        let permit = slots.clone().acquire_owned().await.expect("semaphore never closed");
                        let st = state.clone();
                        tasks.spawn(async move {
                            run_job(&st, job).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming sync jobs failed"),
            }
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(poll) => {}
        }
    }
    // Finish what is in flight: its outcome must be recorded, or the lease will rerun it.
    while tasks.join_next().await.is_some() {}
    tracing::debug!("sync worker stopped");
}

async fn run_job(state: &AppState, job: SyncJob) {
    let store = match state.db.get_store(&job.tenant_id, &job.store_id).await {
        Ok(s) => s,
        Err(e) => {
            let _ = state
                .db
                .dead_letter_sync_job(&job, serde_json::json!({}), &format!("store unavailable: {e}"), None, None)
                .await;
            return;
        }
    };
    let target = match store_target(state, &store) {
        Ok(t) => t,
        Err(e) => {
            let _ = state.db.dead_letter_sync_job(&job, serde_json::json!({}), &e.message, None, None).await;
            return;
        }
    };
    if job.action == "fetch_order" {
        return run_fetch(state, &store, &target, job).await;
    }
    let action = match job.action.as_str() {
        "picked_up" => SyncAction::PickedUp,
        "delivered" => SyncAction::Delivered,
        "cancelled" => SyncAction::Cancelled,
        _ => SyncAction::Failed { reason: "delivery failed".into() },
    };
    let req = SyncRequest {
        target,
        platform_order_id: job.platform_order_id.clone(),
        action,
        tracking_url: None,
        tracking_number: Some(job.order_id.0.clone()),
        idempotency_key: job.idempotency_key.clone(),
    };
    let request_ctx = serde_json::json!({"platform": job.platform, "platform_order_id": job.platform_order_id, "action": job.action, "base_url": req.target.base_url});
    let outcome = state.connectors.sync(&req).await;
    metrics::counter!("lastmile_sync_attempts_total", "platform" => job.platform.as_str(), "outcome" => outcome.label()).increment(1);
    let result = match outcome {
        SyncOutcome::Done { status, summary } => state.db.complete_sync_job(&job.id, Some(status), &summary).await,
        SyncOutcome::AlreadyDone => state.db.complete_sync_job(&job.id, None, "already in the target state").await,
        SyncOutcome::Deferred { until } => {
            state
                .db
                .retry_sync_job(
                    &job.id,
                    now_ms() + until.as_millis() as i64,
                    false,
                    "deferred: breaker open or rate limited",
                    None,
                    None,
                )
                .await
        }
        SyncOutcome::Retry { error, retry_after, last_status, last_body } => {
            retry_or_dead(state, &job, request_ctx, &error, retry_after, last_status, last_body).await
        }
        SyncOutcome::Permanent { error, last_status, last_body } => {
            state.db.dead_letter_sync_job(&job, request_ctx, &error, last_status, last_body).await.map(|_| ())
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, job = %job.id, "recording a sync outcome failed; the lease will retry it");
    }
}

async fn retry_or_dead(
    state: &AppState,
    job: &SyncJob,
    ctx: serde_json::Value,
    error: &str,
    retry_after: Option<Duration>,
    status: Option<u16>,
    body: Option<String>,
) -> lastmile_storage::Result<()> {
    let attempt = job.attempts as u32 + 1;
    let delay = schedule(&state.cfg).delay_respecting(attempt, retry_after, &mut rand::thread_rng());
    match delay {
        Some(d) => state.db.retry_sync_job(&job.id, now_ms() + d.as_millis() as i64, true, error, status, body).await,
        None => state
            .db
            .dead_letter_sync_job(job, ctx, &format!("retries exhausted: {error}"), status, body)
            .await
            .map(|_| ()),
    }
}

async fn run_fetch(state: &AppState, store: &StoreRecord, target: &StoreTarget, job: SyncJob) {
    let ctx = serde_json::json!({"fetch": "bigcommerce_order", "platform_order_id": job.platform_order_id});
    let result = match state.connectors.fetch_bigcommerce_order(target, &job.platform_order_id).await {
        Ok(bodies) => {
            match lastmile_ingest::normalize_bigcommerce(&bodies.order, &bodies.products, &bodies.shipping_addresses) {
                Ok(order) => {
                    let src = IntakeSource {
                        tenant_id: store.tenant_id.clone(),
                        store_id: store.id.clone(),
                        platform: Platform::Bigcommerce,
                    };
                    let raw = RawDelivery { headers_json: "{}".into(), body: bodies.order.clone() };
                    match state.db.intake_platform_order(src, order, raw).await {
                        Ok(out) => state.db.complete_sync_job(&job.id, Some(200), out.result.as_str()).await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => state.db.dead_letter_sync_job(&job, ctx, &e.to_string(), None, None).await.map(|_| ()),
            }
        }
        Err(lastmile_connectors::FetchError::Deferred { until }) => {
            state.db.retry_sync_job(&job.id, now_ms() + until.as_millis() as i64, false, "deferred", None, None).await
        }
        Err(lastmile_connectors::FetchError::Retry { error, retry_after, last_status }) => {
            retry_or_dead(state, &job, ctx, &error, retry_after, last_status, None).await
        }
        Err(e) => state.db.dead_letter_sync_job(&job, ctx, &e.to_string(), None, None).await.map(|_| ()),
    };
    if let Err(e) = result {
        tracing::error!(error = %e, job = %job.id, "recording a fetch outcome failed");
    }
}

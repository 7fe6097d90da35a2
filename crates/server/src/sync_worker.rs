//! The sync-back worker: claims due jobs from the database (leases; `SKIP LOCKED` on
//! PostgreSQL; one job of an order at a time; never more of one store's jobs than its
//! bulkhead runs, so a hanging or rate-limited store cannot fill the worker), runs each
//! through the connector hub (bulkheads, timeouts, rate limits and breakers per store), and
//! records the outcome: done, retry on the schedule, or a dead letter with the full context.
//! BigCommerce order fetches that failed at intake run through here too. Deferred jobs
//! (breaker open, store paused, bulkhead full) wait without using an attempt.

use crate::config::Config;
use crate::error::ApiResult;
use crate::routes::admin::store_credentials;
use crate::state::AppState;
use lastmile_connectors::{
    ConnectorConfig, ConnectorHub, Credentials, PlatformRates, RetrySchedule, StoreTarget, SyncAction, SyncOutcome,
    SyncRequest, Tier,
};
use lastmile_core::Platform;
use lastmile_storage::{ClaimLimits, IntakeSource, RawDelivery, StorageError, StoreRecord, SyncJob};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest a job waits inside the hub for its store's bulkhead slot or rate budget
/// before it is deferred instead (no attempt used). A waiting job holds one of the worker's
/// slots, so a store that is hanging or out of budget must give them back quickly.
const HUB_WAIT: Duration = Duration::from_millis(250);

pub fn connector_hub(cfg: &Config) -> ConnectorHub {
    let defaults = ConnectorConfig::default();
    ConnectorHub::new(ConnectorConfig {
        timeout_standard: Duration::from_secs(cfg.sync.timeout_standard_s),
        timeout_enterprise: Duration::from_secs(cfg.sync.timeout_enterprise_s),
        max_concurrency_per_store: cfg.sync.max_concurrency_per_store,
        bulkhead_wait: HUB_WAIT,
        rate: PlatformRates { max_wait: HUB_WAIT, ..defaults.rate.clone() },
        ..defaults
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
/// How often the backlog gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// How long a job is put off when its store could not be read (the database is struggling).
const STORE_UNREADABLE_RETRY_MS: i64 = 5_000;

/// Claims due jobs on `state.clock` (tokio's clock, so a test that pauses and advances time
/// moves the schedule), runs them, and stops with `shutdown` after recording the outcome of
/// every job in flight.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let poll = Duration::from_millis(state.cfg.sync.poll_ms);
    let mut worker = Worker::new(state);
    let mut gauge = BacklogGauge::default();
    loop {
        worker.reap();
        worker.claim().await;
        gauge.refresh(&worker.state).await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(poll) => {}
        }
    }
    // Finish what is in flight: its outcome must be recorded, or the lease will rerun it.
    while worker.tasks.join_next().await.is_some() {}
    tracing::debug!("sync worker stopped");
}

/// The worker's jobs in flight, counted per store so one store never holds more of them
/// than its bulkhead can run.
struct Worker {
    state: AppState,
    /// Each task returns its job's store id.
    tasks: JoinSet<String>,
    held: HashMap<String, usize>,
}

impl Worker {
    fn new(state: AppState) -> Self {
        Worker { state, tasks: JoinSet::new(), held: HashMap::new() }
    }

    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            match done {
                Ok(store) => self.release(&store),
                // A panicked job: its lease runs out and another attempt picks it up. Its
                // store count is lost with it, so recount from the tasks that remain.
                Err(e) => {
                    tracing::error!(error = %e, "a sync job task failed");
                    self.held.clear();
                }
            }
        }
    }

    fn release(&mut self, store: &str) {
        if let Some(n) = self.held.get_mut(store) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(store);
            }
        }
    }

    async fn claim(&mut self) {
        let free = IN_FLIGHT.saturating_sub(self.tasks.len());
        if free == 0 {
            return;
        }
        let per_store = self.state.cfg.sync.max_concurrency_per_store;
        let limits = ClaimLimits {
            limit: free as i64,
            per_store: per_store as i64,
            skip_stores: self.held.iter().filter(|(_, n)| **n >= per_store).map(|(s, _)| s.clone()).collect(),
        };
        let lease = lease(&self.state);
        let now = self.state.clock.now_ms();
        let jobs = match self.state.db.claim_sync_jobs_limited(now, lease.as_millis() as i64, limits).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "claiming sync jobs failed");
                return;
            }
        };
        for job in jobs {
            let store = job.store_id.0.clone();
            *self.held.entry(store.clone()).or_default() += 1;
            let state = self.state.clone();
            self.tasks.spawn(async move {
                run_leased(&state, job, lease).await;
                store
            });
        }
    }
}

fn lease(state: &AppState) -> Duration {
    Duration::from_secs(state.cfg.sync.lease_s)
}

/// Runs a claimed job, giving it up if it outlives nine tenths of its lease: past the lease
/// another worker may claim it, and two workers must not run one job at once (tier
/// timeouts, shorter than the lease, end every call long before in normal running).
async fn run_leased(state: &AppState, job: SyncJob, lease: Duration) {
    let id = job.id.clone();
    if tokio::time::timeout(lease.mul_f64(0.9), run_job(state, job)).await.is_err() {
        tracing::warn!(job = %id, "sync job outlived its lease; left for the next claim");
    }
}

/// `lastmile_sync_backlog{platform,store}`: unfinished jobs per integration, refreshed
/// about once a second by the worker.
#[derive(Default)]
struct BacklogGauge {
    refreshed: Option<Instant>,
    /// Labels set last time, so an integration whose backlog emptied drops to 0.
    shown: HashSet<(String, String)>,
}

impl BacklogGauge {
    async fn refresh(&mut self, state: &AppState) {
        if self.refreshed.is_some_and(|at| at.elapsed() < GAUGE_EVERY) {
            return;
        }
        self.refreshed = Some(Instant::now());
        let rows = match state.db.sync_backlog_by_store().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "reading the sync backlog failed");
                return;
            }
        };
        let mut now_shown = HashSet::new();
        for (platform, store, pending) in rows {
            metrics::gauge!("lastmile_sync_backlog", "platform" => platform.clone(), "store" => store.clone())
                .set(pending as f64);
            now_shown.insert((platform, store));
        }
        for (platform, store) in self.shown.difference(&now_shown) {
            metrics::gauge!("lastmile_sync_backlog", "platform" => platform.clone(), "store" => store.clone()).set(0.0);
        }
        self.shown = now_shown;
    }
}

/// What the driver said when they marked the delivery failed (the order's status reason).
fn failure_reason(order: Option<&lastmile_core::Order>) -> String {
    order
        .filter(|o| o.status == lastmile_core::OrderStatus::Failed)
        .and_then(|o| o.status_reason.clone())
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "delivery failed".into())
}

async fn run_job(state: &AppState, job: SyncJob) {
    let store = match state.db.get_store(&job.tenant_id, &job.store_id).await {
        Ok(s) => s,
        Err(StorageError::NotFound) => {
            let ctx = serde_json::json!({"store_id": job.store_id});
            let _ = state.db.dead_letter_sync_job(&job, ctx, "the store no longer exists", None, None).await;
            return;
        }
        Err(e) => {
            // Not the job's fault: try again shortly, without using an attempt.
            let next = state.clock.now_ms() + STORE_UNREADABLE_RETRY_MS;
            let error = format!("store unreadable: {e}");
            if let Err(e) = state.db.retry_sync_job(&job.id, next, false, &error, None, None).await {
                tracing::error!(error = %e, job = %job.id, "putting a sync job back failed; the lease will retry it");
            }
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
    // The order as it stands, when the call needs it: its tracking link (with `public_url`),
    // and the reason the driver gave for a failure.
    let order = if state.cfg.public_url.is_some() || job.action == "failed" {
        state.db.get_order(&job.tenant_id, &job.order_id).await.ok()
    } else {
        None
    };
    let action = match job.action.as_str() {
        "picked_up" => SyncAction::PickedUp,
        "delivered" => SyncAction::Delivered,
        "cancelled" => SyncAction::Cancelled,
        _ => SyncAction::Failed { reason: failure_reason(order.as_ref()) },
    };
    let req = SyncRequest {
        target,
        platform_order_id: job.platform_order_id.clone(),
        action,
        tracking_url: order.as_ref().and_then(|o| state.cfg.tracking_url(&o.tracking_token)),
        tracking_number: Some(job.order_id.0.clone()),
        idempotency_key: job.idempotency_key.clone(),
    };
    let request_ctx = serde_json::json!({"platform": job.platform, "platform_order_id": job.platform_order_id, "action": job.action, "base_url": req.target.base_url});
    // The hub counts the attempt in `lastmile_sync_attempts_total{platform,outcome}`.
    let outcome = state.connectors.sync(&req).await;
    let result = match outcome {
        SyncOutcome::Done { status, summary } => state.db.complete_sync_job(&job.id, Some(status), &summary).await,
        SyncOutcome::AlreadyDone => state.db.complete_sync_job(&job.id, None, "already in the target state").await,
        SyncOutcome::Deferred { until } => {
            state
                .db
                .retry_sync_job(
                    &job.id,
                    state.clock.now_ms() + until.as_millis() as i64,
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
        Some(d) => {
            let next = state.clock.now_ms() + d.as_millis() as i64;
            state.db.retry_sync_job(&job.id, next, true, error, status, body).await
        }
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
            let next = state.clock.now_ms() + until.as_millis() as i64;
            state.db.retry_sync_job(&job.id, next, false, "deferred", None, None).await
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

//! The hub every outbound call goes through. In order: the store's breaker (and the
//! platform's, for hosted platforms), the store's rate limit (token bucket and any 429
//! pause), the store's bulkhead, then the platform call under the tier's timeout. The
//! outcome is recorded into the breakers, the health snapshot and the metrics.

use crate::breaker::{Admission, BreakerState, CallResult, CircuitBreaker};
use crate::config::ConnectorConfig;
use crate::health::{HealthStats, IntegrationHealth};
use crate::http::CallError;
use crate::mapping::{self, PlatformTarget};
use crate::ratelimit::TokenBucket;
use crate::{bigcommerce, shopify, woocommerce, StoreTarget, SyncOutcome, SyncRequest, Tier};
use chrono::Utc;
use lastmile_core::Platform;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How long a call is deferred when the store's bulkhead stayed full for `bulkhead_wait`.
const BULKHEAD_RETRY: Duration = Duration::from_secs(1);
/// The pause after a 429 that named no wait.
const DEFAULT_429_PAUSE: Duration = Duration::from_secs(2);

/// What a platform operation did, before the hub turns it into a [`SyncOutcome`].
pub(crate) enum Applied {
    Changed { status: u16, summary: String },
    AlreadyDone,
}

/// The raw bodies of `GET /v2/orders/{id}`, `/products` and `/shipping_addresses`, for the
/// BigCommerce adapter to normalize (a BigCommerce webhook carries only the order id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigCommerceOrderBodies {
    pub order: Vec<u8>,
    pub products: Vec<u8>,
    pub shipping_addresses: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Breaker open, rate limited or bulkhead full: ask again after `until`.
    #[error("deferred for {until:?}: the store is not being called right now")]
    Deferred { until: Duration },
    #[error("the platform has no such order")]
    NotFound,
    #[error("temporary failure: {error}")]
    Retry { error: String, retry_after: Option<Duration>, last_status: Option<u16> },
    #[error("permanent failure: {error}")]
    Permanent { error: String, last_status: Option<u16> },
}

enum RunError {
    Deferred(Duration),
    Call(CallError),
}

/// Cheap to clone: every clone shares one HTTP client and the per-store machinery.
#[derive(Clone)]
pub struct ConnectorHub {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ConnectorConfig,
    client: reqwest::Client,
    /// std `Mutex`s: held for a map lookup or a few counter updates, never across an `.await`,
    /// and never one inside another.
    stores: Mutex<HashMap<(Platform, String), Arc<StoreSlot>>>,
    platforms: Mutex<HashMap<Platform, CircuitBreaker>>,
}

/// Everything kept per (platform, store).
struct StoreSlot {
    /// Bounds the calls in flight to this store, so a hanging store holds at most this many
    /// of the worker's tasks and never anyone else's slots.
    bulkhead: Arc<Semaphore>,
    max_concurrency: usize,
    state: Mutex<StoreState>,
}

struct StoreState {
    tier: Tier,
    breaker: CircuitBreaker,
    bucket: TokenBucket,
    health: HealthStats,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked (plain counters).
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ConnectorHub {
    /// # Panics
    /// If the TLS backend cannot be initialised (the HTTP client cannot be built).
    pub fn new(cfg: ConnectorConfig) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(cfg.user_agent.clone())
            .connect_timeout(cfg.connect_timeout)
            .build()
            .expect("build the outbound HTTP client");
        let inner = Inner { cfg, client, stores: Mutex::default(), platforms: Mutex::default() };
        ConnectorHub { inner: Arc::new(inner) }
    }

    pub fn config(&self) -> &ConnectorConfig {
        &self.inner.cfg
    }

    /// Report one delivery action to the store's platform, checking first so it is applied
    /// at most once however often it is retried or replayed.
    #[tracing::instrument(skip_all, fields(
        platform = %req.target.platform,
        store = %req.target.store_key,
        order = %req.platform_order_id,
        action = req.action.kind().as_str(),
    ))]
    pub async fn sync(&self, req: &SyncRequest) -> SyncOutcome {
        let outcome = self.sync_once(req).await;
        metrics::counter!(
            "lastmile_sync_attempts_total",
            "platform" => req.target.platform.as_str(),
            "outcome" => outcome.label(),
        )
        .increment(1);
        match &outcome {
            SyncOutcome::Retry { error, .. } | SyncOutcome::Permanent { error, .. } => {
                tracing::warn!(outcome = outcome.label(), %error, "sync did not land");
            }
            _ => tracing::debug!(outcome = outcome.label(), "sync finished"),
        }
        outcome
    }

    async fn sync_once(&self, req: &SyncRequest) -> SyncOutcome {
        let client = &self.inner.client;
        let notify = self.inner.cfg.shopify_notify_customer;
        let target = &req.target;
        let result = match mapping::lookup(target.platform, req.action.kind()) {
            PlatformTarget::NoCall => return SyncOutcome::AlreadyDone,
            PlatformTarget::ShopifyFulfil => {
                self.run(target, shopify::FULFIL_CALLS, true, shopify::fulfil(client, req, notify)).await
            }
            PlatformTarget::ShopifyEvent { status, fulfil_first } => {
                let op = shopify::event(client, req, status, fulfil_first, notify);
                self.run(target, shopify::EVENT_CALLS, true, op).await
            }
            PlatformTarget::WooStatus(status) => {
                self.run(target, woocommerce::CALLS, true, woocommerce::set_status(client, req, status)).await
            }
            PlatformTarget::BigCommerceStatus(status_id) => {
                let op = bigcommerce::set_status(client, req, status_id);
                self.run(target, bigcommerce::STATUS_CALLS, true, op).await
            }
        };
        match result {
            Ok(Applied::Changed { status, summary }) => SyncOutcome::Done { status, summary },
            Ok(Applied::AlreadyDone) => SyncOutcome::AlreadyDone,
            Err(RunError::Deferred(until)) => SyncOutcome::Deferred { until },
            Err(RunError::Call(CallError::RateLimited { error, retry_after, status, body }))
            | Err(RunError::Call(CallError::Transient { error, retry_after, status, body })) => {
                SyncOutcome::Retry { error, retry_after, last_status: status, last_body: body }
            }
            Err(RunError::Call(CallError::Permanent { error, status, body })) => {
                SyncOutcome::Permanent { error, last_status: status, last_body: body }
            }
        }
    }

    /// Fetch a BigCommerce order with its products and shipping addresses, through the same
    /// breaker, rate limit, bulkhead and timeout as a sync.
    #[tracing::instrument(skip_all, fields(store = %target.store_key, order = %order_id))]
    pub async fn fetch_bigcommerce_order(
        &self,
        target: &StoreTarget,
        order_id: &str,
    ) -> Result<BigCommerceOrderBodies, FetchError> {
        if target.platform != Platform::Bigcommerce {
            return Err(FetchError::Permanent {
                error: format!("{} is not BigCommerce", target.platform),
                last_status: None,
            });
        }
        let op = bigcommerce::fetch_order(&self.inner.client, target, order_id);
        match self.run(target, bigcommerce::FETCH_CALLS, false, op).await {
            Ok((order, products, shipping_addresses)) => {
                Ok(BigCommerceOrderBodies { order, products, shipping_addresses })
            }
            Err(RunError::Deferred(until)) => Err(FetchError::Deferred { until }),
            Err(RunError::Call(CallError::Permanent { status: Some(404), .. })) => Err(FetchError::NotFound),
            Err(RunError::Call(CallError::Permanent { error, status, .. })) => {
                Err(FetchError::Permanent { error, last_status: status })
            }
            Err(RunError::Call(CallError::RateLimited { error, retry_after, status, .. }))
            | Err(RunError::Call(CallError::Transient { error, retry_after, status, .. })) => {
                Err(FetchError::Retry { error, retry_after, last_status: status })
            }
        }
    }

    /// Health of every (platform, store) the hub has called, sorted by platform and store.
    pub fn snapshot(&self) -> Vec<IntegrationHealth> {
        let now = Instant::now();
        let wall = Utc::now();
        let slots: Vec<((Platform, String), Arc<StoreSlot>)> =
            lock(&self.inner.stores).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let platform_states: HashMap<Platform, BreakerState> =
            lock(&self.inner.platforms).iter().map(|(p, b)| (*p, b.state(now))).collect();
        let mut health: Vec<IntegrationHealth> = slots
            .into_iter()
            .map(|((platform, store_key), slot)| {
                let in_flight = slot.max_concurrency.saturating_sub(slot.bulkhead.available_permits());
                let state = lock(&slot.state);
                let h = &state.health;
                IntegrationHealth {
                    platform,
                    store_key,
                    tier: state.tier,
                    breaker: state.breaker.state(now),
                    platform_breaker: platform_states.get(&platform).copied().unwrap_or(BreakerState::Closed),
                    last_success_at: h.last_success_at,
                    last_error: h.last_error.clone(),
                    last_error_at: h.last_error_at,
                    consecutive_failures: h.consecutive_failures,
                    attempts: h.attempts,
                    failures: h.failures,
                    degraded_since: h.degraded_since,
                    rate_limited_until: state
                        .bucket
                        .paused_for(now)
                        .and_then(|d| chrono::TimeDelta::from_std(d).ok())
                        .map(|d| wall + d),
                    in_flight,
                }
            })
            .collect();
        health.sort_by(|a, b| (a.platform.as_str(), &a.store_key).cmp(&(b.platform.as_str(), &b.store_key)));
        health
    }

    fn slot(&self, target: &StoreTarget) -> Arc<StoreSlot> {
        let cfg = &self.inner.cfg;
        let slot = lock(&self.inner.stores)
            .entry((target.platform, target.store_key.clone()))
            .or_insert_with(|| {
                let max = cfg.max_concurrency_per_store.max(1);
                Arc::new(StoreSlot {
                    bulkhead: Arc::new(Semaphore::new(max)),
                    max_concurrency: max,
                    state: Mutex::new(StoreState {
                        tier: target.tier,
                        breaker: CircuitBreaker::new(cfg.breaker.clone()),
                        bucket: TokenBucket::new(cfg.rate.bucket(target.platform, target.tier), Instant::now()),
                        health: HealthStats::default(),
                    }),
                })
            })
            .clone();
        let mut state = lock(&slot.state);
        if state.tier != target.tier {
            state.tier = target.tier;
            state.bucket.resize(cfg.rate.bucket(target.platform, target.tier), Instant::now());
        }
        drop(state);
        slot
    }

    fn platform_breaker_applies(&self, platform: Platform) -> bool {
        self.inner.cfg.platform_breaker.is_some() && matches!(platform, Platform::Shopify | Platform::Bigcommerce)
    }

    /// Runs `op` through the machinery; `is_sync` says whether its latency is a sync latency.
    async fn run<T>(
        &self,
        target: &StoreTarget,
        calls: u32,
        is_sync: bool,
        op: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, RunError> {
        let slot = self.slot(target);
        let ticket = self.admit(&slot, target).map_err(RunError::Deferred)?;
        self.take_tokens(&slot, calls).await.map_err(RunError::Deferred)?;
        let bulkhead = slot.bulkhead.clone().acquire_owned();
        let Ok(Ok(_permit)) = tokio::time::timeout(self.inner.cfg.bulkhead_wait, bulkhead).await else {
            tracing::debug!("bulkhead full, deferring");
            return Err(RunError::Deferred(BULKHEAD_RETRY));
        };
        let budget = self.inner.cfg.timeout(target.tier);
        let started = Instant::now();
        let result = match tokio::time::timeout(budget, op).await {
            Ok(result) => result,
            Err(_) => Err(CallError::transient(format!("timed out after {budget:?}"))),
        };
        let latency = started.elapsed();
        if is_sync {
            metrics::histogram!("lastmile_sync_latency_seconds", "platform" => target.platform.as_str())
                .record(latency.as_secs_f64());
        }
        ticket.finish(&result, latency, self.inner.cfg.slow_call(target.tier));
        result.map_err(RunError::Call)
    }

    fn admit(&self, slot: &Arc<StoreSlot>, target: &StoreTarget) -> Result<Ticket, Duration> {
        let now = Instant::now();
        {
            let mut state = lock(&slot.state);
            let admission = state.breaker.admit(now);
            set_breaker_gauge(target, state.breaker.state(now));
            if let Admission::Rejected { retry_in } = admission {
                return Err(retry_in);
            }
        }
        let mut ticket = Ticket {
            inner: self.inner.clone(),
            slot: slot.clone(),
            target: target.clone(),
            platform_admitted: false,
            finished: false,
        };
        if self.platform_breaker_applies(target.platform) {
            let mut platforms = lock(&self.inner.platforms);
            let cfg = self.inner.cfg.platform_breaker.clone().unwrap_or_default();
            let breaker = platforms.entry(target.platform).or_insert_with(|| CircuitBreaker::new(cfg));
            if let Admission::Rejected { retry_in } = breaker.admit(now) {
                // Dropping the ticket releases the store's admission.
                return Err(retry_in);
            }
            ticket.platform_admitted = true;
        }
        Ok(ticket)
    }

    /// Waits for the store's tokens (and any 429 pause) if that takes at most the configured
    /// wait; otherwise the call is deferred for as long as it would have waited.
    async fn take_tokens(&self, slot: &StoreSlot, calls: u32) -> Result<(), Duration> {
        let deadline = Instant::now() + self.inner.cfg.rate.max_wait;
        loop {
            let now = Instant::now();
            let wait = match lock(&slot.state).bucket.try_take(calls, now) {
                Ok(()) => return Ok(()),
                Err(wait) => wait,
            };
            if now + wait > deadline {
                return Err(wait);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

fn set_breaker_gauge(target: &StoreTarget, state: BreakerState) {
    metrics::gauge!(
        "lastmile_integration_breaker_state",
        "platform" => target.platform.as_str(),
        "store" => target.store_key.clone(),
    )
    .set(state.gauge_value());
}

/// An admitted call. It must be finished with the call's result; if it is dropped instead
/// (the caller gave up, or the call was deferred after admission) it reports a neutral result
/// so a half-open probe slot is never lost.
struct Ticket {
    inner: Arc<Inner>,
    slot: Arc<StoreSlot>,
    target: StoreTarget,
    platform_admitted: bool,
    finished: bool,
}

impl Ticket {
    fn finish<T>(mut self, result: &Result<T, CallError>, latency: Duration, slow_call: Option<Duration>) {
        let verdict = match result {
            Ok(_) if slow_call.is_some_and(|slow| latency > slow) => CallResult::Failure,
            Ok(_) => CallResult::Success,
            // The platform is telling us to slow down, not that it is unwell.
            Err(CallError::RateLimited { .. }) => CallResult::Neutral,
            Err(CallError::Transient { .. }) => CallResult::Failure,
            // The platform answered and refused: it is up.
            Err(CallError::Permanent { .. }) => CallResult::Success,
        };
        let now = Instant::now();
        let wall = Utc::now();
        {
            let mut state = lock(&self.slot.state);
            match result {
                Ok(_) => state.health.success(wall),
                Err(error) => state.health.error(wall, error.message()),
            }
            if let Err(CallError::RateLimited { retry_after, .. }) = result {
                state.bucket.pause_until(now + retry_after.unwrap_or(DEFAULT_429_PAUSE));
            }
            if let Some(changed) = state.breaker.record(now, verdict) {
                tracing::warn!(
                    platform = %self.target.platform,
                    store = %self.target.store_key,
                    breaker = changed.as_str(),
                    "store breaker changed state"
                );
            }
            set_breaker_gauge(&self.target, state.breaker.state(now));
        }
        self.record_platform(now, verdict);
        self.finished = true;
    }

    fn record_platform(&mut self, now: Instant, verdict: CallResult) {
        if !self.platform_admitted {
            return;
        }
        self.platform_admitted = false;
        if let Some(breaker) = lock(&self.inner.platforms).get_mut(&self.target.platform) {
            if let Some(changed) = breaker.record(now, verdict) {
                tracing::warn!(platform = %self.target.platform, breaker = changed.as_str(), "platform breaker changed state");
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let now = Instant::now();
        lock(&self.slot.state).breaker.record(now, CallResult::Neutral);
        self.record_platform(now, CallResult::Neutral);
    }
}

//! Outbound platform connectors: reporting a delivery's progress back to the store platform
//! (Shopify, WooCommerce, BigCommerce), fetching BigCommerce orders whose webhooks carry
//! only an id, and the isolation machinery around every call — per-(platform, store)
//! bulkheads, circuit breakers and client-side rate limits, a per-platform breaker for
//! hosted platforms, tier timeouts, and the retry schedule.
//!
//! Owns: the platform HTTP contracts for outbound calls, check-before-act (a retried or
//! replayed request never fulfils twice), the action → platform status table
//! ([`status_mapping`], `docs/status-mapping.md`), and the health snapshot behind
//! `GET /v1/integrations`.
//!
//! Must not: touch the database. The sync job queue, its attempts and dead letters live in
//! the storage crate; the server's worker takes a job, calls [`ConnectorHub::sync`] and
//! stores the [`SyncOutcome`], using [`RetrySchedule`] for the next attempt. Nor may it
//! decide order state: it only reports.

mod bigcommerce;
mod breaker;
mod config;
mod health;
mod http;
mod hub;
mod mapping;
mod ratelimit;
mod retry;
mod shopify;
mod woocommerce;

pub use breaker::{Admission, BreakerConfig, BreakerState, CallResult, CircuitBreaker};
pub use config::{ConnectorConfig, PlatformRates};
pub use health::IntegrationHealth;
pub use http::parse_retry_after;
pub use hub::{BigCommerceOrderBodies, ConnectorHub, FetchError};
pub use mapping::{status_mapping, ActionKind, PlatformTarget, StatusMapping};
pub use ratelimit::{Bucket, TokenBucket};
pub use retry::RetrySchedule;

use lastmile_core::Platform;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What happened to the delivery that the platform should hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SyncAction {
    PickedUp,
    Delivered,
    Failed { reason: String },
    Cancelled,
}

impl SyncAction {
    pub fn kind(&self) -> ActionKind {
        match self {
            SyncAction::PickedUp => ActionKind::PickedUp,
            SyncAction::Delivered => ActionKind::Delivered,
            SyncAction::Failed { .. } => ActionKind::Failed,
            SyncAction::Cancelled => ActionKind::Cancelled,
        }
    }
}

/// The store's plan with the platform: enterprise stores get longer timeouts and the larger
/// published rate limits (Shopify Plus, BigCommerce Pro and above).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Standard,
    Enterprise,
}

impl Tier {
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Enterprise => "enterprise",
        }
    }
}

impl FromStr for Tier {
    type Err = lastmile_core::UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standard" => Ok(Tier::Standard),
            "enterprise" => Ok(Tier::Enterprise),
            other => Err(lastmile_core::UnknownValue(other.to_owned())),
        }
    }
}

/// How we authenticate to the store's API. `Debug` never prints a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Shopify `X-Shopify-Access-Token`, BigCommerce `X-Auth-Token`.
    AccessToken(String),
    /// WooCommerce REST keys, sent as HTTP Basic (key as user, secret as password).
    ConsumerKey {
        key: String,
        secret: String,
    },
    None,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::AccessToken(_) => f.write_str("AccessToken(<redacted>)"),
            Credentials::ConsumerKey { key, .. } => {
                f.debug_struct("ConsumerKey").field("key", key).field("secret", &"<redacted>").finish()
            }
            Credentials::None => f.write_str("None"),
        }
    }
}

/// Which store to talk to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTarget {
    pub platform: Platform,
    /// Our store id: the key for bulkheads, breakers, rate limits and health.
    pub store_key: String,
    /// Shopify: `https://{shop}.myshopify.com`; WooCommerce: the site root;
    /// BigCommerce: `https://api.bigcommerce.com/stores/{store_hash}`.
    pub base_url: String,
    pub credentials: Credentials,
    pub tier: Tier,
}

/// One sync-back job as the worker hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub target: StoreTarget,
    pub platform_order_id: String,
    pub action: SyncAction,
    pub tracking_url: Option<String>,
    pub tracking_number: Option<String>,
    /// Stable per (order, action): sent as `Idempotency-Key` on writes. No platform here
    /// documents honouring it, so check-before-act is what makes replays safe.
    pub idempotency_key: String,
}

/// How one sync attempt ended, and so what the worker does with the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The platform accepted the change. `status` is the HTTP status of the final call.
    Done { status: u16, summary: String },
    /// Nothing to change: the platform is already in the target state, or the mapping
    /// table says this action has no platform counterpart.
    AlreadyDone,
    /// Try again later, by the retry schedule (and not before `retry_after`).
    Retry { error: String, retry_after: Option<Duration>, last_status: Option<u16>, last_body: Option<String> },
    /// Retrying cannot help (bad credentials, unknown order, rejected input): dead-letter it.
    Permanent { error: String, last_status: Option<u16>, last_body: Option<String> },
    /// Breaker open, store rate limited or its bulkhead full: try again after `until`.
    /// Not a failure of this job, so it should not use up an attempt.
    Deferred { until: Duration },
}

impl SyncOutcome {
    /// The `outcome` label of `lastmile_sync_attempts_total`.
    pub fn label(&self) -> &'static str {
        match self {
            SyncOutcome::Done { .. } => "done",
            SyncOutcome::AlreadyDone => "already_done",
            SyncOutcome::Retry { .. } => "retry",
            SyncOutcome::Permanent { .. } => "permanent",
            SyncOutcome::Deferred { .. } => "deferred",
        }
    }
}

//! Configuration: defaults → optional TOML file (`--config`) → `LASTMILE_*` environment
//! variables (nested keys with `__`, e.g. `LASTMILE_DISPATCH__TICK_MS`). Validated at load;
//! secrets print as `[redacted]`.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A string that never shows itself in logs or debug output.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// host:port to listen on.
    pub listen: String,
    pub database_url: String,
    /// 32 bytes, base64: encrypts stored secrets and signs API tokens. Generated into
    /// `secret_key_file` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<Secret>,
    /// Where a generated key is kept; default: beside the SQLite database (or `./lastmile.key`).
    pub secret_key_file: Option<PathBuf>,
    /// The secret key before a rotation, 32 bytes base64: decrypt-only, so secrets sealed
    /// with it stay readable until `lastmile admin rotate-secret-key` re-seals them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_key: Option<Secret>,
    pub body_limit_bytes: usize,
    /// Per-credential request rate (admin key, API client, driver).
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Per-driver location cap; 0 = no cap.
    pub gps_min_interval_ms: u64,
    /// A driver with no location or heartbeat for this long is shown offline.
    pub presence_timeout_s: u64,
    pub token_ttl_s: u64,
    /// `in-process` or a NATS URL (`nats://127.0.0.1:4222`) for JetStream.
    pub bus: String,
    pub raw_payload_retention_days: u64,
    /// How long rows that have served their purpose are kept (see `retention`).
    pub retention: RetentionConfig,
    /// Concurrent intake requests per store, and their rate (per second).
    pub store_intake_concurrency: usize,
    pub store_intake_per_second: u32,
    /// How long a delivery waits for a busy store's slot before `429 store_busy`.
    pub store_intake_queue_ms: u64,
    pub log_format: LogFormat,
    /// Benchmarks only: mount `POST /v1/bench/baseline/{platform}/{store_id}`, which receives
    /// and parses a webhook body without verifying or storing it, as `lastmile bench`'s
    /// same-run baseline. Never enable in production.
    pub bench_baseline_routes: bool,
    pub dispatch: DispatchConfig,
    pub sync: SyncConfig,
    /// The group-commit writer.
    pub storage: StorageConfig,
    pub edge: EdgeConfig,
    /// The console, tracking page and driver app.
    pub web: crate::web::WebConfig,
    /// Where customers reach this deployment (`https://deliver.example.com`): sync-back
    /// gives platforms `{public_url}/track/{token}` as the tracking link. Unset: no link.
    pub public_url: Option<String>,
    pub tracking: TrackingConfig,
    /// Accept store API URLs on loopback, link-local or private addresses. Off in
    /// production (server-side request forgery); tests and the demo turn it on for their
    /// platform stand-ins on 127.0.0.1.
    pub allow_private_urls: bool,
    pub geocoding: crate::geocoder::GeocodingConfig,
    /// Cluster mode (a NATS `bus`): the shared fleet view and dispatch leases.
    pub cluster: crate::cluster::ClusterConfig,
    /// Events out: delivery of order events to the tenants' webhook endpoints.
    pub webhooks: WebhooksConfig,
    /// Payments of catalog orders (`payments.provider`, `payments.required`).
    pub payments: crate::payments::PaymentsConfig,
    /// The intake spool that keeps platform deliveries while PostgreSQL is unreachable.
    pub spool: crate::spool::SpoolConfig,
    /// ETAs that learn from completed deliveries; road-aware distances (`eta.*`).
    pub eta: crate::eta::EtaConfig,
}

/// Outbound webhooks (`/v1/webhook-endpoints`), delivered as Standard Webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Run the delivery worker on this node.
    pub enabled: bool,
    pub poll_ms: u64,
    /// One delivery attempt must be answered within this many seconds.
    pub timeout_s: u64,
    /// Deliveries to one endpoint in flight at once on this node.
    pub max_concurrency_per_endpoint: usize,
    /// Retry delays in seconds (the sync-back schedule by default); after the last one the
    /// delivery becomes a dead letter (kind `webhook`).
    pub retry_schedule_s: Vec<u64>,
    /// How long a claimed delivery is its worker's alone; must exceed `timeout_s`.
    pub lease_s: u64,
    /// After a secret rotation the previous secret keeps signing beside the new one this long.
    pub rotation_overlap_s: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_ms: 200,
            timeout_s: 10,
            max_concurrency_per_endpoint: 4,
            retry_schedule_s: SyncConfig::default().retry_schedule_s,
            lease_s: 60,
            rotation_overlap_s: 24 * 3600,
        }
    }
}

/// Limits at the connection edge (see `serve.rs`); answered before any handler runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// A request's headers must arrive within this many seconds.
    pub header_read_timeout_s: u64,
    /// A connection with no traffic either way for this long is closed (must exceed the
    /// 30 s long-poll wait; SSE and WebSockets send keep-alives well within it).
    pub idle_timeout_s: u64,
    /// Open connections in all; keep below the process's file limit.
    pub max_connections: usize,
    /// Open connections from one source address; 0 = no cap (set 0 behind a load balancer).
    pub max_connections_per_ip: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// A request body must keep arriving: at most this many seconds between its chunks.
    pub body_read_timeout_s: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_s: 10,
            idle_timeout_s: 75,
            max_connections: 16_384,
            max_connections_per_ip: 4_096,
            max_headers: 64,
            max_header_bytes: 32 * 1024,
            body_read_timeout_s: 15,
        }
    }
}

impl EdgeConfig {
    pub fn limits(&self) -> crate::serve::EdgeLimits {
        crate::serve::EdgeLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_s),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_s),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_headers: self.max_headers,
            max_header_bytes: self.max_header_bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingConfig {
    /// Origins whose pages may read the tracking API (`/v1/track/...`) from a browser
    /// (CORS, GET only): `["*"]` for any, or exact origins such as `https://shop.example.com`.
    pub cors_origins: Vec<String>,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self { cors_origins: vec!["*".into()] }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MatcherKind {
    Optimal,
    Greedy,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    pub enabled: bool,
    pub tick_ms: u64,
    /// How long a matching round started by an event (a new or changed order, a driver
    /// freed or coming online, a declined or expired offer) waits to gather what else
    /// arrives, so orders placed together compete in one batch. 0 matches at once.
    pub gather_ms: u64,
    pub offer_ttl_s: u64,
    pub max_attempts: i64,
    /// Flag `dispatch_stalled` after an order waited this long past ready.
    pub max_wait_s: u64,
    pub matcher: MatcherKind,
    /// Offer when the driver's travel time to the store is at least the time to ready
    /// minus this slack (seconds); ready orders go at once.
    pub lead_s: f64,
    pub search_radius_m: f64,
    pub candidates_per_order: usize,
    pub detour_factor: f64,
    pub speed_mps: f64,
    /// Deliveries marked farther than this from the dropoff are flagged.
    pub deliver_distance_flag_m: f64,
    /// After an order waited this long for a driver, its tracking page says "taking longer
    /// than usual" and offers the customer to keep waiting or cancel.
    pub slow_notice_s: u64,
    /// A driver silent this long (seconds) loses the orders they hold but have not picked
    /// up (back to matching); picked-up ones are flagged for ops.
    pub abandon_s: u64,
}

/// Retention windows, in days, of the tables that grow with a node's age. Rows are deleted
/// in batches of `batch` every `interval_s`; an order's own events and offers stay as long
/// as the order does, and idempotency keys go when they expire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Published events that are not about an order still in the live tables.
    pub events_days: u64,
    /// Driver inbox messages.
    pub inbox_days: u64,
    /// Decided offers of finished orders.
    pub offers_days: u64,
    /// Driver location history.
    pub locations_days: u64,
    pub interval_s: u64,
    /// Most rows one delete removes (each is one short write).
    pub batch: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { events_days: 30, inbox_days: 7, offers_days: 30, locations_days: 30, interval_s: 600, batch: 1000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Writer connections on PostgreSQL, each committing its own batches (SQLite has one
    /// writer whatever this says).
    pub pg_writers: usize,
    /// Most writes one group commit (one fsync) carries.
    pub max_batch: usize,
    /// How long a request waits for a database connection before it is answered
    /// `503 database_unavailable` (and a platform delivery is spooled).
    pub acquire_timeout_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let d = lastmile_storage::DbOptions::default();
        Self { pg_writers: d.pg_writers, max_batch: d.max_batch, acquire_timeout_ms: d.acquire_timeout_ms }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    pub enabled: bool,
    pub poll_ms: u64,
    pub timeout_standard_s: u64,
    pub timeout_enterprise_s: u64,
    pub max_concurrency_per_store: usize,
    /// Retry delays in seconds; after the last one, the job is dead-lettered.
    pub retry_schedule_s: Vec<u64>,
    /// How long a claimed job is its worker's alone. A worker that dies (SIGKILL, node
    /// loss) leaves its jobs to be claimed again when this runs out; a worker abandons a job
    /// that outlives it. Must exceed both tier timeouts.
    pub lease_s: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://lastmile.db".into(),
            secret_key: None,
            secret_key_file: None,
            previous_secret_key: None,
            body_limit_bytes: 1024 * 1024,
            rate_limit_per_second: 500,
            rate_limit_burst: 1000,
            gps_min_interval_ms: 1000,
            presence_timeout_s: 60,
            token_ttl_s: 3600,
            bus: "in-process".into(),
            raw_payload_retention_days: 30,
            retention: RetentionConfig::default(),
            store_intake_concurrency: 64,
            store_intake_per_second: 500,
            store_intake_queue_ms: 1000,
            log_format: LogFormat::Json,
            bench_baseline_routes: false,
            dispatch: DispatchConfig::default(),
            sync: SyncConfig::default(),
            storage: StorageConfig::default(),
            edge: EdgeConfig::default(),
            web: crate::web::WebConfig::default(),
            public_url: None,
            tracking: TrackingConfig::default(),
            allow_private_urls: false,
            geocoding: crate::geocoder::GeocodingConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
            webhooks: WebhooksConfig::default(),
            payments: crate::payments::PaymentsConfig::default(),
            spool: crate::spool::SpoolConfig::default(),
            eta: crate::eta::EtaConfig::default(),
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_ms: 500,
            gather_ms: 25,
            offer_ttl_s: 30,
            max_attempts: 5,
            max_wait_s: 1800,
            matcher: MatcherKind::Optimal,
            lead_s: 60.0,
            search_radius_m: 8000.0,
            candidates_per_order: 16,
            detour_factor: 1.3,
            speed_mps: 8.3,
            deliver_distance_flag_m: 300.0,
            slow_notice_s: 300,
            abandon_s: 180,
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        let mut schedule = vec![1, 5, 30, 120, 600, 1800];
        // then hourly up to 24 h in all
        let mut total: u64 = schedule.iter().sum();
        while total + 3600 <= 24 * 3600 {
            schedule.push(3600);
            total += 3600;
        }
        Self {
            enabled: true,
            poll_ms: 200,
            timeout_standard_s: 15,
            timeout_enterprise_s: 45,
            max_concurrency_per_store: 4,
            retry_schedule_s: schedule,
            lease_s: 120,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the TOML file if given, then `LASTMILE_*` variables; then validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!("config file {} does not exist", path.display())));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Only variables that name a setting; others (`LASTMILE_CONFIG`, the test suite's
        // `LASTMILE_TEST_DATABASE_URL`, an operator's `LASTMILE_ADMIN_KEY`) are not settings
        // and must not fail every command: see [`ignored_env_vars`].
        let known = setting_keys();
        fig = fig.merge(
            Env::prefixed(ENV_PREFIX).split("__").filter(move |k| known.contains(&k.as_str().to_ascii_lowercase())),
        );
        let cfg: Config = fig.extract().map_err(|e| ConfigError::Load(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad(format!("listen must be host:port with a numeric IP, got `{}`", self.listen));
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres:")
            || self.database_url.starts_with("postgresql:"))
        {
            return bad("database_url must start with sqlite:, postgres: or postgresql:".into());
        }
        if self.storage.pg_writers == 0 || self.storage.max_batch == 0 || self.storage.acquire_timeout_ms == 0 {
            return bad(
                "storage.pg_writers, storage.max_batch and storage.acquire_timeout_ms must be at least 1".into()
            );
        }
        if self.retention.batch < 1 || self.retention.interval_s == 0 {
            return bad("retention.batch and retention.interval_s must be at least 1".into());
        }
        if self.body_limit_bytes < 1024 {
            return bad("body_limit_bytes must be at least 1024".into());
        }
        if self.rate_limit_per_second == 0 || self.rate_limit_burst == 0 {
            return bad("rate_limit_per_second and rate_limit_burst must be positive".into());
        }
        if self.store_intake_concurrency == 0 || self.store_intake_per_second == 0 {
            return bad("store_intake_concurrency and store_intake_per_second must be positive".into());
        }
        if self.dispatch.tick_ms == 0 || self.dispatch.offer_ttl_s == 0 || self.dispatch.max_attempts < 1 {
            return bad("dispatch.tick_ms, dispatch.offer_ttl_s and dispatch.max_attempts must be positive".into());
        }
        if self.dispatch.abandon_s == 0 {
            return bad("dispatch.abandon_s must be positive".into());
        }
        if !(self.dispatch.speed_mps > 0.0 && self.dispatch.detour_factor >= 1.0) {
            return bad("dispatch.speed_mps must be > 0 and dispatch.detour_factor >= 1".into());
        }
        let e = &self.edge;
        if e.header_read_timeout_s == 0 || e.body_read_timeout_s == 0 || e.idle_timeout_s < 35 {
            return bad(
                "edge.header_read_timeout_s and edge.body_read_timeout_s must be positive and edge.idle_timeout_s at least 35 (the long-poll wait is 30 s)".into(),
            );
        }
        if e.max_connections == 0 || e.max_headers < 8 || e.max_header_bytes < 8192 {
            return bad("edge.max_connections must be positive, edge.max_headers at least 8 and edge.max_header_bytes at least 8192".into());
        }
        if self.sync.retry_schedule_s.is_empty() || self.sync.max_concurrency_per_store == 0 {
            return bad(
                "sync.retry_schedule_s must not be empty and sync.max_concurrency_per_store must be positive".into()
            );
        }
        if !["test", "none"].contains(&self.payments.provider.as_str()) {
            return bad("payments.provider must be test or none".into());
        }
        if self.payments.required && self.payments.provider == "none" {
            return bad("payments.required needs a payments.provider".into());
        }
        if self.webhooks.retry_schedule_s.is_empty()
            || self.webhooks.max_concurrency_per_endpoint == 0
            || self.webhooks.lease_s <= self.webhooks.timeout_s
        {
            return bad("webhooks.retry_schedule_s must not be empty, webhooks.max_concurrency_per_endpoint must be \
                        positive and webhooks.lease_s must exceed webhooks.timeout_s"
                .into());
        }
        if self.sync.lease_s <= self.sync.timeout_standard_s.max(self.sync.timeout_enterprise_s) {
            return bad("sync.lease_s must exceed sync.timeout_standard_s and sync.timeout_enterprise_s".into());
        }
        if self.bus != "in-process" && !self.bus.starts_with("nats://") {
            return bad(format!("bus must be `in-process` or a nats:// URL, got `{}`", self.bus));
        }
        self.web.validate().map_err(ConfigError::Invalid)?;
        if let Some(u) = &self.public_url {
            let ok = u.parse::<axum::http::Uri>().is_ok_and(|p| {
                matches!(p.scheme_str(), Some("http" | "https")) && p.host().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                return bad(format!("public_url must be an http(s) URL, got `{u}`"));
            }
        }
        for o in &self.tracking.cors_origins {
            if o != "*" && axum::http::HeaderValue::from_str(o).is_err() {
                return bad(format!("tracking.cors_origins: `{o}` is not a valid origin"));
            }
        }
        if let Some(k) = &self.secret_key {
            crate::crypto::decode_key(k.expose()).map_err(ConfigError::Invalid)?;
        }
        if let Some(k) = &self.previous_secret_key {
            crate::crypto::decode_key(k.expose())
                .map_err(|e| ConfigError::Invalid(e.replace("secret_key", "previous_secret_key")))?;
        }
        self.geocoding.validate().map_err(ConfigError::Invalid)?;
        self.eta.validate().map_err(ConfigError::Invalid)?;
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        self.spool.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The customer's tracking page for `token`, when `public_url` is set.
    pub fn tracking_url(&self, token: &str) -> Option<String> {
        self.public_url.as_ref().map(|u| format!("{}/track/{token}", u.trim_end_matches('/')))
    }

    /// Where the generated secret key lives when none is configured.
    pub fn key_file(&self) -> PathBuf {
        if let Some(p) = &self.secret_key_file {
            return p.clone();
        }
        if let Some(path) = sqlite_path(&self.database_url) {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            return parent.join("lastmile.key");
        }
        PathBuf::from("lastmile.key")
    }
}

const ENV_PREFIX: &str = "LASTMILE_";

/// Every setting's dotted key (`listen`, `dispatch.tick_ms`, and each section's name).
fn setting_keys() -> std::collections::HashSet<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut std::collections::HashSet<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, child) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                walk(&key, child, out);
                out.insert(key);
            }
        }
    }
    let mut out = std::collections::HashSet::new();
    walk("", &serde_json::to_value(Config::default()).unwrap_or_default(), &mut out);
    // Left out of the defaults' serialization when unset.
    out.insert("secret_key".into());
    out.insert("previous_secret_key".into());
    out
}

/// `LASTMILE_*` environment variables that name no setting, and so are ignored (the caller
/// warns). `LASTMILE_CONFIG` names the configuration file and is not reported.
pub fn ignored_env_vars() -> Vec<String> {
    let known = setting_keys();
    let mut out: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.strip_prefix(ENV_PREFIX).is_some_and(|rest| {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                key != "config" && !known.contains(&key)
            })
        })
        .collect();
    out.sort();
    out
}

impl Config {
    /// The effective configuration as TOML (the file format), with every secret redacted:
    /// `secret_key`, `previous_secret_key` and the password inside `database_url`.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        let shown = Config { database_url: lastmile_storage::redact_url(&self.database_url), ..self.clone() };
        toml::to_string_pretty(&shown).map_err(|e| ConfigError::Invalid(format!("cannot print as TOML: {e}")))
    }
}

/// The file behind a `sqlite://` URL, if it is one.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_secrets_are_redacted() {
        let mut c = Config::default();
        c.validate().unwrap();
        c.secret_key = Some(Secret::new("c2VjcmV0"));
        let shown = format!("{c:?}");
        assert!(shown.contains("[redacted]") && !shown.contains("c2VjcmV0"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail error type, in a test
    fn env_overrides_file_and_bad_values_are_explained() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("lm.toml", "listen = \"127.0.0.1:9000\"\n[dispatch]\ntick_ms = 250\n")?;
            jail.set_env("LASTMILE_DATABASE_URL", "postgres://u@h/db");
            jail.set_env("LASTMILE_DISPATCH__OFFER_TTL_S", "45");
            let c = Config::load(Some(Path::new("lm.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:9000");
            assert_eq!(c.database_url, "postgres://u@h/db");
            assert_eq!((c.dispatch.tick_ms, c.dispatch.offer_ttl_s), (250, 45));
            jail.set_env("LASTMILE_LISTEN", "nonsense");
            let err = Config::load(Some(Path::new("lm.toml"))).unwrap_err().to_string();
            assert!(err.contains("listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail error type, in a test
    fn variables_that_name_no_setting_are_ignored_and_reported() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LASTMILE_CONFIG", "lm.toml");
            jail.set_env("LASTMILE_ADMIN_KEY", "lm_admin_x");
            jail.set_env("LASTMILE_TEST_DATABASE_URL", "postgres://u@h/test");
            jail.set_env("LASTMILE_DISPATCH__ABANDON_S", "42");
            jail.set_env("LASTMILE_TRACKING__NOPE", "1");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.dispatch.abandon_s, 42);
            let ignored = ignored_env_vars();
            for v in ["LASTMILE_ADMIN_KEY", "LASTMILE_TEST_DATABASE_URL", "LASTMILE_TRACKING__NOPE"] {
                assert!(ignored.contains(&v.to_owned()), "{v} in {ignored:?}");
            }
            assert!(!ignored.iter().any(|v| v == "LASTMILE_CONFIG" || v == "LASTMILE_DISPATCH__ABANDON_S"));
            Ok(())
        });
    }

    #[test]
    fn printed_toml_redacts_the_database_password_and_reads_back() {
        let c = Config {
            database_url: "postgres://lm:s3cret@db/lm".into(),
            secret_key: Some(Secret::new("c2VjcmV0")),
            public_url: Some("https://deliver.example.com".into()),
            ..Config::default()
        };
        let text = c.to_redacted_toml().unwrap();
        assert!(!text.contains("s3cret") && !text.contains("c2VjcmV0"), "{text}");
        assert!(text.contains("postgres://lm:[redacted]@db/lm"), "{text}");
        let back: Config = toml::from_str(&text.replace("secret_key = \"[redacted]\"\n", "")).unwrap();
        assert_eq!(back.public_url, c.public_url);
        assert_eq!(back.dispatch, c.dispatch);
        let with_url = |u: &str| Config { public_url: Some(u.into()), ..Config::default() }.validate();
        assert!(with_url("https://deliver.example.com").is_ok());
        assert!(with_url("ftp://x.example").is_err() && with_url("deliver.example.com").is_err());
    }

    #[test]
    fn key_file_sits_beside_the_sqlite_database() {
        let c = Config { database_url: "sqlite://data/x.db".into(), ..Config::default() };
        assert_eq!(c.key_file(), PathBuf::from("data/lastmile.key"));
        assert_eq!(Config::default().key_file(), PathBuf::from("./lastmile.key"));
    }
}

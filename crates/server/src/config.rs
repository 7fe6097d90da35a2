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
            body_limit_bytes: 1024 * 1024,
            rate_limit_per_second: 500,
            rate_limit_burst: 1000,
            gps_min_interval_ms: 1000,
            presence_timeout_s: 60,
            token_ttl_s: 3600,
            bus: "in-process".into(),
            raw_payload_retention_days: 30,
            store_intake_concurrency: 64,
            store_intake_per_second: 500,
            store_intake_queue_ms: 1000,
            log_format: LogFormat::Json,
            bench_baseline_routes: false,
            dispatch: DispatchConfig::default(),
            sync: SyncConfig::default(),
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
        // The test database URL is for the test suite only; it is not a server setting.
        fig = fig.merge(Env::prefixed("LASTMILE_").split("__").ignore(&["test_database_url", "test_nats_url"]));
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
        if !(self.dispatch.speed_mps > 0.0 && self.dispatch.detour_factor >= 1.0) {
            return bad("dispatch.speed_mps must be > 0 and dispatch.detour_factor >= 1".into());
        }
        if self.sync.retry_schedule_s.is_empty() || self.sync.max_concurrency_per_store == 0 {
            return bad(
                "sync.retry_schedule_s must not be empty and sync.max_concurrency_per_store must be positive".into()
            );
        }
        if self.sync.lease_s <= self.sync.timeout_standard_s.max(self.sync.timeout_enterprise_s) {
            return bad("sync.lease_s must exceed sync.timeout_standard_s and sync.timeout_enterprise_s".into());
        }
        if self.bus != "in-process" && !self.bus.starts_with("nats://") {
            return bad(format!("bus must be `in-process` or a nats:// URL, got `{}`", self.bus));
        }
        if let Some(k) = &self.secret_key {
            crate::crypto::decode_key(k.expose()).map_err(ConfigError::Invalid)?;
        }
        Ok(())
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
    fn key_file_sits_beside_the_sqlite_database() {
        let c = Config { database_url: "sqlite://data/x.db".into(), ..Config::default() };
        assert_eq!(c.key_file(), PathBuf::from("data/lastmile.key"));
        assert_eq!(Config::default().key_file(), PathBuf::from("./lastmile.key"));
    }
}

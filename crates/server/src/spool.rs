//! Intake through a database outage. When PostgreSQL cannot be reached, authenticated
//! platform deliveries go to a node-local durable spool (a SQLite file, fsynced before the
//! acknowledgement) instead of failing; once the database answers again, the spool drains
//! oldest first through the normal intake path, where the platform order key makes a
//! spooled delivery that had in fact committed count once.
//!
//! The node is in one of three modes: `up` (intake writes to the database), `down` (a
//! request saw the database unreachable: intake spools, a probe checks every
//! `spool.probe_ms` whether it is back) and `draining` (back; the spool is being taken in
//! while new deliveries go straight to the database again, their order against spooled
//! ones kept safe by the platforms' versions).
//!
//! Deliveries are verified before they are spooled, with the store's secret from a cache
//! of the stores this node has looked up: a store first seen during an outage cannot be
//! verified, and its deliveries are answered `503 database_unavailable`.
//!
//! SQLite as the main database has no outage to survive (it is a local file), so the spool
//! is opened only on PostgreSQL.

use crate::config::Config;
use crate::state::AppState;
use lastmile_core::{Platform, StoreId};
use lastmile_storage::{Db, Spool, SpoolLimits, SpoolRefusal, SpoolStats, StorageError, StoreRecord};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Spool platform deliveries while PostgreSQL is unreachable (no effect on SQLite).
    pub enabled: bool,
    /// The spool file; default: beside the secret key file, `spool-<cluster.node_id>.db`
    /// (or `spool.db` without a node id). Each node needs its own.
    pub path: Option<PathBuf>,
    /// Bounds: past any of them, deliveries are refused with `503 spool_full` until the
    /// spool drains. `max_age_s` is the age of the oldest pending delivery.
    pub max_mb: u64,
    pub max_entries: u64,
    pub max_age_s: u64,
    /// While the database is down, how often the node checks whether it is back.
    pub probe_ms: u64,
    /// `Retry-After` on a refused delivery or an answer of `503 database_unavailable`.
    pub retry_after_s: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: None,
            max_mb: 256,
            max_entries: 100_000,
            max_age_s: 24 * 3600,
            probe_ms: 1000,
            retry_after_s: 30,
        }
    }
}

impl SpoolConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_mb == 0 || self.max_entries == 0 || self.max_age_s == 0 || self.probe_ms == 0 {
            return Err("spool.max_mb, spool.max_entries, spool.max_age_s and spool.probe_ms must be positive".into());
        }
        Ok(())
    }

    /// Where this node's spool lives.
    pub fn file(&self, cfg: &Config) -> PathBuf {
        if let Some(p) = &self.path {
            return p.clone();
        }
        let key = cfg.key_file();
        let dir = key.parent().filter(|d| !d.as_os_str().is_empty()).map(PathBuf::from).unwrap_or_else(|| ".".into());
        match &cfg.cluster.node_id {
            Some(id) => dir.join(format!("spool-{id}.db")),
            None => dir.join("spool.db"),
        }
    }
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const DRAINING: u8 = 2;

/// Most deliveries read from the spool at a time while draining.
const DRAIN_BATCH: i64 = 64;

/// This node's view of the database's reachability, its spool and its store cache.
#[derive(Clone)]
pub struct Outage {
    inner: Arc<Inner>,
}

struct Inner {
    spool: Option<Spool>,
    mode: AtomicU8,
    wake: Notify,
    retry_after_s: u64,
    probe: Duration,
    /// Stores by id, and by (platform, identity), as last read from the database.
    stores: Mutex<HashMap<String, StoreRecord>>,
    identities: Mutex<HashMap<(Platform, String), Vec<StoreRecord>>>,
}

/// Why a spooled delivery was not taken in.
pub enum TakeIn {
    /// The database failed again: stop draining, keep it.
    Unavailable(StorageError),
    /// It cannot be taken in at all (its store was deleted meanwhile): park it.
    Failed(String),
}

/// What became of a delivery handed to the spool.
pub enum Spooled {
    /// Durable in the spool under this sequence number.
    Kept(i64),
    Refused(SpoolRefusal),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Outage {
    /// Whether this node has a spool (PostgreSQL only): then [`run`] keeps it.
    pub fn has_spool(&self) -> bool {
        self.inner.spool.is_some()
    }

    /// Open this node's spool (PostgreSQL with `spool.enabled` only).
    pub async fn open(cfg: &Config) -> anyhow::Result<Outage> {
        let sc = &cfg.spool;
        let postgres = !cfg.database_url.starts_with("sqlite:");
        let spool = if sc.enabled && postgres {
            let path = sc.file(cfg);
            let limits = SpoolLimits {
                max_bytes: sc.max_mb.saturating_mul(1024 * 1024),
                max_entries: sc.max_entries,
                max_age_ms: i64::try_from(sc.max_age_s.saturating_mul(1000)).unwrap_or(i64::MAX),
            };
            let spool = Spool::open(&path, limits)
                .await
                .map_err(|e| anyhow::anyhow!("opening the intake spool {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), pending = spool.stats().await.pending, "intake spool open");
            Some(spool)
        } else {
            None
        };
        Ok(Outage {
            inner: Arc::new(Inner {
                spool,
                mode: AtomicU8::new(UP),
                wake: Notify::new(),
                retry_after_s: sc.retry_after_s.max(1),
                probe: Duration::from_millis(sc.probe_ms.max(1)),
                stores: Mutex::default(),
                identities: Mutex::default(),
            }),
        })
    }

    pub fn enabled(&self) -> bool {
        self.inner.spool.is_some()
    }

    /// True while the last word on the database is that it cannot be reached.
    pub fn database_down(&self) -> bool {
        self.inner.mode.load(Ordering::Acquire) == DOWN
    }

    pub fn retry_after_s(&self) -> u64 {
        self.inner.retry_after_s
    }

    /// Record what a storage call said: an unreachable database switches intake to the
    /// spool (when there is one). Returns whether it was such an error.
    pub fn note(&self, e: &StorageError) -> bool {
        if !e.is_unavailable() {
            return false;
        }
        if self.enabled() && self.inner.mode.swap(DOWN, Ordering::AcqRel) != DOWN {
            tracing::warn!(error = %e, "database unreachable: platform deliveries go to the spool");
            self.inner.wake.notify_one();
        }
        true
    }

    /// The store a webhook names: from the database, or while it is down, from the cache.
    pub async fn store(&self, db: &Db, id: &StoreId) -> Result<StoreRecord, StorageError> {
        let cached = || lock(&self.inner.stores).get(id.as_str()).cloned();
        if self.database_down() {
            return cached().ok_or_else(|| StorageError::Unavailable("store not cached on this node".into()));
        }
        match db.get_store_for_webhook(id).await {
            Ok(s) => {
                if self.enabled() {
                    lock(&self.inner.stores).insert(id.as_str().to_owned(), s.clone());
                }
                Ok(s)
            }
            Err(StorageError::NotFound) => {
                lock(&self.inner.stores).remove(id.as_str());
                Err(StorageError::NotFound)
            }
            Err(e) if self.note(&e) => cached().ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// The stores registered under a platform identity, like [`Outage::store`].
    pub async fn stores_by_identity(
        &self,
        db: &Db,
        platform: Platform,
        identity: &str,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        let key = (platform, identity.to_owned());
        let cached = || lock(&self.inner.identities).get(&key).cloned();
        if self.database_down() {
            return cached().ok_or_else(|| StorageError::Unavailable("store not cached on this node".into()));
        }
        match db.find_stores_by_identity(platform, identity).await {
            Ok(v) => {
                if self.enabled() {
                    lock(&self.inner.identities).insert(key.clone(), v.clone());
                }
                Ok(v)
            }
            Err(e) if self.note(&e) => cached().ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// Keep an authenticated delivery durably; `None` when this node has no spool.
    pub async fn spool(
        &self,
        store: &StoreRecord,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Option<Result<Spooled, StorageError>> {
        let spool = self.inner.spool.as_ref()?;
        let headers_json = match serde_json::to_string(headers) {
            Ok(h) => h,
            Err(e) => return Some(Err(StorageError::Corrupt(e.to_string()))),
        };
        let out = match spool.push(store.id.as_str(), store.platform.as_str(), &headers_json, body).await {
            Ok(Ok(seq)) => {
                metrics::counter!("lastmile_spool_spooled_total").increment(1);
                Ok(Spooled::Kept(seq))
            }
            Ok(Err(why)) => {
                let reason = match why {
                    SpoolRefusal::Full => "full",
                    SpoolRefusal::TooOld => "too_old",
                };
                metrics::counter!("lastmile_spool_refused_total", "reason" => reason).increment(1);
                Ok(Spooled::Refused(why))
            }
            Err(e) => Err(e),
        };
        Some(out)
    }

    pub async fn stats(&self) -> Option<SpoolStats> {
        match &self.inner.spool {
            Some(s) => Some(s.stats().await),
            None => None,
        }
    }

    /// Whether the spool would take a small delivery now.
    pub async fn accepting(&self) -> bool {
        match &self.inner.spool {
            Some(s) => s.would_accept(lastmile_storage::now_ms()).await,
            None => false,
        }
    }

    /// For `/readyz`: the database's state as this node last saw it and what its spool
    /// holds; `None` without a spool.
    pub async fn summary(&self) -> Option<serde_json::Value> {
        let spool = self.inner.spool.as_ref()?;
        let s = spool.stats().await;
        let mode = match self.inner.mode.load(Ordering::Acquire) {
            DOWN => "down",
            DRAINING => "draining",
            _ => "up",
        };
        let oldest_age_s = s.oldest_at.map(|t| (lastmile_storage::now_ms() - t).max(0) / 1000);
        Some(serde_json::json!({
            "database": mode,
            "pending": s.pending,
            "bytes": s.bytes,
            "oldest_age_s": oldest_age_s,
            "parked": s.parked,
            "max_entries": spool.limits().max_entries,
            "max_bytes": spool.limits().max_bytes,
        }))
    }

    /// Gauges for `/metrics`.
    pub async fn publish_metrics(&self) {
        let Some(spool) = &self.inner.spool else { return };
        let s = spool.stats().await;
        metrics::gauge!("lastmile_database_up").set(if self.database_down() { 0.0 } else { 1.0 });
        metrics::gauge!("lastmile_spool_pending").set(s.pending as f64);
        metrics::gauge!("lastmile_spool_bytes").set(s.bytes as f64);
        metrics::gauge!("lastmile_spool_parked").set(s.parked as f64);
        let age = s.oldest_at.map(|t| (lastmile_storage::now_ms() - t).max(0) as f64 / 1000.0).unwrap_or(0.0);
        metrics::gauge!("lastmile_spool_oldest_age_seconds").set(age);
    }
}

/// The spool's keeper: while the database is down, probe it; once it answers, drain the
/// spool oldest first through the normal intake path. Also drains what a previous run of
/// this node left in the spool.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let outage = state.outage.clone();
    let Some(spool) = outage.inner.spool.as_ref() else { return };
    loop {
        let mode = outage.inner.mode.load(Ordering::Acquire);
        if mode == DOWN {
            let alive = tokio::time::timeout(outage.inner.probe.max(Duration::from_secs(1)), state.db.ping()).await;
            if matches!(alive, Ok(Ok(()))) {
                let _ = outage.inner.mode.compare_exchange(DOWN, DRAINING, Ordering::AcqRel, Ordering::Acquire);
                let pending = spool.stats().await.pending;
                tracing::info!(pending, "database reachable again: draining the spool");
            }
        }
        if outage.inner.mode.load(Ordering::Acquire) != DOWN && spool.stats().await.pending > 0 {
            drain(&state, spool).await;
        }
        if outage.inner.mode.load(Ordering::Acquire) == DRAINING && spool.stats().await.pending == 0 {
            let _ = outage.inner.mode.compare_exchange(DRAINING, UP, Ordering::AcqRel, Ordering::Acquire);
            tracing::info!("spool drained");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = outage.inner.wake.notified() => {}
            _ = tokio::time::sleep(outage.inner.probe) => {}
        }
    }
    spool.close().await;
}

/// Take the spool in, oldest first, until it is empty or the database fails again.
async fn drain(state: &AppState, spool: &Spool) {
    loop {
        let batch = match spool.oldest(DRAIN_BATCH).await {
            Ok(b) if b.is_empty() => return,
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading the spool failed");
                return;
            }
        };
        for d in &batch {
            match crate::routes::webhooks::take_in_spooled(state, d).await {
                Ok(()) => {
                    metrics::counter!("lastmile_spool_drained_total").increment(1);
                    if let Err(e) = spool.remove(d).await {
                        tracing::error!(error = %e, seq = d.seq, "removing a drained delivery from the spool failed");
                        return;
                    }
                }
                Err(TakeIn::Unavailable(e)) => {
                    state.outage.note(&e);
                    return;
                }
                Err(TakeIn::Failed(why)) => {
                    tracing::error!(error = %why, seq = d.seq, store = %d.store_id, "spooled delivery parked");
                    metrics::counter!("lastmile_spool_parked_total").increment(1);
                    if let Err(e) = spool.park(d, &why).await {
                        tracing::error!(error = %e, "parking a spooled delivery failed");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_gets_its_own_spool_file_beside_the_key() {
        let mut cfg = Config {
            database_url: "postgres://lastmile@db/lastmile".into(),
            secret_key_file: Some("/var/lib/lastmile/lastmile.key".into()),
            ..Config::default()
        };
        assert_eq!(cfg.spool.file(&cfg), PathBuf::from("/var/lib/lastmile/spool.db"));
        cfg.cluster.node_id = Some("node-2".into());
        assert_eq!(cfg.spool.file(&cfg), PathBuf::from("/var/lib/lastmile/spool-node-2.db"));
        cfg.spool.path = Some("/data/intake.db".into());
        assert_eq!(cfg.spool.file(&cfg), PathBuf::from("/data/intake.db"));
        assert!(cfg.validate().is_ok());
        cfg.spool.max_entries = 0;
        assert!(cfg.validate().is_err(), "a spool that holds nothing is refused");
    }
}

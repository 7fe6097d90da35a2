//! The outage spool: a node-local SQLite file that holds authenticated platform deliveries
//! while the main database cannot be reached, so intake keeps acknowledging them.
//!
//! Every [`Spool::push`] is its own transaction on a file opened with `synchronous=FULL`:
//! the delivery is on disk before the caller acknowledges it. The spool is bounded by
//! bytes, entries and the age of its oldest pending delivery; past any bound a push is
//! refused (the caller answers 503 and the platform retries later) — an acknowledged
//! delivery is never dropped to make room. Deliveries come back out oldest first; one
//! that can no longer be taken in (its store was deleted meanwhile) is parked in the file
//! with the reason, not deleted.

use crate::{now_ms, Result, StorageError};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::time::Duration;
use tokio::sync::Mutex;

/// How much the spool may hold before it refuses new deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Bytes of pending bodies and headers.
    pub max_bytes: u64,
    pub max_entries: u64,
    /// Once the oldest pending delivery is this old, the outage has outlasted what the
    /// node promises to hold: new deliveries are refused.
    pub max_age_ms: i64,
}

/// One spooled delivery, as it was received (headers without credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledDelivery {
    pub seq: i64,
    pub received_at: i64,
    pub store_id: String,
    pub platform: String,
    /// Every header as received, `[[name, value], …]`: the drain parses it again.
    pub headers_json: String,
    pub body: Vec<u8>,
}

/// What the spool holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    pub pending: u64,
    pub bytes: u64,
    /// When the oldest pending delivery was received (unix ms).
    pub oldest_at: Option<i64>,
    /// Deliveries the drain could not take in, kept with their reason.
    pub parked: u64,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolRefusal {
    Full,
    TooOld,
}

pub struct Spool {
    pool: SqlitePool,
    limits: SpoolLimits,
    /// Kept in step with the file by every change; the lock also makes check-and-insert
    /// one step, so concurrent pushes cannot overshoot a bound.
    stats: Mutex<SpoolStats>,
}

fn entry_bytes(headers_json: &str, body: &[u8]) -> u64 {
    (headers_json.len() + body.len()) as u64
}

impl Spool {
    /// Open (creating if needed) the spool file at `path`.
    pub async fn open(path: &Path, limits: SpoolLimits) -> Result<Spool> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StorageError::Corrupt(format!("creating {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // One connection: pushes are serialized anyway, and a second process opening the
        // same file waits on SQLite's lock rather than corrupting it.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS spooled_deliveries (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                received_at INTEGER NOT NULL,
                store_id TEXT NOT NULL,
                platform TEXT NOT NULL,
                headers_json TEXT NOT NULL,
                body BLOB NOT NULL,
                parked_at INTEGER,
                park_reason TEXT
            )",
        )
        .execute(&pool)
        .await?;
        let spool = Spool { pool, limits, stats: Mutex::new(SpoolStats::default()) };
        let fresh = spool.count().await?;
        *spool.stats.lock().await = fresh;
        Ok(spool)
    }

    async fn count(&self) -> Result<SpoolStats> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(headers_json) + LENGTH(body)), 0) AS bytes, \
             MIN(received_at) AS oldest FROM spooled_deliveries WHERE parked_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        let parked: i64 = sqlx::query("SELECT COUNT(*) AS n FROM spooled_deliveries WHERE parked_at IS NOT NULL")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(SpoolStats {
            pending: row.try_get::<i64, _>("n")? as u64,
            bytes: row.try_get::<i64, _>("bytes")? as u64,
            oldest_at: row.try_get("oldest")?,
            parked: parked as u64,
        })
    }

    pub fn limits(&self) -> SpoolLimits {
        self.limits
    }

    pub async fn stats(&self) -> SpoolStats {
        *self.stats.lock().await
    }

    /// Whether a push now would be refused, and why.
    fn refusal(&self, s: &SpoolStats, bytes: u64, now: i64) -> Option<SpoolRefusal> {
        if s.pending + 1 > self.limits.max_entries || s.bytes + bytes > self.limits.max_bytes {
            return Some(SpoolRefusal::Full);
        }
        match s.oldest_at {
            Some(t) if now - t >= self.limits.max_age_ms => Some(SpoolRefusal::TooOld),
            _ => None,
        }
    }

    /// Whether a small push at `now` would be taken.
    pub async fn would_accept(&self, now: i64) -> bool {
        self.refusal(&*self.stats.lock().await, 0, now).is_none()
    }

    /// Keep a delivery durably (committed and fsynced when this returns `Ok(Ok(seq))`).
    pub async fn push(
        &self,
        store_id: &str,
        platform: &str,
        headers_json: &str,
        body: &[u8],
    ) -> Result<std::result::Result<i64, SpoolRefusal>> {
        let now = now_ms();
        let bytes = entry_bytes(headers_json, body);
        let mut stats = self.stats.lock().await;
        if let Some(why) = self.refusal(&stats, bytes, now) {
            return Ok(Err(why));
        }
        let seq: i64 = sqlx::query(
            "INSERT INTO spooled_deliveries (received_at, store_id, platform, headers_json, body) \
             VALUES (?, ?, ?, ?, ?) RETURNING seq",
        )
        .bind(now)
        .bind(store_id)
        .bind(platform)
        .bind(headers_json)
        .bind(body)
        .fetch_one(&self.pool)
        .await?
        .try_get("seq")?;
        stats.pending += 1;
        stats.bytes += bytes;
        stats.oldest_at.get_or_insert(now);
        Ok(Ok(seq))
    }

    /// The oldest `limit` pending deliveries, oldest first.
    pub async fn oldest(&self, limit: i64) -> Result<Vec<SpooledDelivery>> {
        let rows = sqlx::query(
            "SELECT seq, received_at, store_id, platform, headers_json, body FROM spooled_deliveries \
             WHERE parked_at IS NULL ORDER BY seq LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SpooledDelivery {
                    seq: r.try_get("seq")?,
                    received_at: r.try_get("received_at")?,
                    store_id: r.try_get("store_id")?,
                    platform: r.try_get("platform")?,
                    headers_json: r.try_get("headers_json")?,
                    body: r.try_get("body")?,
                })
            })
            .collect()
    }

    /// Forget a delivery the main database now holds.
    pub async fn remove(&self, d: &SpooledDelivery) -> Result<()> {
        let q = sqlx::query("DELETE FROM spooled_deliveries WHERE seq = ? AND parked_at IS NULL").bind(d.seq);
        self.take_out(d, q, false).await
    }

    /// Keep a delivery that cannot be taken in aside, with the reason, out of the drain.
    pub async fn park(&self, d: &SpooledDelivery, reason: &str) -> Result<()> {
        let q = sqlx::query(
            "UPDATE spooled_deliveries SET parked_at = ?, park_reason = ? WHERE seq = ? AND parked_at IS NULL",
        )
        .bind(now_ms())
        .bind(reason)
        .bind(d.seq);
        self.take_out(d, q, true).await
    }

    /// Run `q`, which takes `d` out of the pending deliveries, and count it out.
    async fn take_out<'q>(
        &self,
        d: &SpooledDelivery,
        q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        parked: bool,
    ) -> Result<()> {
        let mut stats = self.stats.lock().await;
        if q.execute(&self.pool).await?.rows_affected() == 1 {
            // Saturating: another process sharing the file may have counted differently.
            stats.pending = stats.pending.saturating_sub(1);
            stats.bytes = stats.bytes.saturating_sub(entry_bytes(&d.headers_json, &d.body));
            stats.parked += u64::from(parked);
            stats.oldest_at = self.oldest_pending_at().await?;
        }
        Ok(())
    }

    async fn oldest_pending_at(&self) -> Result<Option<i64>> {
        let row =
            sqlx::query("SELECT received_at FROM spooled_deliveries WHERE parked_at IS NULL ORDER BY seq LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get("received_at")).transpose()?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SpoolLimits {
        SpoolLimits { max_bytes: 1_000, max_entries: 3, max_age_ms: 60_000 }
    }

    #[tokio::test]
    async fn keeps_order_bounds_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let spool = Spool::open(&path, limits()).await.unwrap();
        let a = spool.push("s1", "shopify", "[]", b"first").await.unwrap().unwrap();
        let b = spool.push("s1", "shopify", "[]", b"second").await.unwrap().unwrap();
        assert!(b > a);
        let s = spool.stats().await;
        assert_eq!((s.pending, s.bytes, s.parked), (2, 15, 0));
        assert!(s.oldest_at.is_some());
        // Bytes bound.
        assert_eq!(spool.push("s1", "shopify", "[]", &[0u8; 990]).await.unwrap(), Err(SpoolRefusal::Full));
        spool.push("s2", "woocommerce", "[]", b"third").await.unwrap().unwrap();
        // Entries bound.
        assert_eq!(spool.push("s1", "shopify", "[]", b"x").await.unwrap(), Err(SpoolRefusal::Full));
        spool.close().await;

        // What was acknowledged is still there, in order, after a restart.
        let spool = Spool::open(&path, limits()).await.unwrap();
        assert_eq!(spool.stats().await.pending, 3);
        let all = spool.oldest(10).await.unwrap();
        let bodies: Vec<&[u8]> = all.iter().map(|d| d.body.as_slice()).collect();
        assert_eq!(bodies, vec![&b"first"[..], b"second", b"third"]);
        spool.remove(&all[0]).await.unwrap();
        spool.park(&all[1], "store deleted").await.unwrap();
        let s = spool.stats().await;
        assert_eq!((s.pending, s.bytes, s.parked), (1, 7, 1));
        assert_eq!(s.oldest_at, Some(all[2].received_at));
        assert_eq!(spool.oldest(10).await.unwrap(), vec![all[2].clone()]);
        // Removing twice changes nothing.
        spool.remove(&all[0]).await.unwrap();
        assert_eq!(spool.stats().await.pending, 1);
        spool.remove(&all[2]).await.unwrap();
        assert_eq!(spool.stats().await, SpoolStats { parked: 1, ..SpoolStats::default() });
    }

    #[tokio::test]
    async fn refuses_once_the_oldest_delivery_is_too_old() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("s.db"), SpoolLimits { max_age_ms: 0, ..limits() }).await.unwrap();
        spool.push("s1", "shopify", "[]", b"a").await.unwrap().unwrap();
        assert_eq!(spool.push("s1", "shopify", "[]", b"b").await.unwrap(), Err(SpoolRefusal::TooOld));
    }
}

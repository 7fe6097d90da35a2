//! Lastmile's storage: every durable fact (tenants, credentials, stores, drivers, orders,
//! the outbox, offers, assignments, driver inboxes, sync jobs, dead letters) lives here,
//! on SQLite (WAL, `synchronous=FULL`) or PostgreSQL, through sqlx.
//!
//! Owns: the schema and migrations (one directory per dialect), every SQL statement, the
//! group-commit writer, and tenant scoping (every query that reads tenant data takes the
//! tenant id). Must not: speak HTTP, know about platforms' wire formats, or hold a write
//! transaction open across a network call.
//!
//! Both backends share one set of queries over `sqlx::Any`: columns use the portable
//! subset (TEXT, BIGINT, DOUBLE PRECISION, bytes), times are unix milliseconds and JSON is
//! TEXT. Where the dialects differ (`FOR UPDATE SKIP LOCKED`, the outbox horizon, migrations)
//! the code branches on [`Dialect`].

mod archive;
mod audit;
mod bind;
mod bulk;
mod catalog;
mod console_feed;
mod dispatch;
mod driver_codes;
mod drivers;
mod geocode;
mod intake;
mod keyring;
mod learned;
mod leases;
mod orders;
mod outbox;
mod payments;
mod photos;
mod recovery;
mod retention;
mod row_security;
mod spool;
mod stores;
mod sync;
mod tenants;
pub mod testing;
mod time;
mod timeline;
mod users;
mod webhook_endpoints;
#[cfg(test)]
mod write_path_tests;
mod writer;

pub use archive::{verify_archive, ArchiveReport, ArchivedFile, Manifest, RunState, VerifyReport};
pub use audit::{AuditEntry, AuditRecord};
pub use bind::OptF64;
pub use catalog::*;
pub use console_feed::*;
pub use dispatch::*;
pub use drivers::*;
pub use geocode::*;
pub use intake::*;
pub use keyring::*;
pub use learned::*;
pub use leases::*;
pub use orders::*;
pub use outbox::*;
pub use payments::*;
pub use photos::*;
pub use recovery::*;
pub use retention::Retained;
pub use spool::*;
pub use stores::*;
pub use sync::*;
pub use tenants::*;
pub use time::{from_ms, now_ms, to_ms};
pub use timeline::*;
pub use users::*;
pub use webhook_endpoints::*;
pub use writer::WriteConn;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule refused the write; carries the constraint or index name.
    #[error("conflict on {0}")]
    Conflict(String),
    /// The order is not in a state that allows this change.
    #[error("order is {from}, cannot become {to}")]
    InvalidTransition { from: String, to: String },
    /// The driver already holds as many active assignments as their capacity allows.
    #[error("driver at capacity")]
    AtCapacity,
    /// The offer is no longer pending (expired, declined, cancelled or already accepted).
    #[error("offer is {0}")]
    OfferClosed(String),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("commit failed: {0}")]
    CommitFailed(String),
    #[error("the storage writer has stopped")]
    WriterStopped,
    /// The write job panicked; its changes were rolled back and the writer carried on.
    #[error("the write job failed unexpectedly: {0}")]
    JobPanicked(String),
    /// The database could not be reached (no connection within the acquire timeout, or
    /// the connection broke); nothing was committed by this call, or its commit was not
    /// confirmed.
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Whether `e` says the database could not be reached, as opposed to refusing a statement.
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

impl StorageError {
    /// Whether the database could not be reached (retry later, or spool).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StorageError::Unavailable(_) => true,
            StorageError::Db(e) => is_connection_error(e),
            _ => false,
        }
    }

    /// Map a unique-violation into `Conflict(constraint)`; other errors pass through.
    fn from_db(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                let name = db.constraint().map(str::to_owned).unwrap_or_else(|| db.message().to_owned());
                return StorageError::Conflict(name);
            }
            if db.is_check_violation() {
                return StorageError::AtCapacity;
            }
        }
        StorageError::Db(e)
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A tenant-scoped change that must hit a row: none means not found (or not the tenant's).
fn touched(done: sqlx::any::AnyQueryResult) -> Result<()> {
    if done.rows_affected() == 0 {
        return Err(StorageError::NotFound);
    }
    Ok(())
}

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

/// Handle to the database: a read pool plus the group-commit writer. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
    writer: writer::Writer,
    /// Woken after every commit that wrote outbox rows, so the relay need not poll fast.
    outbox_notify: Arc<Notify>,
    /// Set on a handle from [`Db::with_audit`]: the audit entry its next write records.
    audit: Option<audit::AuditSlot>,
    /// See [`DbOptions::outbox_horizon_wait_ms`].
    horizon_wait_ms: i64,
    /// PostgreSQL: whether this connection's role may take the restricted tenant role
    /// (decided once, at the first tenant-scoped read; see `row_security`).
    tenant_role: Arc<tokio::sync::OnceCell<bool>>,
    /// When cached store records must be read again (see `stores::StoreVersions`).
    store_versions: Arc<stores::StoreVersions>,
}

#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: u32,
    /// Most write jobs committed by one fsync.
    pub max_batch: usize,
    /// Writer tasks (each with its own connection, on top of `max_connections`) on
    /// PostgreSQL; SQLite always has one.
    pub pg_writers: usize,
    /// PostgreSQL: how long a committed outbox event waits for older transactions still in
    /// flight before the relay publishes it anyway (see the outbox module).
    pub outbox_horizon_wait_ms: i64,
    /// How long a query waits for a pooled connection (or a new one to connect) before it
    /// fails with [`StorageError::Unavailable`]: the bound on how long a request can hang
    /// on an unreachable database.
    pub acquire_timeout_ms: u64,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            max_batch: 128,
            pg_writers: 4,
            outbox_horizon_wait_ms: 2_000,
            acquire_timeout_ms: 3_000,
        }
    }
}

impl Db {
    /// Connect, creating a SQLite file if needed. Does not migrate; call [`Db::migrate`].
    pub async fn connect(url: &str, opts: DbOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(StorageError::Corrupt(format!("unsupported database url scheme in {}", redact_url(url))));
        };
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let writers = match dialect {
            Dialect::Sqlite => 1,
            Dialect::Postgres => opts.pg_writers.max(1),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections + writers as u32)
            .acquire_timeout(Duration::from_millis(opts.acquire_timeout_ms.max(1)))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let outbox_notify = Arc::new(Notify::new());
        let mut conns = Vec::with_capacity(writers);
        for _ in 0..writers {
            conns.push(pool.acquire().await?);
        }
        let writer = writer::Writer::spawn(pool.clone(), conns, opts.max_batch, outbox_notify.clone());
        Ok(Self {
            pool,
            dialect,
            writer,
            outbox_notify,
            audit: None,
            horizon_wait_ms: opts.outbox_horizon_wait_ms,
            tenant_role: Arc::default(),
            store_versions: Arc::default(),
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        let res = match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await,
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres").run(&self.pool).await,
        };
        res.map_err(|e| StorageError::Corrupt(format!("migration failed: {e}")))
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Readiness: one round trip.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn outbox_notify(&self) -> Arc<Notify> {
        self.outbox_notify.clone()
    }

    /// Run `job` inside the next group commit. The result is returned only after the
    /// batch's transaction has committed (so an ack sent on it is durable, invariant 1).
    /// [`Db::write`] for a job that locks no row an intake batch or another such job
    /// locks in another order; it runs beside intake batches (see `writer::BatchLock`).
    /// Not audited.
    pub(crate) async fn write_shared<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteConn) -> futures::future::BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.writer.submit_shared(job).await
    }

    pub async fn write<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteConn) -> futures::future::BoxFuture<'c, Result<T>> + Send + 'static,
    {
        match self.take_audit() {
            None => self.writer.submit(job).await,
            // An audited handle: the entry commits with the job's own changes, or not at all.
            Some(entry) => {
                self.writer
                    .submit(move |c: &mut WriteConn| -> futures::future::BoxFuture<'_, Result<T>> {
                        Box::pin(async move {
                            let value = job(&mut *c).await?;
                            audit::insert(&mut *c, &entry).await?;
                            Ok(value)
                        })
                    })
                    .await
            }
        }
    }

    /// Stop accepting writes and wait for the writer to finish what it holds.
    pub async fn close(&self) {
        self.writer.shutdown().await;
        self.pool.close().await;
    }
}

/// Hide a password in a database URL for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:[redacted]{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    row.try_get(col).map_err(|e| StorageError::Corrupt(format!("{col}: {e}")))
}

fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T> {
    let text: String = get(row, col)?;
    serde_json::from_str(&text).map_err(|e| StorageError::Corrupt(format!("{col}: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact_url("postgres://u:secret@h/db"), "postgres://u:[redacted]@h/db");
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}

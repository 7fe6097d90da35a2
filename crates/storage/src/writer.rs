//! Group commit. Writes go through writer tasks: each takes whatever jobs are queued (up to
//! `max_batch`), runs them in one transaction, commits once (one fsync for the whole
//! batch), and only then answers each job; a failed commit fails the whole batch.
//!
//! Platform-order intake — the hot path — is handed over as data, not as a closure, so a
//! batch's intake jobs run as a handful of multi-row statements (one per table, see
//! `intake::intake_batch_in`) with duplicates resolved inside the batch. They run without
//! savepoints; if that fails, the transaction is rolled back and the intake jobs are run
//! again one by one, each in its own SAVEPOINT, so one bad job fails alone. Other jobs are
//! closures that run once: each gets a SAVEPOINT when it shares the batch with others (a
//! job that fails is rolled back without taking its neighbours along), none when alone.
//!
//! SQLite allows one writer at a time, so it gets one writer task (no lock contention).
//! PostgreSQL gets several (`DbOptions::pg_writers`): while one commits, the next collects
//! and runs its batch. Each writer keeps its own connection, taken from the pool when the
//! handle is opened (a batch never waits for a pooled connection), and replaces it from
//! the pool only if it breaks.

use crate::intake::{intake_batch_in, intake_one_in, IntakeItem, IntakeOutcome};
use crate::{Result, StorageError};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch, Mutex, Notify};

/// The connection a write job runs on: inside the batch transaction.
pub type WriteConn = sqlx::AnyConnection;

/// Why a batch did not commit: the message, and whether the database was unreachable.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    msg: String,
    unavailable: bool,
}

impl Failure {
    fn of(context: &str, e: &sqlx::Error) -> Self {
        Failure { msg: format!("{context}: {e}"), unavailable: crate::is_connection_error(e) }
    }

    fn error(&self) -> StorageError {
        if self.unavailable {
            StorageError::Unavailable(self.msg.clone())
        } else {
            StorageError::CommitFailed(self.msg.clone())
        }
    }
}

/// Called once the batch's commit finished, with its outcome.
type Completion = Box<dyn FnOnce(std::result::Result<(), Failure>) + Send>;
/// A closure job; the flag says whether to isolate it in a SAVEPOINT. Returns whether it
/// succeeded and how to answer it.
type ClosureJob = Box<dyn for<'c> FnOnce(&'c mut WriteConn, bool) -> BoxFuture<'c, (bool, Completion)> + Send>;

pub(crate) struct IntakeJob {
    item: IntakeItem,
    reply: oneshot::Sender<Result<IntakeOutcome>>,
}

pub(crate) enum Job {
    Closure(ClosureJob),
    /// A closure job that may share the batch lock with intake batches (see [`BatchLock`]).
    SharedClosure(ClosureJob),
    Intake(Box<IntakeJob>),
}

#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    /// Held so `shutdown` can wait for the tasks; a tokio Mutex because it is awaited.
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    stop: Arc<watch::Sender<bool>>,
}

impl Writer {
    /// One writer task per connection in `conns`.
    pub(crate) fn spawn(pool: AnyPool, conns: Vec<PoolConnection<Any>>, max_batch: usize, notify: Arc<Notify>) -> Self {
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::channel::<Job>(max_batch * 8);
        let rx = Arc::new(Mutex::new(rx));
        let (stop, _) = watch::channel(false);
        let tasks = conns
            .into_iter()
            .map(|conn| {
                let (pool, rx, notify, stop) = (pool.clone(), rx.clone(), notify.clone(), stop.subscribe());
                tokio::spawn(run(pool, conn, rx, max_batch, notify, stop))
            })
            .collect();
        Self { tx, tasks: Arc::new(Mutex::new(tasks)), stop: Arc::new(stop) }
    }

    pub(crate) async fn submit<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteConn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.submit_as(job, false).await
    }

    /// [`Writer::submit`] for a job that cannot take part in a cycle of row locks with
    /// intake batches or with itself (it locks no row they lock, or only in one fixed
    /// order): it runs under the shared batch lock, beside intake batches.
    pub(crate) async fn submit_shared<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteConn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.submit_as(job, true).await
    }

    async fn submit_as<T, F>(&self, job: F, shared: bool) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteConn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (otx, orx) = oneshot::channel::<Result<T>>();
        let wrapped: ClosureJob = Box::new(move |conn: &mut WriteConn, isolate: bool| {
            Box::pin(async move {
                if isolate {
                    if let Err(e) = sqlx::query("SAVEPOINT lm_job").execute(&mut *conn).await {
                        return (false, completion_err(otx, StorageError::Db(e)));
                    }
                }
                // A panicking job fails alone: its changes roll back like an error's, and
                // the writer (and every other job of the batch) carries on.
                let outcome = match AssertUnwindSafe(job(&mut *conn)).catch_unwind().await {
                    Ok(outcome) => outcome,
                    Err(panic) => {
                        let what = lastmile_core::text::panic_message(panic.as_ref());
                        tracing::error!(panic = %what, "storage writer: a write job panicked");
                        Err(StorageError::JobPanicked(what))
                    }
                };
                match outcome {
                    Ok(value) => {
                        if isolate {
                            if let Err(e) = sqlx::query("RELEASE SAVEPOINT lm_job").execute(&mut *conn).await {
                                return (false, completion_err(otx, StorageError::Db(e)));
                            }
                        }
                        let done: Completion = Box::new(move |commit: std::result::Result<(), Failure>| {
                            let _ = otx.send(commit.map(|_| value).map_err(|f| f.error()));
                        });
                        (true, done)
                    }
                    Err(err) => {
                        if isolate {
                            let _ = sqlx::query("ROLLBACK TO SAVEPOINT lm_job").execute(&mut *conn).await;
                            let _ = sqlx::query("RELEASE SAVEPOINT lm_job").execute(&mut *conn).await;
                        }
                        (false, completion_err(otx, err))
                    }
                }
            })
        });
        let job = if shared { Job::SharedClosure(wrapped) } else { Job::Closure(wrapped) };
        self.tx.send(job).await.map_err(|_| StorageError::WriterStopped)?;
        orx.await.map_err(|_| StorageError::WriterStopped)?
    }

    /// Take in one platform order delivery in the next group commit.
    pub(crate) async fn submit_intake(&self, item: IntakeItem) -> Result<IntakeOutcome> {
        let (reply, orx) = oneshot::channel();
        self.tx
            .send(Job::Intake(Box::new(IntakeJob { item, reply })))
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        orx.await.map_err(|_| StorageError::WriterStopped)?
    }

    pub(crate) async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<_> = self.tasks.lock().await.drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

fn completion_err<T: Send + 'static>(otx: oneshot::Sender<Result<T>>, err: StorageError) -> Completion {
    Box::new(move |_| {
        let _ = otx.send(Err(err));
    })
}

async fn run(
    pool: AnyPool,
    conn: PoolConnection<Any>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = Some(conn);
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    loop {
        {
            // One task collects at a time; the others commit meanwhile.
            let mut rx = rx.lock().await;
            let first = tokio::select! {
                biased;
                job = rx.recv() => match job { Some(j) => j, None => break },
                _ = async { drop(stop.wait_for(|s| *s).await) } => {
                    // Drain what is already queued, then stop.
                    rx.close();
                    match rx.recv().await { Some(j) => j, None => break }
                }
            };
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
        }
        if conn.is_none() {
            conn = pool.acquire().await.map_err(|e| tracing::error!(error = %e, "storage writer: no connection")).ok();
        }
        match conn.as_mut() {
            Some(c) => {
                if !commit_batch(c, &mut batch).await {
                    // Replace a connection that failed to begin or commit.
                    conn = None;
                }
            }
            None => fail_all(&mut batch, &Failure { msg: "no database connection".into(), unavailable: true }),
        }
        notify.notify_one();
    }
    tracing::debug!("storage writer stopped");
}

async fn exec(c: &mut WriteConn, sql: &str) -> std::result::Result<(), Failure> {
    sqlx::query(sql).execute(&mut *c).await.map(|_| ()).map_err(|e| Failure::of(&format!("{sql} failed"), &e))
}

/// Answer every job of a batch that could not run. A dropped closure job answers its
/// caller `WriterStopped`.
fn fail_all(batch: &mut Vec<Job>, why: &Failure) {
    tracing::error!(error = %why.msg, jobs = batch.len(), "storage writer");
    for job in batch.drain(..) {
        if let Job::Intake(j) = job {
            let _ = j.reply.send(Err(why.error()));
        }
    }
}

/// Arbitrary constant naming the PostgreSQL advisory lock every write batch takes first.
pub(crate) const BATCH_LOCK_KEY: i64 = 0x6c61_7374_6d69;

/// Most times an intake-only batch is run again after PostgreSQL chose it as a deadlock
/// victim (40P01) or refused it as a serialization failure (40001).
const MAX_BATCH_ATTEMPTS: u32 = 6;

/// How a batch holds the batch lock on PostgreSQL.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BatchLock {
    /// Intake batches (and closure jobs submitted as shared, such as the relay marking
    /// events published): any number at once, on every node. They lock rows in key
    /// order (see `intake_batch_in`), and if PostgreSQL still aborts one as a deadlock
    /// victim the batch — plain data, not closures — is rolled back and run again.
    Shared,
    /// Batches with closure jobs (offers, assignments, status changes, …): one at a time
    /// in the whole cluster, never beside an intake batch. Closures run once and lock rows
    /// in whatever order their business needs (two offers to one driver, an order and its
    /// driver), so they cannot be retried or ordered; this lock keeps them from deadlocking.
    Exclusive,
}

/// Start a batch's transaction. On PostgreSQL the batch then takes the batch lock before
/// any row lock (shared for intake-only batches, exclusive otherwise), so a cycle of row
/// locks can only form between intake batches, which are retried. Outbox order does not
/// depend on it (see `outbox`).
async fn begin(c: &mut WriteConn, lock: BatchLock) -> std::result::Result<(), Failure> {
    exec(c, "BEGIN").await?;
    if c.backend_name() == "PostgreSQL" {
        let sql = match lock {
            BatchLock::Shared => "SELECT pg_advisory_xact_lock_shared($1)",
            BatchLock::Exclusive => "SELECT pg_advisory_xact_lock($1)",
        };
        sqlx::query(sql)
            .bind(BATCH_LOCK_KEY)
            .execute(&mut *c)
            .await
            .map_err(|e| Failure::of("taking the batch lock failed", &e))?;
    }
    Ok(())
}

/// A deadlock victim or serialization failure: nothing of the transaction stays, and
/// running it again can succeed.
fn retryable(e: &StorageError) -> bool {
    match e {
        StorageError::Db(sqlx::Error::Database(db)) => matches!(db.code().as_deref(), Some("40P01") | Some("40001")),
        _ => false,
    }
}

/// The intake jobs of a batch inside the open transaction: all at once, or, if that
/// fails for another reason than a deadlock, one by one in savepoints (in a restarted
/// transaction). `Err` means the transaction is aborted and the caller should start over
/// (a deadlock or serialization failure) or give up (`Failure`).
async fn run_intakes(
    c: &mut WriteConn,
    items: &[&IntakeItem],
    lock: BatchLock,
) -> std::result::Result<Vec<Result<IntakeOutcome>>, Restart> {
    match intake_batch_in(c, items).await {
        Ok(outcomes) => return Ok(outcomes.into_iter().map(Ok).collect()),
        Err(e) if retryable(&e) => return Err(Restart::Retry(e)),
        Err(e) => tracing::debug!(error = %e, jobs = items.len(), "batched intake failed; retrying job by job"),
    }
    // Nothing else ran in this transaction yet: start over, one job at a time.
    exec(c, "ROLLBACK").await.map_err(Restart::Fail)?;
    begin(c, lock).await.map_err(Restart::Fail)?;
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        match isolated_intake(c, item).await {
            Err(e) if retryable(&e) => return Err(Restart::Retry(e)),
            r => results.push(r),
        }
    }
    Ok(results)
}

enum Restart {
    Retry(StorageError),
    Fail(Failure),
}

/// Run and commit one batch on `c`; returns false if the connection should be replaced.
async fn commit_batch(c: &mut WriteConn, batch: &mut Vec<Job>) -> bool {
    let mut intakes = Vec::new();
    let mut closures = Vec::new();
    let mut lock = BatchLock::Shared;
    for job in batch.drain(..) {
        match job {
            Job::Intake(j) => intakes.push(j),
            Job::SharedClosure(j) => closures.push(j),
            Job::Closure(j) => {
                lock = BatchLock::Exclusive;
                closures.push(j)
            }
        }
    }
    let items: Vec<&IntakeItem> = intakes.iter().map(|j| &j.item).collect();
    let mut attempt = 1;
    let intake_results: Vec<Result<IntakeOutcome>> = loop {
        let started = match begin(c, lock).await {
            Ok(()) if items.is_empty() => Ok(Vec::new()),
            Ok(()) => run_intakes(c, &items, lock).await,
            Err(why) => Err(Restart::Fail(why)),
        };
        match started {
            Ok(results) => break results,
            Err(Restart::Retry(e)) if attempt < MAX_BATCH_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, jobs = items.len(), "intake batch aborted by the database; running it again");
                if let Err(why) = exec(c, "ROLLBACK").await {
                    return give_up(batch, intakes, closures, &why);
                }
                attempt += 1;
                // Let the batch that won the deadlock commit before trying again.
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 8);
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 2 + jitter)).await;
            }
            Err(Restart::Retry(e)) => {
                let _ = exec(c, "ROLLBACK").await;
                let why = Failure { msg: format!("intake batch aborted {attempt} times: {e}"), unavailable: false };
                // The connection is fine: keep it.
                give_up(batch, intakes, closures, &why);
                return true;
            }
            Err(Restart::Fail(why)) => return give_up(batch, intakes, closures, &why),
        }
    };
    // A closure job alone in its transaction needs no savepoint: if it fails, the
    // transaction is rolled back instead of committed.
    let alone = closures.len() == 1 && intakes.is_empty();
    let mut completions: Vec<Completion> = Vec::with_capacity(closures.len());
    let mut all_ok = true;
    for job in closures {
        let (ok, done) = job(c, !alone).await;
        all_ok &= ok;
        completions.push(done);
    }
    let outcome = if alone && !all_ok { exec(c, "ROLLBACK").await.map(|_| ()) } else { exec(c, "COMMIT").await };
    if let Err(why) = &outcome {
        tracing::error!(error = %why.msg, jobs = completions.len() + intakes.len(), "group commit failed");
        // Leave no transaction open on a connection that stays.
        let _ = exec(c, "ROLLBACK").await;
    }
    // A failed rollback of a lone failed job leaves its own error as the answer.
    let answer = if alone && !all_ok { Ok(()) } else { outcome.clone() };
    for done in completions {
        done(answer.clone());
    }
    for (j, r) in intakes.into_iter().zip(intake_results) {
        let reply = match &answer {
            Ok(()) => r,
            Err(why) => Err(why.error()),
        };
        let _ = j.reply.send(reply);
    }
    outcome.is_ok()
}

/// Answer every job of a batch that could not run; returns false (replace the connection).
/// (The intake jobs stay in the boxes they came through the channel in.)
#[allow(clippy::vec_box)]
fn give_up(batch: &mut Vec<Job>, intakes: Vec<Box<IntakeJob>>, closures: Vec<ClosureJob>, why: &Failure) -> bool {
    batch.extend(intakes.into_iter().map(Job::Intake));
    batch.extend(closures.into_iter().map(Job::Closure));
    fail_all(batch, why);
    false
}

/// One intake job in its own SAVEPOINT (the retry of a failed batch).
async fn isolated_intake(c: &mut WriteConn, item: &IntakeItem) -> Result<IntakeOutcome> {
    sqlx::query("SAVEPOINT lm_job").execute(&mut *c).await?;
    match intake_one_in(c, item).await {
        Ok(out) => {
            sqlx::query("RELEASE SAVEPOINT lm_job").execute(&mut *c).await?;
            Ok(out)
        }
        Err(e) => {
            let _ = sqlx::query("ROLLBACK TO SAVEPOINT lm_job").execute(&mut *c).await;
            let _ = sqlx::query("RELEASE SAVEPOINT lm_job").execute(&mut *c).await;
            Err(e)
        }
    }
}

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

/// Called once the batch's commit finished, with its outcome.
type Completion = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
/// A closure job; the flag says whether to isolate it in a SAVEPOINT. Returns whether it
/// succeeded and how to answer it.
type ClosureJob = Box<dyn for<'c> FnOnce(&'c mut WriteConn, bool) -> BoxFuture<'c, (bool, Completion)> + Send>;

pub(crate) struct IntakeJob {
    item: IntakeItem,
    reply: oneshot::Sender<Result<IntakeOutcome>>,
}

pub(crate) enum Job {
    Closure(ClosureJob),
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
                        let done: Completion = Box::new(move |commit: std::result::Result<(), String>| {
                            let _ = otx.send(commit.map(|_| value).map_err(StorageError::CommitFailed));
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
        self.tx.send(Job::Closure(wrapped)).await.map_err(|_| StorageError::WriterStopped)?;
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
            None => fail_all(&mut batch, "no database connection"),
        }
        notify.notify_one();
    }
    tracing::debug!("storage writer stopped");
}

async fn exec(c: &mut WriteConn, sql: &str) -> std::result::Result<(), String> {
    sqlx::query(sql).execute(&mut *c).await.map(|_| ()).map_err(|e| format!("{sql} failed: {e}"))
}

/// Answer every job of a batch that could not run. A dropped closure job answers its
/// caller `WriterStopped`.
fn fail_all(batch: &mut Vec<Job>, msg: &str) {
    tracing::error!(error = %msg, jobs = batch.len(), "storage writer");
    for job in batch.drain(..) {
        if let Job::Intake(j) = job {
            let _ = j.reply.send(Err(StorageError::CommitFailed(msg.to_owned())));
        }
    }
}

/// Run and commit one batch on `c`; returns false if the connection should be replaced.
/// Arbitrary constant naming the PostgreSQL advisory lock every write batch takes first.
const BATCH_LOCK_KEY: i64 = 0x6c61_7374_6d69;

/// Start a batch's transaction. On PostgreSQL the batch then takes one advisory lock
/// before any row lock, so batches of this node's writers and of other nodes lock in the
/// same order. Without it two batches each holding a row the other's next job needs (two
/// offers to one driver, an order and its driver) deadlock, and PostgreSQL aborts one of
/// them: its requests fail. This serializes the batches' row work (each batch is still
/// many jobs, and commits overlap); outbox order does not depend on it (see `outbox`).
async fn begin(c: &mut WriteConn) -> std::result::Result<(), String> {
    exec(c, "BEGIN").await?;
    if c.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(BATCH_LOCK_KEY)
            .execute(&mut *c)
            .await
            .map_err(|e| format!("taking the batch lock failed: {e}"))?;
    }
    Ok(())
}

async fn commit_batch(c: &mut WriteConn, batch: &mut Vec<Job>) -> bool {
    if let Err(msg) = begin(c).await {
        fail_all(batch, &msg);
        return false;
    }
    let mut intakes = Vec::new();
    let mut closures = Vec::new();
    for job in batch.drain(..) {
        match job {
            Job::Intake(j) => intakes.push(j),
            Job::Closure(j) => closures.push(j),
        }
    }
    let mut intake_results: Vec<Result<IntakeOutcome>> = Vec::with_capacity(intakes.len());
    if !intakes.is_empty() {
        let items: Vec<&IntakeItem> = intakes.iter().map(|j| &j.item).collect();
        match intake_batch_in(c, &items).await {
            Ok(outcomes) => intake_results.extend(outcomes.into_iter().map(Ok)),
            Err(e) => {
                // Nothing else ran in this transaction yet: start over, one job at a time.
                tracing::debug!(error = %e, jobs = items.len(), "batched intake failed; retrying job by job");
                let restarted = match exec(c, "ROLLBACK").await {
                    Ok(()) => begin(c).await,
                    Err(msg) => Err(msg),
                };
                if let Err(msg) = restarted {
                    batch.extend(intakes.into_iter().map(Job::Intake));
                    batch.extend(closures.into_iter().map(Job::Closure));
                    fail_all(batch, &msg);
                    return false;
                }
                for item in &items {
                    intake_results.push(isolated_intake(c, item).await);
                }
            }
        }
    }
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
    if let Err(msg) = &outcome {
        tracing::error!(error = %msg, jobs = completions.len() + intakes.len(), "group commit failed");
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
            Err(msg) => Err(StorageError::CommitFailed(msg.clone())),
        };
        let _ = j.reply.send(reply);
    }
    outcome.is_ok()
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

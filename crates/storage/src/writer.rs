//! Group commit. All writes go through one writer task per process: it takes whatever
//! jobs are queued (up to `max_batch`), runs each inside its own SAVEPOINT of one
//! transaction, commits once (one fsync for the whole batch), and only then answers each
//! job. A failing job rolls back to its savepoint and fails alone; a failed commit fails
//! the whole batch. SQLite allows one writer at a time, so funnelling writes here also
//! removes lock contention; PostgreSQL gets the same fsync sharing.

use crate::{Dialect, Result, StorageError};
use futures::future::BoxFuture;
use sqlx::AnyPool;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};

/// The connection a write job runs on: inside the batch transaction, within the job's savepoint.
pub type WriteConn = sqlx::AnyConnection;

/// Called once the batch's commit finished, with its outcome.
type Completion = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
type Job = Box<dyn for<'c> FnOnce(&'c mut WriteConn) -> BoxFuture<'c, Completion> + Send>;

#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    /// Held so `shutdown` can wait for the task; a tokio Mutex because it is awaited.
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    closed: Arc<Notify>,
}

impl Writer {
    pub(crate) fn spawn(pool: AnyPool, dialect: Dialect, max_batch: usize, notify: Arc<Notify>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(max_batch.max(1) * 8);
        let closed = Arc::new(Notify::new());
        let task = tokio::spawn(run(pool, dialect, rx, max_batch.max(1), notify, closed.clone()));
        Self { tx, task: Arc::new(Mutex::new(Some(task))), closed }
    }

    pub(crate) async fn submit<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteConn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (otx, orx) = oneshot::channel::<Result<T>>();
        let wrapped: Job = Box::new(move |conn: &mut WriteConn| {
            Box::pin(async move {
                if let Err(e) = sqlx::query("SAVEPOINT lm_job").execute(&mut *conn).await {
                    return completion_err(otx, StorageError::Db(e));
                }
                let outcome = job(&mut *conn).await;
                match outcome {
                    Ok(value) => {
                        if let Err(e) = sqlx::query("RELEASE SAVEPOINT lm_job").execute(&mut *conn).await {
                            return completion_err(otx, StorageError::Db(e));
                        }
                        Box::new(move |commit: std::result::Result<(), String>| {
                            let _ = otx.send(commit.map(|_| value).map_err(StorageError::CommitFailed));
                        }) as Completion
                    }
                    Err(err) => {
                        let _ = sqlx::query("ROLLBACK TO SAVEPOINT lm_job").execute(&mut *conn).await;
                        let _ = sqlx::query("RELEASE SAVEPOINT lm_job").execute(&mut *conn).await;
                        completion_err(otx, err)
                    }
                }
            })
        });
        self.tx.send(wrapped).await.map_err(|_| StorageError::WriterStopped)?;
        orx.await.map_err(|_| StorageError::WriterStopped)?
    }

    pub(crate) async fn shutdown(&self) {
        self.closed.notify_one();
        if let Some(task) = self.task.lock().await.take() {
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
    dialect: Dialect,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    notify: Arc<Notify>,
    closed: Arc<Notify>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    loop {
        let first = tokio::select! {
            biased;
            job = rx.recv() => match job { Some(j) => j, None => break },
            _ = closed.notified() => {
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
        commit_batch(&pool, dialect, &mut batch).await;
        notify.notify_one();
    }
    tracing::debug!("storage writer stopped");
}

async fn commit_batch(pool: &AnyPool, dialect: Dialect, batch: &mut Vec<Job>) {
    let begun = match pool.begin().await {
        Ok(mut tx) => {
            // Several nodes writing one PostgreSQL: take the outbox lock (which nearly every
            // batch needs for its events anyway) before any row lock, so every batch locks
            // in the same order. Taken mid-batch instead, one node's batch holding an order
            // row waits for the lock while another's holding the lock waits for that row:
            // a deadlock, and its requests fail.
            match dialect {
                Dialect::Postgres => sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(crate::outbox::OUTBOX_LOCK_KEY)
                    .execute(&mut *tx)
                    .await
                    .map(|_| tx),
                Dialect::Sqlite => Ok(tx),
            }
        }
        Err(e) => Err(e),
    };
    let mut tx = match begun {
        Ok(tx) => tx,
        Err(e) => {
            let msg = format!("could not begin transaction: {e}");
            tracing::error!(error = %msg, "storage writer");
            for job in batch.drain(..) {
                // Run nothing; answer every job with the failure.
                drop(job);
            }
            return;
        }
    };
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        completions.push(job(&mut tx).await);
    }
    let outcome = tx.commit().await.map_err(|e| {
        tracing::error!(error = %e, jobs = completions.len(), "group commit failed");
        e.to_string()
    });
    for c in completions {
        c(outcome.clone());
    }
}

//! Sync-back jobs: one row per (order, action), created in the same transaction as the
//! status change it reports, claimed with a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`)
//! one job of an order at a time and in order, a few jobs of a store per claim, retried on
//! a schedule, and dead-lettered with full context when exhausted.

use crate::intake::{insert_dead_letter_in, IntakeSource, RawDelivery};
use crate::{get, now_ms, outbox::insert_event, Db, Dialect, Result, StorageError, WriteConn};
use lastmile_core::{DeadLetterId, EventKind, Order, OrderId, Platform, StoreId, SyncJobId, TenantId};

#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncJob {
    pub id: SyncJobId,
    pub tenant_id: TenantId,
    pub store_id: StoreId,
    pub platform: Platform,
    pub order_id: OrderId,
    pub platform_order_id: String,
    pub action: String,
    pub idempotency_key: String,
    pub attempts: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncBacklog {
    pub store_id: String,
    pub platform: String,
    pub pending: i64,
    pub oldest_pending_at: Option<i64>,
    pub dead: i64,
}

pub(crate) async fn enqueue_sync_in(c: &mut WriteConn, order: &Order, action: &str) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO sync_jobs (id, tenant_id, store_id, platform, order_id, platform_order_id, action, idempotency_key, \
         state, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9, $9) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(SyncJobId::generate().as_str())
    .bind(order.tenant_id.as_str())
    .bind(order.store_id.as_str())
    .bind(order.platform.as_str())
    .bind(order.id.as_str())
    .bind(&order.platform_order_id)
    .bind(action)
    .bind(format!("{}:{action}", order.id))
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

fn job_from_row(r: &sqlx::any::AnyRow) -> Result<SyncJob> {
    let platform: String = get(r, "platform")?;
    Ok(SyncJob {
        id: SyncJobId(get(r, "id")?),
        tenant_id: TenantId(get(r, "tenant_id")?),
        store_id: StoreId(get(r, "store_id")?),
        platform: platform.parse().map_err(crate::corrupt)?,
        order_id: OrderId(get(r, "order_id")?),
        platform_order_id: get(r, "platform_order_id")?,
        action: get(r, "action")?,
        idempotency_key: get(r, "idempotency_key")?,
        attempts: get(r, "attempts")?,
        created_at: get(r, "created_at")?,
    })
}

const JOB_COLS: &str =
    "id, tenant_id, store_id, platform, order_id, platform_order_id, action, idempotency_key, attempts, created_at";

/// A job `j` that may run at `$2`: due, not leased by a live worker, and the oldest
/// unfinished job of its order. Jobs of one order run one at a time, in the order they were
/// created: a `delivered` running beside its `picked_up` could both fulfil, or land the
/// order's status on the platform out of order (BigCommerce Completed, then Shipped).
/// Fetch jobs (`order_id = ''`) have no order yet. The earlier jobs are found through the
/// unique `idempotency_key` index (`{order_id}:{action}`), not a scan.
const CLAIMABLE: &str = concat!(
    "j.next_attempt_at <= $2 AND ",
    // The head of its order, not leased (written out again in `HEAD` below).
    "j.state IN ('pending', 'running') AND (j.locked_until IS NULL OR j.locked_until < $2) \
     AND (j.order_id = '' OR NOT EXISTS (SELECT 1 FROM sync_jobs e WHERE e.idempotency_key IN \
       (j.order_id || ':picked_up', j.order_id || ':delivered', j.order_id || ':failed', j.order_id || ':cancelled') \
       AND e.id <> j.id AND e.state IN ('pending', 'running') \
       AND (e.created_at < j.created_at OR (e.created_at = j.created_at AND e.id < j.id))))"
);

/// [`CLAIMABLE`] whatever the time: the jobs that will be claimable once their time comes.
fn head_of_order() -> &'static str {
    CLAIMABLE.strip_prefix("j.next_attempt_at <= $2 AND ").expect("CLAIMABLE starts with the time")
}

/// How much one claim may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimLimits {
    /// Jobs in all.
    pub limit: i64,
    /// Jobs of one store (its bulkhead size), so one store's backlog cannot take every
    /// slot of the worker while other stores' jobs wait.
    pub per_store: i64,
    /// Stores left out of this claim: the worker already holds as many of their jobs as
    /// their bulkhead lets run.
    pub skip_stores: Vec<String>,
}

/// The queue as a worker sees it at one moment (all tenants).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncQueue {
    /// Claimable now.
    pub due: i64,
    /// Leased by a worker whose lease has not run out.
    pub running: i64,
    /// Every job not yet done or dead.
    pub unfinished: i64,
    /// When the next job becomes claimable (the earliest `next_attempt_at` of a job that is
    /// unleased and first in its order's line).
    pub next_attempt_at: Option<i64>,
}

/// A job's current standing, shown beside the dead letters that name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncJobStatus {
    pub id: SyncJobId,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub last_status: Option<i64>,
    pub completed_at: Option<i64>,
}

impl Db {
    /// Lease up to `limit` claimable jobs for `lease_ms` (see [`Db::claim_sync_jobs_limited`]).
    pub async fn claim_sync_jobs(&self, now: i64, limit: i64, lease_ms: i64) -> Result<Vec<SyncJob>> {
        self.claim_sync_jobs_limited(now, lease_ms, ClaimLimits { limit, per_store: limit, skip_stores: Vec::new() })
            .await
    }

    /// Lease claimable jobs for `lease_ms`, oldest due first, within `limits`. A job whose
    /// worker died is claimable again once its lease runs out. On PostgreSQL the rows are
    /// locked with `SKIP LOCKED` and the conditions checked again on the locked rows, so two
    /// nodes never lease the same job.
    pub async fn claim_sync_jobs_limited(&self, now: i64, lease_ms: i64, limits: ClaimLimits) -> Result<Vec<SyncJob>> {
        let dialect = self.dialect;
        self.write(move |c| {
            Box::pin(async move {
                let lock = if dialect == Dialect::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
                let skip: String =
                    (0..limits.skip_stores.len()).map(|i| format!(" AND j.store_id <> ${}", i + 5)).collect();
                let sql = format!(
                    "UPDATE sync_jobs SET state = 'running', locked_until = $1, updated_at = $2 WHERE id IN (\
                     SELECT j.id FROM sync_jobs j WHERE j.id IN (\
                       SELECT id FROM (SELECT j.id, j.next_attempt_at, \
                         ROW_NUMBER() OVER (PARTITION BY j.store_id ORDER BY j.next_attempt_at, j.id) AS store_rank \
                         FROM sync_jobs j WHERE {CLAIMABLE}{skip}) ranked \
                       WHERE store_rank <= $4 ORDER BY next_attempt_at, id LIMIT $3) \
                     AND j.state IN ('pending', 'running') AND j.next_attempt_at <= $2 \
                     AND (j.locked_until IS NULL OR j.locked_until < $2){lock}) RETURNING {JOB_COLS}"
                );
                let mut q = sqlx::query(&sql).bind(now + lease_ms).bind(now).bind(limits.limit).bind(limits.per_store);
                for store in &limits.skip_stores {
                    q = q.bind(store.clone());
                }
                let rows = q.fetch_all(&mut *c).await?;
                rows.iter().map(job_from_row).collect()
            })
        })
        .await
    }

    /// How the queue stands at `now`, over all tenants (for the backlog gauge and tests).
    pub async fn sync_queue(&self, now: i64) -> Result<SyncQueue> {
        // The claim's own conditions, with "now" as the only parameter.
        let claimable = CLAIMABLE.replace("$2", "$1");
        let head = head_of_order().replace("$2", "$1");
        let row = sqlx::query(&format!(
            "SELECT \
             (SELECT COUNT(*) FROM sync_jobs j WHERE {claimable}) AS due, \
             (SELECT COUNT(*) FROM sync_jobs WHERE state = 'running' AND locked_until >= $1) AS running, \
             (SELECT COUNT(*) FROM sync_jobs WHERE state IN ('pending', 'running')) AS unfinished, \
             (SELECT MIN(j.next_attempt_at) FROM sync_jobs j WHERE {head}) AS next_at"
        ))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(SyncQueue {
            due: get(&row, "due")?,
            running: get(&row, "running")?,
            unfinished: get(&row, "unfinished")?,
            next_attempt_at: get(&row, "next_at")?,
        })
    }

    /// Unfinished jobs per (platform, store), over all tenants: the backlog gauge.
    pub async fn sync_backlog_by_store(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT platform, store_id, COUNT(*) AS pending FROM sync_jobs WHERE state IN ('pending', 'running') \
             GROUP BY platform, store_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((get(r, "platform")?, get(r, "store_id")?, get(r, "pending")?))).collect()
    }

    /// The standing of each named job of `tenant` (unknown ids are left out).
    pub async fn sync_job_statuses(&self, tenant: &TenantId, ids: &[SyncJobId]) -> Result<Vec<SyncJobStatus>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT id, state, attempts, last_error, last_status, completed_at FROM sync_jobs \
             WHERE tenant_id = $1 AND id IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str());
        for id in ids {
            q = q.bind(id.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(SyncJobStatus {
                    id: SyncJobId(get(r, "id")?),
                    state: get(r, "state")?,
                    attempts: get(r, "attempts")?,
                    last_error: get(r, "last_error")?,
                    last_status: get(r, "last_status")?,
                    completed_at: get(r, "completed_at")?,
                })
            })
            .collect()
    }

    pub async fn complete_sync_job(&self, id: &SyncJobId, status: Option<u16>, summary: &str) -> Result<()> {
        let (i, s) = (id.clone(), summary.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query(
                    "UPDATE sync_jobs SET state = 'done', attempts = attempts + 1, last_status = $1, last_body = $2, \
                             completed_at = $3, updated_at = $3, locked_until = NULL WHERE id = $4",
                )
                .bind(status.map(i64::from))
                .bind(&s)
                .bind(now)
                .bind(i.as_str())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Put a job back for a later attempt. `count_attempt` is false when the circuit
    /// breaker deferred it without calling the platform.
    pub async fn retry_sync_job(
        &self,
        id: &SyncJobId,
        next_at: i64,
        count_attempt: bool,
        error: &str,
        status: Option<u16>,
        body: Option<String>,
    ) -> Result<()> {
        let (i, e) = (id.clone(), error.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE sync_jobs SET state = 'pending', attempts = attempts + $1, next_attempt_at = $2, \
                             locked_until = NULL, last_error = $3, last_status = COALESCE($4, last_status), \
                             last_body = COALESCE($5, last_body), updated_at = $6 WHERE id = $7",
                )
                .bind(if count_attempt { 1i64 } else { 0 })
                .bind(next_at)
                .bind(&e)
                .bind(status.map(i64::from))
                .bind(body)
                .bind(now_ms())
                .bind(i.as_str())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Retries exhausted or the platform refused for good: keep everything as a dead letter.
    pub async fn dead_letter_sync_job(
        &self,
        job: &SyncJob,
        request: serde_json::Value,
        error: &str,
        status: Option<u16>,
        body: Option<String>,
    ) -> Result<DeadLetterId> {
        let (j, e) = (job.clone(), error.to_owned());
        let id = DeadLetterId::generate();
        let dl = id.clone();
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query("UPDATE sync_jobs SET state = 'dead', attempts = attempts + 1, last_error = $1, last_status = $2, \
                             last_body = $3, locked_until = NULL, updated_at = $4 WHERE id = $5")
                    .bind(&e)
                    .bind(status.map(i64::from))
                    .bind(body.clone())
                    .bind(now)
                    .bind(j.id.as_str())
                    .execute(&mut *c)
                    .await?;
                let context = serde_json::json!({
                    "job_id": j.id, "order_id": j.order_id, "platform_order_id": j.platform_order_id, "action": j.action,
                    "request": request, "last_status": status, "last_response": body, "attempts": j.attempts + 1,
                });
                let raw = RawDelivery { headers_json: "{}".into(), body: Vec::new() };
                insert_dead_letter_in(c, &dl, &j.tenant_id, "sync", j.platform.as_str(), j.store_id.as_str(), &raw, &e, &context, j.attempts + 1).await?;
                insert_event(c, &j.tenant_id, EventKind::SyncDeadLettered, j.order_id.as_str(), serde_json::json!({"job_id": j.id, "dead_letter_id": dl})).await
            })
        })
        .await?;
        Ok(id)
    }

    /// Replay a sync dead letter: its job becomes pending again with a fresh schedule.
    /// Idempotent: replaying a job that is pending, running or done changes nothing.
    pub async fn requeue_sync_job(&self, tenant: &TenantId, job_id: &SyncJobId) -> Result<bool> {
        self.requeue_dead("sync_jobs", tenant, job_id.as_str()).await
    }

    /// Put a dead row of a job queue (`sync_jobs`, `webhook_deliveries`) back, due now with
    /// its attempts reset: a dead letter's replay. False when it is not dead (already
    /// requeued, or done).
    pub(crate) async fn requeue_dead(&self, table: &'static str, tenant: &TenantId, id: &str) -> Result<bool> {
        let (t, j) = (tenant.clone(), id.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let done = sqlx::query(&format!(
                    "UPDATE {table} SET state = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1 \
                     WHERE tenant_id = $2 AND id = $3 AND state = 'dead'"
                ))
                .bind(now)
                .bind(t.as_str())
                .bind(&j)
                .execute(&mut *c)
                .await?;
                Ok(done.rows_affected() > 0)
            })
        })
        .await
    }

    pub async fn sync_job_state(&self, tenant: &TenantId, job_id: &SyncJobId) -> Result<String> {
        let row = sqlx::query("SELECT state FROM sync_jobs WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(job_id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound)?;
        get(&row, "state")
    }

    pub async fn sync_jobs_for_order(&self, tenant: &TenantId, order: &OrderId) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT action, state, attempts FROM sync_jobs WHERE tenant_id = $1 AND order_id = $2 ORDER BY created_at",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((get(r, "action")?, get(r, "state")?, get(r, "attempts")?))).collect()
    }

    pub async fn sync_backlog(&self, tenant: &TenantId) -> Result<Vec<SyncBacklog>> {
        let rows = sqlx::query(
            "SELECT store_id, platform, \
             SUM(CASE WHEN state IN ('pending', 'running') THEN 1 ELSE 0 END) AS pending, \
             MIN(CASE WHEN state IN ('pending', 'running') THEN created_at END) AS oldest, \
             SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END) AS dead \
             FROM sync_jobs WHERE tenant_id = $1 GROUP BY store_id, platform ORDER BY store_id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SyncBacklog {
                    store_id: get(r, "store_id")?,
                    platform: get(r, "platform")?,
                    pending: get::<Option<i64>>(r, "pending")?.unwrap_or(0),
                    oldest_pending_at: get(r, "oldest")?,
                    dead: get::<Option<i64>>(r, "dead")?.unwrap_or(0),
                })
            })
            .collect()
    }
}

impl Db {
    /// A BigCommerce order whose fetch failed: kept as a job and retried by the sync
    /// worker through the same breakers and schedule as fulfilments.
    /// Keep a BigCommerce delivery whose order could not be fetched: the fetch job and the
    /// archived delivery commit together, and a repeated delivery (same `key`) finds the
    /// job already there. Returns the job's id.
    pub async fn queue_fetch(
        &self,
        src: IntakeSource,
        platform_order_id: &str,
        key: &str,
        raw: RawDelivery,
    ) -> Result<SyncJobId> {
        let (p, k) = (platform_order_id.to_owned(), key.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let idem = format!("fetch:{}:{p}:{k}", src.store_id);
                sqlx::query(
                    "INSERT INTO sync_jobs (id, tenant_id, store_id, platform, order_id, platform_order_id, action, idempotency_key, \
                     state, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, '', $5, 'fetch_order', $6, 'pending', $7, $7, $7) \
                     ON CONFLICT (idempotency_key) DO NOTHING",
                )
                .bind(SyncJobId::generate().as_str())
                .bind(src.tenant_id.as_str())
                .bind(src.store_id.as_str())
                .bind(src.platform.as_str())
                .bind(&p)
                .bind(&idem)
                .bind(now)
                .execute(&mut *c)
                .await?;
                let row = sqlx::query("SELECT id FROM sync_jobs WHERE idempotency_key = $1").bind(&idem).fetch_one(&mut *c).await?;
                crate::intake::archive_in(c, &src, &raw, "queued").await?;
                Ok(SyncJobId(get(&row, "id")?))
            })
        })
        .await
    }
}

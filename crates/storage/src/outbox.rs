//! The transactional outbox (invariant 5): events are inserted by the same transaction as
//! the state change they describe; the relay reads them in `seq` order and marks them
//! published after the bus accepted them (at least once; consumers dedupe by event id).
//!
//! Ordering without a lock. Several transactions write the outbox at once (PostgreSQL has
//! several writer connections per node, and several nodes), so `seq` — taken when a row
//! is inserted — is not commit order: a row with a lower `seq` may still be in flight while
//! a higher one is visible. On PostgreSQL every row records its writing transaction
//! (`txid`, defaulted to `pg_current_xact_id()`), and [`Db::unpublished_events`] returns
//! rows in `seq` order only up to the first one whose transaction is not older than every
//! transaction still in flight (`pg_snapshot_xmin` of the reading statement's snapshot).
//! The relay marks exactly the rows it published ([`Db::mark_published`]), so a row that
//! commits late is published late, never skipped. The wait is bounded
//! (`DbOptions::outbox_horizon_wait_ms`, 2 s by default): the horizon is the whole
//! PostgreSQL cluster's, and another application's long write transaction must not hold
//! the relay up for as long as it runs. Past the wait an event may go out ahead of an
//! earlier-sequenced one still in flight, which follows when it commits. What consumers get: every event at least
//! once; the events of one subject in commit order (a state change and its event are
//! written under the subject's row lock, so the second writer's rows take later `seq`s);
//! and when transaction A committed before B began, A's events before B's. SQLite has one
//! writer, so there `seq` order is commit order.

use crate::{bulk, from_ms, get, now_ms, Db, Dialect, Result, WriteConn};
use lastmile_core::{Event, EventId, EventKind, TenantId};

/// Mark exactly the events `seqs` published, inside the caller's transaction.
pub(crate) async fn mark_published_in(c: &mut WriteConn, seqs: &[i64]) -> Result<()> {
    let now = now_ms();
    for range in bulk::chunks(seqs.len()) {
        let sql = format!(
            "UPDATE outbox SET published_at = $1 WHERE published_at IS NULL AND seq IN ({})",
            bulk::list(1, range.len())
        );
        let mut q = sqlx::query(&sql).bind(now);
        for s in &seqs[range] {
            q = q.bind(*s);
        }
        q.execute(&mut *c).await?;
    }
    Ok(())
}

/// An event to insert, for [`insert_events_in`].
pub(crate) struct NewEvent<'a> {
    pub tenant: &'a TenantId,
    pub kind: EventKind,
    pub subject_id: &'a str,
    pub data: serde_json::Value,
}

/// Insert one event inside the caller's transaction.
pub async fn insert_event(
    c: &mut WriteConn,
    tenant: &TenantId,
    kind: EventKind,
    subject_id: &str,
    data: serde_json::Value,
) -> Result<()> {
    insert_events_in(c, &[NewEvent { tenant, kind, subject_id, data }]).await
}

/// Insert several events inside the caller's transaction, in order, one statement per
/// chunk of rows.
pub(crate) async fn insert_events_in(c: &mut WriteConn, events: &[NewEvent<'_>]) -> Result<()> {
    let now = now_ms();
    for range in bulk::chunks(events.len()) {
        let sql = format!(
            "INSERT INTO outbox (id, tenant_id, kind, subject_id, data, occurred_at) VALUES {}",
            bulk::values(range.len(), 6)
        );
        let mut q = sqlx::query(&sql);
        for e in &events[range] {
            q = q
                .bind(EventId::generate().as_str().to_owned())
                .bind(e.tenant.as_str())
                .bind(e.kind.as_str())
                .bind(e.subject_id)
                .bind(e.data.to_string())
                .bind(now);
        }
        q.execute(&mut *c).await?;
    }
    Ok(())
}

/// The extra outbox columns [`Db::horizon_cut`] reads (PostgreSQL; SQLite reads none of
/// them, but the `txid` column exists there too and the horizon is simply `seq`'s).
pub(crate) const HORIZON_COLS: &str = "txid, pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon";

/// The columns [`event_from_row`] reads.
pub(crate) const EVENT_COLS: &str = "seq, id, tenant_id, kind, subject_id, data, occurred_at";

pub(crate) fn event_from_row(r: &sqlx::any::AnyRow) -> Result<Event> {
    let kind: String = get(r, "kind")?;
    let data: String = get(r, "data")?;
    Ok(Event {
        id: EventId(get(r, "id")?),
        seq: get(r, "seq")?,
        tenant_id: TenantId(get(r, "tenant_id")?),
        kind: EventKind::parse(&kind).ok_or_else(|| crate::corrupt(format!("event kind {kind}")))?,
        subject_id: get(r, "subject_id")?,
        data: serde_json::from_str(&data).map_err(crate::corrupt)?,
        occurred_at: from_ms(get(r, "occurred_at")?),
    })
}

impl Db {
    /// The oldest unpublished events that may be published now, in `seq` order: on
    /// PostgreSQL the list stops before the first row whose transaction is not older than
    /// every transaction still in flight, unless that row has waited longer than
    /// `DbOptions::outbox_horizon_wait_ms` (see the module documentation). One query.
    pub async fn unpublished_events(&self, limit: i64) -> Result<Vec<Event>> {
        Ok(self.publishable(limit).await?.0)
    }

    /// What the relay reads: [`Db::unpublished_events`], but when the oldest row is held
    /// back by an older transaction still in flight, wait for it (re-reading every couple of
    /// milliseconds, at most until that row is overdue) rather than return nothing. The wait
    /// is the database's clock, not the caller's timers.
    pub async fn next_publishable_events(&self, limit: i64) -> Result<Vec<Event>> {
        loop {
            let (events, held) = self.publishable(limit).await?;
            if !events.is_empty() || !held {
                return Ok(events);
            }
            sqlx::query("SELECT pg_sleep(0.002)").execute(&self.pool).await?;
        }
    }

    /// The publishable prefix, and whether a row after it is held back by the horizon.
    async fn publishable(&self, limit: i64) -> Result<(Vec<Event>, bool)> {
        if self.dialect == Dialect::Sqlite {
            return Ok((self.pending_events(limit).await?, false));
        }
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLS}, {HORIZON_COLS} FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let cut = self.horizon_cut(&rows)?;
        let out = rows[..cut].iter().map(event_from_row).collect::<Result<_>>()?;
        Ok((out, cut < rows.len()))
    }

    /// How many of `rows` (in `seq` order, selected with [`HORIZON_COLS`]) may be handed out
    /// now: up to the first whose transaction is not older than every one in flight and has
    /// not waited past the horizon wait. Readers that page by `seq` use it too.
    pub(crate) fn horizon_cut(&self, rows: &[sqlx::any::AnyRow]) -> Result<usize> {
        if self.dialect == Dialect::Sqlite {
            return Ok(rows.len());
        }
        let overdue = now_ms() - self.horizon_wait_ms;
        for (i, r) in rows.iter().enumerate() {
            let (txid, horizon, at): (Option<i64>, i64, i64) =
                (get(r, "txid")?, get(r, "horizon")?, get(r, "occurred_at")?);
            if txid.is_some_and(|t| t >= horizon) && at > overdue {
                return Ok(i);
            }
        }
        Ok(rows.len())
    }

    /// Every unpublished event, in `seq` order, whether or not it may be published yet
    /// (audits, tools and tests; the relay reads [`Db::unpublished_events`]).
    pub async fn pending_events(&self, limit: i64) -> Result<Vec<Event>> {
        let rows =
            sqlx::query(&format!("SELECT {EVENT_COLS} FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1"))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Mark exactly these events published (what the relay handed to the bus).
    pub async fn mark_published(&self, seqs: Vec<i64>) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        // Only the relay updates published rows, by seq: it runs beside intake batches.
        self.write_shared(move |c| Box::pin(async move { mark_published_in(c, &seqs).await })).await
    }

    /// Mark every visible event up to and including `seq` as published. Only for a
    /// quiescent outbox (tests, tools): with writers in flight a row below `seq` may commit
    /// after this and be marked without having been published; the relay uses
    /// [`Db::mark_published`].
    pub async fn mark_published_through(&self, seq: i64) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE outbox SET published_at = $1 WHERE seq <= $2 AND published_at IS NULL")
                    .bind(now_ms())
                    .bind(seq)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// Events of a tenant after `seq`, oldest first (for audits and tests).
    pub async fn events_after(&self, tenant: &TenantId, seq: i64, limit: i64) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query(
            "SELECT seq, kind, subject_id FROM outbox WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((get(r, "seq")?, get(r, "kind")?, get(r, "subject_id")?))).collect()
    }

    pub fn is_postgres(&self) -> bool {
        self.dialect == Dialect::Postgres
    }
}

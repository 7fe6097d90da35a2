//! The transactional outbox (invariant 5): events are inserted by the same transaction as
//! the state change they describe; the relay reads them in `seq` order and marks them
//! published after the bus accepted them (at least once; consumers dedupe by event id).

use crate::{from_ms, get, now_ms, Db, Dialect, Result, WriteConn};
use lastmile_core::{Event, EventId, EventKind, TenantId};

/// Arbitrary constant naming the PostgreSQL advisory lock that serializes outbox writers,
/// so that `seq` order equals commit order even with several nodes writing.
pub(crate) const OUTBOX_LOCK_KEY: i64 = 0x6c61_7374_6d69;

/// Insert one event inside the caller's transaction.
pub async fn insert_event(
    c: &mut WriteConn,
    tenant: &TenantId,
    kind: EventKind,
    subject_id: &str,
    data: serde_json::Value,
) -> Result<()> {
    if c.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(OUTBOX_LOCK_KEY).execute(&mut *c).await?;
    }
    sqlx::query(
        "INSERT INTO outbox (id, tenant_id, kind, subject_id, data, occurred_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(EventId::generate().as_str())
    .bind(tenant.as_str())
    .bind(kind.as_str())
    .bind(subject_id)
    .bind(data.to_string())
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    Ok(())
}

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
    /// The oldest unpublished events, in commit order.
    pub async fn unpublished_events(&self, limit: i64) -> Result<Vec<Event>> {
        let rows =
            sqlx::query(&format!("SELECT {EVENT_COLS} FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1"))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Mark every event up to and including `seq` as published.
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

//! What the web apps read beyond single resources: the tenant event stream (the outbox,
//! whose `seq` only grows), customers' choices on the tracking page, the operating
//! numbers, and the orders a driver holds now.

use crate::orders::{order_from_row, ORDER_COLS};
use crate::{from_ms, get, now_ms, Db, Result};
use lastmile_core::{DriverId, Order, OrderId, TenantId};

/// One outbox row as the tenant event stream shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedEvent {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub subject_id: String,
    pub data: serde_json::Value,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, serde::Serialize)]
pub struct CustomerChoice {
    pub order_id: OrderId,
    pub choice: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Raw figures over a window; the caller computes percentiles.
#[derive(Debug, Clone, Default)]
pub struct OpsFigures {
    pub orders_created: i64,
    /// Milliseconds from an order's readiness (or creation, if later) to its assignment.
    pub assign_waits_ms: Vec<i64>,
    pub delivered: i64,
    pub delivered_on_time: i64,
}

impl Db {
    /// The orders a driver holds now (assigned or picked up), oldest first.
    pub async fn driver_active_orders(&self, tenant: &TenantId, driver: &DriverId) -> Result<Vec<Order>> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLS} FROM orders WHERE tenant_id = $1 AND driver_id = $2 AND status IN ('assigned', 'picked_up') \
             ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .bind(driver.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(order_from_row).collect()
    }

    /// The tenant's events after `seq`, oldest first. On PostgreSQL the list stops before an
    /// event whose transaction is not older than every one still in flight (the relay's
    /// horizon, see the outbox module), so a stream resumed from the last `seq` it saw does
    /// not step over an earlier-sequenced event that commits a moment later — unless that
    /// event's transaction is the newer of the two (it took its transaction id after the
    /// other, but its `seq` before), or the horizon wait ran out; consumers that must see
    /// every event read the bus, which the relay feeds without gaps.
    pub async fn tenant_events_after(&self, tenant: &TenantId, seq: i64, limit: i64) -> Result<Vec<FeedEvent>> {
        let extra = if self.dialect == crate::Dialect::Postgres {
            format!(", {}", crate::outbox::HORIZON_COLS)
        } else {
            String::new()
        };
        let rows = sqlx::query(&format!(
            "SELECT seq, id, kind, subject_id, data, occurred_at{extra} FROM outbox WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        ))
        .bind(tenant.as_str())
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let cut = self.horizon_cut(&rows)?;
        rows[..cut]
            .iter()
            .map(|r| {
                let data: String = get(r, "data")?;
                Ok(FeedEvent {
                    seq: get(r, "seq")?,
                    id: get(r, "id")?,
                    kind: get(r, "kind")?,
                    subject_id: get(r, "subject_id")?,
                    data: serde_json::from_str(&data).map_err(crate::corrupt)?,
                    occurred_at: from_ms(get(r, "occurred_at")?),
                })
            })
            .collect()
    }

    /// The newest event seq of the tenant (0 when none): where a fresh stream starts.
    pub async fn tenant_last_event_seq(&self, tenant: &TenantId) -> Result<i64> {
        let row = sqlx::query("SELECT MAX(seq) AS seq FROM outbox WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(get::<Option<i64>>(&row, "seq")?.unwrap_or(0))
    }

    pub async fn record_customer_choice(&self, tenant: &TenantId, order: &OrderId, choice: &str) -> Result<()> {
        let (t, o, ch) = (tenant.clone(), order.clone(), choice.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO customer_choices (id, tenant_id, order_id, choice, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(format!("cho_{}", uuid::Uuid::now_v7().simple()))
                .bind(t.as_str())
                .bind(o.as_str())
                .bind(&ch)
                .bind(now_ms())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// The latest choice a customer made for an order, if any.
    pub async fn latest_customer_choice(&self, tenant: &TenantId, order: &OrderId) -> Result<Option<CustomerChoice>> {
        let row = sqlx::query(
            "SELECT order_id, choice, created_at FROM customer_choices WHERE tenant_id = $1 AND order_id = $2 \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| choice_from_row(&r)).transpose()
    }

    /// Customers' choices since `since`, newest first.
    pub async fn customer_choices(&self, tenant: &TenantId, since: i64, limit: i64) -> Result<Vec<CustomerChoice>> {
        let rows = sqlx::query(
            "SELECT order_id, choice, created_at FROM customer_choices WHERE tenant_id = $1 AND created_at >= $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(choice_from_row).collect()
    }

    /// Figures for orders of the tenant since `since`. An order is on time when delivered
    /// within `on_time_ms` of when it was ready.
    pub async fn ops_figures(&self, tenant: &TenantId, since: i64, on_time_ms: i64) -> Result<OpsFigures> {
        let created = sqlx::query("SELECT COUNT(*) AS n FROM orders WHERE tenant_id = $1 AND created_at >= $2")
            .bind(tenant.as_str())
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        let waits = sqlx::query(
            "SELECT a.created_at AS assigned_at, o.created_at AS created_at, o.ready_at AS ready_at FROM assignments a \
             JOIN orders o ON o.id = a.order_id WHERE a.tenant_id = $1 AND a.created_at >= $2 ORDER BY a.created_at DESC LIMIT 20000",
        )
        .bind(tenant.as_str())
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let delivered = sqlx::query(
            "SELECT COUNT(*) AS n, SUM(CASE WHEN updated_at - ready_at <= $3 THEN 1 ELSE 0 END) AS on_time FROM orders \
             WHERE tenant_id = $1 AND status = 'delivered' AND updated_at >= $2",
        )
        .bind(tenant.as_str())
        .bind(since)
        .bind(on_time_ms)
        .fetch_one(&self.pool)
        .await?;
        let mut assign_waits_ms = Vec::with_capacity(waits.len());
        for r in &waits {
            let start = get::<i64>(r, "ready_at")?.max(get(r, "created_at")?);
            assign_waits_ms.push((get::<i64>(r, "assigned_at")? - start).max(0));
        }
        Ok(OpsFigures {
            orders_created: get(&created, "n")?,
            assign_waits_ms,
            delivered: get(&delivered, "n")?,
            delivered_on_time: get::<Option<i64>>(&delivered, "on_time")?.unwrap_or(0),
        })
    }
}

fn choice_from_row(r: &sqlx::any::AnyRow) -> Result<CustomerChoice> {
    Ok(CustomerChoice {
        order_id: OrderId(get(r, "order_id")?),
        choice: get(r, "choice")?,
        created_at: from_ms(get(r, "created_at")?),
    })
}

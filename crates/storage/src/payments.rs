//! Payments of catalog orders, as the server's payment provider reported them: one row per
//! attempt, its state moving declined | authorized → captured | voided, captured → refunded.

use crate::{get, now_ms, Db, Result, StorageError};
use lastmile_core::{OrderId, StoreId, TenantId};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Payment {
    pub id: String,
    pub order_id: Option<String>,
    pub provider: String,
    pub provider_ref: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub state: String,
    pub decline_code: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A payment attempt to record.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub store_id: StoreId,
    pub provider: String,
    pub provider_ref: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub state: &'static str,
    pub decline_code: Option<String>,
}

const COLS: &str =
    "id, order_id, provider, provider_ref, amount_minor, currency, state, decline_code, created_at, updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Payment> {
    Ok(Payment {
        id: get(r, "id")?,
        order_id: get(r, "order_id")?,
        provider: get(r, "provider")?,
        provider_ref: get(r, "provider_ref")?,
        amount_minor: get(r, "amount_minor")?,
        currency: get(r, "currency")?,
        state: get(r, "state")?,
        decline_code: get(r, "decline_code")?,
        created_at: get(r, "created_at")?,
        updated_at: get(r, "updated_at")?,
    })
}

impl Db {
    /// Record a payment attempt; returns its id.
    pub async fn record_payment(&self, tenant: &TenantId, p: NewPayment) -> Result<String> {
        let id = format!("pay_{}", uuid::Uuid::now_v7().simple());
        let (t, i) = (tenant.clone(), id.clone());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query(
                    "INSERT INTO payments (id, tenant_id, store_id, provider, provider_ref, amount_minor, currency, state, \
                     decline_code, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
                )
                .bind(&i)
                .bind(t.as_str())
                .bind(p.store_id.as_str())
                .bind(&p.provider)
                .bind(&p.provider_ref)
                .bind(p.amount_minor)
                .bind(&p.currency)
                .bind(p.state)
                .bind(&p.decline_code)
                .bind(now)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await?;
        Ok(id)
    }

    /// Move a payment from `from` to `to`, naming its order (once placed). `NotFound` when
    /// it is not in `from`.
    pub async fn set_payment_state(
        &self,
        tenant: &TenantId,
        id: &str,
        from: &'static str,
        to: &'static str,
        order: Option<&OrderId>,
    ) -> Result<()> {
        let (t, i, o) = (tenant.clone(), id.to_owned(), order.map(|o| o.0.clone()));
        let changed = self
            .write(move |c| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE payments SET state = $1, order_id = COALESCE($2, order_id), updated_at = $3 \
                         WHERE tenant_id = $4 AND id = $5 AND state = $6",
                    )
                    .bind(to)
                    .bind(&o)
                    .bind(now_ms())
                    .bind(t.as_str())
                    .bind(&i)
                    .bind(from)
                    .execute(&mut *c)
                    .await?;
                    Ok(done.rows_affected())
                })
            })
            .await?;
        if changed == 0 {
            return Err(StorageError::NotFound);
        }
        Ok(())
    }

    /// The payments of an order, oldest first.
    pub async fn payments_for_order(&self, tenant: &TenantId, order: &OrderId) -> Result<Vec<Payment>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM payments WHERE tenant_id = $1 AND order_id = $2 ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Declined attempts and every other payment of a store, newest first (for ops and tests).
    pub async fn payments_for_store(&self, tenant: &TenantId, store: &StoreId, limit: i64) -> Result<Vec<Payment>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM payments WHERE tenant_id = $1 AND store_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(tenant.as_str())
        .bind(store.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }
}

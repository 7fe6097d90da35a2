//! Proof-of-delivery photos, kept in the database beside the order they prove.

use crate::{get, now_ms, Db, Result, StorageError};
use lastmile_core::{DriverId, OrderId, TenantId};

#[derive(Debug, Clone)]
pub struct Photo {
    pub id: String,
    pub order_id: OrderId,
    pub content_type: String,
    pub bytes: Vec<u8>,
    pub created_at: i64,
}

impl Db {
    /// Store a photo for an order the driver holds now; `NotFound` otherwise.
    pub async fn save_delivery_photo(
        &self,
        tenant: &TenantId,
        driver: &DriverId,
        order: &OrderId,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String> {
        let id = format!("pho_{}", uuid::Uuid::now_v7().simple());
        let (t, d, o, ct, pid) = (tenant.clone(), driver.clone(), order.clone(), content_type.to_owned(), id.clone());
        self.write(move |c| {
            Box::pin(async move {
                let held = sqlx::query(
                    "SELECT id FROM orders WHERE tenant_id = $1 AND id = $2 AND driver_id = $3 AND status IN ('assigned', 'picked_up')",
                )
                .bind(t.as_str())
                .bind(o.as_str())
                .bind(d.as_str())
                .fetch_optional(&mut *c)
                .await?;
                if held.is_none() {
                    return Err(StorageError::NotFound);
                }
                sqlx::query(
                    "INSERT INTO delivery_photos (id, tenant_id, order_id, driver_id, content_type, bytes, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&pid)
                .bind(t.as_str())
                .bind(o.as_str())
                .bind(d.as_str())
                .bind(&ct)
                .bind(bytes)
                .bind(now_ms())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await?;
        Ok(id)
    }

    pub async fn delivery_photo(&self, tenant: &TenantId, id: &str) -> Result<Photo> {
        let row = sqlx::query(
            "SELECT id, order_id, content_type, bytes, created_at FROM delivery_photos WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound)?;
        Ok(Photo {
            id: get(&row, "id")?,
            order_id: OrderId(get(&row, "order_id")?),
            content_type: get(&row, "content_type")?,
            bytes: get(&row, "bytes")?,
            created_at: get(&row, "created_at")?,
        })
    }

    /// The photos kept for an order, oldest first: (id, content type, created_at).
    pub async fn order_photos(&self, tenant: &TenantId, order: &OrderId) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT id, content_type, created_at FROM delivery_photos WHERE tenant_id = $1 AND order_id = $2 ORDER BY created_at, id",
        )
        .bind(tenant.as_str())
        .bind(order.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((get(r, "id")?, get(r, "content_type")?, get(r, "created_at")?))).collect()
    }
}

//! Drivers, their device tokens (hashed), status, and batched location history.

use crate::{get, now_ms, outbox::insert_event, Db, Result, StorageError, WriteConn};
use lastmile_core::{DriverId, EventKind, TenantId};
use sqlx::any::AnyRow;

#[derive(Debug, Clone, PartialEq)]
pub struct DriverRecord {
    pub id: DriverId,
    pub tenant_id: TenantId,
    pub name: String,
    pub phone: String,
    pub vehicle: String,
    pub capacity: i64,
    pub active_count: i64,
    pub status: String,
    pub last_lat: Option<f64>,
    pub last_lng: Option<f64>,
    pub last_seen_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct LocationSample {
    pub driver_id: DriverId,
    pub tenant_id: TenantId,
    pub order_id: Option<String>,
    pub lat: f64,
    pub lng: f64,
    pub recorded_at: i64,
}

const COLS: &str =
    "id, tenant_id, name, phone, vehicle, capacity, active_count, status, last_lat, last_lng, last_seen_at, created_at";

fn driver_from_row(row: &AnyRow) -> Result<DriverRecord> {
    Ok(DriverRecord {
        id: DriverId(get(row, "id")?),
        tenant_id: TenantId(get(row, "tenant_id")?),
        name: get(row, "name")?,
        phone: get(row, "phone")?,
        vehicle: get(row, "vehicle")?,
        capacity: get(row, "capacity")?,
        active_count: get(row, "active_count")?,
        status: get(row, "status")?,
        last_lat: get(row, "last_lat")?,
        last_lng: get(row, "last_lng")?,
        last_seen_at: get(row, "last_seen_at")?,
        created_at: get(row, "created_at")?,
    })
}

impl Db {
    pub async fn create_driver(
        &self,
        tenant: &TenantId,
        name: &str,
        phone: &str,
        vehicle: &str,
        capacity: i64,
        token_hash: &str,
    ) -> Result<DriverRecord> {
        let now = now_ms();
        let d = DriverRecord {
            id: DriverId::generate(),
            tenant_id: tenant.clone(),
            name: name.to_owned(),
            phone: phone.to_owned(),
            vehicle: vehicle.to_owned(),
            capacity,
            active_count: 0,
            status: "offline".into(),
            last_lat: None,
            last_lng: None,
            last_seen_at: None,
            created_at: now,
        };
        self.audit_target(d.id.as_str());
        let (r, token_hash) = (d.clone(), token_hash.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO drivers (id, tenant_id, name, phone, vehicle, capacity, token_hash, status, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'offline', $8, $8)",
                )
                .bind(r.id.as_str())
                .bind(r.tenant_id.as_str())
                .bind(&r.name)
                .bind(&r.phone)
                .bind(&r.vehicle)
                .bind(r.capacity)
                .bind(&token_hash)
                .bind(now)
                .execute(&mut *c)
                .await
                .map_err(StorageError::from_db)?;
                Ok(())
            })
        })
        .await?;
        Ok(d)
    }

    /// The tenant's drivers, read inside the tenant's row-security scope.
    pub async fn list_drivers(&self, tenant: &TenantId) -> Result<Vec<DriverRecord>> {
        let sql = format!("SELECT {COLS} FROM drivers WHERE tenant_id = $1 AND revoked_at IS NULL ORDER BY id");
        let rows = self.tenant_rows(tenant, sql, vec![]).await?;
        rows.iter().map(driver_from_row).collect()
    }

    /// Every unrevoked driver of every tenant: the dispatcher rebuilds its index from these.
    pub async fn all_drivers(&self) -> Result<Vec<DriverRecord>> {
        let rows =
            sqlx::query(&format!("SELECT {COLS} FROM drivers WHERE revoked_at IS NULL")).fetch_all(&self.pool).await?;
        rows.iter().map(driver_from_row).collect()
    }

    /// One of the tenant's drivers, read inside the tenant's row-security scope.
    pub async fn get_driver(&self, tenant: &TenantId, id: &DriverId) -> Result<DriverRecord> {
        let sql = format!("SELECT {COLS} FROM drivers WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL");
        let rows = self.tenant_rows(tenant, sql, vec![id.0.clone()]).await?;
        driver_from_row(rows.first().ok_or(StorageError::NotFound)?)
    }

    pub async fn driver_for_token(&self, token_hash: &str) -> Result<DriverRecord> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM drivers WHERE token_hash = $1 AND revoked_at IS NULL"))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound)?;
        driver_from_row(&row)
    }

    pub async fn set_driver_status(&self, tenant: &TenantId, id: &DriverId, status: &str) -> Result<()> {
        let (t, i, s) = (tenant.clone(), id.clone(), status.to_owned());
        self.write(move |c| Box::pin(async move { set_driver_status_in(c, &t, &i, &s).await })).await
    }

    /// Persist the newest known positions (the live index holds the truth between flushes)
    /// and append history rows, in one group commit.
    pub async fn record_locations(&self, latest: Vec<LocationSample>, history: Vec<LocationSample>) -> Result<()> {
        if latest.is_empty() && history.is_empty() {
            return Ok(());
        }
        self.write(move |c| {
            Box::pin(async move {
                for s in &latest {
                    sqlx::query("UPDATE drivers SET last_lat = $1, last_lng = $2, last_seen_at = $3 WHERE id = $4 AND tenant_id = $5")
                        .bind(s.lat)
                        .bind(s.lng)
                        .bind(s.recorded_at)
                        .bind(s.driver_id.as_str())
                        .bind(s.tenant_id.as_str())
                        .execute(&mut *c)
                        .await?;
                }
                for chunk in history.chunks(100) {
                    let mut sql = String::from(
                        "INSERT INTO location_history (driver_id, tenant_id, order_id, lat, lng, recorded_at) VALUES ",
                    );
                    for i in 0..chunk.len() {
                        let b = i * 6;
                        if i > 0 {
                            sql.push(',');
                        }
                        sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6));
                    }
                    let mut q = sqlx::query(&sql);
                    for s in chunk {
                        q = q
                            .bind(s.driver_id.as_str())
                            .bind(s.tenant_id.as_str())
                            .bind(s.order_id.clone())
                            .bind(s.lat)
                            .bind(s.lng)
                            .bind(s.recorded_at);
                    }
                    q.execute(&mut *c).await?;
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn location_history(&self, tenant: &TenantId, driver: &DriverId) -> Result<Vec<(f64, f64, i64)>> {
        let rows = sqlx::query(
            "SELECT lat, lng, recorded_at FROM location_history WHERE tenant_id = $1 AND driver_id = $2 ORDER BY recorded_at",
        )
        .bind(tenant.as_str())
        .bind(driver.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((get(r, "lat")?, get(r, "lng")?, get(r, "recorded_at")?))).collect()
    }
}

pub(crate) async fn set_driver_status_in(c: &mut WriteConn, t: &TenantId, i: &DriverId, s: &str) -> Result<()> {
    let done = sqlx::query(
        "UPDATE drivers SET status = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4 AND revoked_at IS NULL",
    )
    .bind(s)
    .bind(now_ms())
    .bind(t.as_str())
    .bind(i.as_str())
    .execute(&mut *c)
    .await?;
    crate::touched(done)?;
    insert_event(c, t, EventKind::DriverStatusChanged, i.as_str(), serde_json::json!({"driver_id": i, "status": s}))
        .await
}

impl Db {
    /// Revoke a driver's device token (the driver disappears from dispatch). Their orders
    /// not yet picked up go back to matching and picked-up ones are flagged for ops, in the
    /// same transaction; a `driver_status_changed` event (`revoked`) tells every node to
    /// close the driver's connections.
    pub async fn revoke_driver(&self, tenant: &TenantId, id: &DriverId) -> Result<crate::Recovered> {
        let (t, i) = (tenant.clone(), id.clone());
        self.write(move |c| {
            Box::pin(async move {
                let done = sqlx::query("UPDATE drivers SET revoked_at = $1, status = 'offline' WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
                    .bind(now_ms())
                    .bind(t.as_str())
                    .bind(i.as_str())
                    .execute(&mut *c)
                    .await?;
                crate::touched(done)?;
                insert_event(c, &t, EventKind::DriverStatusChanged, i.as_str(), serde_json::json!({"driver_id": i, "status": "revoked"}))
                    .await?;
                crate::recovery::abandon_in(c, &t, &i, crate::Abandon::Revoked).await
            })
        })
        .await
    }
}

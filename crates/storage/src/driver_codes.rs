//! One-time sign-in codes for the driver app. A code is stored hashed, works once and
//! briefly; redeeming it gives the driver a new device token (its hash replaces the old
//! one in the same transaction, so the previous device is signed out).

use crate::{get, now_ms, Db, Result, StorageError};
use lastmile_core::{DriverId, TenantId};

impl Db {
    /// Store a new code for an unrevoked driver of the tenant; earlier unused codes lapse.
    pub async fn create_driver_login_code(
        &self,
        tenant: &TenantId,
        driver: &DriverId,
        code_hash: &str,
        expires_at: i64,
    ) -> Result<()> {
        let (t, d, h) = (tenant.clone(), driver.clone(), code_hash.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let known = sqlx::query("SELECT id FROM drivers WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
                    .bind(t.as_str())
                    .bind(d.as_str())
                    .fetch_optional(&mut *c)
                    .await?;
                if known.is_none() {
                    return Err(StorageError::NotFound);
                }
                let now = now_ms();
                sqlx::query("UPDATE driver_login_codes SET used_at = $1 WHERE driver_id = $2 AND used_at IS NULL")
                    .bind(now)
                    .bind(d.as_str())
                    .execute(&mut *c)
                    .await?;
                sqlx::query(
                    "INSERT INTO driver_login_codes (code_hash, tenant_id, driver_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&h)
                .bind(t.as_str())
                .bind(d.as_str())
                .bind(now)
                .bind(expires_at)
                .execute(&mut *c)
                .await
                .map_err(StorageError::from_db)?;
                Ok(())
            })
        })
        .await
    }

    /// Use a code once: it must be unused, unexpired and its driver unrevoked. The driver's
    /// device token becomes `new_token_hash`. Returns (tenant, driver); `NotFound` otherwise.
    pub async fn redeem_driver_login_code(
        &self,
        code_hash: &str,
        new_token_hash: &str,
        now: i64,
    ) -> Result<(TenantId, DriverId)> {
        let (h, token) = (code_hash.to_owned(), new_token_hash.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                // The conditional UPDATE is the single-use guard: two racing redeems cannot both hit it.
                let done = sqlx::query(
                    "UPDATE driver_login_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $3",
                )
                .bind(now)
                .bind(&h)
                .bind(now)
                .execute(&mut *c)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StorageError::NotFound);
                }
                let row = sqlx::query("SELECT tenant_id, driver_id FROM driver_login_codes WHERE code_hash = $1")
                    .bind(&h)
                    .fetch_one(&mut *c)
                    .await?;
                let (tenant, driver): (String, String) = (get(&row, "tenant_id")?, get(&row, "driver_id")?);
                let done = sqlx::query(
                    "UPDATE drivers SET token_hash = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4 AND revoked_at IS NULL",
                )
                .bind(&token)
                .bind(now)
                .bind(&tenant)
                .bind(&driver)
                .execute(&mut *c)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StorageError::NotFound);
                }
                Ok((TenantId(tenant), DriverId(driver)))
            })
        })
        .await
    }
}

//! Stores: where orders come from and where pickups happen. Secrets arrive here already
//! encrypted (the server owns the key); storage only keeps the bytes.

use crate::{get, now_ms, Db, Result, StorageError};
use lastmile_core::{Platform, StoreId, TenantId};
use sqlx::any::AnyRow;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// How long a change made to the stores table by another node (or process) may go
/// unnoticed by this one's store caches: at most this long after it commits, the next
/// [`Db::stores_generation`] call reads the table's signature, sees it moved and
/// invalidates them. Changes made through this process's own `Db` invalidate at once.
pub const STORE_CHANGE_BOUND_MS: i64 = 1_000;

/// What caches of store records (the webhook path keeps each store's decrypted secret in
/// memory) need to know when they may be out of date: a generation that moves whenever
/// a store may have changed. An entry is valid only while the generation it was read
/// under is still the current one; read the generation *before* reading the store.
#[derive(Default)]
pub(crate) struct StoreVersions {
    generation: AtomicU64,
    /// When the signature was last read (ms), so most calls skip the check entirely.
    checked_at: AtomicI64,
    /// The stores table's signature as last read; one check at a time.
    signature: tokio::sync::Mutex<Option<(i64, i64, i64)>>,
}

impl StoreVersions {
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone)]
pub struct StoreRecord {
    pub id: StoreId,
    pub tenant_id: TenantId,
    pub name: String,
    pub platform: Platform,
    pub platform_store_id: String,
    pub webhook_secret_enc: Vec<u8>,
    pub api_base_url: Option<String>,
    pub api_credentials_enc: Option<Vec<u8>>,
    pub pickup_lat: f64,
    pub pickup_lng: f64,
    pub pickup_address: String,
    pub tier: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct StorePatch {
    pub name: Option<String>,
    pub platform_store_id: Option<String>,
    pub webhook_secret_enc: Option<Vec<u8>>,
    pub api_base_url: Option<String>,
    pub api_credentials_enc: Option<Vec<u8>>,
    pub pickup: Option<(f64, f64, String)>,
    pub tier: Option<String>,
}

const COLS: &str = "id, tenant_id, name, platform, platform_store_id, webhook_secret_enc, api_base_url, \
    api_credentials_enc, pickup_lat, pickup_lng, pickup_address, tier, created_at, updated_at";

fn store_from_row(row: &AnyRow) -> Result<StoreRecord> {
    let platform: String = get(row, "platform")?;
    Ok(StoreRecord {
        id: StoreId(get(row, "id")?),
        tenant_id: TenantId(get(row, "tenant_id")?),
        name: get(row, "name")?,
        platform: platform.parse().map_err(crate::corrupt)?,
        platform_store_id: get(row, "platform_store_id")?,
        webhook_secret_enc: get(row, "webhook_secret_enc")?,
        api_base_url: get(row, "api_base_url")?,
        api_credentials_enc: get(row, "api_credentials_enc")?,
        pickup_lat: get(row, "pickup_lat")?,
        pickup_lng: get(row, "pickup_lng")?,
        pickup_address: get(row, "pickup_address")?,
        tier: get(row, "tier")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// A platform shop (a Shopify domain, a WooCommerce site, a BigCommerce store hash)
/// belongs to one live store of one tenant: its webhooks are signed for one owner, and a
/// second registration would let another tenant claim (or probe) it. Native stores name
/// themselves freely per tenant. Checked inside the write, so two creations serialize.
async fn identity_free_in(c: &mut crate::WriteConn, s: &StoreRecord) -> Result<()> {
    if s.platform == Platform::Native {
        return Ok(());
    }
    let taken = sqlx::query(
        "SELECT id FROM stores WHERE platform = $1 AND platform_store_id = $2 AND deleted_at IS NULL AND id <> $3 LIMIT 1",
    )
    .bind(s.platform.as_str())
    .bind(&s.platform_store_id)
    .bind(s.id.as_str())
    .fetch_optional(&mut *c)
    .await?;
    match taken {
        Some(_) => Err(StorageError::Conflict("stores_platform_identity".into())),
        None => Ok(()),
    }
}

impl Db {
    /// The current generation of this process's view of the stores (see [`StoreVersions`]).
    /// A cached store read under an older generation must be read again. At most every
    /// [`STORE_CHANGE_BOUND_MS`] one call reads the stores table's signature (count, and
    /// sums of `updated_at` and `deleted_at`: every create, PATCH, secret change and delete
    /// moves it) and moves the generation if another node changed a store meanwhile.
    pub async fn stores_generation(&self) -> Result<u64> {
        let v = &self.store_versions;
        if now_ms() - v.checked_at.load(Ordering::Acquire) < STORE_CHANGE_BOUND_MS {
            return Ok(v.generation.load(Ordering::Acquire));
        }
        let mut last = v.signature.lock().await;
        // Another call may have checked while this one waited.
        let started = now_ms();
        if started - v.checked_at.load(Ordering::Acquire) >= STORE_CHANGE_BOUND_MS {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(updated_at % 1000003), 0) AS BIGINT) AS u, \
                 CAST(COALESCE(SUM(COALESCE(deleted_at, 0) % 1000003), 0) AS BIGINT) AS d FROM stores",
            )
            .fetch_one(&self.pool)
            .await?;
            let now = (get::<i64>(&row, "n")?, get::<i64>(&row, "u")?, get::<i64>(&row, "d")?);
            if *last != Some(now) {
                // The first reading moves it too: entries cached before it are unchecked.
                v.bump();
                *last = Some(now);
            }
            v.checked_at.store(started, Ordering::Release);
        }
        Ok(v.generation.load(Ordering::Acquire))
    }

    /// A store was (or may have been) changed through this process: invalidate at once.
    fn stores_changed(&self) {
        self.store_versions.bump();
    }

    #[tracing::instrument(skip_all, fields(tenant = %store.tenant_id))]
    pub async fn create_store(&self, store: StoreRecord) -> Result<StoreRecord> {
        let s = store.clone();
        let done = self
            .write(move |c| {
                Box::pin(async move {
                    identity_free_in(c, &s).await?;
                    sqlx::query(&format!(
                    "INSERT INTO stores ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ))
                    .bind(s.id.as_str())
                    .bind(s.tenant_id.as_str())
                    .bind(&s.name)
                    .bind(s.platform.as_str())
                    .bind(&s.platform_store_id)
                    .bind(&s.webhook_secret_enc)
                    .bind(&s.api_base_url)
                    .bind(&s.api_credentials_enc)
                    .bind(s.pickup_lat)
                    .bind(s.pickup_lng)
                    .bind(&s.pickup_address)
                    .bind(&s.tier)
                    .bind(s.created_at)
                    .bind(s.updated_at)
                    .execute(&mut *c)
                    .await
                    .map_err(StorageError::from_db)?;
                    Ok(())
                })
            })
            .await;
        self.stores_changed();
        done?;
        Ok(store)
    }

    /// One of the tenant's stores, read inside the tenant's row-security scope.
    pub async fn get_store(&self, tenant: &TenantId, id: &StoreId) -> Result<StoreRecord> {
        let sql = format!("SELECT {COLS} FROM stores WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL");
        let rows = self.tenant_rows(tenant, sql, vec![id.0.clone()]).await?;
        store_from_row(rows.first().ok_or(StorageError::NotFound)?)
    }

    /// A store by id alone, for webhook deliveries: the store's own signature secret is
    /// what authenticates them, so the tenant comes from the store.
    pub async fn get_store_for_webhook(&self, id: &StoreId) -> Result<StoreRecord> {
        let row = sqlx::query(&format!("SELECT {COLS} FROM stores WHERE id = $1 AND deleted_at IS NULL"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound)?;
        store_from_row(&row)
    }

    /// The live store registered under a platform identity (one at most for webhook
    /// platforms, see `identity_free_in`; stores created before that rule may share one,
    /// so the caller still tries each one's secret).
    pub async fn find_stores_by_identity(&self, platform: Platform, identity: &str) -> Result<Vec<StoreRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM stores WHERE platform = $1 AND platform_store_id = $2 AND deleted_at IS NULL ORDER BY id"
        ))
        .bind(platform.as_str())
        .bind(identity)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(store_from_row).collect()
    }

    /// The tenant's stores, read inside the tenant's row-security scope.
    pub async fn list_stores(&self, tenant: &TenantId) -> Result<Vec<StoreRecord>> {
        let sql = format!("SELECT {COLS} FROM stores WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id");
        let rows = self.tenant_rows(tenant, sql, vec![]).await?;
        rows.iter().map(store_from_row).collect()
    }

    pub async fn patch_store(&self, tenant: &TenantId, id: &StoreId, patch: StorePatch) -> Result<StoreRecord> {
        let mut s = self.get_store(tenant, id).await?;
        if let Some(v) = patch.name {
            s.name = v;
        }
        if let Some(v) = patch.platform_store_id {
            s.platform_store_id = v;
        }
        if let Some(v) = patch.webhook_secret_enc {
            s.webhook_secret_enc = v;
        }
        if let Some(v) = patch.api_base_url {
            s.api_base_url = Some(v);
        }
        if let Some(v) = patch.api_credentials_enc {
            s.api_credentials_enc = Some(v);
        }
        if let Some((lat, lng, address)) = patch.pickup {
            (s.pickup_lat, s.pickup_lng, s.pickup_address) = (lat, lng, address);
        }
        if let Some(v) = patch.tier {
            s.tier = v;
        }
        s.updated_at = now_ms();
        let u = s.clone();
        let done = self
            .write(move |c| {
                Box::pin(async move {
                    identity_free_in(c, &u).await?;
                    let done = sqlx::query(
                    "UPDATE stores SET name = $1, platform_store_id = $2, webhook_secret_enc = $3, api_base_url = $4, \
                     api_credentials_enc = $5, pickup_lat = $6, pickup_lng = $7, pickup_address = $8, tier = $9, \
                     updated_at = $10 WHERE tenant_id = $11 AND id = $12 AND deleted_at IS NULL",
                )
                .bind(&u.name)
                .bind(&u.platform_store_id)
                .bind(&u.webhook_secret_enc)
                .bind(&u.api_base_url)
                .bind(&u.api_credentials_enc)
                .bind(u.pickup_lat)
                .bind(u.pickup_lng)
                .bind(&u.pickup_address)
                .bind(&u.tier)
                .bind(u.updated_at)
                .bind(u.tenant_id.as_str())
                .bind(u.id.as_str())
                .execute(&mut *c)
                .await
                .map_err(StorageError::from_db)?;
                    crate::touched(done)?;
                    Ok(())
                })
            })
            .await;
        // Whether it committed or not (an unconfirmed commit may have): forget cached copies.
        self.stores_changed();
        done?;
        Ok(s)
    }

    /// Soft delete: orders keep pointing at the store.
    pub async fn delete_store(&self, tenant: &TenantId, id: &StoreId) -> Result<()> {
        let (t, i) = (tenant.clone(), id.clone());
        let done = self
            .write(move |c| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE stores SET deleted_at = $1 WHERE tenant_id = $2 AND id = $3 AND deleted_at IS NULL",
                    )
                    .bind(now_ms())
                    .bind(t.as_str())
                    .bind(i.as_str())
                    .execute(&mut *c)
                    .await?;
                    crate::touched(done)?;
                    Ok(())
                })
            })
            .await;
        self.stores_changed();
        done
    }
}

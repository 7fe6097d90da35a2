//! Tenants and their credentials. Only hashes of credentials are stored; hashing is the
//! caller's job (the server owns the choice of hash).

use crate::{get, now_ms, Db, Result, StorageError};
use lastmile_core::{ApiClientId, TenantId};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct ApiClientRecord {
    pub id: ApiClientId,
    pub tenant_id: TenantId,
    pub name: String,
    pub secret_hash: String,
}

impl Db {
    /// Create a tenant with its first admin key (stored as `key_hash`).
    #[tracing::instrument(skip_all, fields(name = %name))]
    pub async fn create_tenant(&self, name: &str, key_id: &str, key_hash: &str) -> Result<Tenant> {
        let tenant = Tenant { id: TenantId::generate(), name: name.to_owned() };
        let (t, key_id, key_hash) = (tenant.clone(), key_id.to_owned(), key_hash.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(t.id.as_str())
                    .bind(&t.name)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("INSERT INTO admin_keys (id, tenant_id, key_hash, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&key_id)
                    .bind(t.id.as_str())
                    .bind(&key_hash)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await?;
        Ok(tenant)
    }

    /// The tenant an unrevoked admin key belongs to.
    pub async fn tenant_for_admin_key(&self, key_hash: &str) -> Result<(TenantId, String)> {
        let row = sqlx::query("SELECT tenant_id, id FROM admin_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok((TenantId(get(&row, "tenant_id")?), get(&row, "id")?))
    }

    pub async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        let row = sqlx::query("SELECT id, name FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound)?;
        Ok(Tenant { id: TenantId(row.try_get("id")?), name: row.try_get("name")? })
    }

    pub async fn create_api_client(&self, tenant: &TenantId, name: &str, secret_hash: &str) -> Result<ApiClientRecord> {
        let rec = ApiClientRecord {
            id: ApiClientId::generate(),
            tenant_id: tenant.clone(),
            name: name.to_owned(),
            secret_hash: secret_hash.to_owned(),
        };
        let r = rec.clone();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO api_clients (id, tenant_id, name, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(r.id.as_str())
                .bind(r.tenant_id.as_str())
                .bind(&r.name)
                .bind(&r.secret_hash)
                .bind(now_ms())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await?;
        Ok(rec)
    }

    /// An unrevoked API client by its public id (any tenant: the secret decides).
    pub async fn get_api_client(&self, id: &str) -> Result<ApiClientRecord> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, secret_hash FROM api_clients WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound)?;
        Ok(ApiClientRecord {
            id: ApiClientId(get(&row, "id")?),
            tenant_id: TenantId(get(&row, "tenant_id")?),
            name: get(&row, "name")?,
            secret_hash: get(&row, "secret_hash")?,
        })
    }
}

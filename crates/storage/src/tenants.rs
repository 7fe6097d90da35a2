//! Tenants and their credentials. Only hashes of credentials are stored; hashing is the
//! caller's job (the server owns the choice of hash).

use crate::{get, now_ms, Db, Dialect, Result, StorageError};
use lastmile_core::{ApiClientId, TenantId};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
}

/// An admin key as listed (never its hash).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminKey {
    pub id: String,
    pub tenant_id: TenantId,
    pub name: String,
    /// The key's first characters; None for keys issued before prefixes were kept.
    pub prefix: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A key to store: only its hash is kept.
#[derive(Debug, Clone)]
pub struct NewAdminKey {
    pub id: String,
    pub name: String,
    pub key_hash: String,
    pub prefix: Option<String>,
}

const ADMIN_KEY_COLS: &str = "id, tenant_id, name, prefix, created_at, last_used_at, revoked_at";

fn admin_key_from(row: &sqlx::any::AnyRow) -> Result<AdminKey> {
    Ok(AdminKey {
        id: get(row, "id")?,
        tenant_id: TenantId(get(row, "tenant_id")?),
        name: get(row, "name")?,
        prefix: get(row, "prefix")?,
        created_at: get(row, "created_at")?,
        last_used_at: get(row, "last_used_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

async fn insert_admin_key(c: &mut crate::WriteConn, tenant: &TenantId, k: &NewAdminKey, now: i64) -> Result<()> {
    let prefix = if k.prefix.is_some() { "$6" } else { "NULL" };
    let sql = format!(
        "INSERT INTO admin_keys (id, tenant_id, key_hash, created_at, name, prefix) VALUES ($1, $2, $3, $4, $5, {prefix})"
    );
    let mut q = sqlx::query(&sql).bind(&k.id).bind(tenant.as_str()).bind(&k.key_hash).bind(now).bind(&k.name);
    if let Some(p) = &k.prefix {
        q = q.bind(p);
    }
    q.execute(&mut *c).await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ApiClientRecord {
    pub id: ApiClientId,
    pub tenant_id: TenantId,
    pub name: String,
    pub secret_hash: String,
}

impl Db {
    /// Create a tenant with its first admin key (stored as `key_hash`), named `initial`.
    #[tracing::instrument(skip_all, fields(name = %name))]
    pub async fn create_tenant(&self, name: &str, key_id: &str, key_hash: &str) -> Result<Tenant> {
        self.create_tenant_with_prefix(name, key_id, key_hash, None).await
    }

    /// [`Db::create_tenant`], keeping the key's display prefix.
    pub async fn create_tenant_with_prefix(
        &self,
        name: &str,
        key_id: &str,
        key_hash: &str,
        prefix: Option<&str>,
    ) -> Result<Tenant> {
        let tenant = Tenant { id: TenantId::generate(), name: name.to_owned() };
        let (t, key_id, key_hash, prefix) =
            (tenant.clone(), key_id.to_owned(), key_hash.to_owned(), prefix.map(str::to_owned));
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(t.id.as_str())
                    .bind(&t.name)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                let key = NewAdminKey { id: key_id, name: "initial".into(), key_hash, prefix };
                insert_admin_key(c, &t.id, &key, now).await
            })
        })
        .await?;
        Ok(tenant)
    }

    /// The unrevoked admin key with this hash.
    pub async fn admin_key_by_hash(&self, key_hash: &str) -> Result<AdminKey> {
        let row =
            sqlx::query(&format!("SELECT {ADMIN_KEY_COLS} FROM admin_keys WHERE key_hash = $1 AND revoked_at IS NULL"))
                .bind(key_hash)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StorageError::NotFound)?;
        admin_key_from(&row)
    }

    /// A tenant's admin keys, live and revoked, oldest first.
    pub async fn list_admin_keys(&self, tenant: &TenantId) -> Result<Vec<AdminKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {ADMIN_KEY_COLS} FROM admin_keys WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(admin_key_from).collect()
    }

    /// Another admin key for a tenant.
    pub async fn create_admin_key(&self, tenant: &TenantId, key: NewAdminKey) -> Result<AdminKey> {
        let now = now_ms();
        self.audit_target(&key.id);
        let view = AdminKey {
            id: key.id.clone(),
            tenant_id: tenant.clone(),
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        let t = tenant.clone();
        self.write(move |c| Box::pin(async move { insert_admin_key(c, &t, &key, now).await })).await?;
        Ok(view)
    }

    /// Revoke one of a tenant's live keys. `NotFound` if it has no such live key;
    /// `Conflict("last_admin_key")` if it is the tenant's last live key.
    pub async fn revoke_admin_key(&self, tenant: &TenantId, id: &str) -> Result<()> {
        let (t, id, dialect) = (tenant.clone(), id.to_owned(), self.dialect);
        self.write(move |c| {
            Box::pin(async move {
                if dialect == Dialect::Postgres {
                    // Two nodes revoking two keys at once must not both see the other still live.
                    sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
                        .bind(t.as_str())
                        .execute(&mut *c)
                        .await?;
                }
                let live: Vec<String> =
                    sqlx::query("SELECT id FROM admin_keys WHERE tenant_id = $1 AND revoked_at IS NULL")
                        .bind(t.as_str())
                        .fetch_all(&mut *c)
                        .await?
                        .iter()
                        .map(|r| get(r, "id"))
                        .collect::<Result<_>>()?;
                if !live.contains(&id) {
                    return Err(StorageError::NotFound);
                }
                if live.len() == 1 {
                    return Err(StorageError::Conflict("last_admin_key".into()));
                }
                sqlx::query("UPDATE admin_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3")
                    .bind(now_ms())
                    .bind(t.as_str())
                    .bind(&id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// Note that a key was used (callers do this at most about once a minute per key).
    pub async fn touch_admin_key(&self, id: &str, at: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE admin_keys SET last_used_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(&id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
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
        let id = ApiClientId::generate();
        self.audit_target(id.as_str());
        let rec = ApiClientRecord {
            id,
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

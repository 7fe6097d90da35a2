//! Dispatch leases (cluster mode): one node at a time runs a tenant's matching. A lease is
//! a row naming its node and when it runs out; the holder renews it, another node may take
//! it only once it has run out, and a node that leaves gives its leases back.
//!
//! Times are unix ms from the nodes' clocks (kept in step by NTP; the lease's length must
//! dwarf their skew). Every change is one conditional statement, so two nodes racing for
//! a lease cannot both win it.

use crate::{get, Db, Result};
use lastmile_core::TenantId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchLease {
    pub tenant_id: TenantId,
    pub node_id: String,
    pub expires_at: i64,
}

impl Db {
    /// Every tenant's id (the leases to share out).
    pub async fn tenant_ids(&self) -> Result<Vec<TenantId>> {
        let rows = sqlx::query("SELECT id FROM tenants ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(|r| get(r, "id").map(TenantId)).collect()
    }

    /// Every lease row, live or run out.
    pub async fn dispatch_leases(&self) -> Result<Vec<DispatchLease>> {
        let rows = sqlx::query("SELECT tenant_id, node_id, expires_at FROM dispatch_leases ORDER BY tenant_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DispatchLease {
                    tenant_id: TenantId(get(r, "tenant_id")?),
                    node_id: get(r, "node_id")?,
                    expires_at: get(r, "expires_at")?,
                })
            })
            .collect()
    }

    /// Take `tenant`'s lease for `node` until `until`, if it is free, run out (before
    /// `now`) or already `node`'s. True when `node` holds it afterwards.
    pub async fn try_dispatch_lease(&self, tenant: &TenantId, node: &str, now: i64, until: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO dispatch_leases (tenant_id, node_id, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET node_id = excluded.node_id, expires_at = excluded.expires_at \
             WHERE dispatch_leases.node_id = excluded.node_id OR dispatch_leases.expires_at < $4",
        )
        .bind(tenant.as_str())
        .bind(node)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Extend every lease `node` still holds to `until`; returns those tenants. A lease
    /// another node took meanwhile is not `node`'s any more and is not touched.
    pub async fn renew_dispatch_leases(&self, node: &str, until: i64) -> Result<Vec<TenantId>> {
        let rows = sqlx::query("UPDATE dispatch_leases SET expires_at = $1 WHERE node_id = $2 RETURNING tenant_id")
            .bind(until)
            .bind(node)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| get(r, "tenant_id").map(TenantId)).collect()
    }

    /// Give `tenant`'s lease back (if `node` holds it), so another node can take it now.
    pub async fn release_dispatch_lease(&self, tenant: &TenantId, node: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM dispatch_leases WHERE tenant_id = $1 AND node_id = $2")
            .bind(tenant.as_str())
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

//! Operator commands that run outside the HTTP API (`lastmile admin ...`).

use crate::crypto::lookup_hash;
use lastmile_storage::Db;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct CreatedTenant {
    pub tenant_id: String,
    /// Shown once; only its hash is stored. Listed as the key named `initial`.
    pub admin_key: String,
    pub admin_key_id: String,
}

pub async fn create_tenant(db: &Db, name: &str) -> anyhow::Result<CreatedTenant> {
    let name = name.trim();
    if name.is_empty() {
        anyhow::bail!("the tenant name must not be empty");
    }
    let (key_id, key, prefix) = crate::routes::keys::new_admin_key();
    let tenant = db.create_tenant_with_prefix(name, &key_id, &lookup_hash(&key), Some(&prefix)).await?;
    Ok(CreatedTenant { tenant_id: tenant.id.0, admin_key: key, admin_key_id: key_id })
}

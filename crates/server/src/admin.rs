//! Operator commands that run outside the HTTP API (`lastmile admin ...`).

use crate::crypto::{lookup_hash, new_token};
use lastmile_storage::Db;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct CreatedTenant {
    pub tenant_id: String,
    /// Shown once; only its hash is stored.
    pub admin_key: String,
}

pub async fn create_tenant(db: &Db, name: &str) -> anyhow::Result<CreatedTenant> {
    let name = name.trim();
    if name.is_empty() {
        anyhow::bail!("the tenant name must not be empty");
    }
    let key = new_token("lm_admin");
    let key_id = format!("key_{}", uuid::Uuid::now_v7().simple());
    let tenant = db.create_tenant(name, &key_id, &lookup_hash(&key)).await?;
    Ok(CreatedTenant { tenant_id: tenant.id.0, admin_key: key })
}

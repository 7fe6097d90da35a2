//! The audit log: who did what to which resource, when and from where.
//!
//! An action that is a database write records its entry in the same transaction: the
//! handler takes an audited handle (`db.with_audit(entry)`) and performs the action through
//! it; the first write job that succeeds through that handle inserts the entry beside its
//! own changes, so the action and its record commit (or roll back) together. A failed write
//! consumes the entry and records nothing, as the action did not happen.

use crate::{get, now_ms, Db, Result, WriteConn};
use lastmile_core::TenantId;
use serde_json::Value;
use sqlx::Row;

/// One entry to record. `tenant_id` is None for operator-wide actions.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub tenant_id: Option<TenantId>,
    /// `admin_key`, `user` (a console user) or `operator` (the command line).
    pub actor_kind: String,
    pub actor_id: Option<String>,
    /// `store.create`, `admin_key.revoke`, ... (see docs/api.md).
    pub action: String,
    pub target_id: Option<String>,
    pub source_ip: Option<String>,
    pub details: Option<Value>,
}

/// An entry as read back, with the actor's name where it is still known.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: String,
    pub entry: AuditEntry,
    /// The admin key's name or the console user's email.
    pub actor_name: Option<String>,
    pub created_at: i64,
}

/// The slot an audited handle carries; taken by the first write through the handle.
pub(crate) type AuditSlot = std::sync::Arc<std::sync::Mutex<Option<AuditEntry>>>;

pub(crate) async fn insert(c: &mut WriteConn, e: &AuditEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, actor_kind, actor_id, action, target_id, source_ip, details, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(format!("aud_{}", uuid::Uuid::now_v7().simple()))
    .bind(e.tenant_id.as_ref().map(|t| t.as_str().to_owned()))
    .bind(&e.actor_kind)
    .bind(e.actor_id.as_deref())
    .bind(&e.action)
    .bind(e.target_id.as_deref())
    .bind(e.source_ip.as_deref())
    .bind(e.details.as_ref().map(Value::to_string))
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    Ok(())
}

impl Db {
    /// A handle whose next successful write also records `entry`, in the same transaction.
    pub fn with_audit(&self, entry: AuditEntry) -> Db {
        let mut db = self.clone();
        db.audit = Some(std::sync::Arc::new(std::sync::Mutex::new(Some(entry))));
        db
    }

    /// Name the target of the pending entry when the caller could not know it in advance
    /// (an id this crate generates); does nothing on an unaudited handle.
    pub(crate) fn audit_target(&self, id: &str) {
        if let Some(slot) = &self.audit {
            if let Some(e) = slot.lock().expect("audit slot").as_mut() {
                e.target_id.get_or_insert_with(|| id.to_owned());
            }
        }
    }

    pub(crate) fn take_audit(&self) -> Option<AuditEntry> {
        self.audit.as_ref().and_then(|slot| slot.lock().expect("audit slot").take())
    }

    /// Record the entry of an audited handle that no write has recorded yet (an action that
    /// wrote nothing through it); true if one was recorded.
    pub async fn flush_audit(&self) -> Result<bool> {
        match self.take_audit() {
            Some(e) => {
                self.record_audit(e).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Record one entry on its own (actions that are not a write of this database).
    pub async fn record_audit(&self, entry: AuditEntry) -> Result<()> {
        self.writer.submit(move |c| Box::pin(async move { insert(c, &entry).await })).await
    }

    /// A tenant's entries and the operator-wide ones, newest first; `before` is the id of
    /// the last entry of the previous page.
    pub async fn audit_log(&self, tenant: &TenantId, before: Option<&str>, limit: i64) -> Result<Vec<AuditRecord>> {
        // Two statements rather than `$2 IS NULL OR ...`: an untyped NULL bind is not
        // portable across the two drivers.
        let page = if before.is_some() { "AND a.id < $3 " } else { "" };
        let sql = format!(
            "SELECT a.id, a.tenant_id, a.actor_kind, a.actor_id, a.action, a.target_id, a.source_ip, a.details, \
             a.created_at, COALESCE(k.name, u.email) AS actor_name FROM audit_log a \
             LEFT JOIN admin_keys k ON a.actor_kind = 'admin_key' AND k.id = a.actor_id \
             LEFT JOIN users u ON a.actor_kind = 'user' AND u.id = a.actor_id \
             WHERE (a.tenant_id = $1 OR a.tenant_id IS NULL) {page}ORDER BY a.id DESC LIMIT $2"
        );
        let mut q = sqlx::query(&sql).bind(tenant.as_str()).bind(limit);
        if let Some(b) = before {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let details: Option<String> = get(r, "details")?;
                let tenant_id: Option<String> = get(r, "tenant_id")?;
                Ok(AuditRecord {
                    id: get(r, "id")?,
                    entry: AuditEntry {
                        tenant_id: tenant_id.map(TenantId),
                        actor_kind: get(r, "actor_kind")?,
                        actor_id: get(r, "actor_id")?,
                        action: get(r, "action")?,
                        target_id: get(r, "target_id")?,
                        source_ip: get(r, "source_ip")?,
                        details: details.and_then(|d| serde_json::from_str(&d).ok()),
                    },
                    actor_name: r.try_get("actor_name").ok().flatten(),
                    created_at: get(r, "created_at")?,
                })
            })
            .collect()
    }
}

//! The audit log of admin actions, as handlers record them: `audit::db(&state, &auth,
//! "store.create", Some(id))` gives a database handle whose next write records the entry
//! in the same transaction as the action (see `lastmile_storage::AuditEntry`).

use crate::auth::AdminAuth;
use crate::state::AppState;
use lastmile_storage::{AuditEntry, Db};

/// The entry for an action by `auth`; `target` None when storage names it (a new id).
pub fn entry(auth: &AdminAuth, action: &str, target: Option<&str>) -> AuditEntry {
    let kind = if auth.key_id.starts_with("usr_") { "user" } else { "admin_key" };
    AuditEntry {
        tenant_id: Some(auth.tenant_id.clone()),
        actor_kind: kind.into(),
        actor_id: Some(auth.key_id.clone()),
        action: action.into(),
        target_id: target.map(str::to_owned),
        source_ip: auth.source_ip.map(|ip| ip.to_string()),
        details: None,
    }
}

/// A handle whose next successful write records this action with it.
pub fn db(state: &AppState, auth: &AdminAuth, action: &str, target: Option<&str>) -> Db {
    state.db.with_audit(entry(auth, action, target))
}

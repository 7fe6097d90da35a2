//! Keys and the audit log (issue 14), against the real app on SQLite and PostgreSQL:
//! several named admin keys with revocation; API-token signing keys that rotate while old
//! tokens stay valid until they expire; the at-rest secret key rotated with every stored
//! secret re-sealed while the server keeps working; and an audit row for each admin action.

#[path = "api/helpers.rs"]
mod helpers;
// Shared with the sync tests; this binary uses part of it.
#[allow(dead_code)]
#[path = "sync/support.rs"]
mod support;

#[path = "keys/admin_keys.rs"]
mod admin_keys;
#[path = "keys/audit.rs"]
mod audit;
#[path = "keys/rotation.rs"]
mod rotation;

use helpers::TestApp;
use serde_json::Value;

/// `GET /v1/audit-log` entries (newest first) as `key`.
async fn audit_entries(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let (s, body) = app.get_json(&format!("/v1/audit-log{query}"), key).await;
    assert_eq!(s, 200, "{body}");
    body["entries"].as_array().expect("entries").clone()
}

/// The status of an admin-authenticated read.
async fn admin_status(app: &TestApp, key: &str) -> u16 {
    app.get_json("/v1/stores", key).await.0
}

fn api(app: &TestApp) -> support::Api<'_> {
    support::Api { http: &app.http, base: &app.base }
}

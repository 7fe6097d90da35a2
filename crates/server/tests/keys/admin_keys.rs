//! Several named admin keys per tenant; revocation at once; never the last live key.

use crate::helpers::{Backend, TestApp};
use crate::support::eventually;
use crate::{admin_status, audit_entries};
use serde_json::json;
use std::time::Duration;

async fn keys_list(app: &TestApp, key: &str) -> Vec<serde_json::Value> {
    let (s, body) = app.get_json("/v1/admin-keys", key).await;
    assert_eq!(s, 200, "{body}");
    body["admin_keys"].as_array().expect("admin_keys").clone()
}

async fn named_keys_work_until_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, initial) = app.tenant("keys").await;
    let listed = keys_list(&app, &initial).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "initial");
    assert_eq!(listed[0]["prefix"], initial[..13]);
    let initial_id = listed[0]["id"].as_str().unwrap().to_owned();

    let (s, created) = app.post_json("/v1/admin-keys", &initial, &json!({"name": "ci"})).await;
    assert_eq!(s, 201, "{created}");
    let ci = created["key"].as_str().unwrap().to_owned();
    let ci_id = created["id"].as_str().unwrap().to_owned();
    assert!(ci.starts_with("lm_admin_") && ci != initial);
    assert_eq!(created["prefix"], ci[..13]);
    assert_eq!((admin_status(&app, &initial).await, admin_status(&app, &ci).await), (200, 200));

    // Listed with names and prefixes, never the keys or their hashes.
    let listed = keys_list(&app, &ci).await;
    assert_eq!(listed.iter().map(|k| k["name"].as_str().unwrap()).collect::<Vec<_>>(), ["initial", "ci"]);
    let text = serde_json::to_string(&listed).unwrap();
    assert!(!text.contains(&ci) && !text.contains(&initial) && !text.contains("hash"), "{text}");
    // Use is recorded (off the request path, to the minute).
    eventually("last_used_at of the ci key", Duration::from_secs(10), || async {
        keys_list(&app, &ci).await.iter().find(|k| k["id"] == ci_id.as_str())?["last_used_at"].as_str().map(|_| ())
    })
    .await;

    for bad in [json!({"name": ""}), json!({"name": "x".repeat(101)}), json!({})] {
        let (s, body) = app.post_json("/v1/admin-keys", &ci, &bad).await;
        assert_eq!(s, 422, "{bad} -> {body}");
    }

    // Another tenant's admin cannot see or revoke this tenant's keys.
    let (_, stranger) = app.tenant("stranger").await;
    let del = |key: String, id: String| {
        let req = app.http.delete(app.url(&format!("/v1/admin-keys/{id}"))).bearer_auth(key);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    assert_eq!(del(stranger.clone(), initial_id.clone()).await.0, 404);
    assert_eq!(keys_list(&app, &stranger).await.len(), 1);

    // Revoked: refused at once, console sign-in included.
    assert_eq!(del(ci.clone(), initial_id.clone()).await.0, 204);
    assert_eq!(admin_status(&app, &initial).await, 401);
    assert_eq!(admin_status(&app, &ci).await, 200);
    let login = app.http.post(app.url("/v1/console/login")).json(&json!({"admin_key": initial})).send().await.unwrap();
    assert_eq!(login.status(), 401);
    assert_eq!(del(ci.clone(), initial_id.clone()).await.0, 404, "already revoked");
    let listed = keys_list(&app, &ci).await;
    assert!(listed.iter().find(|k| k["id"] == initial_id.as_str()).unwrap()["revoked_at"].is_string());

    // The last live key stays.
    let (s, body) = del(ci.clone(), ci_id.clone()).await;
    assert_eq!((s, body["error"]["code"].as_str()), (409, Some("last_admin_key")), "{body}");
    assert_eq!(admin_status(&app, &ci).await, 200);

    // Audit: the creation by `initial`, the revocation by `ci`; refusals left no row.
    let entries = audit_entries(&app, &ci, "").await;
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["admin_key.revoke", "admin_key.create"], "{entries:#?}");
    assert_eq!(entries[0]["target_id"], initial_id.as_str());
    assert_eq!(entries[0]["actor"], json!({"kind": "admin_key", "id": ci_id, "name": "ci"}));
    assert_eq!(entries[0]["source_ip"], "127.0.0.1");
    assert_eq!(entries[1]["target_id"], ci_id.as_str());
    assert_eq!(entries[1]["actor"]["name"], "initial");
    assert_eq!(entries[1]["details"]["name"], "ci");
    assert!(audit_entries(&app, &stranger, "").await.is_empty(), "tenant-scoped");
    app.stop().await;
}

crate::on_backends!(
    several_named_admin_keys_revocable_but_never_the_last => named_keys_work_until_revoked,
);

//! The webhook path's cache of stores and their decrypted secrets: a secret changed or a
//! store deleted through this node takes effect on the very next delivery; through another
//! node (here: a second storage handle on the same database), within the documented bound.

use crate::helpers::{Backend, TestApp};
use crate::on_backends;
use crate::{deliver, fixture, store, webhook_path, Delivery};
use lastmile_core::{StoreId, TenantId};
use lastmile_storage::{Db, DbOptions, StorePatch, STORE_CHANGE_BOUND_MS};
use serde_json::json;
use std::time::{Duration, Instant};

const SHOP: &str = "cache.myshopify.com";

fn signed(secret: &str) -> Delivery {
    Delivery::shopify(&fixture("shopify/orders_create.json"), secret, SHOP, "orders/create")
}

async fn patch(app: &TestApp, admin: &str, id: &str, body: serde_json::Value) -> u16 {
    let url = app.url(&format!("/v1/stores/{id}"));
    app.http.patch(url).bearer_auth(admin).json(&body).send().await.expect("PATCH").status().as_u16()
}

async fn secret_changes_and_deletes_here_apply_to_the_next_delivery(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("cache").await;
    let sid = store(&app, &admin, "shopify", SHOP, "shpss_old").await;
    let path = webhook_path("shopify", &sid);
    // Twice on each route, so the second of each comes from the cache.
    for route in [path.as_str(), "/v1/import-orders", path.as_str(), "/v1/import-orders"] {
        let (status, answer) = deliver(&app, route, &signed("shpss_old")).await;
        assert_eq!(status, 200, "{route} with the current secret: {answer}");
    }

    assert_eq!(patch(&app, &admin, &sid, json!({"webhook_secret": "shpss_new"})).await, 200);
    for route in [path.as_str(), "/v1/import-orders"] {
        let (status, answer) = deliver(&app, route, &signed("shpss_old")).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("invalid_signature")), "{route}, old secret");
        let (status, answer) = deliver(&app, route, &signed("shpss_new")).await;
        assert_eq!(status, 200, "{route}, new secret: {answer}");
    }

    let del = app.http.delete(app.url(&format!("/v1/stores/{sid}"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(del.status().as_u16(), 204);
    let (status, answer) = deliver(&app, &path, &signed("shpss_new")).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("store_not_found")), "deleted store: {answer}");
    let (status, answer) = deliver(&app, "/v1/import-orders", &signed("shpss_new")).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("invalid_signature")), "deleted store: {answer}");
    app.stop().await;
}

/// Send `d` until it is refused; every delivery sent later than `bound` after `changed`
/// must be refused, and one must be within a few seconds. Returns the refusal's answer.
async fn refused_within_bound(app: &TestApp, route: &str, d: impl Fn() -> Delivery, changed: Instant) -> (u16, String) {
    let bound = Duration::from_millis(STORE_CHANGE_BOUND_MS as u64);
    loop {
        let sent = Instant::now();
        let (status, answer) = deliver(app, route, &d()).await;
        if status != 200 {
            return (status, answer["error"]["code"].as_str().unwrap_or_default().to_owned());
        }
        assert!(
            sent.duration_since(changed) < bound,
            "{route}: accepted a delivery sent {:?} after the change",
            sent - changed
        );
        // Paces the probe only; correctness does not depend on it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn changes_through_another_node_apply_within_the_bound(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (tenant, admin) = app.tenant("cache").await;
    let sid = store(&app, &admin, "shopify", SHOP, "shpss_old").await;
    let path = webhook_path("shopify", &sid);
    for route in [path.as_str(), "/v1/import-orders"] {
        assert_eq!(deliver(&app, route, &signed("shpss_old")).await.0, 200, "{route}: cached now");
    }
    // The other node: its own pool and writer on the same database.
    let other = Db::connect(&app.cfg.database_url, DbOptions::default()).await.unwrap();
    let (tenant, id) = (TenantId(tenant), StoreId(sid.clone()));
    let new_secret = app.state.keys.encrypt(b"shpss_new");
    other
        .patch_store(&tenant, &id, StorePatch { webhook_secret_enc: Some(new_secret), ..Default::default() })
        .await
        .unwrap();
    let changed = Instant::now();
    for route in [path.as_str(), "/v1/import-orders"] {
        let refusal = refused_within_bound(&app, route, || signed("shpss_old"), changed).await;
        assert_eq!(refusal, (401, "invalid_signature".into()), "{route}");
        assert_eq!(deliver(&app, route, &signed("shpss_new")).await.0, 200, "{route}: the new secret");
    }

    other.delete_store(&tenant, &id).await.unwrap();
    let changed = Instant::now();
    let refusal = refused_within_bound(&app, &path, || signed("shpss_new"), changed).await;
    assert_eq!(refusal, (404, "store_not_found".into()));
    let refusal = refused_within_bound(&app, "/v1/import-orders", || signed("shpss_new"), changed).await;
    assert_eq!(refusal, (401, "invalid_signature".into()));
    other.close().await;
    app.stop().await;
}

on_backends!(
    a_secret_changed_or_store_deleted_here_applies_to_the_next_delivery =>
        secret_changes_and_deletes_here_apply_to_the_next_delivery,
    a_secret_changed_or_store_deleted_on_another_node_applies_within_the_bound =>
        changes_through_another_node_apply_within_the_bound,
);

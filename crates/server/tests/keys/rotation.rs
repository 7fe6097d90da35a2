//! Rotations without downtime: API-token signing keys (old kid valid until its tokens
//! expire, unknown kid refused) and the at-rest secret key (every stored secret re-sealed;
//! webhooks still verify and sync-back still authenticates).

use crate::helpers::{Backend, TestApp};
use crate::support::{delivered_writes, eventually, platform_order, standin_store, writes, Courier};
use crate::{api, audit_entries};
use base64::Engine;
use hmac::{Hmac, Mac};
use lastmile_core::{Platform, TenantId};
use lastmile_server::config::Secret;
use lastmile_server::keyring::{rotate_jwt_key, rotate_secret_key};
use lastmile_standins::StandIn;
use std::time::Duration;

async fn status_with(app: &TestApp, jwt: &str) -> u16 {
    app.get_json("/v1/orders", jwt).await.0
}

fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}

/// A token as the server would sign it, with any kid and key.
fn forge(kid: &str, key: &[u8], tenant: &str, ttl_s: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({"sub": "cli_forged", "tid": tenant, "iat": now, "exp": now + ttl_s,
                                    "iss": "lastmile", "aud": "lastmile-api"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(key)).unwrap()
}

async fn jwt_rotation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (tenant, admin) = app.tenant("jwt").await;
    let old = app.client_token(&admin).await;
    assert_eq!(status_with(&app, &old).await, 200);
    // Tokens issued before stored signing keys (the key derived from the secret key) keep
    // their kid: the first stored key is that one.
    let master = lastmile_server::crypto::load_or_create_key(None, &app.cfg.key_file()).unwrap();
    assert_eq!(kid_of(&old), lastmile_server::crypto::derived_jwt_key(&master).0);

    // Rotated from the command line (its own keys, the same database): the running server
    // picks the new key up without a restart.
    let cli_keys = lastmile_server::load_keys(&app.cfg).unwrap();
    let new_kid = rotate_jwt_key(&app.state.db, &cli_keys, app.cfg.token_ttl_s).await.unwrap();
    assert_ne!(new_kid, kid_of(&old));
    let new = app.client_token(&admin).await;
    assert_eq!(kid_of(&new), new_kid);
    assert_eq!((status_with(&app, &old).await, status_with(&app, &new).await), (200, 200));

    // Unknown kid, a known kid with the wrong key, no kid: refused.
    assert_eq!(status_with(&app, &forge("0123456789abcdef", &[7; 32], &tenant, 600)).await, 401);
    assert_eq!(status_with(&app, &forge(&new_kid, &[7; 32], &tenant, 600)).await, 401);
    let no_kid = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "x", "tid": tenant, "iat": 0, "exp": 4_000_000_000i64, "iss": "lastmile", "aud": "lastmile-api"}),
        &jsonwebtoken::EncodingKey::from_secret(&[7; 32]),
    )
    .unwrap();
    assert_eq!(status_with(&app, &no_kid).await, 401);

    // A node that starts now verifies both.
    let app = app.restart().await;
    assert_eq!((status_with(&app, &old).await, status_with(&app, &new).await), (200, 200));

    // Once the retired key's tokens have all expired (retired more than token_ttl_s ago),
    // its kid is refused even on a token that claims to live longer.
    let rows = app.state.db.jwt_keys().await.unwrap();
    let old_row = rows.iter().find(|r| r.kid == kid_of(&old)).expect("old key kept");
    assert!(old_row.retired_at.is_some());
    let old_key = app.state.keys.decrypt(&old_row.key_enc).unwrap();
    let long_lived = forge(&old_row.kid, &old_key, &tenant, 3 * 3600);
    assert_eq!(status_with(&app, &long_lived).await, 200, "within the grace period");
    let long_ago = lastmile_storage::now_ms() - (app.cfg.token_ttl_s as i64 + 120) * 1000;
    sqlx::query(&format!("UPDATE jwt_keys SET retired_at = {long_ago} WHERE kid = $1"))
        .bind(&old_row.kid)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    let app = app.restart().await;
    assert_eq!(status_with(&app, &long_lived).await, 401);
    assert_eq!(status_with(&app, &new).await, 200);

    let entries = audit_entries(&app, &admin, "").await;
    let rotation = entries.iter().find(|e| e["action"] == "jwt_key.rotate").expect("rotation audited");
    assert_eq!(rotation["scope"], "system");
    assert_eq!(rotation["target_id"], new_kid.as_str());
    assert_eq!(rotation["actor"]["kind"], "operator");
    app.stop().await;
}

fn key_b64(byte: u8) -> Secret {
    Secret::new(base64::engine::general_purpose::STANDARD.encode([byte; 32]))
}

/// A Shopify order delivery signed with `secret`, as the platform sends it.
async fn shopify_webhook(
    app: &TestApp,
    store: &str,
    shop: &str,
    secret: &str,
    order_id: u64,
) -> (u16, serde_json::Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ingest/tests/fixtures/shopify/orders_create.json");
    let mut order: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    order["id"] = serde_json::json!(order_id);
    signed_shopify(app, store, shop, secret, serde_json::to_vec(&order).unwrap()).await
}

/// POST `body` to a Shopify store's webhook, signed with `secret`.
pub(crate) async fn signed_shopify(
    app: &TestApp,
    store: &str,
    shop: &str,
    secret: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let res = app
        .http
        .post(app.url(&format!("/v1/webhooks/shopify/{store}")))
        .header("content-type", "application/json")
        .header("x-shopify-topic", "orders/create")
        .header("x-shopify-hmac-sha256", sig)
        .header("x-shopify-shop-domain", shop)
        .header("x-shopify-api-version", "2026-04")
        .header("x-shopify-webhook-id", uuid::Uuid::new_v4().to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

async fn secret_rotation(backend: Backend) {
    let shop = StandIn::start(Platform::Shopify).await;
    let mut app = TestApp::spawn_with(backend, |cfg| {
        cfg.secret_key = Some(key_b64(1));
        cfg.dispatch.enabled = false;
    })
    .await;
    let (tenant, admin) = app.tenant("rotate").await;
    let tenant = TenantId(tenant);
    let store = standin_store(&api(&app), &admin, &shop, "rot-shop", "standard").await;
    let jwt = app.client_token(&admin).await;
    let secret = "whsec_rot-shop";
    let (s, body) = shopify_webhook(&app, store.as_str(), "rot-shop.myshopify.com", secret, 9001).await;
    assert_eq!(s, 200, "{body}");

    // New key configured, the old one decrypt-only: everything still works before re-sealing.
    app.cfg.secret_key = Some(key_b64(2));
    app.cfg.previous_secret_key = Some(key_b64(1));
    let app = app.restart().await;
    let (s, view) = app.get_json(&format!("/v1/stores/{store}"), &admin).await;
    assert_eq!((s, view["api"]["credentials"].as_str()), (200, Some("access_token")), "{view}");
    assert_eq!(app.get_json("/v1/orders", &jwt).await.0, 200);

    // Re-seal while the server runs and keeps taking webhooks.
    let keys = lastmile_server::load_keys(&app.cfg).unwrap();
    let during = shopify_webhook(&app, store.as_str(), "rot-shop.myshopify.com", secret, 9002);
    let (report, (s, body)) = tokio::join!(rotate_secret_key(&app.state.db, &keys, app.cfg.token_ttl_s), during);
    assert_eq!(s, 200, "{body}");
    let report = report.unwrap();
    // The webhook secret, the API credentials and the signing key.
    assert_eq!((report.resealed, report.already_current, report.failed.len()), (3, 0, 0), "{report:?}");
    let again = rotate_secret_key(&app.state.db, &keys, app.cfg.token_ttl_s).await.unwrap();
    assert_eq!((again.resealed, again.already_current), (0, 3), "idempotent");

    // The old key gone from the configuration: nothing needs it any more.
    let mut app = app;
    app.cfg.previous_secret_key = None;
    let app = app.restart().await;
    let (s, view) = app.get_json(&format!("/v1/stores/{store}"), &admin).await;
    assert_eq!((s, view["api"]["credentials"].as_str()), (200, Some("access_token")), "{view}");
    assert_eq!(app.get_json("/v1/orders", &jwt).await.0, 200, "the token signed before still verifies");
    let (s, body) = shopify_webhook(&app, store.as_str(), "rot-shop.myshopify.com", secret, 9003).await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = shopify_webhook(&app, store.as_str(), "rot-shop.myshopify.com", "wrong", 9004).await;
    assert_eq!(s, 401);
    // Sync-back authenticates at the platform with the re-sealed access token.
    let courier = Courier::new(&app.state, &tenant).await;
    let order = platform_order(&app.state, &tenant, &store, &shop, "7001").await;
    courier.deliver_fully(&app.state, &order).await;
    eventually("the delivery synced to the stand-in", Duration::from_secs(30), || async {
        (writes(&shop, "7001") == delivered_writes(Platform::Shopify)).then_some(())
    })
    .await;

    let entries = audit_entries(&app, &admin, "").await;
    let rotations: Vec<_> = entries.iter().filter(|e| e["action"] == "secret_key.rotate").collect();
    assert_eq!(rotations.len(), 2, "{entries:#?}");
    assert_eq!(rotations[1]["details"]["resealed"], 3);
    app.stop().await;
}

crate::on_backends!(
    jwt_rotation_keeps_old_tokens_until_they_expire => jwt_rotation,
    secret_key_rotation_reseals_every_stored_secret => secret_rotation,
);

//! Foundation: tenants, credentials, the admin API, OAuth, tenant isolation and every
//! HTTP edge error with its status and code.

use crate::helpers::{Backend, TestApp};
use crate::on_backends;
use serde_json::{json, Value};

async fn walk_and_isolation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("acme").await;
    let store = app.store(&admin, "shopify", "Acme-Eats.myshopify.com", "shpss_secret").await;
    assert_eq!(store["platform_store_id"], "acme-eats.myshopify.com");
    assert!(store.get("webhook_secret").is_none(), "secrets are never echoed: {store}");
    let store_id = store["id"].as_str().unwrap().to_owned();
    let (driver_id, token) = app.driver(&admin, "Pekka Driver").await;
    assert!(token.starts_with("lm_drv_"));
    let jwt = app.client_token(&admin).await;
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert!(header.kid.is_some(), "JWTs carry a kid");
    // The authorized call.
    let order = app.native_order(&jwt, &store_id, 60.17, 24.95).await;
    let order_id = order["id"].as_str().unwrap();
    let (s, got) = app.get_json(&format!("/v1/orders/{order_id}"), &jwt).await;
    assert_eq!((s, got["id"].as_str()), (200, Some(order_id)));
    let (s, _) = app.get_json(&format!("/v1/stores/{store_id}"), &admin).await;
    assert_eq!(s, 200);

    // A second tenant sees none of it, exactly as if it did not exist.
    let (_, other) = app.tenant("other").await;
    let other_jwt = app.client_token(&other).await;
    let (s1, b1) = app.get_json(&format!("/v1/stores/{store_id}"), &other).await;
    let (s2, b2) = app.get_json("/v1/stores/sto_doesnotexist", &other).await;
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(b1, b2, "not-yours answers exactly like not-found");
    let (s, b) = app.get_json(&format!("/v1/orders/{order_id}"), &other_jwt).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = app
        .http
        .patch(app.url(&format!("/v1/stores/{store_id}")))
        .bearer_auth(&other)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(s, 404);
    let (s, _) = app
        .http
        .delete(app.url(&format!("/v1/drivers/{driver_id}")))
        .bearer_auth(&other)
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(s, 404);
    let (s, list) = app.get_json("/v1/stores", &other).await;
    assert_eq!((s, list["stores"].as_array().unwrap().len()), (200, 0));

    // Store CRUD.
    let res = app
        .http
        .patch(app.url(&format!("/v1/stores/{store_id}")))
        .bearer_auth(&admin)
        .json(&json!({"tier": "enterprise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["tier"], "enterprise");
    let (s, dup) = app
        .post_json("/v1/stores", &admin, &json!({"name": "again", "platform": "shopify", "platform_store_id": "acme-eats.myshopify.com", "webhook_secret": "x", "pickup": {"lat": 60.0, "lng": 24.0, "address": "x"}}))
        .await;
    assert_eq!((s, dup["error"]["code"].as_str()), (409, Some("store_exists")));
    // Revoked driver tokens stop working.
    let res = app
        .http
        .put(app.url("/v1/driver/status"))
        .bearer_auth(&token)
        .json(&json!({"status": "online"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app.http.delete(app.url(&format!("/v1/drivers/{driver_id}"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let res = app
        .http
        .put(app.url("/v1/driver/status"))
        .bearer_auth(&token)
        .json(&json!({"status": "online"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    app.stop().await;
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

async fn edge_errors(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.body_limit_bytes = 4096;
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 30;
    })
    .await;
    let (_, admin) = app.tenant("edge").await;
    let post_raw = |body: &'static str, ct: &'static str| {
        app.http.post(app.url("/v1/drivers")).bearer_auth(&admin).header("content-type", ct).body(body).send()
    };
    // Bad JSON → 400 invalid_json.
    let r = post_raw("{not json", "application/json").await.unwrap();
    let rid = r.headers().get("x-request-id").cloned();
    assert_eq!(r.status(), 400);
    assert_eq!(code(&r.json().await.unwrap()), "invalid_json");
    assert!(rid.is_some(), "every response carries a request id");
    // Wrong types → 422 invalid_body.
    let r = post_raw(r#"{"name": 5}"#, "application/json").await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(code(&r.json().await.unwrap()), "invalid_body");
    // Field validation → 422 with per-field details.
    let (s, b) = app.post_json("/v1/drivers", &admin, &json!({"name": "", "capacity": 0})).await;
    assert_eq!((s, code(&b)), (422, "validation_failed"));
    assert!(b["error"]["details"]["fields"]["capacity"].is_string(), "{b}");
    // Missing or bad auth → 401.
    let r = app.http.get(app.url("/v1/stores")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(code(&r.json().await.unwrap()), "unauthorized");
    let (s, b) = app.get_json("/v1/stores", "lm_admin_forged").await;
    assert_eq!((s, code(&b)), (401, "unauthorized"));
    // Body over the limit → 413.
    let big = json!({"name": "x".repeat(8000)});
    let (s, b) = app.post_json("/v1/drivers", &admin, &big).await;
    assert_eq!((s, code(&b)), (413, "payload_too_large"));
    // Unknown route → 404; wrong method → 405, both in our shape.
    let (s, b) = app.get_json("/v1/nothing-here", &admin).await;
    assert_eq!((s, code(&b)), (404, "not_found"));
    let r = app.http.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(code(&r.json().await.unwrap()), "method_not_allowed");
    // Rate limited → 429 with Retry-After (burst 30 at 1/s).
    let mut limited = None;
    for _ in 0..60 {
        let r = app.http.get(app.url("/v1/stores")).bearer_auth(&admin).send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the per-credential limit must answer 429");
    let retry_after: u64 = r.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(code(&r.json().await.unwrap()), "rate_limited");
    // System endpoints.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    for worker in ["relay", "gps-flusher", "retention", "catalog"] {
        assert_eq!(ready["workers"][worker]["healthy"], true, "{worker} is supervised and running: {ready}");
    }
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("route=\"/v1/stores\""), "metrics are labelled by route pattern");
    assert!(!metrics.contains("/v1/nothing-here"), "never by raw URL");
    let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/v1/orders"]["post"].is_object());
    assert!(doc["paths"]["/v1/webhooks/{platform}/{store_id}"].is_object());
    app.stop().await;
}

async fn oauth_errors_follow_rfc6749(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("oauth").await;
    let (_, c) = app.post_json("/v1/api-clients", &admin, &json!({"name": "erp"})).await;
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let form = |pairs: Vec<(&str, &str)>| app.http.post(app.url("/oauth/token")).form(&pairs).send();
    let r = form(vec![("grant_type", "password"), ("client_id", id), ("client_secret", secret)]).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
    let r =
        form(vec![("grant_type", "client_credentials"), ("client_id", id), ("client_secret", "wrong")]).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let r = form(vec![("client_id", id)]).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    // HTTP Basic client authentication works too.
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Bearer"), Some(3600)));
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth(id, Some("nope"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    // A tampered JWT is refused.
    let jwt = body["access_token"].as_str().unwrap();
    let (s, _) = app.get_json("/v1/orders", &format!("{jwt}x")).await;
    assert_eq!(s, 401);
    app.stop().await;
}

async fn secrets_are_encrypted_at_rest(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("enc").await;
    app.store(&admin, "woocommerce", "https://shop.example.com/", "woo_plain_secret_value").await;
    let rows = sqlx::query("SELECT webhook_secret_enc FROM stores").fetch_all(app.state.db.pool()).await.unwrap();
    for r in rows {
        let bytes: Vec<u8> = sqlx::Row::get(&r, "webhook_secret_enc");
        assert!(!bytes.windows(10).any(|w| w == b"woo_plain_"), "the secret must not be stored in clear");
    }
    if backend == Backend::Sqlite {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app.dir.path().join("lastmile.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    app.stop().await;
}

on_backends!(
    walk_create_tenant_to_authorized_call_and_tenant_isolation => walk_and_isolation,
    every_edge_error_has_its_status_and_code => edge_errors,
    oauth_token_errors_follow_rfc6749 => oauth_errors_follow_rfc6749,
    secrets_are_encrypted_at_rest_and_the_key_file_is_private => secrets_are_encrypted_at_rest,
);

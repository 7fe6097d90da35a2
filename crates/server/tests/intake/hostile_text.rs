//! Text every database can store: a NUL (U+0000) in a signed platform order is stored
//! replaced (never lost), in an API request it is refused with `400 invalid_text`, and
//! the request after either succeeds (no poisoned connection). Errors that come from
//! below the handlers still answer in the JSON error shape.

use crate::helpers::{native_body, uuid_key, Backend, TestApp};
use crate::on_backends;
use crate::{deliver, deliver_raw, order, raw_payloads, shopify_order, store, webhook_path, Delivery};
use serde_json::{json, Value};

on_backends! {
    a_nul_in_a_signed_order_is_stored_replaced_and_the_next_order_succeeds => nul_in_signed_order,
    api_text_with_nul_is_refused_and_the_next_request_succeeds => nul_in_api_text,
    errors_below_the_handlers_answer_in_json => json_errors_below_handlers,
}

async fn nul_in_signed_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (tenant, admin) = app.tenant("acme").await;
    let shop = "nul-bytes.myshopify.com";
    let store_id = store(&app, &admin, "shopify", shop, "s3cret").await;
    let path = webhook_path("shopify", &store_id);

    let mut body: Value =
        serde_json::from_slice(&shopify_order(9_100_001, "2026-11-01T10:00:00Z", "ring\u{0}twice")).expect("JSON");
    body["customer"]["first_name"] = json!("Ai\u{0}no");
    body["shipping_address"]["address1"] = json!("Mannerheimintie\u{0} 10");
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(lastmile_core::text::json_has_nul(&bytes), "the body really carries NUL escapes");
    let (status, answer) = deliver(&app, &path, &Delivery::shopify(&bytes, "s3cret", shop, "orders/create")).await;
    assert!(status == 200 || status == 201, "{status} {answer}");
    assert_eq!(answer["result"], "created", "{answer}");
    let stored = order(&app, &admin, answer["order_id"].as_str().unwrap()).await;
    assert_eq!(stored["notes"], "ring\u{FFFD}twice", "{stored}");
    assert!(stored["dropoff"]["address"]["line1"].as_str().unwrap().contains('\u{FFFD}'), "{stored}");
    assert_eq!(raw_payloads(&app, &tenant).await, 1, "the raw body is archived as sent");

    // The same delivery again is a duplicate of the same order, not a second one.
    let (_, again) = deliver(&app, &path, &Delivery::shopify(&bytes, "s3cret", shop, "orders/create")).await;
    assert_eq!(again["order_id"], answer["order_id"]);

    // Orders after it, with and without coordinates, go through on the same connections.
    for i in 0..6u64 {
        let mut next: Value =
            serde_json::from_slice(&shopify_order(9_100_100 + i, "2026-11-01T10:00:00Z", "plain")).unwrap();
        if i % 2 == 0 {
            next["shipping_address"]["latitude"] = Value::Null;
            next["shipping_address"]["longitude"] = Value::Null;
        }
        let bytes = serde_json::to_vec(&next).unwrap();
        let (status, answer) = deliver(&app, &path, &Delivery::shopify(&bytes, "s3cret", shop, "orders/create")).await;
        assert!(status < 300, "order {i} after the NUL order: {status} {answer}");
        assert_eq!(answer["result"], "created", "{answer}");
    }
    app.stop().await;
}

async fn nul_in_api_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("acme").await;
    let store_id = store(&app, &admin, "native", "pos-1", "unused-secret").await;
    let jwt = app.client_token(&admin).await;

    let create = |body: Value| {
        app.http.post(app.url("/v1/orders")).bearer_auth(&jwt).header("Idempotency-Key", uuid_key()).json(&body).send()
    };
    let mut body = native_body(&store_id, 60.17, 24.94);
    body["notes"] = json!("door\u{0}code");
    let res = create(body.clone()).await.unwrap();
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_text", "{err}");

    // An escaped backslash followed by the letters u0000 is ordinary text.
    body["notes"] = json!("path C:\\u0000");
    let res = create(body).await.unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    // And the next ordinary request succeeds.
    app.native_order(&jwt, &store_id, 60.18, 24.95).await;

    // Admin JSON, query strings and the OAuth form are guarded the same way.
    let (status, err) = app
        .post_json(
            "/v1/drivers",
            &admin,
            &json!({"name": "Pe\u{0}kka", "phone": "+358401", "vehicle": "bike", "capacity": 1}),
        )
        .await;
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("invalid_text")), "{err}");
    let (status, err) = app.get_json("/v1/orders?status=received%00", &admin).await;
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("invalid_text")), "{err}");
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=cli%00x&client_secret=y")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // An absurdly long client id costs nothing and reveals nothing.
    let long = "c".repeat(100_000);
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .form(&[("grant_type", "client_credentials"), ("client_id", long.as_str()), ("client_secret", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Credentials still work afterwards.
    app.client_token(&admin).await;
    app.stop().await;
}

async fn json_errors_below_handlers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.body_limit_bytes = 64 * 1024).await;
    let (_, admin) = app.tenant("acme").await;
    let shop = "big-bodies.myshopify.com";
    let store_id = store(&app, &admin, "shopify", shop, "s3cret").await;
    let big = vec![b' '; 200 * 1024];
    let res = deliver_raw(
        &app,
        &webhook_path("shopify", &store_id),
        &Delivery::shopify(&big, "s3cret", shop, "orders/create"),
    )
    .await;
    assert_eq!(res.status(), 413);
    let err: Value = res.json().await.expect("a JSON body");
    assert_eq!(err["error"]["code"], "payload_too_large", "{err}");

    // The driver WebSocket path without upgrade headers.
    let (_, token) = app.driver(&admin, "Pekka").await;
    let res = app.http.get(app.url("/v1/driver/ws")).bearer_auth(&token).send().await.unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    let err: Value = res.json().await.expect("a JSON body");
    assert!(err["error"]["code"].is_string(), "{err}");
    app.stop().await;
}

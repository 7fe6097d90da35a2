//! The ordering API: `POST /v1/orders` with Idempotency-Key, field errors, listing with
//! filters and cursors, and locating an order that arrived without coordinates.

use crate::helpers::{native_body, Backend, TestApp};
use crate::on_backends;
use crate::{b64, deliver, fixture, list_all, order, store, Delivery};
use lastmile_core::TenantId;
use lastmile_storage::{IdempotencyBegin, IdempotencyRef};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// An API client's id and a JWT for it.
async fn api_client(app: &TestApp, admin: &str) -> (String, String) {
    let (status, c) = app.post_json("/v1/api-clients", admin, &json!({"name": "pos"})).await;
    assert_eq!(status, 201, "{c}");
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .form(&[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    (id.to_owned(), res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned())
}

/// POST /v1/orders with exactly these body bytes; returns status, replay header and body.
async fn post_order(app: &TestApp, jwt: &str, key: Option<&str>, body: &[u8]) -> (u16, bool, Value) {
    let mut req = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(jwt)
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let replayed = res.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    (status, replayed, res.json().await.unwrap_or(Value::Null))
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

async fn idempotency_keys_follow_the_draft(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (tenant, admin) = app.tenant("idem").await;
    let sid = store(&app, &admin, "native", "pos-1", "").await;
    let (client_id, jwt) = api_client(&app, &admin).await;
    let body = bytes(&native_body(&sid, 60.17, 24.95));

    let (status, _, missing) = post_order(&app, &jwt, None, &body).await;
    assert_eq!((status, missing["error"]["code"].as_str()), (400, Some("idempotency_key_missing")));

    let (status, replayed, first) = post_order(&app, &jwt, Some("order-1"), &body).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    assert_eq!(first["status"], "received");
    let (status, replayed, again) = post_order(&app, &jwt, Some("order-1"), &body).await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, first, "the first answer, replayed");
    let mut other = native_body(&sid, 60.18, 24.96);
    other["notes"] = json!("another order");
    let (status, _, reused) = post_order(&app, &jwt, Some("order-1"), &bytes(&other)).await;
    assert_eq!((status, reused["error"]["code"].as_str()), (422, Some("idempotency_key_reused")));

    // A request with this key is still being processed (claimed, not completed).
    let fingerprint = b64(&Sha256::digest(&body));
    let key = IdempotencyRef { client_id, key: "order-2".into() };
    let claim = app.state.db.begin_idempotency(&TenantId(tenant), &key, &fingerprint, 86_400_000).await.unwrap();
    assert_eq!(claim, IdempotencyBegin::Fresh);
    let (status, _, busy) = post_order(&app, &jwt, Some("order-2"), &body).await;
    assert_eq!((status, busy["error"]["code"].as_str()), (409, Some("idempotency_key_in_use")), "{busy}");

    // Keys are per client: another client's same key is a new request.
    let (_, jwt2) = api_client(&app, &admin).await;
    let (status, replayed, second) = post_order(&app, &jwt2, Some("order-1"), &body).await;
    assert_eq!((status, replayed), (201, false));
    assert_ne!(second["id"], first["id"]);
    assert_eq!(list_all(&app, &admin, "", 50).await.len(), 2, "one order per completed key");
    app.stop().await;
}

async fn field_errors_name_each_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("fields").await;
    let (_, jwt) = api_client(&app, &admin).await;
    let (_, other_admin) = app.tenant("other").await;
    let foreign = store(&app, &other_admin, "native", "theirs", "").await;
    let bad = json!({
        "store_id": foreign,
        "customer": {"phone": "+358401111111", "email": "not-an-email"},
        "dropoff": {"address": {"line1": "Mannerheimintie 10", "city": "Helsinki", "postal_code": "00100"},
                    "lat": 91.0, "lng": 24.9},
        "items": [{"sku": "A", "name": "Soup", "quantity": 0, "unit_price_minor": 100},
                  {"quantity": 1, "unit_price_minor": -1}],
        "currency": "euro",
        "ready_at": "tomorrow"
    });
    let (status, _, err) = post_order(&app, &jwt, Some("bad-1"), &bytes(&bad)).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("validation_failed")), "{err}");
    let fields = err["error"]["details"]["fields"].as_object().expect("per-field details");
    for f in [
        "customer.name",
        "customer.email",
        "dropoff.address.country",
        "dropoff",
        "items[0].quantity",
        "items[1].name",
        "items[1].unit_price_minor",
        "currency",
        "ready_at",
    ] {
        assert!(fields.get(f).and_then(Value::as_str).is_some_and(|m| !m.is_empty()), "no error for {f}: {err}");
    }
    // Well-formed, but the store is another tenant's: it does not exist for this client.
    let (status, _, err) = post_order(&app, &jwt, Some("bad-2"), &bytes(&native_body(&foreign, 60.1, 24.9))).await;
    assert_eq!((status, err["error"]["details"]["fields"]["store_id"].as_str()), (422, Some("no such store")), "{err}");
    let (status, _, err) = post_order(&app, &jwt, Some("bad-3"), b"{not json").await;
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("invalid_json")));
    assert!(list_all(&app, &admin, "", 50).await.is_empty(), "no partial write");
    app.stop().await;
}

async fn listing_returns_every_order_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("list").await;
    let (_, jwt) = api_client(&app, &admin).await;
    let a = store(&app, &admin, "native", "pos-a", "").await;
    let b = store(&app, &admin, "native", "pos-b", "").await;
    let start = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let mut ids = HashSet::new();
    for i in 0..9 {
        let o = app.native_order(&jwt, if i < 6 { &a } else { &b }, 60.17, 24.95).await;
        ids.insert(o["id"].as_str().unwrap().to_owned());
    }
    // One order waiting for its location, from WooCommerce.
    let site = "https://list.example";
    let wid = store(&app, &admin, "woocommerce", site, "w").await;
    let d = Delivery::woocommerce(&fixture("woocommerce/order_retrieve_727.json"), "w", site, "order.created");
    let (_, woo) = deliver(&app, &format!("/v1/webhooks/woocommerce/{wid}"), &d).await;
    ids.insert(woo["order_id"].as_str().unwrap().to_owned());

    for page in [1, 3, 10, 500] {
        let listed = list_all(&app, &jwt, "", page).await;
        let seen: Vec<&str> = listed.iter().map(|o| o["id"].as_str().unwrap()).collect();
        assert_eq!(seen.len(), ids.len(), "page size {page}: every order once");
        assert_eq!(seen.iter().map(|s| s.to_string()).collect::<HashSet<_>>(), ids, "page size {page}");
    }
    let rfc = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let count = |q: String| {
        let (app, jwt) = (&app, &jwt);
        async move { list_all(app, jwt, &q, 4).await.len() }
    };
    assert_eq!(count(format!("store_id={a}")).await, 6);
    assert_eq!(count(format!("store_id={b}&status=received")).await, 3);
    assert_eq!(count("status=needs_location".into()).await, 1);
    assert_eq!(count(format!("store_id={wid}&status=received")).await, 0);
    assert_eq!(count(format!("updated_since={}", rfc(start))).await, 10);
    let future = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    assert_eq!(count(format!("updated_since={}", rfc(future))).await, 0);
    // Another tenant lists none of them.
    let (_, other) = app.tenant("other").await;
    assert!(list_all(&app, &other, "", 50).await.is_empty());
    for (q, field) in [
        ("limit=0", "limit"),
        ("status=lost", "status"),
        ("cursor=%21%21", "cursor"),
        ("updated_since=yesterday", "updated_since"),
    ] {
        let (status, err) = app.get_json(&format!("/v1/orders?{q}"), &jwt).await;
        assert_eq!((status, err["error"]["code"].as_str()), (422, Some("validation_failed")), "{q}: {err}");
        assert!(err["error"]["details"]["fields"][field].is_string(), "{q}: {err}");
    }
    app.stop().await;
}

async fn orders_without_coordinates_wait_for_a_location(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("locate").await;
    let site = "https://locate.example";
    let wid = store(&app, &admin, "woocommerce", site, "w").await;
    let url = format!("/v1/webhooks/woocommerce/{wid}");
    let d = Delivery::woocommerce(&fixture("woocommerce/order_retrieve_727.json"), "w", site, "order.created");
    let (status, answer) = deliver(&app, &url, &d).await;
    assert_eq!((status, answer["result"].as_str()), (200, Some("created")), "{answer}");
    let id = answer["order_id"].as_str().unwrap().to_owned();
    let waiting = order(&app, &admin, &id).await;
    assert_eq!(waiting["status"], "needs_location");
    assert!(waiting["status_reason"].as_str().is_some_and(|r| r.contains("coordinates")), "{waiting}");
    assert_eq!(
        (&waiting["dropoff"]["lat"], &waiting["dropoff"]["address"]["city"]),
        (&Value::Null, &json!("San Francisco"))
    );

    let patch = |body: Value| {
        let (app, admin, id) = (&app, &admin, &id);
        async move {
            let res = app
                .http
                .patch(app.url(&format!("/v1/orders/{id}")))
                .bearer_auth(admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, err) = patch(json!({"dropoff": {"lat": 137.0, "lng": -122.4}})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("validation_failed")), "{err}");
    assert_eq!(order(&app, &admin, &id).await["status"], "needs_location");
    let (status, located) = patch(json!({"dropoff": {"lat": 37.7823, "lng": -122.4081}})).await;
    assert_eq!((status, located["status"].as_str()), (200, Some("received")), "{located}");
    assert_eq!(
        (located["dropoff"]["lat"].as_f64(), located["dropoff"]["lng"].as_f64()),
        (Some(37.7823), Some(-122.4081))
    );
    // The platform re-sending the order keeps the location ops set.
    let (_, dup) = deliver(&app, &url, &d).await;
    assert_eq!((dup["result"].as_str(), dup["order_id"].as_str()), (Some("duplicate"), Some(id.as_str())));
    assert_eq!(order(&app, &admin, &id).await["dropoff"]["lat"].as_f64(), Some(37.7823));
    app.stop().await;
}

on_backends!(
    idempotency_keys_replay_refuse_reuse_and_guard_in_flight => idempotency_keys_follow_the_draft,
    order_field_errors_are_422_with_every_field_named => field_errors_name_each_field,
    order_listing_filters_and_pages_return_every_order_once => listing_returns_every_order_once,
    orders_without_coordinates_need_a_location_then_are_received => orders_without_coordinates_wait_for_a_location,
);

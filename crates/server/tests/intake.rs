//! Order intake through the real HTTP API, on SQLite and PostgreSQL (issue 3): every
//! published fixture through both intake endpoints, the refusals, dead letters and their
//! replay, out-of-order and duplicate deliveries, 100 concurrent identical deliveries, the
//! per-store bulkhead, the raw payload archive and the intake metric; then the ordering
//! API's idempotency, validation, listing and locating orders that arrived without
//! coordinates.
//!
//! Deliveries are signed here the way each platform documents it (see
//! `../shared/fixtures/webhooks/SOURCES.md`), never through the code under test.

#[path = "api/helpers.rs"]
mod helpers;

#[path = "intake/exactly_once.rs"]
mod exactly_once;
#[path = "intake/hostile_text.rs"]
mod hostile_text;
#[path = "intake/ordering_api.rs"]
mod ordering_api;
#[path = "intake/outage.rs"]
mod outage;
#[path = "intake/store_cache.rs"]
mod store_cache;
#[path = "intake/webhooks.rs"]
mod webhooks;

use base64::Engine;
use helpers::TestApp;
use hmac::{Hmac, Mac};
use lastmile_core::TenantId;
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ingest/tests/fixtures");
/// The published Shopify sample's exact id (its numeric `id` was rounded by the scraper).
pub const SHOPIFY_SAMPLE_ID: &str = "820982911946154508";

pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{path}")).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

/// One HTTP delivery as a platform sends it: headers and the exact body bytes.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Delivery {
    /// Shopify: `X-Shopify-Hmac-Sha256` = base64(HMAC-SHA256(secret, body)) and the headers
    /// Shopify's library requires.
    pub fn shopify(body: &[u8], secret: &str, shop: &str, topic: &str) -> Self {
        let headers = vec![
            pair("Content-Type", "application/json"),
            pair("X-Shopify-Topic", topic),
            pair("X-Shopify-Hmac-Sha256", &b64(&hmac_sha256(secret.as_bytes(), &[body]))),
            pair("X-Shopify-Shop-Domain", shop),
            pair("X-Shopify-API-Version", "2026-04"),
            pair("X-Shopify-Webhook-Id", &uuid::Uuid::new_v4().to_string()),
        ];
        Delivery { headers, body: body.to_vec() }
    }

    /// WooCommerce: `X-WC-Webhook-Signature` = base64(HMAC-SHA256(secret, body)) and the
    /// other headers `WC_Webhook::deliver()` adds.
    pub fn woocommerce(body: &[u8], secret: &str, site: &str, topic: &str) -> Self {
        let event = topic.split('.').nth(1).unwrap_or_default();
        let headers = vec![
            pair("Content-Type", "application/json"),
            pair("User-Agent", "WooCommerce/8.9.1 Hookshot (WordPress/6.5.3)"),
            pair("X-WC-Webhook-Source", site),
            pair("X-WC-Webhook-Topic", topic),
            pair("X-WC-Webhook-Resource", "order"),
            pair("X-WC-Webhook-Event", event),
            pair("X-WC-Webhook-Signature", &b64(&hmac_sha256(secret.as_bytes(), &[body]))),
            pair("X-WC-Webhook-ID", "31"),
            pair("X-WC-Webhook-Delivery-ID", &uuid::Uuid::new_v4().simple().to_string()),
        ];
        Delivery { headers, body: body.to_vec() }
    }

    /// BigCommerce (Standard Webhooks): `v1,` base64(HMAC-SHA256(secret, "id.timestamp.body")).
    pub fn bigcommerce(body: &[u8], secret: &str, timestamp: i64) -> Self {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let ts = timestamp.to_string();
        let signature = hmac_sha256(secret.as_bytes(), &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
        let headers = vec![
            pair("Content-Type", "application/json"),
            pair("webhook-id", &id),
            pair("webhook-timestamp", &ts),
            pair("webhook-signature", &format!("v1,{}", b64(&signature))),
        ];
        Delivery { headers, body: body.to_vec() }
    }

    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }
}

pub fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// POST a delivery to `path`.
pub async fn deliver_raw(app: &TestApp, path: &str, d: &Delivery) -> reqwest::Response {
    let mut req = app.http.post(app.url(path)).body(d.body.clone());
    for (name, value) in &d.headers {
        req = req.header(name, value);
    }
    req.send().await.expect("delivery request")
}

/// POST a delivery to `path` and read the JSON answer.
pub async fn deliver(app: &TestApp, path: &str, d: &Delivery) -> (u16, Value) {
    let res = deliver_raw(app, path, d).await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A store through the admin API, with optional outbound `api` settings; returns its id.
pub async fn store_with_api(
    app: &TestApp,
    admin: &str,
    platform: &str,
    identity: &str,
    secret: &str,
    api: Option<Value>,
) -> String {
    let mut body = json!({"name": format!("{platform} {identity}"), "platform": platform,
        "platform_store_id": identity, "webhook_secret": secret,
        "pickup": {"lat": 60.1699, "lng": 24.9384, "address": "Aleksanterinkatu 1, Helsinki"}});
    if let Some(api) = api {
        body["api"] = api;
    }
    let (status, store) = app.post_json("/v1/stores", admin, &body).await;
    assert_eq!(status, 201, "{store}");
    store["id"].as_str().expect("store id").to_owned()
}

pub async fn store(app: &TestApp, admin: &str, platform: &str, identity: &str, secret: &str) -> String {
    store_with_api(app, admin, platform, identity, secret, None).await
}

/// Every order of the tenant matching `query` (e.g. `status=received`), following cursors.
pub async fn list_all(app: &TestApp, bearer: &str, query: &str, page: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut url = format!("/v1/orders?limit={page}&{query}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = app.get_json(&url, bearer).await;
        assert_eq!(status, 200, "{url}: {body}");
        let orders = body["orders"].as_array().expect("orders").clone();
        assert!(orders.len() <= page, "a page holds at most `limit` orders");
        out.extend(orders);
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

pub async fn order(app: &TestApp, bearer: &str, id: &str) -> Value {
    let (status, body) = app.get_json(&format!("/v1/orders/{id}"), bearer).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Poll `probe` until it yields a value; for effects of background workers only (the
/// sync worker polls every 20 ms in tests), bounded so a lost delivery fails the test.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn webhook_path(platform: &str, store_id: &str) -> String {
    format!("/v1/webhooks/{platform}/{store_id}")
}

/// How many raw deliveries the tenant's archive holds.
pub async fn raw_payloads(app: &TestApp, tenant: &str) -> i64 {
    app.state.db.count_raw_payloads(&TenantId(tenant.to_owned())).await.expect("count raw payloads")
}

/// The Shopify sample made into an open order (not cancelled) at a known place, with
/// another id, version and note.
pub fn shopify_order(id: u64, updated_at: &str, note: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture("shopify/orders_create.json")).expect("fixture JSON");
    v["id"] = json!(id);
    v["admin_graphql_api_id"] = json!(format!("gid://shopify/Order/{id}"));
    v["updated_at"] = json!(updated_at);
    v["cancelled_at"] = Value::Null;
    v["cancel_reason"] = Value::Null;
    v["note"] = json!(note);
    v["shipping_address"]["latitude"] = json!(60.1699);
    v["shipping_address"]["longitude"] = json!(24.9384);
    serde_json::to_vec(&v).expect("JSON")
}

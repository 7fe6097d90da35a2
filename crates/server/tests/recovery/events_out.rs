//! Events out: tenants subscribe endpoints to order events; deliveries are Standard
//! Webhooks (checked here with an independent HMAC), retried through failures, dead-lettered
//! when the schedule is used up and delivered by a replay; secrets rotate with an overlap;
//! endpoints on private addresses are refused unless allowed.

use super::support::*;
use crate::helpers::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered: u16,
}

/// A local endpoint that records every request and answers 503 while `failing` > 0
/// (counting down), or always when `failing` is `usize::MAX`.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    failing: Arc<AtomicUsize>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let left = r.failing.load(Ordering::SeqCst);
    let answered = if left == 0 {
        StatusCode::NO_CONTENT
    } else {
        if left != usize::MAX {
            r.failing.store(left - 1, Ordering::SeqCst);
        }
        StatusCode::SERVICE_UNAVAILABLE
    };
    r.got.lock().unwrap().push(Received {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body,
        answered: answered.as_u16(),
    });
    answered
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `check` holds for what was received.
    async fn until(&self, what: &str, check: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.got();
            if check(&got) {
                return got;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; got {got:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Whether one of the space-separated `v1,` signatures is the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under `secret` (`whsec_` + base64 key), computed here
/// independently of the server.
fn signed_by(r: &Received, secret: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    r.signature.split(' ').any(|s| s == expected)
}

fn fast_retries(c: &mut lastmile_server::config::Config) {
    c.dispatch.enabled = false;
    c.webhooks.poll_ms = 20;
    // Two retries, at once.
    c.webhooks.retry_schedule_s = vec![0, 0];
}

async fn endpoints_are_managed_and_validated(backend: Backend) {
    let s = scene(TestApp::spawn_with(backend, fast_retries).await).await;
    let (_, url) = Receiver::start().await;
    let app = &s.app;

    for (body, field) in [
        (json!({"url": "ftp://example.com/x", "events": ["order_created"]}), "url"),
        (json!({"url": url, "events": ["order_baked"]}), "events"),
        (json!({"url": url, "events": []}), "events"),
        (json!({"url": url, "events": ["inbox_appended"]}), "events"),
    ] {
        let (st, out) = app.post_json("/v1/webhook-endpoints", &s.admin, &body).await;
        assert_eq!((st, out["error"]["code"].as_str()), (422, Some("validation_failed")), "{body}: {out}");
        assert!(out["error"]["details"]["fields"][field].is_string(), "{out}");
    }
    let (st, out) = app.post_json("/v1/webhook-endpoints", &s.admin, &json!({"url": url, "evnts": []})).await;
    assert!((400..500).contains(&st) && out["error"]["code"].is_string(), "an unknown field: {st} {out}");

    let (st, created) = app
        .post_json("/v1/webhook-endpoints", &s.admin, &json!({"url": url, "events": ["*"], "description": "ops"}))
        .await;
    assert_eq!(st, 201, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let (st, list) = app.get_json("/v1/webhook-endpoints", &s.admin).await;
    assert_eq!(st, 200);
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 1, "{list}");
    assert!(list["endpoints"][0].get("secret").is_none(), "the secret is shown once: {list}");
    assert!(list["event_kinds"].as_array().unwrap().contains(&json!("order_status_changed")), "{list}");

    let patch = |body: Value| {
        let req = app.http.patch(app.url(&format!("/v1/webhook-endpoints/{id}"))).bearer_auth(&s.admin).json(&body);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (st, out) = patch(json!({"events": ["order_created", "order_cancelled"], "enabled": false})).await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        (out["events"].clone(), out["enabled"].clone()),
        (json!(["order_created", "order_cancelled"]), json!(false))
    );
    let (st, out) = patch(json!({"url": "file:///etc/passwd"})).await;
    assert_eq!(st, 422, "{out}");

    // Another tenant sees nothing of it.
    let (_, other) = app.tenant("other").await;
    let (st, _) = app.get_json(&format!("/v1/webhook-endpoints/{id}"), &other).await;
    assert_eq!(st, 404);
    let res =
        app.http.delete(app.url(&format!("/v1/webhook-endpoints/{id}"))).bearer_auth(&other).send().await.unwrap();
    assert_eq!(res.status(), 404);

    let res =
        app.http.delete(app.url(&format!("/v1/webhook-endpoints/{id}"))).bearer_auth(&s.admin).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let (st, out) = app.get_json(&format!("/v1/webhook-endpoints/{id}"), &s.admin).await;
    assert_eq!((st, out["error"]["code"].as_str()), (404, Some("not_found")), "{out}");
    s.app.stop().await;
}

async fn order_events_are_signed_and_retried(backend: Backend) {
    let s = scene(TestApp::spawn_with(backend, fast_retries).await).await;
    let (receiver, url) = Receiver::start().await;
    let (st, created) = s
        .app
        .post_json(
            "/v1/webhook-endpoints",
            &s.admin,
            &json!({"url": url, "events": ["order_created", "order_cancelled"]}),
        )
        .await;
    assert_eq!(st, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    // The first two attempts fail; the schedule allows two retries.
    receiver.failing.store(2, Ordering::SeqCst);

    let order = s.order().await;
    let got = receiver.until("three attempts at order_created", |g| g.iter().any(|r| r.answered == 204)).await;
    assert_eq!(got.iter().map(|r| r.answered).collect::<Vec<_>>(), vec![503, 503, 204], "{got:?}");
    for r in &got {
        assert!(signed_by(r, &secret), "a valid Standard Webhooks signature: {r:?}");
        assert_eq!(r.id, got[0].id, "one webhook-id across retries");
        let age = chrono::Utc::now().timestamp() - r.timestamp.parse::<i64>().unwrap();
        assert!((0..60).contains(&age), "a current timestamp: {r:?}");
    }
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["type"], "order_created", "{body}");
    assert_eq!(body["data"]["subject_id"], order.as_str(), "{body}");
    assert!(body["timestamp"].is_string(), "{body}");

    // A kind it did not subscribe to is not sent; one it did is.
    let (st, out) = s.app.post_json(&format!("/v1/orders/{order}/cancel"), &s.jwt, &json!({"reason": "test"})).await;
    assert_eq!(st, 200, "{out}");
    let got = receiver.until("order_cancelled", |g| g.iter().any(|r| r.body.contains("\"order_cancelled\""))).await;
    assert!(got.iter().all(|r| !r.body.contains("\"order_status_changed\"")), "{got:?}");

    let id = created["id"].as_str().unwrap();
    let (st, deliveries) = s.app.get_json(&format!("/v1/webhook-endpoints/{id}/deliveries"), &s.admin).await;
    assert_eq!(st, 200);
    let created_delivery = deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event_kind"] == "order_created")
        .cloned()
        .expect("the order_created delivery");
    assert_eq!((created_delivery["state"].as_str(), created_delivery["attempts"].as_i64()), (Some("done"), Some(3)));

    // Rotation: both secrets sign during the overlap.
    let (st, rotated) =
        s.app.post_json(&format!("/v1/webhook-endpoints/{id}/rotate-secret"), &s.admin, &json!({})).await;
    assert_eq!(st, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let before = receiver.got().len();
    s.order().await;
    let got = receiver.until("a delivery after rotation", |g| g.len() > before).await;
    let last = got.last().unwrap();
    assert!(signed_by(last, &new_secret) && signed_by(last, &secret), "signed by both: {last:?}");
    s.app.stop().await;
}

async fn exhausted_deliveries_dead_letter_and_replay(backend: Backend) {
    let s = scene(TestApp::spawn_with(backend, fast_retries).await).await;
    let (receiver, url) = Receiver::start().await;
    receiver.failing.store(usize::MAX, Ordering::SeqCst);
    let (st, created) =
        s.app.post_json("/v1/webhook-endpoints", &s.admin, &json!({"url": url, "events": ["order_created"]})).await;
    assert_eq!(st, 201, "{created}");
    let order = s.order().await;

    let letter = eventually_json(&s, "a webhook dead letter", "/v1/dead-letters?kind=webhook", |b| {
        b["dead_letters"].as_array().and_then(|l| l.first().cloned())
    })
    .await;
    assert_eq!(receiver.got().len(), 3, "three attempts, then the dead letter");
    assert!(letter["error"].as_str().unwrap().starts_with("retries exhausted"), "{letter}");
    assert_eq!(letter["context"]["endpoint_id"], created["id"], "{letter}");
    assert_eq!(letter["context"]["last_status"], 503, "{letter}");
    assert!(letter["body"].as_str().unwrap().contains(order.as_str()), "the payload is kept whole: {letter}");

    // The endpoint is fixed; the replay delivers it once.
    receiver.failing.store(0, Ordering::SeqCst);
    let path = format!("/v1/dead-letters/{}/replay", letter["id"].as_str().unwrap());
    let (st, out) = s.app.post_json(&path, &s.admin, &json!({})).await;
    assert_eq!((st, out["outcome"].as_str()), (200, Some("succeeded")), "{out}");
    receiver.until("the replayed delivery", |g| g.iter().any(|r| r.answered == 204)).await;
    let (_, again) = s.app.post_json(&path, &s.admin, &json!({})).await;
    assert_eq!(again["changed"], false, "a second replay sends nothing: {again}");
    let got = receiver.got();
    assert_eq!(got.iter().filter(|r| r.answered == 204).count(), 1, "{got:?}");
    s.app.stop().await;
}

async fn eventually_json(s: &Scene, what: &str, path: &str, pick: impl Fn(&Value) -> Option<Value>) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, body) = s.app.get_json(path, &s.admin).await;
        assert_eq!(st, 200, "{body}");
        if let Some(v) = pick(&body) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn private_endpoints_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.allow_private_urls = false).await;
    let (_, admin) = app.tenant("acme").await;
    for url in ["http://127.0.0.1:9000/hook", "http://169.254.169.254/latest", "http://10.1.2.3/x", "http://[::1]/x"] {
        let (st, body) = app.post_json("/v1/webhook-endpoints", &admin, &json!({"url": url, "events": ["*"]})).await;
        assert_eq!((st, body["error"]["code"].as_str()), (422, Some("validation_failed")), "{url}: {body}");
    }
    let (st, body) = app
        .post_json("/v1/webhook-endpoints", &admin, &json!({"url": "https://93.184.215.14/hook", "events": ["*"]}))
        .await;
    assert_eq!(st, 201, "a public address is fine: {body}");
    app.stop().await;
}

crate::on_backends!(
    webhook_endpoints_are_managed_and_validated => endpoints_are_managed_and_validated,
    order_events_are_delivered_signed_and_retried => order_events_are_signed_and_retried,
    exhausted_webhook_deliveries_dead_letter_and_replay => exhausted_deliveries_dead_letter_and_replay,
    webhook_endpoints_on_private_addresses_are_refused => private_endpoints_are_refused,
);

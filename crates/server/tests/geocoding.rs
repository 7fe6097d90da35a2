//! Geocoding end to end, on SQLite and PostgreSQL: a WooCommerce order that carries only a
//! Helsinki street address is located by the built-in index after its ack and offered to a
//! driver with no one's help; a garbage address stays `needs_location` with a reason and
//! an event and is not retried at once, until the store sends a corrected address; `GET /v1/geocode`; stores located by address; and
//! a Nominatim-API service (a local stand-in) with its cache and circuit breaker.
//!
//! Deliveries are signed the way WooCommerce documents it (`X-WC-Webhook-Signature` =
//! base64(HMAC-SHA256(secret, body))), never through the code under test.

#[path = "api/helpers.rs"]
mod helpers;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use helpers::*;
use hmac::{Hmac, Mac};
use lastmile_server::config::Config;
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const SITE: &str = "https://kahvila.example";
const SECRET: &str = "wc-secret";
/// Annankatu 31 in the shipped extract.
const ANNANKATU_31: (f64, f64) = (60.168277, 24.935229);

fn with_extract(cfg: &mut Config) {
    cfg.geocoding.osm_pbf = Some(lastmile_geo::helsinki_pbf_path());
}

/// The published WooCommerce order sample, shipped to `line1` in Helsinki, with no coordinates.
fn woo_order(id: i64, line1: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ingest/tests/fixtures/woocommerce/order_retrieve_727.json");
    let mut order: Value = serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("JSON");
    order["id"] = json!(id);
    for who in ["shipping", "billing"] {
        order[who]["address_1"] = json!(line1);
        order[who]["address_2"] = json!("A 5");
        order[who]["city"] = json!("Helsinki");
        order[who]["state"] = json!("");
        order[who]["postcode"] = json!("00100");
        order[who]["country"] = json!("FI");
    }
    serde_json::to_vec(&order).unwrap()
}

async fn deliver_woo(app: &TestApp, store_id: &str, body: &[u8]) -> String {
    let answer = deliver_woo_topic(app, store_id, body, "order.created").await;
    assert_eq!(answer["result"], "created", "{answer}");
    answer["order_id"].as_str().unwrap().to_owned()
}

async fn deliver_woo_topic(app: &TestApp, store_id: &str, body: &[u8], topic: &str) -> Value {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let res = app
        .http
        .post(app.url(&format!("/v1/webhooks/woocommerce/{store_id}")))
        .header("Content-Type", "application/json")
        .header("X-WC-Webhook-Source", SITE)
        .header("X-WC-Webhook-Topic", topic)
        .header("X-WC-Webhook-Resource", "order")
        .header("X-WC-Webhook-Event", topic.trim_start_matches("order."))
        .header("X-WC-Webhook-Signature", signature)
        .header("X-WC-Webhook-Delivery-ID", uuid_key())
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// A WooCommerce store whose pickup is given by address only (located by the geocoder).
async fn woo_store(app: &TestApp, admin: &str) -> Value {
    let (status, store) = app
        .post_json(
            "/v1/stores",
            admin,
            &json!({"name": "Kahvila", "platform": "woocommerce", "platform_store_id": SITE,
                    "webhook_secret": SECRET, "pickup": {"address": "Aleksanterinkatu 52, 00100 Helsinki"}}),
        )
        .await;
    assert_eq!(status, 201, "{store}");
    store
}

/// Poll the order until `done` holds, failing after [`WAIT`].
async fn order_until(app: &TestApp, admin: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, order) = app.get_json(&format!("/v1/orders/{id}"), admin).await;
        assert_eq!(status, 200, "{order}");
        if done(&order) {
            return order;
        }
        assert!(tokio::time::Instant::now() < deadline, "order never reached the expected state: {order}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metres(order: &Value, to: (f64, f64)) -> f64 {
    let at = lastmile_core::GeoPoint::new(
        order["dropoff"]["lat"].as_f64().unwrap(),
        order["dropoff"]["lng"].as_f64().unwrap(),
    )
    .unwrap();
    at.distance_m(&lastmile_core::GeoPoint::new(to.0, to.1).unwrap())
}

async fn an_address_only_order_is_located_and_offered(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_extract).await;
    let (_, admin) = app.tenant("kahvila").await;
    let store = woo_store(&app, &admin).await;
    let pickup = (store["pickup"]["lat"].as_f64().unwrap(), store["pickup"]["lng"].as_f64().unwrap());
    assert!((pickup.0 - 60.1684).abs() < 0.001 && (pickup.1 - 24.9421).abs() < 0.001, "pickup located: {store}");
    let (_, token) = app.driver(&admin, "Veera").await;
    app.driver_status(&token, "online").await;
    let mut ws = app.driver_ws(&token, 0).await;
    let (status, body) = app.locate(&token, pickup.0 + 0.002, pickup.1).await;
    assert!(status < 300, "{body}");

    let id = deliver_woo(&app, store["id"].as_str().unwrap(), &woo_order(9001, "Annankatu 31")).await;
    let located = order_until(&app, &admin, &id, |o| o["status"] != "needs_location").await;
    assert!(metres(&located, ANNANKATU_31) < 50.0, "{located}");
    assert_eq!(located["dropoff"]["address"]["line1"], "Annankatu 31");
    let (offer, _) = ws_until(&mut ws, "offer", WAIT).await;
    assert_eq!(offer["data"]["order_id"], json!(id), "{offer}");
    app.stop().await;
}

async fn a_garbage_address_waits_with_a_reason(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_extract).await;
    let (_, admin) = app.tenant("kahvila").await;
    let store = woo_store(&app, &admin).await;
    let id = deliver_woo(&app, store["id"].as_str().unwrap(), &woo_order(9002, "Qwzxv Plorkstrasse 99999")).await;
    let waiting = order_until(&app, &admin, &id, |o| {
        o["status_reason"].as_str().is_some_and(|r| r.contains("no geocoding match"))
    })
    .await;
    assert_eq!((&waiting["status"], &waiting["dropoff"]["lat"]), (&json!("needs_location"), &Value::Null));
    let events: Vec<String> = sqlx::query("SELECT kind FROM outbox WHERE subject_id = $1 ORDER BY seq")
        .bind(&id)
        .fetch_all(app.state.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("kind"))
        .collect();
    assert_eq!(events.iter().filter(|k| *k == "order_geocode_failed").count(), 1, "{events:?}");
    // Not due again until the retry schedule says so: a pass now finds nothing to do.
    assert_eq!(lastmile_server::geocoder::geocode_due(&app.state).await.unwrap(), 0);
    // The store corrects the address: the newer version is geocoded at once.
    let mut fixed: Value = serde_json::from_slice(&woo_order(9002, "Annankatu 31")).unwrap();
    fixed["date_modified_gmt"] = json!("2030-01-01T00:00:00");
    fixed["date_modified"] = json!("2030-01-01T02:00:00");
    let answer =
        deliver_woo_topic(&app, store["id"].as_str().unwrap(), &serde_json::to_vec(&fixed).unwrap(), "order.updated")
            .await;
    assert_eq!(
        (answer["result"].as_str(), answer["order_id"].as_str()),
        (Some("updated"), Some(id.as_str())),
        "{answer}"
    );
    let located = order_until(&app, &admin, &id, |o| o["status"] != "needs_location").await;
    assert!(metres(&located, ANNANKATU_31) < 50.0, "{located}");
    app.stop().await;
}

async fn the_geocode_endpoint(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_extract).await;
    let (_, admin) = app.tenant("ops").await;
    let get = |q: &str| {
        let url = format!("/v1/geocode?{}", serde_urlencoded::to_string([("q", q)]).unwrap());
        let (app, admin) = (&app, &admin);
        async move { app.get_json(&url, admin).await }
    };
    for q in [
        "annankatu 31",
        "Annankatu 31 A 5, 00100 Helsinki",
        "Anankatu 31",
        "ANNANKATU 31 B",
        "Annankatu 31, Helsinki, Finland",
    ] {
        let (status, m) = get(q).await;
        assert_eq!(status, 200, "{q}: {m}");
        let at = lastmile_core::GeoPoint::new(m["lat"].as_f64().unwrap(), m["lng"].as_f64().unwrap()).unwrap();
        assert!(
            at.distance_m(&lastmile_core::GeoPoint::new(ANNANKATU_31.0, ANNANKATU_31.1).unwrap()) < 50.0,
            "{q}: {m}"
        );
        assert!(
            m["confidence"].as_f64().unwrap() >= 0.5 && m["matched"].as_str().unwrap().starts_with("Annankatu 31"),
            "{m}"
        );
    }
    let (status, err) = get("Qwzxv Plorkstrasse 99999").await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("address_not_found")), "{err}");
    for bad in ["", "   ", &"x".repeat(301)] {
        let (status, err) = get(bad).await;
        assert_eq!((status, err["error"]["code"].as_str()), (400, Some("invalid_query")), "{err}");
    }
    let (status, _) = app.get_json("/v1/geocode?q=Annankatu%2031", "not-a-key").await;
    assert_eq!(status, 401);
    // A store pickup that cannot be located is refused, naming the field.
    let (status, err) = app
        .post_json(
            "/v1/stores",
            &admin,
            &json!({"name": "X", "platform": "native", "platform_store_id": "x", "webhook_secret": "",
                    "pickup": {"address": "Qwzxv Plorkstrasse 99999"}}),
        )
        .await;
    assert_eq!((status, err["error"]["details"]["fields"]["pickup.address"].is_string()), (422, true), "{err}");
    app.stop().await;
}

/// A stand-in for a Nominatim-API service: knows one address, counts calls, can fail.
#[derive(Clone, Default)]
struct Standin {
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

async fn search(State(s): State<Standin>, Query(p): Query<HashMap<String, String>>) -> axum::response::Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    if s.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    assert_eq!((p.get("format").map(String::as_str), p.get("limit").map(String::as_str)), (Some("jsonv2"), Some("1")));
    let q = p.get("q").cloned().unwrap_or_default().to_lowercase();
    let known = [
        ("annankatu 31", "60.1682771", "24.9352287", "31, Annankatu, Kamppi, Helsinki, 00100, Suomi / Finland"),
        ("aleksanterinkatu 52", "60.1683846", "24.9420796", "52, Aleksanterinkatu, Helsinki, 00100, Suomi / Finland"),
    ];
    let found: Vec<Value> = known
        .iter()
        .filter(|(k, ..)| q.contains(k))
        .map(|(_, lat, lon, name)| {
            json!({"place_id": 1, "lat": lat, "lon": lon, "category": "place", "type": "house", "place_rank": 30,
                   "importance": 0.1, "addresstype": "place", "display_name": name})
        })
        .collect();
    axum::Json(found).into_response()
}

async fn standin() -> (String, Standin) {
    let s = Standin::default();
    let app = axum::Router::new().route("/search", axum::routing::get(search)).with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, s)
}

async fn a_nominatim_service_with_cache_and_breaker(backend: Backend) {
    let (url, service) = standin().await;
    let app = TestApp::spawn_with(backend, |cfg| cfg.geocoding.url = Some(url.clone())).await;
    let (_, admin) = app.tenant("remote").await;
    let geocode = |q: &str| {
        let url = format!("/v1/geocode?{}", serde_urlencoded::to_string([("q", q)]).unwrap());
        let (app, admin) = (&app, &admin);
        async move { app.get_json(&url, admin).await }
    };
    let (status, m) = geocode("Annankatu 31, 00100 Helsinki").await;
    assert_eq!((status, m["source"].as_str(), m["confidence"].as_f64()), (200, Some("service"), Some(0.9)), "{m}");
    assert_eq!((m["lat"].as_f64(), m["lng"].as_f64()), (Some(60.1682771), Some(24.9352287)));
    let (status, _) = geocode("annankatu  31, 00100 HELSINKI").await;
    assert_eq!((status, service.calls.load(Ordering::SeqCst)), (200, 1), "answered from the cache");
    let (status, err) = geocode("Nowhere 1").await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("address_not_found")));
    let (status, _) = geocode("Nowhere 1").await;
    assert_eq!((status, service.calls.load(Ordering::SeqCst)), (404, 2), "not-found is cached too");

    // An order is located through the service.
    let store = woo_store(&app, &admin).await;
    let id = deliver_woo(&app, store["id"].as_str().unwrap(), &woo_order(9003, "Annankatu 31")).await;
    let located = order_until(&app, &admin, &id, |o| o["status"] != "needs_location").await;
    assert!(metres(&located, ANNANKATU_31) < 50.0, "{located}");

    // The service fails: five failures in a row open the breaker, which then answers alone.
    service.failing.store(true, Ordering::SeqCst);
    let before = service.calls.load(Ordering::SeqCst);
    for i in 0..5 {
        let (status, err) = geocode(&format!("Failing street {i}")).await;
        assert_eq!((status, err["error"]["code"].as_str()), (503, Some("unavailable")), "{err}");
    }
    assert_eq!(service.calls.load(Ordering::SeqCst), before + 5);
    let (status, err) = geocode("Failing street 6").await;
    assert_eq!(status, 503, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("breaker"), "{err}");
    assert_eq!(service.calls.load(Ordering::SeqCst), before + 5, "an open breaker makes no call");
    app.stop().await;
}

on_backends!(
    an_address_only_woocommerce_order_is_located_and_offered => an_address_only_order_is_located_and_offered,
    a_garbage_address_stays_needs_location_with_a_reason => a_garbage_address_waits_with_a_reason,
    get_geocode_answers_for_addresses_as_people_write_them => the_geocode_endpoint,
    a_nominatim_api_service_is_used_cached_and_broken_off => a_nominatim_service_with_cache_and_breaker,
);

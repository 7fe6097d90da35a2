//! ETAs that learn, black-box: deliveries at a known slower pace (a kitchen taking twice
//! the menu's prep time, drivers at 2 m/s) move the catalog's `eta_s` and a new order's
//! `ready_at` toward that pace, and a restart keeps what was learned. Paused time plays
//! out each delivery's minutes.

use crate::catalog::{count, item_id, order, put_menu, store_at};
use crate::helpers::{backends, Backend, ManualTime, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

/// The restaurant, and the customers' door about 1.3 km away.
const STORE: (f64, f64) = (60.1699, 24.9384);
const DOOR: (f64, f64) = (60.1800, 24.9500);
const PREP_S: f64 = 600.0;
const SLOW_MPS: f64 = 2.0;
/// What the model adds for handing over at the store and at the door (`EtaModel`'s defaults).
const PICKUP_HANDLING_S: f64 = 120.0;
const DROPOFF_HANDLING_S: f64 = 90.0;

#[tokio::test]
async fn deliveries_at_a_slower_pace_move_the_eta_toward_it() {
    for backend in backends() {
        eprintln!("learning on {backend:?}");
        learns(backend).await;
    }
}

async fn catalog_eta_s(app: &TestApp, jwt: &str) -> f64 {
    let (s, body) = app.get_json(&format!("/v1/catalog/stores?lat={}&lng={}&radius_m=5000", DOOR.0, DOOR.1), jwt).await;
    assert_eq!(s, 200, "{body}");
    body["stores"][0]["eta_s"].as_f64().unwrap()
}

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().timestamp_millis()
}

async fn learns(backend: Backend) {
    // The dispatcher stays off: the test assigns, so no offer races the paused clock.
    let app = TestApp::spawn_with(backend, |c| c.dispatch.enabled = false).await;
    let (_, admin) = app.tenant("Slow Kitchen Oy").await;
    let jwt = app.client_token(&admin).await;
    let store = store_at(&app, &admin, "Hidas Keittiö", STORE.0, STORE.1).await;
    let menu = put_menu(
        &app,
        &admin,
        &store,
        &json!({"cuisine": ["Finnish"], "categories": [{"name": "Mains", "items": [
            {"sku": "L1", "name": "Lohikeitto", "price_minor": 1490, "currency": "EUR", "prep_time_s": PREP_S as i64,
             "stock": count(100)}]}]}),
    )
    .await;
    let dish = item_id(&menu, "L1");
    let (driver, token) = app.driver(&admin, "Pekka Lahtinen").await;

    // Nothing learned: the menu's prep plus the default drive.
    let before = catalog_eta_s(&app, &jwt).await;
    let default_drive_s = before - PREP_S;
    assert!(default_drive_s > 100.0, "a 1.3 km drive at the default speed: {before}");
    // The model's metres for this trip (straight line × detour; no road graph here).
    let drive_m = default_drive_s * app.cfg.dispatch.speed_mps;

    let time = ManualTime::start(Duration::from_secs(120));
    let body = json!({
        "store_id": store,
        "customer": {"name": "Aino Virtanen", "phone": "+358401111111"},
        "dropoff": {"address": {"line1": "Mannerheimintie 100", "city": "Helsinki", "postal_code": "00250", "country": "FI"},
                    "lat": DOOR.0, "lng": DOOR.1},
        "items": [{"item_id": dish, "quantity": 1}],
    });
    for _ in 0..6 {
        let (s, placed) = order(&app, &jwt, &body).await;
        assert_eq!(s, 201, "{placed}");
        let id = placed["id"].as_str().unwrap().to_owned();
        let (s, a) = app
            .post_json(&format!("/v1/orders/{id}/assign"), &admin, &json!({"driver_id": driver, "force": true}))
            .await;
        assert_eq!(s, 200, "{a}");
        // The kitchen takes twice the menu's time; then the handover at the counter.
        time.advance(Duration::from_secs_f64(2.0 * PREP_S + PICKUP_HANDLING_S)).await;
        let (s, p) = app.post_json(&format!("/v1/driver/orders/{id}/pickup"), &token, &json!({})).await;
        assert_eq!(s, 200, "{p}");
        time.advance(Duration::from_secs_f64(drive_m / SLOW_MPS + DROPOFF_HANDLING_S)).await;
        let (s, d) = app.post_json(&format!("/v1/driver/orders/{id}/deliver"), &token, &json!({})).await;
        assert_eq!(s, 200, "{d}");
    }
    drop(time);

    // Twice the prep, and the drive at the slower pace.
    let expected = 2.0 * PREP_S + drive_m / SLOW_MPS;
    let after = catalog_eta_s(&app, &jwt).await;
    assert!((after - expected).abs() < 0.03 * expected, "eta_s {before} → {after}, expected ≈ {expected}");

    // What was learned is on show to the tenant's admins: this kitchen at twice its menu's
    // time, and the city's speed at the slower pace.
    let (s, learned) = app.get_json("/v1/eta/learned", &admin).await;
    assert_eq!(s, 200, "{learned}");
    let prep = &learned["prep"][0];
    assert_eq!(prep["store_id"], store.as_str(), "{learned}");
    assert!((prep["factor"].as_f64().unwrap() - 2.0).abs() < 0.05, "{learned}");
    assert_eq!((prep["samples"].as_i64(), prep["in_use"].as_bool()), (Some(6), Some(true)), "{learned}");
    let city = learned["speed"].as_array().unwrap().iter().find(|e| e["zone"].is_null() && e["hour"].is_null());
    let city = city.unwrap_or_else(|| panic!("no city-wide speed: {learned}"));
    assert!((city["speed_mps"].as_f64().unwrap() - SLOW_MPS).abs() < 0.05 * SLOW_MPS, "{learned}");
    let (s, _) = app.get_json("/v1/eta/learned", &jwt).await;
    assert_eq!(s, 401, "an API client is not an admin");

    // A new order's readiness follows the kitchen's learned pace (no other order in prep).
    let (s, next) = order(&app, &jwt, &body).await;
    assert_eq!(s, 201, "{next}");
    // `ready_at` is set on the server's clock (which the paused time moved ahead of the wall).
    let ready_in_s = (ms(&next["ready_at"]) - app.state.clock.now_ms()) as f64 / 1000.0;
    assert!((ready_in_s - 2.0 * PREP_S).abs() < 30.0, "ready in {ready_in_s} s");
    // The kitchen now prepares it: the next order waits in its queue too.
    let (s, queued) = order(&app, &jwt, &body).await;
    assert_eq!(s, 201, "{queued}");
    let queued_in_s = (ms(&queued["ready_at"]) - app.state.clock.now_ms()) as f64 / 1000.0;
    let load_s = app.cfg.eta.load_per_order_s;
    assert!((queued_in_s - 2.0 * (PREP_S + load_s)).abs() < 30.0, "queued order ready in {queued_in_s} s");

    // What was learned is kept across a restart.
    let app = app.restart().await;
    let kept = catalog_eta_s(&app, &jwt).await;
    assert!((kept - after).abs() < 1.0, "eta_s after restart {kept}, before {after}");
    app.stop().await;
}

//! Dispatch end to end: a driver online near the store gets the offer for a native order on
//! their socket, accepts, picks up and delivers while the customer tracks it; declines,
//! expiries (with paused time), stalls and cancellations; GPS validation, coalescing and
//! presence; and a property test of capacity and order safety at the storage level.

#[path = "api/helpers.rs"]
mod helpers;

use helpers::*;
use lastmile_core::{DriverId, OrderId, TenantId};
use serde_json::{json, Value};
use std::time::Duration;

/// Store pickup used by `TestApp::store` (Aleksanterinkatu 1, Helsinki).
const STORE: (f64, f64) = (60.1699, 24.9384);
/// A dropoff 1.5 km away.
const DROPOFF: (f64, f64) = (60.1810, 24.9500);
const WAIT: Duration = Duration::from_secs(10);

struct Scene {
    app: TestApp,
    tenant: TenantId,
    admin: String,
    jwt: String,
    store_id: String,
}

async fn scene(app: TestApp) -> Scene {
    let (tenant, admin) = app.tenant("acme").await;
    let store = app.store(&admin, "native", "acme-kitchen", "unused-secret").await;
    let jwt = app.client_token(&admin).await;
    Scene { app, tenant: TenantId(tenant), admin, jwt, store_id: store["id"].as_str().unwrap().to_owned() }
}

/// A driver online at `at`, with their socket open (after the location was taken in).
async fn online_driver(s: &Scene, name: &str, at: (f64, f64)) -> (DriverId, String, Ws) {
    let (id, token) = s.app.driver(&s.admin, name).await;
    s.app.driver_status(&token, "online").await;
    let mut ws = s.app.driver_ws(&token, 0).await;
    ws_send(&mut ws, json!({"type": "location", "data": fix(at.0, at.1, 0)})).await;
    // Wait until the live index holds the fix, without reading the socket: with matching
    // started by events, an offer may already be on its way to this driver.
    let driver = DriverId(id.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.app.state.fleet.driver(&driver).and_then(|d| d.point).is_none() {
        assert!(tokio::time::Instant::now() < deadline, "fix not taken in");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    (driver, token, ws)
}

async fn order_json(s: &Scene, id: &str) -> Value {
    let (status, body) = s.app.get_json(&format!("/v1/orders/{id}"), &s.jwt).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn track(s: &Scene, token: &str) -> Value {
    let (status, body) = s.app.get_json(&format!("/v1/track/{token}"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_tracking_leaks_nothing(&body);
    body
}

fn assert_order_active_with_eta(order: &Value, status: &str) {
    assert_eq!(order["status"], status, "{order}");
    let eta = order["eta"].as_str().unwrap_or_else(|| panic!("an active order has an ETA: {order}"));
    let eta = chrono::DateTime::parse_from_rfc3339(eta).expect("RFC 3339 ETA");
    assert!(eta > chrono::Utc::now(), "the ETA is ahead: {eta}");
}

async fn end_to_end(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let (driver, token, mut ws) = online_driver(&s, "Pekka Lahtinen", (60.1710, 24.9400)).await;

    let order = s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let tracking = order["tracking_token"].as_str().unwrap().to_owned();
    assert!(order["eta"].is_null(), "no ETA before a driver holds it: {order}");
    let first = track(&s, &tracking).await;
    assert!(first["driver"].is_null() && first["eta"].is_null(), "{first}");

    let (offer, _) = ws_until(&mut ws, "offer", WAIT).await;
    assert!(offer["seq"].as_i64().is_some_and(|n| n > 0), "{offer}");
    let data = &offer["data"];
    assert_eq!(data["order_id"], order_id.as_str(), "{offer}");
    assert!(data["expires_at"].is_string() && data["offer_id"].is_string(), "{offer}");
    assert_eq!((data["pickup"]["lat"].as_f64(), data["pickup"]["lng"].as_f64()), (Some(STORE.0), Some(STORE.1)));
    assert_eq!((data["dropoff"]["lat"].as_f64(), data["dropoff"]["lng"].as_f64()), (Some(DROPOFF.0), Some(DROPOFF.1)));
    assert_eq!(order_json(&s, &order_id).await["status"], "dispatching");

    ws_send(&mut ws, json!({"type": "accept", "offer_id": data["offer_id"]})).await;
    let (accepted, _) = ws_until(&mut ws, "accepted", WAIT).await;
    assert_eq!(accepted["data"]["order"]["driver_id"], driver.as_str(), "{accepted}");
    assert_order_active_with_eta(&accepted["data"]["order"], "assigned");
    assert_order_active_with_eta(&order_json(&s, &order_id).await, "assigned");
    // A second accept of the same offer is refused and the socket stays open.
    ws_send(&mut ws, json!({"type": "accept", "offer_id": data["offer_id"]})).await;
    let again = ws_next(&mut ws, WAIT).await;
    assert_eq!((again["type"].as_str(), again["data"]["code"].as_str()), (Some("error"), Some("offer_closed")));

    let view = track(&s, &tracking).await;
    assert_eq!((view["status"].as_str(), view["driver"]["first_name"].as_str()), (Some("assigned"), Some("Pekka")));
    assert!(view["driver"].get("location").is_none(), "no location before pickup: {view}");
    assert!(view["eta"].is_string(), "{view}");

    let (st, picked) = s.app.post_json(&format!("/v1/driver/orders/{order_id}/pickup"), &token, &json!({})).await;
    assert_eq!(st, 200, "{picked}");
    assert_order_active_with_eta(&picked, "picked_up");
    let view = track(&s, &tracking).await;
    assert_eq!(view["status"], "picked_up");
    let loc = &view["driver"]["location"];
    assert!(loc["lat"].is_f64() && loc["lng"].is_f64(), "location while on its way: {view}");
    assert!(view["eta"].is_string(), "{view}");

    let (st, delivered) = s
        .app
        .post_json(
            &format!("/v1/driver/orders/{order_id}/deliver"),
            &token,
            &json!({"recipient_name": "at the door", "lat": DROPOFF.0, "lng": DROPOFF.1}),
        )
        .await;
    assert_eq!((st, delivered["status"].as_str()), (200, Some("delivered")), "{delivered}");
    let done = order_json(&s, &order_id).await;
    assert!(done["eta"].is_null(), "no ETA once delivered: {done}");
    let view = track(&s, &tracking).await;
    assert_eq!((view["status"].as_str(), view["driver"]["first_name"].as_str()), (Some("delivered"), Some("Pekka")));
    assert!(view["driver"].get("location").is_none() && view["eta"].is_null(), "{view}");
    let d = s.app.state.db.get_driver(&s.tenant, &driver).await.unwrap();
    assert_eq!(d.active_count, 0, "delivery frees the driver");
    assert_eq!(s.app.state.db.active_assignments(&driver).await.unwrap(), 0);
    s.app.stop().await;
}

/// Decline (with reason) sends the order to the next driver, never back to the decliner;
/// an expiry after that reaches `max_attempts` and flags the order, with an event.
async fn decline_then_expiry_stalls(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.dispatch.max_attempts = 2).await;
    let s = scene(app).await;
    let (near, _, mut near_ws) = online_driver(&s, "Pekka Lahtinen", (60.1705, 24.9390)).await;
    let (far, _, mut far_ws) = online_driver(&s, "Ville Far", (60.1800, 24.9600)).await;
    let order = s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await;
    let order_id = OrderId(order["id"].as_str().unwrap().to_owned());

    let (offer, _) = ws_until(&mut near_ws, "offer", WAIT).await;
    assert_eq!(offer["data"]["order_id"], order_id.as_str());
    ws_send(&mut near_ws, json!({"type": "decline", "offer_id": offer["data"]["offer_id"], "reason": "flat tyre"}))
        .await;
    let (declined, _) = ws_until(&mut near_ws, "declined", WAIT).await;
    assert_eq!(declined["data"]["offer_id"], offer["data"]["offer_id"]);

    // Back in matching without the decliner: the other driver gets it.
    let (second, _) = ws_until(&mut far_ws, "offer", WAIT).await;
    assert_eq!(second["data"]["order_id"], order_id.as_str());
    let reason = order_json(&s, order_id.as_str()).await;
    assert_eq!(reason["status"], "dispatching");

    // Let it expire in paused time: the second attempt reaches max_attempts = 2.
    let time = ManualTime::start(Duration::from_secs(30));
    time.advance(Duration::from_secs(s.app.cfg.dispatch.offer_ttl_s + 1)).await;
    let (expired, _) = ws_until(&mut far_ws, "offer_expired", WAIT).await;
    assert_eq!(expired["data"]["offer_id"], second["data"]["offer_id"]);
    let stalled = order_json(&s, order_id.as_str()).await;
    assert_eq!((stalled["status"].as_str(), stalled["dispatch_stalled"].as_bool()), (Some("received"), Some(true)));
    assert!(stalled["status_reason"].as_str().is_some_and(|r| !r.is_empty()), "{stalled}");
    let events = s.app.state.db.events_after(&s.tenant, 0, 1000).await.unwrap();
    assert!(
        events.iter().any(|(_, kind, subject)| kind == "order_dispatch_stalled" && subject == order_id.as_str()),
        "a stalled order has an event for ops"
    );
    let offers = s.app.state.db.offers_for_order(&s.tenant, &order_id).await.unwrap();
    let states: Vec<(&str, &str)> = offers.iter().map(|o| (o.driver_id.as_str(), o.state.as_str())).collect();
    assert_eq!(states, vec![(near.as_str(), "declined"), (far.as_str(), "expired")]);
    let reason: Option<String> = sqlx::query_scalar("SELECT reason FROM offers WHERE id = $1")
        .bind(offers[0].id.as_str())
        .fetch_one(s.app.state.db.pool())
        .await
        .unwrap();
    assert_eq!(reason.as_deref(), Some("flat tyre"), "the decline keeps its reason");
    // No further offers: several ticks later the decliner's inbox holds only its one offer.
    for _ in 0..5 {
        dispatch_tick(&s.app).await;
    }
    let kinds: Vec<String> =
        s.app.state.db.inbox_after(&s.tenant, &near, 0, 100).await.unwrap().into_iter().map(|m| m.kind).collect();
    assert_eq!(kinds, vec!["offer"]);
    assert!(s.app.state.db.dispatch_candidates(100).await.unwrap().iter().all(|c| c.order.id != order_id));
    drop(time);
    s.app.stop().await;
}

/// Run one dispatcher pass now (the background loop runs too; both go through the database).
async fn dispatch_tick(app: &TestApp) {
    lastmile_server::dispatcher::tick_once(&app.state).await.expect("dispatch tick");
}

/// Cancellation by the store releases the driver — with an accepted assignment and with a
/// pending offer — tells them, and they are free for the next order.
async fn cancel_releases_and_tells_driver(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let (driver, _, mut ws) = online_driver(&s, "Pekka Lahtinen", (60.1705, 24.9390)).await;
    let first = s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await;
    let (offer, _) = ws_until(&mut ws, "offer", WAIT).await;
    ws_send(&mut ws, json!({"type": "accept", "offer_id": offer["data"]["offer_id"]})).await;
    ws_until(&mut ws, "accepted", WAIT).await;
    assert_eq!(s.app.state.db.get_driver(&s.tenant, &driver).await.unwrap().active_count, 1);

    let first_id = first["id"].as_str().unwrap();
    let (st, body) =
        s.app.post_json(&format!("/v1/orders/{first_id}/cancel"), &s.jwt, &json!({"reason": "customer called"})).await;
    assert_eq!((st, body["status"].as_str()), (200, Some("cancelled")), "{body}");
    let (told, _) = ws_until(&mut ws, "assignment_cancelled", WAIT).await;
    assert_eq!(
        (told["data"]["order_id"].as_str(), told["data"]["reason"].as_str()),
        (Some(first_id), Some("customer called"))
    );
    assert_eq!(s.app.state.db.get_driver(&s.tenant, &driver).await.unwrap().active_count, 0);
    assert_eq!(s.app.state.db.active_assignments(&driver).await.unwrap(), 0);

    // Free again: the next order is offered to them; cancelled while pending, the offer closes.
    let second = s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await;
    let second_id = second["id"].as_str().unwrap();
    let (offer, _) = ws_until(&mut ws, "offer", WAIT).await;
    assert_eq!(offer["data"]["order_id"], second_id);
    let (st, _) = s.app.post_json(&format!("/v1/orders/{second_id}/cancel"), &s.jwt, &json!({})).await;
    assert_eq!(st, 200);
    let (told, _) = ws_until(&mut ws, "assignment_cancelled", WAIT).await;
    assert_eq!(
        (told["data"]["order_id"].as_str(), told["data"]["offer_id"].as_str()),
        (Some(second_id), offer["data"]["offer_id"].as_str())
    );
    ws_send(&mut ws, json!({"type": "accept", "offer_id": offer["data"]["offer_id"]})).await;
    let refused = ws_next(&mut ws, WAIT).await;
    assert_eq!(refused["data"]["code"], "offer_closed", "{refused}");
    let offers = s.app.state.db.offers_for_order(&s.tenant, &OrderId(second_id.to_owned())).await.unwrap();
    assert_eq!(offers.iter().map(|o| o.state.as_str()).collect::<Vec<_>>(), vec!["cancelled"]);
    s.app.stop().await;
}

/// With the backstop tick an hour away, every offer here comes from a round that an event
/// started: a new order, a decline followed by another driver coming online, and a
/// delivery that frees the only driver while an order waits.
async fn events_start_rounds(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.dispatch.tick_ms = 3_600_000).await;
    let s = scene(app).await;
    let (_, _, mut first_ws) = online_driver(&s, "Pekka Lahtinen", (60.1705, 24.9390)).await;

    let order = s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let (offer, _) = ws_until(&mut first_ws, "offer", WAIT).await;
    assert_eq!(offer["data"]["order_id"], order_id.as_str(), "a new order starts a round");
    ws_send(&mut first_ws, json!({"type": "decline", "offer_id": offer["data"]["offer_id"]})).await;
    ws_until(&mut first_ws, "declined", WAIT).await;

    // Nobody else is free until a second driver comes online with a position.
    let (second, second_token, mut second_ws) = online_driver(&s, "Ville Virtanen", (60.1720, 24.9420)).await;
    let (offer, _) = ws_until(&mut second_ws, "offer", WAIT).await;
    assert_eq!(offer["data"]["order_id"], order_id.as_str(), "a driver coming online starts a round");
    ws_send(&mut second_ws, json!({"type": "accept", "offer_id": offer["data"]["offer_id"]})).await;
    ws_until(&mut second_ws, "accepted", WAIT).await;

    // The next order goes to the only free driver, the first, who declines it too.
    let next = s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await;
    let (offer, _) = ws_until(&mut first_ws, "offer", WAIT).await;
    assert_eq!(offer["data"]["order_id"], next["id"], "{offer}");
    ws_send(&mut first_ws, json!({"type": "decline", "offer_id": offer["data"]["offer_id"]})).await;
    ws_until(&mut first_ws, "declined", WAIT).await;

    // Only the busy second driver is left for it: their delivery frees them and starts a round.
    for step in ["pickup", "deliver"] {
        let (st, body) =
            s.app.post_json(&format!("/v1/driver/orders/{order_id}/{step}"), &second_token, &json!({})).await;
        assert_eq!(st, 200, "{body}");
    }
    let (offer, _) = ws_until(&mut second_ws, "offer", WAIT).await;
    assert_eq!(offer["data"]["order_id"], next["id"], "a freed driver starts a round");
    assert_eq!(s.app.state.db.active_assignments(&second).await.unwrap(), 0);
    s.app.stop().await;
}

/// A round reads only orders that could come due: one scheduled hours ahead stays out of
/// the candidates the matcher asks for (and of its offers) while one ready now is in them.
async fn far_future_orders(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let mut body = native_body(&s.store_id, DROPOFF.0, DROPOFF.1);
    body["ready_at"] = json!((chrono::Utc::now() + chrono::Duration::hours(3)).to_rfc3339());
    let res = s
        .app
        .http
        .post(s.app.url("/v1/orders"))
        .bearer_auth(&s.jwt)
        .header("Idempotency-Key", uuid_key())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let later: Value = res.json().await.unwrap();
    let now = s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await;
    let db = &s.app.state.db;
    let ids = |c: Vec<lastmile_storage::DispatchCandidate>| c.into_iter().map(|c| c.order.id.0).collect::<Vec<_>>();
    let all = ids(db.dispatch_candidates(100).await.unwrap());
    assert!(
        all.contains(&later["id"].as_str().unwrap().to_owned())
            && all.contains(&now["id"].as_str().unwrap().to_owned())
    );
    let soon = ids(db.dispatch_candidates_ready_by(100, s.app.state.clock.now_ms() + 3_600_000).await.unwrap());
    assert_eq!(soon, vec![now["id"].as_str().unwrap().to_owned()]);
    s.app.stop().await;
}

/// A round started by an event reads and matches only the part of the city the event
/// touched: with orders waiting in two cities, the round for an order in one reads that
/// city's orders and none of the other's (while the backstop round reads both).
async fn event_rounds_stay_in_their_zone(backend: Backend) {
    // The background loop is off: every round here is one the test starts.
    let s = scene(TestApp::spawn_with(backend, |c| c.dispatch.enabled = false).await).await;
    let (st, tampere) = s
        .app
        .post_json(
            "/v1/stores",
            &s.admin,
            &json!({"name": "Tampere kitchen", "platform": "native", "platform_store_id": "acme-tampere", "webhook_secret": "",
                    "pickup": {"lat": 61.4978, "lng": 23.7610, "address": "Hämeenkatu 1, Tampere"}}),
        )
        .await;
    assert_eq!(st, 201, "{tampere}");
    let tampere = tampere["id"].as_str().unwrap();
    let mut far = Vec::new();
    for _ in 0..3 {
        far.push(OrderId(s.app.native_order(&s.jwt, tampere, 61.5000, 23.7700).await["id"].as_str().unwrap().into()));
    }
    let near =
        OrderId(s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await["id"].as_str().unwrap().into());
    let (driver, _, mut ws) = online_driver(&s, "Pekka Lahtinen", (60.1705, 24.9390)).await;
    let state = &s.app.state;
    let round = |orders: Vec<OrderId>| {
        let mut affected = lastmile_server::dispatcher::Affected::default();
        for o in orders {
            affected.order(&s.tenant, o);
        }
        lastmile_server::dispatcher::match_affected(state, affected)
    };

    // An event in Tampere reads Tampere's three orders; the only driver is 160 km away.
    let stats = round(vec![far[0].clone()]).await.unwrap();
    assert_eq!((stats.orders_read, stats.offers), (3, 0), "{stats:?}");
    // An event in Helsinki reads Helsinki's one order, not Tampere's, and offers it.
    let stats = round(vec![near.clone()]).await.unwrap();
    assert_eq!((stats.orders_read, stats.offers), (1, 1), "{stats:?}");
    let (offer, _) = ws_until(&mut ws, "offer", WAIT).await;
    assert_eq!(offer["data"]["order_id"], near.0.as_str());
    // A driver freed in Helsinki: the round around them reads no Tampere order either.
    ws_send(&mut ws, json!({"type": "decline", "offer_id": offer["data"]["offer_id"]})).await;
    ws_until(&mut ws, "declined", WAIT).await;
    state.fleet.set_busy(&driver, false);
    let mut freed = lastmile_server::dispatcher::Affected::default();
    freed.point(&s.tenant, lastmile_core::GeoPoint::new(60.1705, 24.9390).unwrap());
    let stats = lastmile_server::dispatcher::match_affected(state, freed).await.unwrap();
    assert_eq!(stats.orders_read, 1, "the declined Helsinki order only: {stats:?}");
    // The backstop reads every waiting order of the tenant.
    let all = lastmile_server::dispatcher::match_affected(state, lastmile_server::dispatcher::Affected::everything())
        .await
        .unwrap();
    assert_eq!(all.orders_read, 4, "{all:?}");
    s.app.stop().await;
}

on_backends!(
    event_rounds_read_only_the_affected_zone => event_rounds_stay_in_their_zone,
    far_future_orders_stay_out_of_rounds => far_future_orders,
    end_to_end_offer_accept_pickup_deliver_track => end_to_end,
    cancellation_releases_the_driver_and_tells_them => cancel_releases_and_tells_driver,
    matching_follows_events_not_the_tick => events_start_rounds,
);

/// Tests with paused time run on the current-thread runtime (`tokio::time::pause` needs it).
macro_rules! on_backends_current_thread {
    ($($name:ident => $body:path),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            for backend in helpers::backends() {
                eprintln!("{} on {:?}", stringify!($name), backend);
                $body(backend).await;
            }
        }
    )*};
}

/// The offer deadline follows the server's clock, which follows tokio's: with time paused
/// the offer is still pending 29 s in, and expires (message, order back in matching) past 30 s.
async fn offer_expiry_in_paused_time(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    assert_eq!(s.app.cfg.dispatch.offer_ttl_s, 30);
    let (driver, _, mut ws) = online_driver(&s, "Pekka Lahtinen", (60.1705, 24.9390)).await;
    let order = s.app.native_order(&s.jwt, &s.store_id, DROPOFF.0, DROPOFF.1).await;
    let order_id = OrderId(order["id"].as_str().unwrap().to_owned());
    let (offer, _) = ws_until(&mut ws, "offer", WAIT).await;
    let offer_id = offer["data"]["offer_id"].as_str().unwrap().to_owned();

    let time = ManualTime::start(Duration::from_secs(60));
    time.advance(Duration::from_secs(29)).await;
    dispatch_tick(&s.app).await;
    let offers = s.app.state.db.offers_for_order(&s.tenant, &order_id).await.unwrap();
    assert_eq!(offers.iter().map(|o| o.state.as_str()).collect::<Vec<_>>(), vec!["pending"], "still pending at 29 s");
    assert_eq!(order_json(&s, order_id.as_str()).await["status"], "dispatching");
    let kinds: Vec<String> =
        s.app.state.db.inbox_after(&s.tenant, &driver, 0, 100).await.unwrap().into_iter().map(|m| m.kind).collect();
    assert_eq!(kinds, vec!["offer"]);

    time.advance(Duration::from_millis(1_500)).await;
    // Past the deadline an accept is refused, whether or not the sweeper ran yet.
    ws_send(&mut ws, json!({"type": "accept", "offer_id": offer_id})).await;
    let (expired, mut before) = ws_until(&mut ws, "offer_expired", WAIT).await;
    assert_eq!(
        (expired["data"]["offer_id"].as_str(), expired["data"]["order_id"].as_str()),
        (Some(offer_id.as_str()), Some(order_id.as_str()))
    );
    if before.is_empty() {
        before.push(ws_next(&mut ws, WAIT).await);
    }
    assert_eq!(
        (before[0]["type"].as_str(), before[0]["data"]["code"].as_str()),
        (Some("error"), Some("offer_closed")),
        "{before:?}"
    );
    let back = order_json(&s, order_id.as_str()).await;
    assert_eq!(
        (back["status"].as_str(), back["dispatch_stalled"].as_bool()),
        (Some("received"), Some(false)),
        "{back}"
    );
    let cand = s.app.state.db.dispatch_candidates(100).await.unwrap();
    let cand = cand.iter().find(|c| c.order.id == order_id).expect("the order is back in matching");
    assert_eq!(cand.excluded, vec![driver.clone()], "without the driver who let it expire");
    drop(time);
    s.app.stop().await;
}

/// GPS bursts above the per-driver cap coalesce to the newest fix, which becomes the
/// position once the window passes; silence past `presence_timeout_s` means offline.
async fn gps_burst_and_presence(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.gps_min_interval_ms = 1000;
        c.presence_timeout_s = 60;
        // Presence is checked by the dispatcher's tick; the test runs the ticks itself so
        // the background loop cannot take the timeout first and still be writing it.
        c.dispatch.enabled = false;
    })
    .await;
    let s = scene(app).await;
    let (id, token) = s.app.driver(&s.admin, "Pekka Lahtinen").await;
    let driver = DriverId(id);
    s.app.driver_status(&token, "online").await;
    let time = ManualTime::start(Duration::from_secs(60));
    let position = || s.app.state.fleet.driver(&driver).and_then(|d| d.point).map(|p| (p.lat, p.lng));

    let (st, body) = s.app.post_json("/v1/driver/location", &token, &fix(60.1700, 24.9400, -3000)).await;
    assert_eq!((st, body["result"].as_str()), (200, Some("accepted")), "{body}");
    let (st, body) = s.app.post_json("/v1/driver/location", &token, &fix(60.1701, 24.9401, -2000)).await;
    assert_eq!((st, body["result"].as_str()), (200, Some("coalesced")), "{body}");
    let burst = json!([fix(60.1703, 24.9403, 0), fix(60.1702, 24.9402, -1000)]);
    let (st, body) = s.app.post_json("/v1/driver/location", &token, &burst).await;
    let results: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["result"].as_str().unwrap()).collect();
    assert_eq!((st, results), (200, vec!["coalesced", "coalesced"]), "{body}");
    assert_eq!(position(), Some((60.1700, 24.9400)), "inside the window the first fix stands");

    time.advance(Duration::from_millis(1_000)).await;
    lastmile_server::gps::flush_once(&s.app.state).await.unwrap();
    assert_eq!(position(), Some((60.1703, 24.9403)), "the newest fix of the burst becomes the position");
    // Older than the newest fix of the burst: stale (a heartbeat for presence all the same).
    let (st, body) = s.app.post_json("/v1/driver/location", &token, &fix(60.1702, 24.9402, -5_000)).await;
    assert_eq!((st, body["error"]["code"].as_str()), (422, Some("stale_location")), "{body}");

    time.advance(Duration::from_secs(59)).await;
    dispatch_tick(&s.app).await;
    assert_eq!(s.app.state.db.get_driver(&s.tenant, &driver).await.unwrap().status, "online", "59 s of silence");
    time.advance(Duration::from_secs(2)).await;
    dispatch_tick(&s.app).await;
    assert_eq!(s.app.state.db.get_driver(&s.tenant, &driver).await.unwrap().status, "offline", "61 s of silence");
    assert_eq!(s.app.state.fleet.driver(&driver).unwrap().status, "offline");
    drop(time);
    s.app.stop().await;
}

on_backends_current_thread!(
    offer_expires_with_paused_time => offer_expiry_in_paused_time,
    decline_and_expiry_go_back_to_matching_then_stall => decline_then_expiry_stalls,
    gps_bursts_coalesce_and_presence_times_out => gps_burst_and_presence,
);

/// Every rejection has its code and leaves the last good position alone.
async fn gps_validation(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let (id, token) = s.app.driver(&s.admin, "Pekka Lahtinen").await;
    let driver = DriverId(id);
    let post = |body: Value| {
        let (app, token) = (&s.app, token.clone());
        async move { app.post_json("/v1/driver/location", &token, &body).await }
    };
    let code = |r: &(u16, Value)| (r.0, r.1["error"]["code"].as_str().map(str::to_owned));
    let invalid = (422, Some("invalid_location".to_owned()));
    assert_eq!(code(&post(fix(91.0, 24.0, 0)).await), invalid);
    assert_eq!(code(&post(fix(60.0, -180.5, 0)).await), invalid);
    assert_eq!(code(&post(json!({"lat": "NaN", "lng": 24.0, "recorded_at": chrono::Utc::now()})).await), invalid);
    assert_eq!(code(&post(json!({"lat": 60.0, "lng": 24.0})).await), invalid, "recorded_at is required");
    let mut neg = fix(60.0, 24.0, 0);
    neg["accuracy_m"] = json!(-1.0);
    assert_eq!(code(&post(neg).await), invalid);
    assert_eq!(code(&post(fix(60.1700, 24.9400, 10 * 60_000)).await), (422, Some("timestamp_in_future".to_owned())));

    let (st, body) = post(fix(60.1700, 24.9400, -10_000)).await;
    assert_eq!((st, body["result"].as_str()), (200, Some("accepted")), "{body}");
    assert_eq!(code(&post(fix(60.1700, 24.9400, -20_000)).await), (422, Some("stale_location".to_owned())));
    // 50 km in 5 s.
    assert_eq!(code(&post(fix(60.6200, 24.9400, -5_000)).await), (422, Some("implausible_jump".to_owned())));
    // A batch answers per fix.
    let (st, body) = post(json!([fix(95.0, 24.0, -4000), fix(60.6200, 24.9400, -3000)])).await;
    let codes: Vec<&str> =
        body["results"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap_or("")).collect();
    assert_eq!((st, codes), (200, vec!["invalid_location", "implausible_jump"]), "{body}");
    let p = s.app.state.fleet.driver(&driver).and_then(|d| d.point).unwrap();
    assert_eq!((p.lat, p.lng), (60.1700, 24.9400), "rejections never move the driver");

    // Over the socket: the error comes back as a message and the socket stays open.
    let mut ws = s.app.driver_ws(&token, 0).await;
    ws_send(&mut ws, json!({"type": "location", "data": fix(60.0, 200.0, 0)})).await;
    let err = ws_next(&mut ws, WAIT).await;
    assert_eq!(
        (err["type"].as_str(), err["data"]["code"].as_str()),
        (Some("error"), Some("invalid_location")),
        "{err}"
    );
    ws_send(&mut ws, json!({"type": "location", "data": fix(60.1700, 24.9400, 10 * 60_000)})).await;
    let err = ws_next(&mut ws, WAIT).await;
    assert_eq!(err["data"]["code"], "timestamp_in_future", "{err}");
    ws_send(&mut ws, json!({"type": "ack", "seq": 0})).await;
    ws_send(&mut ws, json!({"type": "location"})).await;
    let err = ws_next(&mut ws, WAIT).await;
    assert_eq!(err["data"]["code"], "invalid_message", "{err}");
    s.app.stop().await;
}

on_backends!(gps_rejections_have_codes => gps_validation);

/// Invariant 6 and "never lose an order", at the storage level, with two racing
/// dispatchers (two database handles, as two nodes would have).
mod capacity_properties {
    use lastmile_core::*;
    use lastmile_storage::testing::TestDb;
    use lastmile_storage::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    const DRIVERS: usize = 3;
    const ORDERS: usize = 4;
    const TTL_MS: i64 = 30_000;
    const POLICY: StallPolicy = StallPolicy { max_attempts: 3 };

    #[derive(Debug, Clone)]
    enum Op {
        Offer {
            order: usize,
            driver: usize,
        },
        Accept {
            offer: usize,
        },
        Decline {
            offer: usize,
        },
        /// Advance the clock and sweep expired offers.
        Expire {
            advance_ms: i64,
        },
        Cancel {
            order: usize,
        },
        /// The holder moves the order on (see `step`).
        Step {
            order: usize,
            to: u8,
        },
        /// Two dispatchers offer two orders to one driver at once, who accepts both at once.
        RaceDriver {
            orders: (usize, usize),
            driver: usize,
        },
        /// Two dispatchers offer one order to two drivers at once; both accept.
        RaceOrder {
            order: usize,
            drivers: (usize, usize),
        },
        /// Ops clear a stall.
        Unstall {
            order: usize,
        },
        /// The driver accepts on one node while another node's sweeper, whose clock is past
        /// the deadline, expires the same offer.
        RaceAcceptExpire {
            offer: usize,
        },
        /// The driver's app accepts and declines the same offer at once, on two nodes.
        RaceAcceptDecline {
            offer: usize,
        },
        /// The same step (a double tap) reaches two nodes at once.
        RaceStep {
            order: usize,
            to: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let o = 0..ORDERS;
        let d = 0..DRIVERS;
        prop_oneof![
            4 => (o.clone(), d.clone()).prop_map(|(order, driver)| Op::Offer { order, driver }),
            4 => any::<usize>().prop_map(|offer| Op::Accept { offer }),
            2 => any::<usize>().prop_map(|offer| Op::Decline { offer }),
            2 => (0i64..45_000).prop_map(|advance_ms| Op::Expire { advance_ms }),
            1 => o.clone().prop_map(|order| Op::Cancel { order }),
            2 => (o.clone(), 0u8..3).prop_map(|(order, to)| Op::Step { order, to }),
            3 => ((o.clone(), o.clone()), d.clone()).prop_map(|(orders, driver)| Op::RaceDriver { orders, driver }),
            3 => (o.clone(), (d.clone(), d)).prop_map(|(order, drivers)| Op::RaceOrder { order, drivers }),
            1 => o.prop_map(|order| Op::Unstall { order }),
            3 => any::<usize>().prop_map(|offer| Op::RaceAcceptExpire { offer }),
            3 => any::<usize>().prop_map(|offer| Op::RaceAcceptDecline { offer }),
            2 => (0..ORDERS, 0u8..3).prop_map(|(order, to)| Op::RaceStep { order, to }),
        ]
    }

    struct Case {
        tenant: TenantId,
        drivers: Vec<(DriverId, i64)>,
        orders: Vec<OrderId>,
        /// Every offer made so far, with its driver (accept/decline pick from these).
        offers: Vec<(OfferId, DriverId)>,
        now: i64,
    }

    async fn seed(db: &Db, capacities: &[i64]) -> Case {
        let key = OrderId::generate().0;
        let tenant = db.create_tenant("prop", &format!("key_{key}"), &key).await.unwrap().id;
        let now = now_ms();
        let store = db
            .create_store(StoreRecord {
                id: StoreId::generate(),
                tenant_id: tenant.clone(),
                name: "Kitchen".into(),
                platform: Platform::Native,
                platform_store_id: format!("kitchen-{key}"),
                webhook_secret_enc: vec![0],
                api_base_url: None,
                api_credentials_enc: None,
                pickup_lat: 60.17,
                pickup_lng: 24.94,
                pickup_address: "Store street 1".into(),
                tier: "standard".into(),
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
        let mut drivers = Vec::new();
        for (i, cap) in capacities.iter().enumerate() {
            let d = db
                .create_driver(&tenant, &format!("D{i}"), "+358", "bike", *cap, &OrderId::generate().0)
                .await
                .unwrap();
            db.set_driver_status(&tenant, &d.id, "online").await.unwrap();
            drivers.push((d.id, *cap));
        }
        let mut orders = Vec::new();
        for i in 0..ORDERS {
            let src =
                IntakeSource { tenant_id: tenant.clone(), store_id: store.id.clone(), platform: Platform::Native };
            let (order, _) = db.create_native_order(src, normalized(&format!("P{i}")), now, None).await.unwrap();
            orders.push(order.id);
        }
        Case { tenant, drivers, orders, offers: Vec::new(), now }
    }

    fn normalized(id: &str) -> NormalizedOrder {
        NormalizedOrder {
            platform: Platform::Native,
            platform_order_id: id.into(),
            platform_order_number: None,
            state: PlatformState::Open,
            customer: Customer { name: "Ada".into(), email: None, phone: None },
            dropoff: Dropoff {
                address: Address {
                    line1: "Mannerheimintie 1".into(),
                    city: "Helsinki".into(),
                    postal_code: "00100".into(),
                    country: "FI".into(),
                    ..Default::default()
                },
                lat: Some(60.18),
                lng: Some(24.95),
            },
            items: vec![LineItem { sku: None, name: "Soup".into(), quantity: 1, unit_price_minor: 900 }],
            totals: Totals {
                subtotal_minor: 900,
                shipping_minor: 0,
                tax_minor: 0,
                total_minor: 900,
                currency: "EUR".into(),
            },
            notes: None,
            placed_at: None,
            platform_updated_at: None,
        }
    }

    async fn offer_and_accept(db: &Db, c: &Case, order: &OrderId, driver: &DriverId) -> Option<OfferId> {
        let (offer, _) = db.create_offer(&c.tenant, order, driver, c.now, TTL_MS).await.ok()?;
        let _ = db.accept_offer(&c.tenant, driver, &offer, c.now).await;
        Some(offer)
    }

    /// The order's holder moves it on: 0 pickup, 1 deliver, 2 fail.
    async fn step(db: &Db, c: &Case, order: usize, to: u8) -> Option<Order> {
        let o = &c.orders[order];
        let d = db.get_order(&c.tenant, o).await.ok()?.driver_id?;
        let (to, detail) = match to {
            0 => (OrderStatus::PickedUp, serde_json::Value::Null),
            1 => (OrderStatus::Delivered, serde_json::json!({"recipient_name": "Ada"})),
            _ => (OrderStatus::Failed, serde_json::json!({"reason": "no one home"})),
        };
        db.driver_order_step(&c.tenant, &d, o, to, detail).await.ok()
    }

    async fn apply(a: &Db, b: &Db, c: &mut Case, op: &Op) {
        let t = c.tenant.clone();
        match op {
            Op::Offer { order, driver } => {
                let d = c.drivers[*driver].0.clone();
                if let Ok((offer, _)) = a.create_offer(&t, &c.orders[*order], &d, c.now, TTL_MS).await {
                    c.offers.push((offer, d));
                }
            }
            Op::Accept { offer } | Op::Decline { offer } if !c.offers.is_empty() => {
                let (id, d) = c.offers[offer % c.offers.len()].clone();
                let _ = match op {
                    Op::Accept { .. } => a.accept_offer(&t, &d, &id, c.now).await.map(|_| ()),
                    _ => a.decline_offer(&t, &d, &id, "busy", POLICY).await,
                };
            }
            Op::Accept { .. } | Op::Decline { .. } => {}
            Op::Expire { advance_ms } => {
                c.now += advance_ms;
                let _ = a.expire_offers(c.now, POLICY).await;
            }
            Op::Cancel { order } => {
                let _ = a.cancel_order(&t, &c.orders[*order], "store cancelled").await;
            }
            Op::Step { order, to } => {
                let _ = step(a, c, *order, *to).await;
            }
            Op::RaceStep { order, to } => {
                let _ = tokio::join!(step(a, c, *order, *to), step(b, c, *order, *to));
            }
            Op::RaceDriver { orders, driver } => {
                let d = c.drivers[*driver].0.clone();
                let (o1, o2) = (c.orders[orders.0].clone(), c.orders[orders.1].clone());
                let (r1, r2) = tokio::join!(offer_and_accept(a, c, &o1, &d), offer_and_accept(b, c, &o2, &d));
                c.offers.extend([r1, r2].into_iter().flatten().map(|o| (o, d.clone())));
            }
            Op::RaceOrder { order, drivers } => {
                let (d1, d2) = (c.drivers[drivers.0].0.clone(), c.drivers[drivers.1].0.clone());
                let o = c.orders[*order].clone();
                let (r1, r2) = tokio::join!(offer_and_accept(a, c, &o, &d1), offer_and_accept(b, c, &o, &d2));
                c.offers.extend(r1.map(|x| (x, d1)));
                c.offers.extend(r2.map(|x| (x, d2)));
            }
            Op::Unstall { order } => {
                let _ = a.unstall_order(&t, &c.orders[*order]).await;
            }
            Op::RaceAcceptExpire { offer } | Op::RaceAcceptDecline { offer } if !c.offers.is_empty() => {
                let (id, d) = c.offers[offer % c.offers.len()].clone();
                let accept = b.accept_offer(&t, &d, &id, c.now);
                if let Op::RaceAcceptExpire { .. } = op {
                    let _ = tokio::join!(accept, a.expire_offers(c.now + TTL_MS, POLICY));
                } else {
                    let _ = tokio::join!(accept, a.decline_offer(&t, &d, &id, "changed my mind", POLICY));
                }
            }
            Op::RaceAcceptExpire { .. } | Op::RaceAcceptDecline { .. } => {}
        }
    }

    /// Capacity holds (assignments table and counter agree), every order exists in a
    /// defined status, `dispatching` always has exactly one pending offer, and every order
    /// a driver holds has exactly its one active assignment.
    async fn check(db: &Db, c: &Case, after: &Op) -> Result<(), TestCaseError> {
        let mut held_by: std::collections::HashMap<DriverId, i64> = Default::default();
        for id in &c.orders {
            let order =
                db.get_order(&c.tenant, id).await.map_err(|e| TestCaseError::fail(format!("order {id} lost: {e}")))?;
            let pending =
                db.offers_for_order(&c.tenant, id).await.unwrap().into_iter().filter(|o| o.state == "pending").count();
            let want_pending = usize::from(order.status == OrderStatus::Dispatching);
            prop_assert_eq!(
                pending,
                want_pending,
                "order {} is {} with {} pending offers, after {:?}",
                id,
                order.status,
                pending,
                after
            );
            if order.status.holds_driver() {
                let d = order
                    .driver_id
                    .clone()
                    .ok_or_else(|| TestCaseError::fail(format!("{} without a driver", order.status)))?;
                *held_by.entry(d).or_default() += 1;
            }
        }
        for (d, cap) in &c.drivers {
            let active = db.active_assignments(d).await.unwrap();
            let counter = db.get_driver(&c.tenant, d).await.unwrap().active_count;
            prop_assert!(active <= *cap, "driver {} holds {} > capacity {} after {:?}", d, active, cap, after);
            prop_assert_eq!(active, counter, "assignments and counter disagree for {} after {:?}", d, after);
            prop_assert_eq!(
                active,
                held_by.get(d).copied().unwrap_or(0),
                "orders held vs assignments for {} after {:?}",
                d,
                after
            );
        }
        Ok(())
    }

    async fn run_case(a: &Db, b: &Db, capacities: &[i64], ops: &[Op]) -> Result<(), TestCaseError> {
        let mut c = seed(a, capacities).await;
        for op in ops {
            apply(a, b, &mut c, op).await;
            check(a, &c, op).await?;
        }
        // Whatever happened, a sweep far in the future leaves nothing waiting on an offer.
        c.now += 24 * 3_600_000;
        a.expire_offers(c.now, POLICY).await.unwrap();
        check(a, &c, &Op::Expire { advance_ms: 0 }).await?;
        for id in &c.orders {
            prop_assert_ne!(a.get_order(&c.tenant, id).await.unwrap().status, OrderStatus::Dispatching);
        }
        Ok(())
    }

    #[test]
    fn racing_dispatchers_never_exceed_capacity_nor_lose_orders() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        for tdb in rt.block_on(TestDb::all()) {
            eprintln!("capacity property on {}", tdb.backend());
            // The second dispatcher: its own pool and group-commit writer on the same database.
            let other = rt.block_on(Db::connect(&tdb.url, DbOptions::default())).expect("second handle");
            let mut runner = TestRunner::new(Config {
                cases: 24,
                max_shrink_iters: 200,
                failure_persistence: None,
                ..Config::default()
            });
            let strategy = (prop::collection::vec(1i64..=2, DRIVERS), prop::collection::vec(op(), 1..30));
            let result = runner.run(&strategy, |(caps, ops)| rt.block_on(run_case(&tdb.db, &other, &caps, &ops)));
            rt.block_on(other.close());
            rt.block_on(tdb.cleanup());
            if let Err(e) = result {
                panic!("{e}");
            }
        }
    }
}

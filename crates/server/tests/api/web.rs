//! The web apps' API: console sessions (cookie + CSRF) and roles, users, driver sign-in
//! codes, delivery photos, the tenant event stream, map data, customers' choices on slow
//! deliveries, the numbers, and the pages and files themselves.

use crate::helpers::{fix, Backend, SseStream, TestApp};
use crate::on_backends;
use serde_json::{json, Value};
use std::time::Duration;

/// A signed-in console: its cookies and CSRF token, sent by hand (as a browser would).
struct Console {
    cookie: String,
    csrf: String,
}

async fn sign_in(app: &TestApp, body: Value) -> Result<Console, (u16, Value)> {
    let res = app.http.post(app.url("/v1/console/login")).json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    let cookies: Vec<String> =
        res.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let answer: Value = res.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err((status, answer));
    }
    let session = cookies.iter().find(|c| c.starts_with("lm_session=")).expect("session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"), "{session}");
    let csrf_cookie = cookies.iter().find(|c| c.starts_with("lm_csrf=")).expect("csrf cookie");
    assert!(!csrf_cookie.contains("HttpOnly"), "the page must read the CSRF cookie: {csrf_cookie}");
    let value = |c: &str| c.split(';').next().unwrap().to_owned();
    let csrf = answer["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(value(csrf_cookie), format!("lm_csrf={csrf}"));
    Ok(Console { cookie: format!("{}; {}", value(session), value(csrf_cookie)), csrf })
}

impl Console {
    async fn send(&self, app: &TestApp, method: &str, path: &str, body: Option<Value>, csrf: bool) -> (u16, Value) {
        let mut req = app.http.request(method.parse().unwrap(), app.url(path)).header("cookie", &self.cookie);
        if csrf {
            req = req.header("x-csrf-token", &self.csrf);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

async fn sessions_and_roles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("roles").await;
    let user = |email: &str, role: &str| json!({"email": email, "password": "long enough pw", "role": role});
    for (email, role) in
        [("boss@roles.example", "admin"), ("desk@roles.example", "dispatcher"), ("eyes@roles.example", "viewer")]
    {
        let (s, b) = app.post_json("/v1/users", &admin, &user(email, role)).await;
        assert_eq!((s, b["role"].as_str()), (201, Some(role)), "{b}");
        assert!(b.get("password_hash").is_none());
    }
    let (s, b) = app.post_json("/v1/users", &admin, &user("Desk@Roles.example", "viewer")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("user_exists")));
    let (s, b) = app.post_json("/v1/users", &admin, &json!({"email": "x", "password": "short", "role": "god"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("validation_failed")), "{b}");
    assert_eq!(b["error"]["details"]["fields"].as_object().unwrap().len(), 3, "{b}");

    // Wrong password and unknown names look the same.
    let wrong = sign_in(&app, json!({"email": "desk@roles.example", "password": "not it at all"})).await.err().unwrap();
    let unknown =
        sign_in(&app, json!({"email": "who@roles.example", "password": "not it at all"})).await.err().unwrap();
    assert_eq!((wrong.0, &wrong.1), (401, &unknown.1));

    let desk = sign_in(&app, json!({"email": "DESK@roles.example", "password": "long enough pw"})).await.unwrap();
    let (s, me) = desk.send(&app, "GET", "/v1/console/session", None, false).await;
    assert_eq!((s, me["role"].as_str(), me["tenant_name"].as_str()), (200, Some("dispatcher"), Some("roles")));
    // The admin API takes the session: reads freely, writes only with the CSRF header.
    assert_eq!(desk.send(&app, "GET", "/v1/orders", None, false).await.0, 200);
    let driver = json!({"name": "Ville"});
    let (s, b) = desk.send(&app, "POST", "/v1/drivers", Some(driver.clone()), false).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("csrf_failed")));
    let (s, b) = desk.send(&app, "POST", "/v1/drivers", Some(driver.clone()), true).await;
    assert_eq!(s, 201, "{b}");
    // A dispatcher manages orders, drivers and dead letters, not stores or people.
    let store = json!({"name": "s", "platform": "native", "platform_store_id": "s", "webhook_secret": "",
                       "pickup": {"lat": 60.17, "lng": 24.94, "address": "a"}});
    let (s, b) = desk.send(&app, "POST", "/v1/stores", Some(store.clone()), true).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(desk.send(&app, "GET", "/v1/users", None, false).await.0, 403);
    assert_eq!(desk.send(&app, "POST", "/v1/dead-letters/replay", None, true).await.0, 200);

    let eyes = sign_in(&app, json!({"email": "eyes@roles.example", "password": "long enough pw"})).await.unwrap();
    assert_eq!(eyes.send(&app, "GET", "/v1/drivers", None, false).await.0, 200);
    assert_eq!(eyes.send(&app, "POST", "/v1/drivers", Some(driver.clone()), true).await.0, 403);
    let boss = sign_in(&app, json!({"email": "boss@roles.example", "password": "long enough pw"})).await.unwrap();
    assert_eq!(boss.send(&app, "POST", "/v1/stores", Some(store), true).await.0, 201);

    // An admin key signs in as admin; the browser never keeps the key.
    let keyed = sign_in(&app, json!({"admin_key": admin})).await.unwrap();
    assert!(!keyed.cookie.contains("lm_admin_"));
    assert_eq!(keyed.send(&app, "GET", "/v1/users", None, false).await.1["users"].as_array().unwrap().len(), 3);
    assert_eq!(sign_in(&app, json!({"admin_key": "lm_admin_nope"})).await.err().unwrap().0, 401);

    // Another tenant's session sees none of this tenant's data.
    let (_, other) = app.tenant("other").await;
    let stranger = sign_in(&app, json!({"admin_key": other})).await.unwrap();
    assert_eq!(stranger.send(&app, "GET", "/v1/drivers", None, false).await.1["drivers"], json!([]));

    // Disabling a user ends their sessions at once; signing out ends one.
    let users = app.get_json("/v1/users", &admin).await.1;
    let eyes_id = users["users"].as_array().unwrap().iter().find(|u| u["role"] == "viewer").unwrap()["id"].clone();
    let res = app
        .http
        .delete(app.url(&format!("/v1/users/{}", eyes_id.as_str().unwrap())))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(eyes.send(&app, "GET", "/v1/drivers", None, false).await.0, 401);
    assert_eq!(desk.send(&app, "POST", "/v1/console/logout", None, true).await.0, 204);
    assert_eq!(desk.send(&app, "GET", "/v1/orders", None, false).await.0, 401);
    assert_eq!(desk.send(&app, "GET", "/v1/console/session", None, false).await.0, 401);
    app.stop().await;
}

async fn login(app: &TestApp, code: &str) -> (u16, Value) {
    let res = app.http.post(app.url("/v1/driver/login")).json(&json!({"code": code})).send().await.unwrap();
    let s = res.status().as_u16();
    (s, res.json().await.unwrap_or(Value::Null))
}

async fn driver_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (tenant, admin) = app.tenant("codes").await;
    let (driver, old_token) = app.driver(&admin, "Pekka Driver").await;
    let (s, c) = app.post_json(&format!("/v1/drivers/{driver}/login-code"), &admin, &json!({})).await;
    assert_eq!(s, 201, "{c}");
    let code = c["code"].as_str().unwrap().to_owned();
    assert!(c["app_url"].as_str().unwrap().starts_with("/driver/#code="));
    // Typed loosely (case, dashes): it works once, and the old device is signed out.
    let (s, b) = login(&app, &code.to_lowercase().replace('-', " ")).await;
    assert_eq!((s, b["driver"]["id"].as_str()), (200, Some(driver.as_str())), "{b}");
    let token = b["token"].as_str().unwrap().to_owned();
    let (s, me) = app.get_json("/v1/driver/me", &token).await;
    assert_eq!((s, me["name"].as_str(), me["orders"].as_array().map(Vec::len)), (200, Some("Pekka Driver"), Some(0)));
    assert_eq!(app.get_json("/v1/driver/me", &old_token).await.0, 401);
    let (s, b) = login(&app, &code).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("unauthorized")));
    // An expired code, a code for a stranger's driver, a made-up code.
    let expired = "AAAABBBB";
    app.state
        .db
        .create_driver_login_code(
            &lastmile_core::TenantId(tenant),
            &lastmile_core::DriverId(driver.clone()),
            &lastmile_server::crypto::lookup_hash(expired),
            lastmile_storage::now_ms() - 1,
        )
        .await
        .unwrap();
    assert_eq!(login(&app, "AAAA-BBBB").await.0, 401);
    assert_eq!(login(&app, "ZZZZ-ZZZZ").await.0, 401);
    let (_, other) = app.tenant("other").await;
    let (s, _) = app.post_json(&format!("/v1/drivers/{driver}/login-code"), &other, &json!({})).await;
    assert_eq!(s, 404);
    // A new code retires the previous unused one.
    let first = app.post_json(&format!("/v1/drivers/{driver}/login-code"), &admin, &json!({})).await.1;
    let second = app.post_json(&format!("/v1/drivers/{driver}/login-code"), &admin, &json!({})).await.1;
    assert_eq!(login(&app, first["code"].as_str().unwrap()).await.0, 401);
    assert_eq!(login(&app, second["code"].as_str().unwrap()).await.0, 200);
    app.stop().await;
}

/// A driver of `admin`'s tenant holding a fresh order: (driver token, order JSON).
async fn driver_with_order(app: &TestApp, admin: &str) -> (String, Value) {
    let store = app.store(admin, "native", "kallio-kitchen", "").await["id"].as_str().unwrap().to_owned();
    let (_, token) = app.driver(admin, "Aino Virtanen").await;
    app.driver_status(&token, "online").await;
    assert_eq!(app.post_json("/v1/driver/location", &token, &fix(60.1700, 24.9385, 0)).await.0, 200);
    let jwt = app.client_token(admin).await;
    let order = app.native_order(&jwt, &store, 60.1712, 24.9441).await;
    // The dispatcher offers it; the long poll wakes on the offer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let offer = loop {
        let (_, polled) = app.get_json("/v1/driver/poll?after=0&wait=10", &token).await;
        if let Some(m) = polled["messages"].as_array().and_then(|m| m.iter().find(|m| m["type"] == "offer")) {
            break m["data"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no offer arrived");
    };
    let (s, b) = app
        .post_json(&format!("/v1/driver/offers/{}/accept", offer["offer_id"].as_str().unwrap()), &token, &json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    (token, order)
}

async fn upload(app: &TestApp, token: &str, order: &str, ctype: &str, body: Vec<u8>) -> (u16, Value) {
    let res = app
        .http
        .post(app.url(&format!("/v1/driver/orders/{order}/photo")))
        .bearer_auth(token)
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap();
    let s = res.status().as_u16();
    (s, res.json().await.unwrap_or(Value::Null))
}

async fn photos(backend: Backend) {
    // Photos may be larger than the general body limit (1 MiB by default), up to their own.
    let app = TestApp::spawn_with(backend, |c| c.web.photo_max_bytes = 3 * 1024 * 1024).await;
    let (_, admin) = app.tenant("photos").await;
    let (token, order) = driver_with_order(&app, &admin).await;
    let id = order["id"].as_str().unwrap();
    let jpeg: Vec<u8> = [&[0xFF, 0xD8, 0xFF, 0xE0][..], &vec![7u8; 1536 * 1024][..]].concat();
    let (s, b) = upload(&app, &token, id, "image/jpeg", b"<html>not an image".to_vec()).await;
    assert_eq!((s, b["error"]["code"].as_str()), (415, Some("unsupported_photo")));
    let (s, b) = upload(&app, &token, id, "image/jpeg", vec![0xFF; 3 * 1024 * 1024 + 1]).await;
    assert_eq!((s, b["error"]["code"].as_str()), (413, Some("payload_too_large")), "{b}");
    let (s, b) = upload(&app, &token, "ord_not_mine", "image/jpeg", jpeg.clone()).await;
    assert_eq!(s, 404, "{b}");
    let (s, up) = upload(&app, &token, id, "image/jpeg", jpeg.clone()).await;
    assert_eq!(s, 201, "{up}");
    let url = up["url"].as_str().unwrap();
    // Into deliver's proof, and served back to the tenant only.
    let (s, b) = app.post_json(&format!("/v1/driver/orders/{id}/pickup"), &token, &json!({})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = app
        .post_json(
            &format!("/v1/driver/orders/{id}/deliver"),
            &token,
            &json!({"recipient_name": "Maija", "photo_url": url}),
        )
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("delivered")), "{b}");
    let res = app.http.get(app.url(url)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    assert_eq!(res.bytes().await.unwrap().to_vec(), jpeg);
    let (s, list) = app.get_json(&format!("/v1/orders/{id}/photos"), &admin).await;
    assert_eq!((s, list["photos"][0]["url"].as_str()), (200, Some(url)));
    let (_, other) = app.tenant("other").await;
    assert_eq!(app.get_json(url, &other).await.0, 404);
    assert_eq!(app.get_json(url, &token).await.0, 401, "drivers do not browse photos");
    // Delivered: no more uploads for it.
    assert_eq!(upload(&app, &token, id, "image/jpeg", jpeg).await.0, 404);
    app.stop().await;
}

async fn event_stream(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("events").await;
    let store = app.store(&admin, "native", "evt", "").await["id"].as_str().unwrap().to_owned();
    let jwt = app.client_token(&admin).await;
    let first = app.native_order(&jwt, &store, 60.17, 24.94).await;
    // From the start: the first order's creation, with its seq as the event id.
    let mut sse = SseStream::open(&app, "/v1/events?after=0", Some(&admin), None).await;
    let ev = sse.next_event(Duration::from_secs(10)).await;
    assert_eq!(ev.event.as_deref(), Some("order_created"));
    let data: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(data["subject_id"], first["id"]);
    let seq: i64 = ev.id.unwrap().parse().unwrap();
    assert_eq!(data["seq"], seq);
    // Live: a new order arrives on the open stream.
    let second = app.native_order(&jwt, &store, 60.17, 24.94).await;
    let live = loop {
        let ev = sse.next_event(Duration::from_secs(10)).await;
        let d: Value = serde_json::from_str(&ev.data).unwrap();
        if d["kind"] == "order_created" {
            break d;
        }
    };
    assert_eq!(live["subject_id"], second["id"]);
    // Resumed with Last-Event-ID: nothing before it comes again.
    let mut resumed = SseStream::open(&app, "/v1/events", Some(&admin), Some(seq)).await;
    let d: Value = serde_json::from_str(&resumed.next_event(Duration::from_secs(10)).await.data).unwrap();
    assert!(d["seq"].as_i64().unwrap() > seq, "{d}");
    // Another tenant's stream carries none of it; no credentials, no stream.
    let (_, other) = app.tenant("other").await;
    let (s, _) = app.get_json("/v1/events?after=0", "lm_admin_wrong").await;
    assert_eq!(s, 401);
    let store2 = app.store(&other, "native", "evt2", "").await["id"].as_str().unwrap().to_owned();
    let mut theirs = SseStream::open(&app, "/v1/events?after=0", Some(&other), None).await;
    let jwt2 = app.client_token(&other).await;
    let mine = app.native_order(&jwt2, &store2, 60.17, 24.94).await;
    let d: Value = serde_json::from_str(&theirs.next_event(Duration::from_secs(10)).await.data).unwrap();
    assert_eq!(d["subject_id"], mine["id"], "only the tenant's own events: {d}");
    app.stop().await;
}

async fn map_data(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (s, b) = app.get_json("/v1/map/roads", "").await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("map_unavailable")));
    let (s, cfg) = app.get_json("/v1/map/config", "").await;
    assert_eq!((s, &cfg["tile_url"], &cfg["roads"]), (200, &Value::Null, &json!(false)));
    app.stop().await;

    let pbf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/data/helsinki.osm.pbf");
    let app = TestApp::spawn_with(backend, |c| {
        c.web.osm_pbf = Some(pbf);
        c.web.tile_url = Some("https://tile.example/{z}/{x}/{y}.png".into());
    })
    .await;
    let res = app.http.get(app.url("/v1/map/roads")).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/geo+json");
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let gj: Value = res.json().await.unwrap();
    assert_eq!(gj["type"], "FeatureCollection");
    assert!(gj["features"][1]["geometry"]["coordinates"].as_array().unwrap().len() > 10);
    let again = app.http.get(app.url("/v1/map/roads")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    let (_, cfg) = app.get_json("/v1/map/config", "").await;
    assert_eq!((cfg["tile_url"].as_str(), &cfg["roads"]), (Some("https://tile.example/{z}/{x}/{y}.png"), &json!(true)));
    app.stop().await;
}

async fn track_post(app: &TestApp, token: &str, what: &str) -> (u16, Value) {
    let res = app.http.post(app.url(&format!("/v1/track/{token}/{what}"))).send().await.unwrap();
    let s = res.status().as_u16();
    (s, res.json().await.unwrap_or(Value::Null))
}

async fn customer_choices(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.dispatch.slow_notice_s = 600).await;
    let (_, admin) = app.tenant("slow").await;
    let store = app.store(&admin, "native", "slow", "").await["id"].as_str().unwrap().to_owned();
    let jwt = app.client_token(&admin).await;
    let order = app.native_order(&jwt, &store, 60.17, 24.94).await;
    let token = order["tracking_token"].as_str().unwrap();
    let (_, view) = app.get_json(&format!("/v1/track/{token}"), "").await;
    let notice: chrono::DateTime<chrono::Utc> = view["slow_notice_at"].as_str().unwrap().parse().unwrap();
    let ready: chrono::DateTime<chrono::Utc> = order["ready_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((notice - ready).num_seconds(), 600, "{view}");
    assert_eq!((&view["can_cancel"], &view["choice"]), (&json!(true), &Value::Null));

    let (s, b) = track_post(&app, token, "keep-waiting").await;
    assert_eq!((s, b["choice"].as_str()), (200, Some("keep_waiting")), "{b}");
    let (_, view) = app.get_json(&format!("/v1/track/{token}"), "").await;
    let later: chrono::DateTime<chrono::Utc> = view["slow_notice_at"].as_str().unwrap().parse().unwrap();
    assert!(later >= notice && view["choice"] == "keep_waiting", "{view}");

    let (s, b) = track_post(&app, token, "cancel").await;
    assert_eq!((s, b["status"].as_str()), (200, Some("cancelled")), "{b}");
    let (_, o) = app.get_json(&format!("/v1/orders/{}", order["id"].as_str().unwrap()), &admin).await;
    assert_eq!(
        (o["status"].as_str(), o["status_reason"].as_str()),
        (Some("cancelled"), Some("cancelled by the customer"))
    );
    let (s, b) = track_post(&app, token, "cancel").await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("too_late_to_cancel")));
    let (s, b) = track_post(&app, token, "keep-waiting").await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("not_waiting")));
    assert_eq!(track_post(&app, &"0".repeat(48), "cancel").await.0, 404);

    let (_, c) = app.get_json("/v1/customer-choices", &admin).await;
    let kinds: Vec<&str> = c["choices"].as_array().unwrap().iter().map(|c| c["choice"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["cancel", "keep_waiting"], "{c}");
    let (_, other) = app.tenant("other").await;
    assert_eq!(app.get_json("/v1/customer-choices", &other).await.1["choices"], json!([]));

    // Once picked up, the customer can no longer cancel.
    let (token2, held) = driver_with_order(&app, &admin).await;
    let id = held["id"].as_str().unwrap();
    assert_eq!(app.post_json(&format!("/v1/driver/orders/{id}/pickup"), &token2, &json!({})).await.0, 200);
    let (s, b) = track_post(&app, held["tracking_token"].as_str().unwrap(), "cancel").await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("too_late_to_cancel")), "{b}");
    app.stop().await;
}

async fn stats(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("numbers").await;
    let (token, order) = driver_with_order(&app, &admin).await;
    let id = order["id"].as_str().unwrap();
    app.post_json(&format!("/v1/driver/orders/{id}/pickup"), &token, &json!({})).await;
    app.post_json(&format!("/v1/driver/orders/{id}/deliver"), &token, &json!({})).await;
    let (s, st) = app.get_json("/v1/stats?hours=1", &admin).await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(
        (st["orders"].as_i64(), st["delivered"].as_i64(), st["on_time_pct"].as_f64()),
        (Some(1), Some(1), Some(100.0)),
        "{st}"
    );
    assert_eq!(st["time_to_assign_s"]["count"], 1);
    assert!(st["time_to_assign_s"]["p50"].as_f64().unwrap() >= 0.0);
    let (_, other) = app.tenant("other").await;
    assert_eq!(app.get_json("/v1/stats", &other).await.1["orders"], 0);
    app.stop().await;
}

async fn pages_and_assets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (path, ctype) in [
        ("/console/", "text/html; charset=utf-8"),
        ("/driver/", "text/html; charset=utf-8"),
        (&format!("/track/{}", "a".repeat(48)) as &str, "text/html; charset=utf-8"),
        ("/driver/manifest.webmanifest", "application/manifest+json"),
        ("/assets/vendor/leaflet/leaflet.js", "text/javascript; charset=utf-8"),
        ("/assets/vendor/leaflet/images/marker-icon.png", "image/png"),
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!((res.status().as_u16(), res.headers()["content-type"].to_str().unwrap()), (200, ctype), "{path}");
        let etag = res.headers()["etag"].clone();
        if ctype.starts_with("text/html") {
            assert_eq!(res.headers()["cache-control"], "no-cache");
            assert!(res.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
        } else if path.starts_with("/assets/") {
            assert_eq!(res.headers()["cache-control"], "public, max-age=3600");
        }
        let again = app.http.get(app.url(path)).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    let sw = app.http.get(app.url("/driver/sw.js")).send().await.unwrap();
    assert_eq!(sw.headers()["service-worker-allowed"], "/driver/");
    let (s, b) = app.get_json("/assets/../Cargo.toml", "").await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(app.get_json("/assets/nothing.js", "").await.0, 404);
    let res = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.url().path(), "/console/", "the root leads to the console");
    let doc: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    for path in ["/v1/console/login", "/v1/events", "/v1/map/roads", "/v1/driver/login", "/v1/track/{token}/cancel"] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    app.stop().await;
}

on_backends!(
    console_sessions_check_csrf_and_roles_and_end_with_their_user => sessions_and_roles,
    driver_sign_in_codes_work_once_and_replace_the_device_token => driver_codes,
    delivery_photos_are_limited_checked_and_served_to_their_tenant => photos,
    tenant_event_stream_is_live_resumable_and_tenant_scoped => event_stream,
    map_config_and_streets_are_served_from_the_extract => map_data,
    customers_keep_waiting_or_cancel_before_pickup => customer_choices,
    stats_count_orders_assignments_and_on_time_deliveries => stats,
    pages_and_assets_have_types_validators_and_cache_rules => pages_and_assets,
);

//! The restaurant catalog, black-box: menus, the store list, search with typos, the cached
//! menu's ETag, and catalog orders that never oversell.

use crate::helpers::{uuid_key, Backend, TestApp};
use crate::on_backends;
use serde_json::{json, Value};

on_backends! {
    menus_validate_keep_ids_and_list_nearby_stores => menus_and_nearby,
    search_forgives_typos_and_respects_filters => search,
    menu_etag_answers_304_until_a_patch => etag,
    stock_a_failed_delivery_gives_back_reaches_the_menu_by_its_event => stock_event,
    twenty_racing_orders_for_five_in_stock_place_exactly_five => no_oversell,
    catalog_prices_win_and_readiness_follows_prep_time => prices_win,
    made_to_order_dishes_respect_their_hourly_capacity => hourly_cap,
    a_declined_card_leaves_no_order_and_holds_no_stock => payments,
}

/// Central Helsinki, where the shopper stands.
const HERE: (f64, f64) = (60.1699, 24.9384);

pub(crate) async fn store_at(app: &TestApp, admin: &str, name: &str, lat: f64, lng: f64) -> String {
    let (s, body) = app
        .post_json(
            "/v1/stores",
            admin,
            &json!({"name": name, "platform": "native", "platform_store_id": uuid_key(), "webhook_secret": "s3cret-s3cret",
                    "pickup": {"lat": lat, "lng": lng, "address": "Helsinki"}}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn dish(sku: &str, name: &str, price: i64, stock: Value) -> Value {
    json!({"sku": sku, "name": name, "price_minor": price, "currency": "EUR", "prep_time_s": 600, "stock": stock})
}

pub(crate) fn count(n: i64) -> Value {
    json!({"kind": "count", "quantity": n})
}

pub(crate) async fn put_menu(app: &TestApp, admin: &str, store: &str, menu: &Value) -> Value {
    let (s, body) = app.put_json(&format!("/v1/stores/{store}/menu"), admin, menu).await;
    assert_eq!(s, 200, "{body}");
    body
}

pub(crate) fn item_id(menu: &Value, sku: &str) -> String {
    menu["categories"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["items"].as_array().unwrap())
        .find(|i| i["sku"] == sku)
        .unwrap_or_else(|| panic!("{sku} not in {menu}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn order_body(store: &str, items: Value) -> Value {
    json!({
        "store_id": store,
        "customer": {"name": "Aino Virtanen", "phone": "+358401111111"},
        "dropoff": {"address": {"line1": "Mannerheimintie 10", "city": "Helsinki", "postal_code": "00100", "country": "FI"},
                    "lat": 60.172, "lng": 24.94},
        "items": items,
    })
}

pub(crate) async fn order(app: &TestApp, jwt: &str, body: &Value) -> (u16, Value) {
    let res = app
        .http
        .post(app.url("/v1/orders"))
        .bearer_auth(jwt)
        .header("Idempotency-Key", uuid_key())
        .json(body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

/// Three restaurants: a kebab place and a pizzeria nearby, another kebab place 20 km away.
async fn city(app: &TestApp, admin: &str) -> (String, String, String, Value) {
    let kebab = store_at(app, admin, "Anatolia Grill", 60.1710, 24.9400).await;
    let pizza = store_at(app, admin, "Napoli Pizzeria", 60.1650, 24.9300).await;
    let far = store_at(app, admin, "Far Kebab House", 60.3500, 24.9400).await;
    let menu = put_menu(
        app,
        admin,
        &kebab,
        &json!({"cuisine": ["Turkish"], "categories": [
            {"name": "Mains", "items": [
                {"sku": "K1", "name": "Adana Kebab", "aliases": ["kabob"], "tags": ["spicy", "halal"], "price_minor": 1290,
                 "currency": "EUR", "prep_time_s": 900, "stock": count(5)},
                {"sku": "S1", "name": "Lentil Soup", "tags": ["vegan"], "price_minor": 690, "currency": "EUR",
                 "prep_time_s": 300, "stock": {"kind": "made_to_order", "per_hour": 3}}]}]}),
    )
    .await;
    put_menu(
        app,
        admin,
        &pizza,
        &json!({"cuisine": ["italian"], "categories": [{"name": "Pizza", "items": [
        dish("P1", "Margherita Pizza", 1090, count(10))]}]}),
    )
    .await;
    put_menu(
        app,
        admin,
        &far,
        &json!({"cuisine": ["turkish"], "categories": [{"name": "Mains", "items": [
        dish("K9", "Döner Kebab", 990, count(10))]}]}),
    )
    .await;
    (kebab, pizza, far, menu)
}

async fn menus_and_nearby(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("acme").await;
    let jwt = app.client_token(&admin).await;
    let (kebab, pizza, far, menu) = city(&app, &admin).await;

    // Validation names every bad field.
    let (s, bad) = app
        .put_json(
            &format!("/v1/stores/{kebab}/menu"),
            &admin,
            &json!({"cuisine": [], "categories": [{"name": "x", "items": [
            {"sku": "A", "name": "", "price_minor": -5, "currency": "euro", "prep_time_s": 60, "stock": count(-1)}]}]}),
        )
        .await;
    assert_eq!(s, 422, "{bad}");
    assert_eq!(bad["error"]["code"], "validation_failed");
    let f = &bad["error"]["details"]["fields"];
    for k in [
        "cuisine",
        "categories[0].items[0].name",
        "categories[0].items[0].price_minor",
        "categories[0].items[0].currency",
        "categories[0].items[0].stock.quantity",
    ] {
        assert!(f.get(k).is_some(), "{k} missing in {f}");
    }
    let (s, _) = app
        .put_json(
            "/v1/stores/no-such-store/menu",
            &admin,
            &json!({"cuisine": ["x"], "categories": [
        {"name": "x", "items": [dish("A", "A", 1, count(1))]}]}),
        )
        .await;
    assert_eq!(s, 404);

    // The same sku keeps its id across a whole-menu replacement.
    let again = put_menu(&app, &admin, &kebab, &json!({"cuisine": ["turkish"], "categories": [{"name": "Mains", "items": [
        {"sku": "K1", "name": "Adana Kebab", "aliases": ["kabob"], "tags": ["spicy"], "price_minor": 1290, "currency": "EUR",
         "prep_time_s": 900, "stock": count(5)},
        dish("S1", "Lentil Soup", 690, json!({"kind": "made_to_order", "per_hour": 3}))]}]})).await;
    assert_eq!(item_id(&again, "K1"), item_id(&menu, "K1"));

    let (s, near) =
        app.get_json(&format!("/v1/catalog/stores?lat={}&lng={}&radius_m=5000", HERE.0, HERE.1), &jwt).await;
    assert_eq!(s, 200, "{near}");
    let ids: Vec<&str> = near["stores"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![kebab.as_str(), pizza.as_str()], "nearest first, the far store outside the radius: {near}");
    let first = &near["stores"][0];
    assert_eq!(first["open_now"], true);
    assert!(first["eta_s"].as_i64().unwrap() > first["distance_m"].as_f64().unwrap() as i64 / 10, "{first}");
    let (_, italian) = app
        .get_json(&format!("/v1/catalog/stores?lat={}&lng={}&radius_m=50000&cuisine=Italian", HERE.0, HERE.1), &jwt)
        .await;
    let ids: Vec<&str> = italian["stores"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![pizza.as_str()]);
    let (_, wide) =
        app.get_json(&format!("/v1/catalog/stores?lat={}&lng={}&radius_m=50000", HERE.0, HERE.1), &jwt).await;
    assert_eq!(wide["stores"].as_array().unwrap().last().unwrap()["id"], far.as_str());
    let (s, e) = app.get_json("/v1/catalog/stores?lat=91&lng=x", &jwt).await;
    assert_eq!(s, 422, "{e}");

    // Another tenant sees none of it.
    let (_, other) = app.tenant("other").await;
    let (_, none) = app.get_json(&format!("/v1/catalog/stores?lat={}&lng={}", HERE.0, HERE.1), &other).await;
    assert_eq!(none["stores"], json!([]));
    let (s, _) = app.get_json(&format!("/v1/catalog/stores/{kebab}/menu"), &other).await;
    assert_eq!(s, 404);
    app.stop().await;
}

async fn search(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("acme").await;
    let jwt = app.client_token(&admin).await;
    let (kebab, _, far, menu) = city(&app, &admin).await;
    let adana = item_id(&menu, "K1");
    let find = |q: &str, extra: &str| {
        let radius = if extra.contains("radius_m") { "" } else { "&radius_m=5000" };
        let url = format!("/v1/catalog/search?q={q}&lat={}&lng={}{radius}{extra}", HERE.0, HERE.1);
        let (app, jwt) = (&app, &jwt);
        async move {
            let (s, body) = app.get_json(&url, jwt).await;
            assert_eq!(s, 200, "{body}");
            body
        }
    };
    let dishes = |b: &Value| -> Vec<String> {
        b["dishes"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
    };
    for q in ["kebab", "kebap", "kabob", "Adana%20kebap"] {
        let hits = find(q, "").await;
        assert_eq!(dishes(&hits), vec![adana.clone()], "query {q}: {hits}");
        assert_eq!(hits["stores"][0]["id"], kebab.as_str(), "{hits}");
        assert!(
            hits["stores"].as_array().unwrap().iter().all(|s| s["id"] != far.as_str()),
            "outside the radius: {hits}"
        );
    }
    assert_eq!(find("soup", "&tags=vegan").await["dishes"][0]["name"], "Lentil Soup");
    assert!(dishes(&find("kebab", "&tags=vegan").await).is_empty());
    assert!(dishes(&find("kebab", "&max_price_minor=1000").await).is_empty());
    assert!(dishes(&find("pizza", "&cuisine=turkish").await).is_empty());
    assert_eq!(find("margarita", "").await["dishes"][0]["name"], "Margherita Pizza");
    let wide = find("kebab", "&radius_m=50000").await;
    assert_eq!(wide["dishes"].as_array().unwrap().len(), 2, "{wide}");
    assert_eq!(wide["dishes"][1]["store_id"], far.as_str(), "same relevance ranks by distance: {wide}");
    let (s, e) = app.get_json(&format!("/v1/catalog/search?lat={}&lng={}", HERE.0, HERE.1), &jwt).await;
    assert_eq!((s, e["error"]["details"]["fields"]["q"].is_string()), (422, true), "{e}");

    // A menu written by another node (straight to the database here) reaches this node's
    // search within seconds.
    let menu: lastmile_catalog::Menu = serde_json::from_value(json!({"cuisine": ["finnish"], "categories": [
        {"name": "Mains", "items": [dish("L1", "Lohikeitto", 1490, count(3))]}]}))
    .unwrap();
    let store = app.state.db.get_store_for_webhook(&lastmile_core::StoreId(kebab.clone())).await.unwrap();
    app.state.db.put_menu(&store.tenant_id, &store.id, menu.validate().unwrap()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if !dishes(&find("lohikeito", "").await).is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "another node's menu never reached the index");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A renamed dish is found under its new name at once, and the index survives a restart.
    let (s, _) = app
        .put_json(
            &format!("/v1/stores/{far}/menu"),
            &admin,
            &json!({"cuisine": ["turkish"], "categories": [
        {"name": "Mains", "items": [dish("K9", "Iskender", 990, count(10))]}]}),
        )
        .await;
    assert_eq!(s, 200);
    let app = app.restart().await;
    let (_, hits) =
        app.get_json(&format!("/v1/catalog/search?q=iskendr&lat={}&lng={}&radius_m=50000", HERE.0, HERE.1), &jwt).await;
    assert_eq!(hits["dishes"][0]["store_id"], far.as_str(), "{hits}");
    app.stop().await;
}

async fn etag(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("acme").await;
    let jwt = app.client_token(&admin).await;
    let (kebab, _, _, menu) = city(&app, &admin).await;
    let path = format!("/v1/catalog/stores/{kebab}/menu");
    let get = |tag: Option<String>| {
        let mut req = app.http.get(app.url(&path)).bearer_auth(&jwt);
        if let Some(t) = tag {
            req = req.header("If-None-Match", t);
        }
        req.send()
    };
    let first = get(None).await.unwrap();
    assert_eq!(first.status(), 200);
    let tag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["categories"][0]["items"][0]["price_minor"], 1290);
    assert_eq!(body["categories"][0]["items"][0]["available"], true);
    assert_eq!(get(Some(tag.clone())).await.unwrap().status(), 304);

    let adana = item_id(&menu, "K1");
    let (s, patched) = app
        .http
        .patch(app.url(&format!("/v1/stores/{kebab}/menu/items/{adana}")))
        .bearer_auth(&admin)
        .json(&json!({"price_minor": 1490, "available": false}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(patched.json::<Value>().await.unwrap()["price_minor"], 1490);
    let after = get(Some(tag.clone())).await.unwrap();
    assert_eq!(after.status(), 200, "the PATCH changed the menu");
    assert_ne!(after.headers()["etag"].to_str().unwrap(), tag);
    let body: Value = after.json().await.unwrap();
    assert_eq!(body["categories"][0]["items"][0]["price_minor"], 1490);
    assert_eq!(body["categories"][0]["items"][0]["available"], false);
    let (s, e) = app
        .http
        .patch(app.url(&format!("/v1/stores/{kebab}/menu/items/{adana}")))
        .bearer_auth(&admin)
        .json(&json!({"stock": {"kind": "count", "quantity": -3}}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 422);
    assert!(e.json::<Value>().await.unwrap()["error"]["details"]["fields"]["stock.quantity"].is_string());
    app.stop().await;
}

/// Stock given back on a path no catalog route sees (a driver failing the delivery) reaches
/// the in-memory menu through the `menu_changed` event alone: the database check that
/// backs up a missed event is pushed an hour away.
async fn stock_event(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.dispatch.enabled = false).await;
    let (_, admin) = app.tenant("acme").await;
    let jwt = app.client_token(&admin).await;
    let (kebab, _, _, menu) = city(&app, &admin).await;
    let adana = item_id(&menu, "K1");
    let path = format!("/v1/catalog/stores/{kebab}/menu");
    let (s, placed) = order(&app, &jwt, &order_body(&kebab, json!([{"item_id": adana, "quantity": 2}]))).await;
    assert_eq!(s, 201, "{placed}");
    let id = placed["id"].as_str().unwrap();
    let (_, m) = app.get_json(&path, &jwt).await;
    assert_eq!(m["categories"][0]["items"][0]["stock"]["quantity"], 3, "{m}");
    let held_version = m["version"].as_i64().unwrap();

    app.state.catalog.set_revalidate_after(std::time::Duration::from_secs(3600));
    let (driver, token) = app.driver(&admin, "Pekka Lahtinen").await;
    let (s, a) =
        app.post_json(&format!("/v1/orders/{id}/assign"), &admin, &json!({"driver_id": driver, "force": true})).await;
    assert_eq!(s, 200, "{a}");
    let (s, p) = app.post_json(&format!("/v1/driver/orders/{id}/pickup"), &token, &json!({})).await;
    assert_eq!(s, 200, "{p}");
    let (s, f) =
        app.post_json(&format!("/v1/driver/orders/{id}/fail"), &token, &json!({"reason": "nobody home"})).await;
    assert_eq!(s, 200, "{f}");

    // The event travels through the outbox relay and the bus: bounded wait, no fixed sleep.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (s, m) = app.get_json(&path, &jwt).await;
        assert_eq!(s, 200, "{m}");
        if m["categories"][0]["items"][0]["stock"]["quantity"] == 5 {
            assert!(m["version"].as_i64().unwrap() > held_version, "{m}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the failed delivery's stock never reached the menu: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.stop().await;
}

async fn no_oversell(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("acme").await;
    let jwt = app.client_token(&admin).await;
    let (kebab, _, _, menu) = city(&app, &admin).await;
    let adana = item_id(&menu, "K1");
    let body = order_body(&kebab, json!([{"item_id": adana, "quantity": 1}]));
    let racers: Vec<_> = (0..20).map(|_| order(&app, &jwt, &body)).collect();
    let answers = futures::future::join_all(racers).await;
    let placed: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b).collect();
    let refused: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 409).map(|(_, b)| b).collect();
    assert_eq!((placed.len(), refused.len()), (5, 15), "{answers:?}");
    for r in &refused {
        assert_eq!(r["error"]["code"], "out_of_stock");
        assert_eq!(r["error"]["details"]["items"][0]["item_id"], adana.as_str(), "{r}");
        assert_eq!(r["error"]["details"]["items"][0]["available"], 0);
    }
    let (_, m) = app.get_json(&format!("/v1/catalog/stores/{kebab}/menu"), &jwt).await;
    assert_eq!(m["categories"][0]["items"][0]["stock"]["quantity"], 0);
    assert_eq!(m["categories"][0]["items"][0]["available"], false);

    // A cancellation gives its stock back; the next order gets it, and the one after does not.
    let id = placed[0]["id"].as_str().unwrap();
    let (s, c) = app.post_json(&format!("/v1/orders/{id}/cancel"), &jwt, &json!({})).await;
    assert_eq!(s, 200, "{c}");
    let (_, m) = app.get_json(&format!("/v1/catalog/stores/{kebab}/menu"), &jwt).await;
    assert_eq!(m["categories"][0]["items"][0]["stock"]["quantity"], 1);
    assert_eq!(order(&app, &jwt, &body).await.0, 201);
    assert_eq!(order(&app, &jwt, &body).await.0, 409);
    app.stop().await;
}

async fn prices_win(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("acme").await;
    let jwt = app.client_token(&admin).await;
    let (kebab, _, _, menu) = city(&app, &admin).await;
    let (adana, soup) = (item_id(&menu, "K1"), item_id(&menu, "S1"));
    let body = order_body(
        &kebab,
        json!([
        {"item_id": adana, "quantity": 2, "unit_price_minor": 1, "notes": "extra chili"},
        {"item_id": soup, "quantity": 1, "unit_price_minor": 1}]),
    );
    let (s, o) = order(&app, &jwt, &body).await;
    assert_eq!(s, 201, "{o}");
    assert_eq!(o["totals"]["total_minor"], 2 * 1290 + 690, "{o}");
    assert_eq!(o["totals"]["currency"], "EUR");
    assert_eq!(o["items"][0]["unit_price_minor"], 1290);
    assert_eq!(o["items"][0]["name"], "Adana Kebab");
    assert!(o["notes"].as_str().unwrap().contains("extra chili"), "{o}");
    let created = chrono::DateTime::parse_from_rfc3339(o["created_at"].as_str().unwrap()).unwrap();
    let ready = chrono::DateTime::parse_from_rfc3339(o["ready_at"].as_str().unwrap()).unwrap();
    let prep = (ready - created).num_seconds();
    assert!((895..=905).contains(&prep), "ready after the slowest dish (900 s), got {prep}");

    // A repeated external id answers with the first order and reserves nothing more; the
    // same Idempotency-Key replays the first answer.
    let mut once = order_body(&kebab, json!([{"item_id": adana, "quantity": 1}]));
    once["external_id"] = json!("pos-42");
    let (s, first) = order(&app, &jwt, &once).await;
    assert_eq!(s, 201, "{first}");
    let (s, dup) = order(&app, &jwt, &once).await;
    assert_eq!((s, &dup["id"]), (200, &first["id"]), "{dup}");
    let key = uuid_key();
    let send =
        || app.http.post(app.url("/v1/orders")).bearer_auth(&jwt).header("Idempotency-Key", &key).json(&once).send();
    let a = send().await.unwrap();
    assert_eq!(a.status(), 200);
    let b = send().await.unwrap();
    assert_eq!(b.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let (_, m) = app.get_json(&format!("/v1/catalog/stores/{kebab}/menu"), &jwt).await;
    assert_eq!(m["categories"][0]["items"][0]["stock"]["quantity"], 5 - 2 - 1, "{m}");

    // Unknown dishes and bad lines are validation errors; native orders still work.
    let (s, e) = order(&app, &jwt, &order_body(&kebab, json!([{"item_id": "itm_nope", "quantity": 1}]))).await;
    assert_eq!(s, 422, "{e}");
    assert!(e["error"]["details"]["fields"]["items[0].item_id"].is_string(), "{e}");
    let (s, e) = order(&app, &jwt, &order_body(&kebab, json!([{"item_id": adana, "quantity": 0}]))).await;
    assert_eq!(s, 422, "{e}");
    app.native_order(&jwt, &kebab, 60.17, 24.94).await;
    app.stop().await;
}

/// The clock hour (UTC) of now, the capacity window made-to-order dishes use.
fn hour_now() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(3600)
}

async fn hourly_cap(backend: Backend) {
    let started = hour_now();
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.tenant("acme").await;
    let jwt = app.client_token(&admin).await;
    let (kebab, _, _, menu) = city(&app, &admin).await;
    let soup = item_id(&menu, "S1");
    let line = |q: i64| order_body(&kebab, json!([{"item_id": soup, "quantity": q}]));
    let (s, first) = order(&app, &jwt, &line(2)).await;
    assert_eq!(s, 201, "{first}");
    let (s, e) = order(&app, &jwt, &line(2)).await;
    if hour_now() != started {
        eprintln!("the clock hour turned during the test: capacity renewed, nothing left to check");
        return app.stop().await;
    }
    assert_eq!(s, 409, "3 per hour, 2 taken: {e}");
    assert_eq!(e["error"]["details"]["items"][0]["available"], 1);
    assert_eq!(order(&app, &jwt, &line(1)).await.0, 201);
    let (_, m) = app.get_json(&format!("/v1/catalog/stores/{kebab}/menu"), &jwt).await;
    assert_eq!(m["categories"][0]["items"][1]["stock"]["remaining_this_hour"], 0, "{m}");
    // Cancelling frees the hour's capacity.
    let (s, _) =
        app.post_json(&format!("/v1/orders/{}/cancel", first["id"].as_str().unwrap()), &admin, &json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(order(&app, &jwt, &line(2)).await.0, 201);
    app.stop().await;
}

/// Payment with the built-in test provider: a declined card is `402 payment_declined`
/// and leaves no order, no reservation and nothing in dispatch; an approved one is captured
/// for the catalog total; an order that cannot be placed voids its hold; cancelling a paid
/// order refunds it; `payments.required` refuses an order without payment.
async fn payments(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (tenant, admin) = app.tenant("acme").await;
    let jwt = app.client_token(&admin).await;
    let (kebab, _, _, menu) = city(&app, &admin).await;
    let adana = item_id(&menu, "K1");
    let stock = |m: &Value| m["categories"][0]["items"][0]["stock"]["quantity"].as_i64().unwrap();
    let paid = |qty: i64, token: &str| {
        let mut b = order_body(&kebab, json!([{"item_id": adana, "quantity": qty}]));
        b["payment"] = json!({"provider": "test", "token": token});
        b
    };
    let orders_now = |app: &TestApp| {
        let url = app.url("/v1/orders?limit=500");
        let req = app.http.get(url).bearer_auth(&admin);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap()["orders"].as_array().unwrap().len() }
    };

    for (token, code) in [("tok_test_decline", "card_declined"), ("tok_test_insufficient_funds", "insufficient_funds")]
    {
        let (s, e) = order(&app, &jwt, &paid(2, token)).await;
        assert_eq!((s, e["error"]["code"].as_str()), (402, Some("payment_declined")), "{e}");
        assert_eq!(e["error"]["details"]["decline_code"], code, "{e}");
    }
    assert_eq!(orders_now(&app).await, 0, "a declined payment leaves no order");
    let (_, m) = app.get_json(&format!("/v1/catalog/stores/{kebab}/menu"), &jwt).await;
    assert_eq!(stock(&m), 5, "and holds no stock: {m}");
    let declined = app
        .state
        .db
        .payments_for_store(&lastmile_core::TenantId(tenant.clone()), &lastmile_core::StoreId(kebab.clone()), 10)
        .await
        .unwrap();
    assert_eq!(declined.iter().filter(|p| p.state == "declined").count(), 2, "{declined:?}");
    let (s, e) = order(&app, &jwt, &paid(1, "tok_test_unavailable")).await;
    assert_eq!((s, e["error"]["code"].as_str()), (503, Some("payment_unavailable")), "{e}");
    let (s, e) = order(&app, &jwt, &{
        let mut b = paid(1, "tok_test_visa");
        b["payment"]["provider"] = json!("stripe");
        b
    })
    .await;
    assert_eq!(s, 422, "{e}");

    // Approved: captured for the menu total.
    let (s, o) = order(&app, &jwt, &paid(2, "tok_test_visa")).await;
    assert_eq!(s, 201, "{o}");
    let id = o["id"].as_str().unwrap().to_owned();
    let (s, p) = app.get_json(&format!("/v1/orders/{id}/payments"), &jwt).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["payments"][0]["state"], "captured", "{p}");
    assert_eq!(p["payments"][0]["amount_minor"], 2 * 1290, "{p}");
    assert_eq!(p["payments"][0]["currency"], "EUR", "{p}");

    // More than is in stock: no order, and the hold is released.
    let (s, e) = order(&app, &jwt, &paid(4, "tok_test_visa")).await;
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("out_of_stock")), "{e}");
    let all = app
        .state
        .db
        .payments_for_store(&lastmile_core::TenantId(tenant.clone()), &lastmile_core::StoreId(kebab.clone()), 10)
        .await
        .unwrap();
    assert_eq!(all[0].state, "voided", "{all:?}");

    // Cancelling the paid order refunds it and gives its stock back.
    let (s, c) = app.post_json(&format!("/v1/orders/{id}/cancel"), &jwt, &json!({})).await;
    assert_eq!(s, 200, "{c}");
    let (_, p) = app.get_json(&format!("/v1/orders/{id}/payments"), &jwt).await;
    assert_eq!(p["payments"][0]["state"], "refunded", "{p}");
    let (_, m) = app.get_json(&format!("/v1/catalog/stores/{kebab}/menu"), &jwt).await;
    assert_eq!(stock(&m), 5, "{m}");
    app.stop().await;

    let app = TestApp::spawn_with(backend, |c| c.payments.required = true).await;
    let (_, admin) = app.tenant("acme").await;
    let jwt = app.client_token(&admin).await;
    let (kebab, _, _, menu) = city(&app, &admin).await;
    let body = order_body(&kebab, json!([{"item_id": item_id(&menu, "K1"), "quantity": 1}]));
    let (s, e) = order(&app, &jwt, &body).await;
    assert_eq!(s, 422, "{e}");
    assert!(e["error"]["details"]["fields"]["payment"].is_string(), "{e}");
    app.stop().await;
}

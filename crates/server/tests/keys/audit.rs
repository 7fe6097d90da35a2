//! Every admin action leaves one audit row, written with the action, naming the actor
//! (key id and name), the target and the source address; reads are tenant-scoped, newest
//! first, paged with `before`.

use crate::audit_entries;
use crate::helpers::{Backend, TestApp};
use crate::rotation::signed_shopify;
use serde_json::{json, Value};

async fn delete(app: &TestApp, path: &str, key: &str) -> u16 {
    app.http.delete(app.url(path)).bearer_auth(key).send().await.unwrap().status().as_u16()
}

async fn admin_actions_are_audited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |cfg| cfg.dispatch.enabled = false).await;
    let (tenant, admin) = app.tenant("audited").await;
    let (_, other) = app.tenant("other").await;
    let (s, ops) = app.post_json("/v1/admin-keys", &admin, &json!({"name": "ops desk"})).await;
    assert_eq!(s, 201, "{ops}");
    let (ops_key, ops_id) = (ops["key"].as_str().unwrap().to_owned(), ops["id"].as_str().unwrap().to_owned());

    let store = app.store(&ops_key, "native", "audit-kitchen", "").await;
    let store_id = store["id"].as_str().unwrap().to_owned();
    let (s, body) = app
        .http
        .patch(app.url(&format!("/v1/stores/{store_id}")))
        .bearer_auth(&ops_key)
        .json(&json!({"name": "Audit Kitchen"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 200, "{:?}", body.text().await);
    let menu = json!({"cuisine": ["Finnish"], "categories": [{"name": "Soups", "items": [
        {"sku": "S1", "name": "Salmon soup", "price_minor": 1450, "currency": "EUR", "prep_time_s": 600,
         "stock": {"kind": "count", "quantity": 5}}]}]});
    let (s, body) = app.put_json(&format!("/v1/stores/{store_id}/menu"), &ops_key, &menu).await;
    assert_eq!(s, 200, "{body}");
    let (driver_id, _) = app.driver(&ops_key, "Aada Lahtinen").await;
    let (s, client) = app.post_json("/v1/api-clients", &ops_key, &json!({"name": "pos"})).await;
    assert_eq!(s, 201, "{client}");
    let jwt = app.client_token(&admin).await; // a second client, created by `initial`
    let order = app.native_order(&jwt, &store_id, 60.1719, 24.9414).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let (s, body) = app
        .post_json(&format!("/v1/orders/{order_id}/assign"), &ops_key, &json!({"driver_id": driver_id, "force": true}))
        .await;
    assert_eq!((s, body["result"].as_str()), (200, Some("assigned")), "{body}");
    let (s, body) = app.post_json(&format!("/v1/orders/{order_id}/unassign"), &ops_key, &json!({})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(delete(&app, &format!("/v1/drivers/{driver_id}"), &ops_key).await, 204);

    // A signed delivery that cannot be normalized is a dead letter; its replay is audited.
    let shop = app.store(&ops_key, "shopify", "audit-shop.myshopify.com", "whsec_audit").await;
    let shop_id = shop["id"].as_str().unwrap().to_owned();
    let (s, body) = signed_shopify(
        &app,
        &shop_id,
        "audit-shop.myshopify.com",
        "whsec_audit",
        br#"{"id": 1, "line_items": "#.to_vec(),
    )
    .await;
    assert_eq!((s, body["result"].as_str()), (202, Some("dead_lettered")), "{body}");
    let (_, letters) = app.get_json("/v1/dead-letters", &ops_key).await;
    let letter_id = letters["dead_letters"][0]["id"].as_str().expect("a dead letter").to_owned();
    let (s, body) = app.post_json(&format!("/v1/dead-letters/{letter_id}/replay"), &ops_key, &json!({})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(delete(&app, &format!("/v1/stores/{shop_id}"), &ops_key).await, 204);

    // Refused or failed actions leave nothing.
    assert_eq!(delete(&app, "/v1/stores/sto_missing", &ops_key).await, 404);
    assert_eq!(delete(&app, &format!("/v1/stores/{store_id}"), &other).await, 404);
    let (s, _) = app.post_json("/v1/api-clients", &ops_key, &json!({"name": ""})).await;
    assert_eq!(s, 422);

    let entries = audit_entries(&app, &admin, "?limit=100").await;
    let got: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (e["action"].as_str().unwrap(), e["actor"]["name"].as_str().unwrap(), e["target_id"].as_str().unwrap_or(""))
        })
        .collect();
    let client_id = client["client_id"].as_str().unwrap();
    let expected_newest_first = [
        ("store.delete", "ops desk", shop_id.as_str()),
        ("dead_letter.replay", "ops desk", letter_id.as_str()),
        ("store.create", "ops desk", shop_id.as_str()),
        ("driver.revoke", "ops desk", driver_id.as_str()),
        ("order.unassign", "ops desk", order_id.as_str()),
        ("order.assign", "ops desk", order_id.as_str()),
        ("api_client.create", "initial", ""),
        ("api_client.create", "ops desk", client_id),
        ("driver.create", "ops desk", driver_id.as_str()),
        ("menu.put", "ops desk", store_id.as_str()),
        ("store.update", "ops desk", store_id.as_str()),
        ("store.create", "ops desk", store_id.as_str()),
        ("admin_key.create", "initial", ops_id.as_str()),
    ];
    // The second client's id is only known to the server: check it is named, then compare.
    assert!(got[6].2.starts_with("cli_"), "{got:?}");
    let got: Vec<(&str, &str, &str)> =
        got.iter().enumerate().map(|(i, g)| if i == 6 { (g.0, g.1, "") } else { *g }).collect();
    assert_eq!(got, expected_newest_first);
    for e in &entries {
        assert_eq!(e["source_ip"], "127.0.0.1", "{e}");
        assert_eq!(e["scope"], "tenant", "{e}");
        assert!(e["at"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }
    assert_eq!(entries[1]["details"]["outcome"], "failed", "the letter still cannot be normalized");
    assert_eq!(entries[0]["actor"], json!({"kind": "admin_key", "id": ops_id, "name": "ops desk"}));

    // Paged newest first.
    let (s, page1) = app.get_json("/v1/audit-log?limit=5", &admin).await;
    assert_eq!(s, 200);
    let next = page1["next_before"].as_str().expect("more pages").to_owned();
    let page2 = audit_entries(&app, &admin, &format!("?limit=5&before={next}")).await;
    let ids: Vec<&Value> = page1["entries"].as_array().unwrap().iter().chain(&page2).map(|e| &e["id"]).collect();
    let all: Vec<&Value> = entries.iter().take(10).map(|e| &e["id"]).collect();
    assert_eq!(ids, all);
    for bad in ["?limit=0", "?limit=501", "?limit=x", "?before=nonsense"] {
        assert_eq!(app.get_json(&format!("/v1/audit-log{bad}"), &admin).await.0, 422, "{bad}");
    }
    // Tenant-scoped.
    assert!(audit_entries(&app, &other, "").await.is_empty());

    // A console user is the actor of what they do, named by their email.
    let tenant = lastmile_core::TenantId(tenant);
    let user = lastmile_server::routes::console::create_user(
        &app.state.db,
        &tenant,
        "ana@example.com",
        "correct horse battery",
        "admin",
    )
    .await
    .expect("console user");
    let res = app
        .http
        .post(app.url("/v1/console/login"))
        .json(&json!({"email": "ana@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let csrf = res.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
    let res = app
        .http
        .post(app.url("/v1/drivers"))
        .header("cookie", cookies.join("; "))
        .header("x-csrf-token", csrf)
        .json(&json!({"name": "Eero Lahtinen", "capacity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let newest = &audit_entries(&app, &admin, "?limit=1").await[0];
    assert_eq!(newest["action"], "driver.create");
    assert_eq!(newest["actor"], json!({"kind": "user", "id": user.id, "name": "ana@example.com"}));
    let (s, bo) = app
        .post_json(
            "/v1/users",
            &admin,
            &json!({"email": "bo@example.com", "password": "long enough pw", "role": "viewer"}),
        )
        .await;
    assert_eq!(s, 201, "{bo}");
    let newest = &audit_entries(&app, &admin, "?limit=1").await[0];
    assert_eq!((newest["action"].as_str(), newest["target_id"].as_str()), (Some("user.create"), bo["id"].as_str()));
    app.stop().await;
}

crate::on_backends!(every_admin_action_leaves_an_audit_row => admin_actions_are_audited);

//! Ops give an order to a chosen driver (an offer, or `force` for the assignment itself,
//! capacity still enforced by the database) and take it back; tenant-scoped.

use super::support::*;
use crate::helpers::*;
use serde_json::json;

async fn assign_offer_force_and_unassign(backend: Backend) {
    // Matching off: every move here is ops'.
    let s = scene(TestApp::spawn_with(backend, |c| c.dispatch.enabled = false).await).await;
    let mut pekka = s.online_driver("Pekka Lahtinen", NEAR).await;
    let (ville, _) = s.app.driver(&s.admin, "Ville Lahtinen").await; // offline
    let order = s.order().await;
    let assign = format!("/v1/orders/{order}/assign");
    let unassign = format!("/v1/orders/{order}/unassign");

    // An offer to Pekka, who accepts it like any offer.
    let (st, body) = s.app.post_json(&assign, &s.admin, &json!({"driver_id": pekka.id})).await;
    assert_eq!((st, body["result"].as_str()), (200, Some("offered")), "{body}");
    assert_eq!(body["order"]["status"], "dispatching", "{body}");
    let offer = pekka.offered(&order).await;
    assert_eq!(offer["data"]["offer_id"], body["offer_id"], "{offer}");
    assert_eq!(offer["data"]["dropoff"]["lat"], DROPOFF.0, "{offer}");
    ws_send(&mut pekka.ws, json!({"type": "accept", "offer_id": body["offer_id"]})).await;
    ws_until(&mut pekka.ws, "accepted", WAIT).await;
    assert_eq!(s.active_count(&pekka.id).await, 1);

    // An offer needs an online driver; the assignment itself does not.
    let (st, body) = s.app.post_json(&assign, &s.admin, &json!({"driver_id": ville})).await;
    assert_eq!((st, body["error"]["code"].as_str()), (409, Some("driver_unavailable")), "{body}");

    // Unassign: back to matching, Pekka told and freed.
    let (st, body) = s.app.post_json(&unassign, &s.admin, &json!({})).await;
    assert_eq!((st, body["status"].as_str(), body["driver_id"].as_str()), (200, Some("received"), None), "{body}");
    let (told, _) = ws_until(&mut pekka.ws, "assignment_cancelled", WAIT).await;
    assert_eq!(told["data"]["order_id"], order.as_str(), "{told}");
    assert_eq!(s.active_count(&pekka.id).await, 0);
    let (st, body) = s.app.post_json(&unassign, &s.admin, &json!({})).await;
    assert_eq!((st, body["error"]["code"].as_str()), (409, Some("invalid_transition")), "nobody holds it: {body}");

    // Force: assigned outright, with an `assigned` message in Ville's inbox.
    let (st, body) = s.app.post_json(&assign, &s.admin, &json!({"driver_id": ville, "force": true})).await;
    assert_eq!((st, body["result"].as_str()), (200, Some("assigned")), "{body}");
    assert_eq!(
        (body["order"]["status"].as_str(), body["order"]["driver_id"].as_str()),
        (Some("assigned"), Some(ville.as_str()))
    );
    let ville_id = lastmile_core::DriverId(ville.clone());
    let inbox = s.app.state.db.inbox_after(&s.tenant, &ville_id, 0, 10).await.unwrap();
    let msg = inbox.iter().find(|m| m.kind == "assigned").expect("assigned message");
    assert_eq!(
        (msg.data["order_id"].as_str(), msg.data["dropoff"]["lng"].as_f64()),
        (Some(order.as_str()), Some(DROPOFF.1))
    );
    assert!(msg.data["pickup"]["lat"].is_f64(), "{msg:?}");
    let (st, body) = s.app.post_json(&assign, &s.admin, &json!({"driver_id": ville, "force": true})).await;
    assert_eq!((st, body["result"].as_str()), (200, Some("unchanged")), "{body}");

    // Ville (capacity 1) cannot be forced a second order: the database refuses.
    let second = s.order().await;
    let (st, body) = s
        .app
        .post_json(&format!("/v1/orders/{second}/assign"), &s.admin, &json!({"driver_id": ville, "force": true}))
        .await;
    assert_eq!((st, body["error"]["code"].as_str()), (409, Some("driver_at_capacity")), "{body}");
    assert_eq!(s.order_json(&second).await["status"], "received", "nothing half-done");
    assert_eq!(s.active_count(&ville_id).await, 1);

    // Reassigning by force takes it from Ville (told) and gives it to Pekka.
    let (st, body) = s.app.post_json(&assign, &s.admin, &json!({"driver_id": pekka.id, "force": true})).await;
    assert_eq!((st, body["order"]["driver_id"].as_str()), (200, Some(pekka.id.as_str())), "{body}");
    assert!(s.inbox_kinds(&ville_id).await.contains(&"assignment_cancelled".to_owned()));
    assert_eq!((s.active_count(&ville_id).await, s.active_count(&pekka.id).await), (0, 1));
    let timeline = s.timeline(&order).await;
    for kind in ["order_created", "offer_sent", "order_assigned", "order_unassigned"] {
        assert!(timeline.iter().any(|k| k == kind), "{kind} in {timeline:?}");
    }
    s.app.stop().await;
}

/// Forcing an order that is being offered to someone withdraws the offer (they are told,
/// with the offer id, and cannot accept it any more); a picked-up order stays put.
async fn force_over_a_pending_offer_and_picked_up_refusals(backend: Backend) {
    let s = scene(TestApp::spawn_with(backend, |c| c.dispatch.enabled = false).await).await;
    let mut pekka = s.online_driver("Pekka Lahtinen", NEAR).await;
    let ville = s.online_driver("Ville Lahtinen", FAR).await;
    let order = s.order().await;
    let assign = format!("/v1/orders/{order}/assign");
    let (st, offered) = s.app.post_json(&assign, &s.admin, &json!({"driver_id": pekka.id})).await;
    assert_eq!(st, 200, "{offered}");
    pekka.offered(&order).await;
    let (st, body) = s.app.post_json(&assign, &s.admin, &json!({"driver_id": ville.id, "force": true})).await;
    assert_eq!((st, body["order"]["driver_id"].as_str()), (200, Some(ville.id.as_str())), "{body}");
    let (told, _) = ws_until(&mut pekka.ws, "assignment_cancelled", WAIT).await;
    assert_eq!(told["data"]["offer_id"], offered["offer_id"], "{told}");
    ws_send(&mut pekka.ws, json!({"type": "accept", "offer_id": offered["offer_id"]})).await;
    let refused = ws_next(&mut pekka.ws, WAIT).await;
    assert_eq!(refused["data"]["code"], "offer_closed", "{refused}");
    assert_eq!((s.active_count(&pekka.id).await, s.active_count(&ville.id).await), (0, 1));

    let (st, _) = s.app.post_json(&format!("/v1/driver/orders/{order}/pickup"), &ville.token, &json!({})).await;
    assert_eq!(st, 200);
    for (path, body) in [
        (assign.clone(), json!({"driver_id": pekka.id, "force": true})),
        (format!("/v1/orders/{order}/unassign"), json!({})),
    ] {
        let (st, res) = s.app.post_json(&path, &s.admin, &body).await;
        assert_eq!((st, res["error"]["code"].as_str()), (409, Some("invalid_transition")), "{path}: {res}");
    }
    assert_eq!(s.order_json(&order).await["driver_id"], ville.id.as_str());
    s.app.stop().await;
}

/// Another tenant's order or driver is not found, exactly like a missing one.
async fn ops_are_tenant_scoped(backend: Backend) {
    let s = scene(TestApp::spawn_with(backend, |c| c.dispatch.enabled = false).await).await;
    let order = s.order().await;
    let (_, other_admin) = s.app.tenant("other").await;
    let (other_driver, _) = s.app.driver(&other_admin, "Outsider").await;
    let (mine, _) = s.app.driver(&s.admin, "Pekka Lahtinen").await;
    for (path, bearer, body) in [
        (format!("/v1/orders/{order}/assign"), &other_admin, json!({"driver_id": mine, "force": true})),
        (format!("/v1/orders/{order}/unassign"), &other_admin, json!({})),
        (format!("/v1/orders/{order}/assign"), &s.admin, json!({"driver_id": other_driver, "force": true})),
        ("/v1/orders/nope/assign".to_owned(), &s.admin, json!({"driver_id": mine})),
    ] {
        let (st, res) = s.app.post_json(&path, bearer, &body).await;
        assert_eq!((st, res["error"]["code"].as_str()), (404, Some("not_found")), "{path}: {res}");
    }
    let (st, res) = s.app.get_json(&format!("/v1/orders/{order}/events"), &other_admin).await;
    assert_eq!(st, 404, "{res}");
    let (st, res) = s.app.post_json(&format!("/v1/orders/{order}/assign"), &s.admin, &json!({"force": true})).await;
    assert_eq!((st, res["error"]["code"].as_str()), (422, Some("invalid_body")), "{res}");
    let (st, _) = s.app.post_json(&format!("/v1/orders/{order}/assign"), &s.jwt, &json!({"driver_id": mine})).await;
    assert_eq!(st, 401, "admin only");
    s.app.stop().await;
}

crate::on_backends!(
    ops_offer_force_assign_and_unassign => assign_offer_force_and_unassign,
    ops_assign_and_unassign_are_tenant_scoped => ops_are_tenant_scoped,
    ops_force_withdraws_a_pending_offer_and_leaves_picked_up_orders_alone => force_over_a_pending_offer_and_picked_up_refusals,
);

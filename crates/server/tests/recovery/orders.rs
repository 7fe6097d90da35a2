//! The driver's `order_updated` carries the full current dropoff after an admin PATCH or a
//! store's edit; an order shows its proof of delivery and its timeline, oldest first.

use super::support::*;
use crate::helpers::*;
use lastmile_core::{NormalizedOrder, Platform};
use lastmile_storage::{IntakeSource, RawDelivery};
use serde_json::json;

async fn patch_tells_driver_with_coordinates(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let mut pekka = s.online_driver("Pekka Lahtinen", NEAR).await;
    let order = s.order().await;
    pekka.accept(&order).await;
    let (lat, lng) = (60.1750, 24.9450);
    let res = s
        .app
        .http
        .patch(s.app.url(&format!("/v1/orders/{order}")))
        .bearer_auth(&s.admin)
        .json(&json!({"dropoff": {"lat": lat, "lng": lng}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (updated, _) = ws_until(&mut pekka.ws, "order_updated", WAIT).await;
    let d = &updated["data"];
    assert_eq!(d["order_id"], order.as_str(), "{updated}");
    assert_eq!((d["dropoff"]["lat"].as_f64(), d["dropoff"]["lng"].as_f64()), (Some(lat), Some(lng)), "{updated}");
    assert_eq!(d["dropoff"]["address"]["line1"], "Mannerheimintie 10", "the whole dropoff: {updated}");
    s.app.stop().await;
}

/// A store edit whose payload has no coordinates (platforms rarely send any) keeps the
/// order's, and the driver's `order_updated` carries them with the new address.
async fn store_edit_tells_driver_with_coordinates(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let shop = s.app.store(&s.admin, "shopify", "edit-shop.myshopify.com", "shpss_edit").await;
    let src = IntakeSource {
        tenant_id: s.tenant.clone(),
        store_id: lastmile_core::StoreId(shop["id"].as_str().unwrap().to_owned()),
        platform: Platform::Shopify,
    };
    let version = |line1: &str, coords: Option<(f64, f64)>, minute: u32| -> NormalizedOrder {
        serde_json::from_value(json!({
            "platform": "shopify", "platform_order_id": "450789469", "platform_order_number": "#1001", "state": "open",
            "customer": {"name": "Aino Virtanen", "email": null, "phone": null},
            "dropoff": {"address": {"line1": line1, "city": "Helsinki", "postal_code": "00100", "country": "FI"},
                        "lat": coords.map(|c| c.0), "lng": coords.map(|c| c.1)},
            "items": [], "notes": null, "placed_at": null,
            "totals": {"subtotal_minor": 0, "shipping_minor": 0, "tax_minor": 0, "total_minor": 0, "currency": "EUR"},
            "platform_updated_at": format!("2026-11-30T10:{minute:02}:00Z"),
        }))
        .unwrap()
    };
    let raw = || RawDelivery { headers_json: "{}".into(), body: Vec::new() };
    let mut pekka = s.online_driver("Pekka Lahtinen", NEAR).await;
    let created =
        s.app.state.db.intake_platform_order(src.clone(), version("Mannerheimintie 10", Some(DROPOFF), 0), raw()).await;
    let order = created.unwrap().order_id.unwrap();
    pekka.accept(&order).await;
    s.app.state.db.intake_platform_order(src, version("Mannerheimintie 12 B", None, 5), raw()).await.unwrap();
    let (updated, _) = ws_until(&mut pekka.ws, "order_updated", WAIT).await;
    let d = &updated["data"]["dropoff"];
    assert_eq!(d["address"]["line1"], "Mannerheimintie 12 B", "{updated}");
    assert_eq!((d["lat"].as_f64(), d["lng"].as_f64()), (Some(DROPOFF.0), Some(DROPOFF.1)), "{updated}");
    s.app.stop().await;
}

async fn proof_and_timeline(backend: Backend) {
    let s = scene(TestApp::spawn(backend).await).await;
    let mut pekka = s.online_driver("Pekka Lahtinen", NEAR).await;
    let order = s.order().await;
    assert!(s.order_json(&order).await["proof"].is_null(), "no proof before delivery");
    pekka.accept(&order).await;
    let (st, _) = s.app.post_json(&format!("/v1/driver/orders/{order}/pickup"), &pekka.token, &json!({})).await;
    assert_eq!(st, 200);
    // Marked delivered 1 km from the dropoff: flagged.
    let at = (DROPOFF.0 - 0.009, DROPOFF.1);
    let proof_in =
        json!({"recipient_name": "Aino", "photo_url": "https://img.example.com/p/1.jpg", "lat": at.0, "lng": at.1});
    let (st, body) = s.app.post_json(&format!("/v1/driver/orders/{order}/deliver"), &pekka.token, &proof_in).await;
    assert_eq!(st, 200, "{body}");

    let o = s.order_json(&order).await;
    let proof = &o["proof"];
    assert_eq!(
        (proof["recipient_name"].as_str(), proof["photo_url"].as_str()),
        (Some("Aino"), Some("https://img.example.com/p/1.jpg")),
        "{o}"
    );
    assert_eq!((proof["position"]["lat"].as_f64(), proof["position"]["lng"].as_f64()), (Some(at.0), Some(at.1)), "{o}");
    assert_eq!(proof["far_from_dropoff"], true, "{o}");
    assert!(proof["distance_from_dropoff_m"].as_f64().is_some_and(|d| (900.0..1100.0).contains(&d)), "{o}");
    assert!(proof["delivered_at"].is_string() && o["attention"].is_null(), "{o}");
    // The same read for the API client.
    let (st, via_client) = s.app.get_json(&format!("/v1/orders/{order}"), &s.jwt).await;
    assert_eq!((st, &via_client["proof"]), (200, proof));

    let (st, body) = s.app.get_json(&format!("/v1/orders/{order}/events"), &s.admin).await;
    assert_eq!(st, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first: {seqs:?}");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"order_created"), "{kinds:?}");
    let pos = |k: &str| kinds.iter().position(|x| *x == k).unwrap_or_else(|| panic!("{k} in {kinds:?}"));
    assert!(pos("order_created") < pos("offer_sent") && pos("offer_sent") < pos("order_assigned"), "{kinds:?}");
    let last = events.last().unwrap();
    assert!(events.iter().all(|e| e["id"].is_string() && e["occurred_at"].is_string()), "{body}");
    assert!(kinds.contains(&"order_updated") && last["kind"] != "order_created", "{kinds:?}");
    s.app.stop().await;
}

crate::on_backends!(
    order_updated_after_patch_carries_the_dropoff_coordinates => patch_tells_driver_with_coordinates,
    order_updated_after_a_store_edit_keeps_the_coordinates => store_edit_tells_driver_with_coordinates,
    delivered_order_shows_proof_and_timeline => proof_and_timeline,
);

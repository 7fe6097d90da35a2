//! Every published fixture, signed in-test, goes through detect → identity → verify →
//! parse (or `normalize_bigcommerce`), and the result is pinned by a JSON snapshot.

mod common;

use common::*;
use lastmile_core::{Platform, PlatformState};
use lastmile_ingest::{detect_platform, normalize_bigcommerce, parse, store_identity, verify, Parsed};
use serde_json::json;
use std::collections::BTreeSet;

/// Run one signed delivery through the whole inbound path and describe what came out.
fn ingest(platform: Platform, headers: &Headers, body: &[u8]) -> (Parsed, serde_json::Value) {
    assert_eq!(detect_platform(headers, body), Some(platform), "detected platform");
    verify(platform, headers, body, &key(), now()).expect("fixture verifies under the test secret");
    let parsed = parse(platform, headers, body).expect("fixture parses");
    let view = json!({
        "platform": platform,
        "store_identity": store_identity(platform, headers, body),
        "parsed": parsed,
    });
    (parsed, view)
}

fn fixture_names(platform_dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(fixtures_dir().join(platform_dir))
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_shopify_fixture() {
    for name in fixture_names("shopify") {
        let stem = name.trim_end_matches(".json");
        // "orders_create" → "orders/create", "fulfillments_create" → "fulfillments/create".
        let topic = stem.replacen('_', "/", 1);
        let body = fixture(&format!("shopify/{name}"));
        let (parsed, view) = ingest(Platform::Shopify, &shopify_headers(&topic, &body, SECRET), &body);
        match &parsed {
            Parsed::Order { order, delivery_id, .. } => {
                // The exact 64-bit id from the gid, not the rounded numeric `id` (…500).
                assert_eq!(order.platform_order_id, "820982911946154508");
                assert_eq!(delivery_id.as_deref(), Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"));
                // Shopify's one sample order is cancelled (`cancelled_at` is set).
                assert_eq!(order.state, PlatformState::Cancelled);
            }
            Parsed::Ignored { topic, .. } => assert_eq!(topic, "fulfillments/create"),
            other => panic!("{name}: unexpected {other:?}"),
        }
        insta::assert_json_snapshot!(format!("shopify__{stem}"), view);
    }
}

#[test]
fn every_woocommerce_fixture() {
    let names = fixture_names("woocommerce");
    let expected: BTreeSet<String> =
        ["order_retrieve_727.json", "order_updated_727_status_completed.json"].map(String::from).into();
    assert_eq!(names, expected, "a new WooCommerce fixture needs a case here");
    for (name, topic, state) in [
        ("order_retrieve_727.json", "order.created", PlatformState::Open),
        ("order_updated_727_status_completed.json", "order.updated", PlatformState::Completed),
    ] {
        let body = fixture(&format!("woocommerce/{name}"));
        let (parsed, view) = ingest(Platform::Woocommerce, &woo_headers(topic, &body, SECRET), &body);
        let Parsed::Order { order, .. } = &parsed else { panic!("{name}: unexpected {parsed:?}") };
        assert_eq!(order.platform_order_id, "727");
        assert_eq!(order.state, state);
        // Subtotal is the sum of the line subtotals: 6.00 + 12.00.
        assert_eq!(order.totals.subtotal_minor, 1800);
        insta::assert_json_snapshot!(format!("woocommerce__{}", name.trim_end_matches(".json")), view);
    }
}

#[test]
fn every_bigcommerce_fixture() {
    let mut uncovered = fixture_names("bigcommerce");
    for name in uncovered.clone().iter().filter(|n| n.starts_with("store_order_")) {
        let body = fixture(&format!("bigcommerce/{name}"));
        let (parsed, view) = ingest(Platform::Bigcommerce, &bigcommerce_headers(&body, SECRET), &body);
        let id = match &parsed {
            Parsed::NeedsFetch { platform_order_id, delivery_id, .. } => {
                assert_eq!(delivery_id.as_deref(), Some("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"));
                platform_order_id
            }
            Parsed::Deleted { platform_order_id, topic } => {
                assert_eq!(topic, "store/order/archived");
                platform_order_id
            }
            other => panic!("{name}: unexpected {other:?}"),
        };
        assert!(id == "250" || id == "173331", "{name}: order id {id}");
        insta::assert_json_snapshot!(format!("bigcommerce__{}", name.trim_end_matches(".json")), view);
        uncovered.remove(name);
    }

    let order_files =
        ["v2_order_get_response.json", "v2_order_products_response.json", "v2_order_shipping_addresses_response.json"];
    let [order, products, addresses] = order_files.map(|f| fixture(&format!("bigcommerce/{f}")));
    let normalized = normalize_bigcommerce(&order, &products, &addresses).expect("V2 order normalizes");
    assert_eq!(normalized.platform_order_id, "218");
    assert_eq!(normalized.state, PlatformState::Open, "status 7 Awaiting Payment is open");
    assert_eq!(normalized.totals.total_minor, 6984);
    assert_eq!(normalized.dropoff.address.line1, "666 Sussex St", "the first shipping address");
    insta::assert_json_snapshot!("bigcommerce__v2_order", normalized);
    for f in order_files {
        uncovered.remove(f);
    }
    assert!(uncovered.is_empty(), "fixtures without a case: {uncovered:?}");
}

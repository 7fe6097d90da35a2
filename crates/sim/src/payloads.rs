//! What stores send: Shopify, WooCommerce and BigCommerce order webhooks in the platforms'
//! real payload shapes (the published samples, with this order's ids, people, places and
//! items written in), signed the way each platform signs them; and native order bodies.
//! A BigCommerce webhook only names the order: the simulated store's API (a platform
//! stand-in) serves the order itself, shipping to this order's street address.

use crate::scenario::{OrderSpec, StoreSpec};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::OnceLock;

/// Shopify's published `orders/create` sample (a byte copy kept with the ingest tests).
const SHOPIFY_SAMPLE: &str = include_str!("../../ingest/tests/fixtures/shopify/orders_create.json");
/// WooCommerce's published order resource sample.
const WOO_SAMPLE: &str =
    include_str!("../../ingest/tests/fixtures/woocommerce/order_updated_727_status_completed.json");

/// BigCommerce's published `store/order/created` callback.
const BIGCOMMERCE_SAMPLE: &str = include_str!("../../ingest/tests/fixtures/bigcommerce/store_order_created.json");

fn template(cell: &'static OnceLock<Value>, text: &str) -> Value {
    cell.get_or_init(|| serde_json::from_str(text).expect("the embedded platform sample is valid JSON")).clone()
}

/// A signed delivery, ready to POST to `/v1/webhooks/{platform}/{store_id}`.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// The platform's order id, to correlate answers.
    pub platform_order_id: String,
}

/// base64(HMAC-SHA256(secret, body)): Shopify's and WooCommerce's signature.
pub fn hmac_base64(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

fn money(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// Shopify order ids are 64-bit; keep these well above 2^53 like real ones, unique per
/// (run, store, order).
pub fn shopify_order_id(run_salt: u64, order: &OrderSpec) -> u64 {
    0x0B00_0000_0000_0000 | ((run_salt & 0xFFFF_FFFF) << 24) | (order.number & 0xFF_FFFF)
}

pub fn shopify(store: &StoreSpec, order: &OrderSpec, run_salt: u64, now: DateTime<Utc>) -> Delivery {
    static T: OnceLock<Value> = OnceLock::new();
    let mut o = template(&T, SHOPIFY_SAMPLE);
    let id = shopify_order_id(run_salt, order);
    let ts = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let subtotal = order.subtotal_minor();
    let shipping = 390;
    let tax = subtotal * 14 / 114; // Finnish food VAT, included in prices
    let address = json!({
        "first_name": order.first_name, "last_name": order.last_name,
        "name": format!("{} {}", order.first_name, order.last_name),
        "address1": order.street, "address2": null, "city": "Helsinki", "zip": order.postal_code,
        "province": null, "province_code": null, "country": "Finland", "country_code": "FI",
        "phone": "+358401234567", "company": null,
        "latitude": order.dropoff.lat, "longitude": order.dropoff.lng,
    });
    let line_items: Vec<Value> = order
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            json!({
                "id": id + 1 + i as u64, "admin_graphql_api_id": format!("gid://shopify/LineItem/{}", id + 1 + i as u64),
                "name": it.name, "title": it.name, "sku": it.sku, "quantity": it.quantity,
                "price": money(it.unit_price_minor), "current_quantity": it.quantity,
                "fulfillable_quantity": it.quantity, "fulfillment_status": null, "requires_shipping": true,
                "taxable": true, "gift_card": false, "grams": 500, "vendor": store.name,
            })
        })
        .collect();
    let set = |k: &str, v: Value, o: &mut Value| {
        o[k] = v;
    };
    set("id", json!(id), &mut o);
    set("admin_graphql_api_id", json!(format!("gid://shopify/Order/{id}")), &mut o);
    set("name", json!(format!("#{}", 1001 + order.number)), &mut o);
    set("number", json!(1 + order.number), &mut o);
    set("order_number", json!(1001 + order.number), &mut o);
    for k in ["created_at", "updated_at", "processed_at"] {
        set(k, json!(ts), &mut o);
    }
    set("cancelled_at", Value::Null, &mut o);
    set("cancel_reason", Value::Null, &mut o);
    set("closed_at", Value::Null, &mut o);
    set("fulfillment_status", Value::Null, &mut o);
    set("financial_status", json!("paid"), &mut o);
    set("test", json!(false), &mut o);
    set("currency", json!("EUR"), &mut o);
    set("presentment_currency", json!("EUR"), &mut o);
    set("email", json!(order.email()), &mut o);
    set("contact_email", json!(order.email()), &mut o);
    set("note", json!(format!("Ring {} at the door", order.last_name)), &mut o);
    set("subtotal_price", json!(money(subtotal)), &mut o);
    set("total_line_items_price", json!(money(subtotal)), &mut o);
    set("total_tax", json!(money(tax)), &mut o);
    set("total_price", json!(money(subtotal + shipping)), &mut o);
    set(
        "total_shipping_price_set",
        json!({"shop_money": {"amount": money(shipping), "currency_code": "EUR"}, "presentment_money": {"amount": money(shipping), "currency_code": "EUR"}}),
        &mut o,
    );
    set(
        "shipping_lines",
        json!([{"title": "Courier", "price": money(shipping), "code": "courier", "source": "lastmile"}]),
        &mut o,
    );
    set("line_items", Value::Array(line_items), &mut o);
    set("shipping_address", address.clone(), &mut o);
    set("billing_address", address, &mut o);
    if let Some(c) = o.get_mut("customer") {
        c["first_name"] = json!(order.first_name);
        c["last_name"] = json!(order.last_name);
        c["email"] = json!(order.email());
        c["id"] = json!(id ^ 0x00FF_0000);
    }
    let body = serde_json::to_vec(&o).expect("JSON");
    let headers = vec![
        ("X-Shopify-Hmac-Sha256", hmac_base64(store.secret.as_bytes(), &body)),
        ("X-Shopify-Topic", "orders/create".to_owned()),
        ("X-Shopify-Shop-Domain", store.identity.clone()),
        ("X-Shopify-API-Version", "2025-07".to_owned()),
        ("X-Shopify-Webhook-Id", uuid::Uuid::new_v4().to_string()),
        ("X-Shopify-Triggered-At", ts),
        ("Content-Type", "application/json".to_owned()),
    ];
    Delivery { headers, body, platform_order_id: id.to_string() }
}

/// The platform order id of a BigCommerce order (numeric, unique per run).
pub fn bigcommerce_order_id(order: &OrderSpec, run_salt: u64) -> u64 {
    10_000 + (run_salt % 10_000) * 1_000_000 + order.number
}

/// The shipping address the store's API gives for `order`: a street address and no
/// coordinates (BigCommerce has none), for the server to geocode.
pub fn bigcommerce_shipping_address(order: &OrderSpec) -> Value {
    json!({
        "first_name": order.first_name, "last_name": order.last_name, "company": "",
        "street_1": order.street, "street_2": "", "city": "Helsinki", "zip": order.postal_code,
        "country": "Finland", "country_iso2": "FI", "state": "", "email": order.email(), "phone": "+358401234567",
    })
}

/// `store/order/created` naming the order, signed as BigCommerce signs callbacks (Standard
/// Webhooks; the store's webhook secret is the app's client secret).
pub fn bigcommerce(store: &StoreSpec, order: &OrderSpec, run_salt: u64, now: DateTime<Utc>) -> Delivery {
    static T: OnceLock<Value> = OnceLock::new();
    let mut o = template(&T, BIGCOMMERCE_SAMPLE);
    let id = bigcommerce_order_id(order, run_salt);
    o["data"]["id"] = json!(id);
    o["producer"] = json!(format!("stores/{}", store.identity));
    o["created_at"] = json!(now.timestamp());
    o["hash"] = json!(format!("{:040x}", uuid::Uuid::new_v4().as_u128()));
    let body = serde_json::to_vec(&o).expect("JSON");
    let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let ts = now.timestamp().to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(store.secret.as_bytes()).expect("HMAC takes keys of any length");
    for part in [msg_id.as_bytes(), b".", ts.as_bytes(), b".", &body] {
        mac.update(part);
    }
    let signature = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let headers = vec![
        ("webhook-id", msg_id),
        ("webhook-timestamp", ts),
        ("webhook-signature", signature),
        ("Content-Type", "application/json".to_owned()),
    ];
    Delivery { headers, body, platform_order_id: id.to_string() }
}

pub fn woocommerce(store: &StoreSpec, order: &OrderSpec, run_salt: u64, now: DateTime<Utc>) -> Delivery {
    static T: OnceLock<Value> = OnceLock::new();
    let mut o = template(&T, WOO_SAMPLE);
    let id = 10_000 + (run_salt % 10_000) * 1_000_000 + order.number;
    let gmt = now.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string();
    let subtotal = order.subtotal_minor();
    let shipping = 390;
    let contact = |with_email: bool| {
        let mut c = json!({
            "first_name": order.first_name, "last_name": order.last_name, "company": "",
            "address_1": order.street, "address_2": "", "city": "Helsinki", "state": "",
            "postcode": order.postal_code, "country": "FI", "phone": "+358401234567",
        });
        if with_email {
            c["email"] = json!(order.email());
        }
        c
    };
    let items: Vec<Value> = order
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let line = it.quantity * it.unit_price_minor;
            json!({"id": id * 10 + i as u64, "name": it.name, "product_id": 90 + i, "variation_id": 0,
                   "quantity": it.quantity, "tax_class": "", "subtotal": money(line), "subtotal_tax": "0.00",
                   "total": money(line), "total_tax": "0.00", "taxes": [], "meta_data": [], "sku": it.sku,
                   "price": it.unit_price_minor as f64 / 100.0})
        })
        .collect();
    o["id"] = json!(id);
    o["number"] = json!(id.to_string());
    o["order_key"] = json!(format!("wc_order_sim{id}"));
    o["status"] = json!("processing");
    o["currency"] = json!("EUR");
    for k in ["date_created", "date_modified", "date_created_gmt", "date_modified_gmt", "date_paid", "date_paid_gmt"] {
        o[k] = json!(gmt);
    }
    o["date_completed"] = Value::Null;
    o["date_completed_gmt"] = Value::Null;
    o["shipping_total"] = json!(money(shipping));
    o["total"] = json!(money(subtotal + shipping));
    o["total_tax"] = json!("0.00");
    o["customer_note"] = json!(format!("Ring {} at the door", order.last_name));
    o["billing"] = contact(true);
    o["shipping"] = contact(false);
    o["line_items"] = Value::Array(items);
    let body = serde_json::to_vec(&o).expect("JSON");
    let headers = vec![
        ("X-WC-Webhook-Source", format!("{}/", store.identity)),
        ("X-WC-Webhook-Topic", "order.created".to_owned()),
        ("X-WC-Webhook-Resource", "order".to_owned()),
        ("X-WC-Webhook-Event", "created".to_owned()),
        ("X-WC-Webhook-Signature", hmac_base64(store.secret.as_bytes(), &body)),
        ("X-WC-Webhook-ID", (store.index + 1).to_string()),
        ("X-WC-Webhook-Delivery-ID", format!("{:032x}", uuid::Uuid::new_v4().as_u128())),
        ("Content-Type", "application/json".to_owned()),
    ];
    Delivery { headers, body, platform_order_id: id.to_string() }
}

/// A `POST /v1/orders` body.
pub fn native(store_id: &str, order: &OrderSpec, ready_at: Option<DateTime<Utc>>) -> Value {
    let mut body = json!({
        "store_id": store_id,
        "external_id": format!("sim-{}", order.number),
        "customer": {"name": format!("{} {}", order.first_name, order.last_name), "phone": "+358401234567", "email": order.email()},
        "dropoff": {"address": {"line1": order.street, "city": "Helsinki", "postal_code": order.postal_code, "country": "FI"},
                    "lat": order.dropoff.lat, "lng": order.dropoff.lng},
        "items": order.items.iter().map(|i| json!({"sku": i.sku, "name": i.name, "quantity": i.quantity, "unit_price_minor": i.unit_price_minor})).collect::<Vec<_>>(),
        "currency": "EUR",
        "notes": format!("Ring {} at the door", order.last_name),
    });
    if let Some(at) = ready_at {
        body["ready_at"] = json!(at.to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    body
}

/// A catalog order for a restaurant: the same customer and door as [`native`], the lines
/// naming the menu's dishes by id (`menu` maps SKU → item id); no prices (the menu's count).
pub fn catalog(store_id: &str, order: &OrderSpec, menu: &std::collections::HashMap<String, String>) -> Value {
    let mut body = native(store_id, order, None);
    body["items"] = order
        .items
        .iter()
        .filter_map(|i| menu.get(&i.sku).map(|id| json!({"item_id": id, "quantity": i.quantity})))
        .collect();
    if let Some(o) = body.as_object_mut() {
        o.remove("currency");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::RoadGraph;
    use crate::scenario::{CityConfig, Scenario, Source};
    use clap::Parser;
    use lastmile_core::Platform;
    use lastmile_ingest::{Parsed, VerifyKey};

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        city: CityConfig,
    }

    fn scenario() -> Scenario {
        let cfg = Args::parse_from(["t", "--stores", "2", "--sources", "shopify,woocommerce"]).city;
        Scenario::new(cfg, RoadGraph::helsinki().unwrap(), "t").unwrap()
    }

    fn pairs(d: &Delivery) -> Vec<(String, String)> {
        d.headers.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    /// A BigCommerce callback verifies with the store's secret, is recognised, and names the
    /// order for the server to fetch.
    #[test]
    fn bigcommerce_callbacks_verify_and_name_the_order() {
        let cfg = Args::parse_from(["t", "--stores", "1", "--sources", "bigcommerce"]).city;
        let s = Scenario::new(cfg, RoadGraph::helsinki().unwrap(), "t").unwrap();
        let order = s.order(3);
        let store = &s.stores[order.store];
        let now = Utc::now();
        let d = bigcommerce(store, &order, 42, now);
        let key = VerifyKey { secret: &store.secret, custom_header: None };
        lastmile_ingest::verify(Platform::Bigcommerce, &pairs(&d), &d.body, &key, now).expect("signature verifies");
        assert_eq!(lastmile_ingest::detect_platform(&pairs(&d), &d.body), Some(Platform::Bigcommerce));
        let parsed = lastmile_ingest::parse(Platform::Bigcommerce, &pairs(&d), &d.body).unwrap();
        assert!(format!("{parsed:?}").contains(&d.platform_order_id), "{parsed:?}");
        let address = bigcommerce_shipping_address(&order);
        assert_eq!(address["street_1"], order.street.as_str());
        assert!(address.get("lat").is_none());
    }

    /// The server's own adapters accept what the simulated stores send.
    #[test]
    fn deliveries_verify_and_normalize_with_the_real_adapters() {
        let s = scenario();
        let now = Utc::now();
        for (n, platform) in [(0u64, Platform::Shopify), (1, Platform::Woocommerce)] {
            let order = s.order(n);
            let store = &s.stores[order.store];
            let d = match store.source {
                Source::Shopify => shopify(store, &order, 42, now),
                Source::Woocommerce => woocommerce(store, &order, 42, now),
                Source::Bigcommerce | Source::Native | Source::Restaurant => unreachable!(),
            };
            let key = VerifyKey { secret: &store.secret, custom_header: None };
            lastmile_ingest::verify(platform, &pairs(&d), &d.body, &key, now).expect("signature verifies");
            let Parsed::Order { order: normalized, .. } =
                lastmile_ingest::parse(platform, &pairs(&d), &d.body).unwrap()
            else {
                panic!("an order");
            };
            assert_eq!(normalized.platform_order_id, d.platform_order_id);
            assert_eq!(normalized.items.len(), order.items.len());
            assert_eq!(normalized.totals.currency, "EUR");
            assert_eq!(normalized.totals.subtotal_minor, order.subtotal_minor());
            if platform == Platform::Shopify {
                assert_eq!(
                    (normalized.dropoff.lat, normalized.dropoff.lng),
                    (Some(order.dropoff.lat), Some(order.dropoff.lng))
                );
                assert!(d.body.len() > 5_000, "the real sample's size: {}", d.body.len());
            }
            let detected = lastmile_ingest::detect_platform(&pairs(&d), &d.body);
            assert_eq!(detected, Some(platform));
        }
    }
}

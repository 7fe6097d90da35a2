//! Properties over arbitrary input: a wrong signature never verifies, and nothing in
//! the crate panics on any bytes, headers or type-mangled fixture.

mod common;

use common::*;
use lastmile_core::Platform;
use lastmile_ingest::{
    detect_platform, is_woocommerce_ping, normalize_bigcommerce, parse, store_identity, verify, IngestError, Parsed,
    VerifyKey,
};
use proptest::prelude::*;
use serde_json::Value;

const PLATFORMS: [Platform; 4] = [Platform::Shopify, Platform::Woocommerce, Platform::Bigcommerce, Platform::Native];

fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..512)
}

fn wrong_secret() -> impl Strategy<Value = String> {
    "[ -~]{0,40}".prop_filter("must differ from the real secret", |s| s != SECRET)
}

/// Header names the crate looks at, plus noise, with arbitrary values.
fn arb_headers() -> impl Strategy<Value = Headers> {
    let names = prop::sample::select(vec![
        "X-Shopify-Hmac-Sha256",
        "X-Shopify-Topic",
        "X-Shopify-Shop-Domain",
        "X-Shopify-API-Version",
        "X-Shopify-Webhook-Id",
        "shopify-hmac-sha256",
        "shopify-topic",
        "shopify-event-id",
        "X-WC-Webhook-Topic",
        "X-WC-Webhook-Signature",
        "X-WC-Webhook-Source",
        "X-WC-Webhook-Delivery-ID",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-custom-auth",
        "Content-Type",
    ]);
    let name = prop_oneof![names.prop_map(String::from), "[A-Za-z-]{0,20}"];
    prop::collection::vec((name, any::<String>()), 0..8)
}

/// Fixture bytes with a few random byte edits and maybe a truncation.
fn mutated(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len().max(1);
    (prop::collection::vec((0..len, any::<u8>()), 1..8), prop::option::of(0..len)).prop_map(move |(edits, cut)| {
        let mut out = bytes.clone();
        for (at, byte) in edits {
            if let Some(slot) = out.get_mut(at) {
                *slot = byte;
            }
        }
        if let Some(cut) = cut {
            out.truncate(cut);
        }
        out
    })
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    // Null and "" weigh most: they are what platforms send for "nothing".
    prop_oneof![
        4 => Just(Value::Null),
        2 => Just(Value::from("")),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => ".{0,12}".prop_map(Value::from),
        1 => "-?[0-9]{1,30}(\\.[0-9]{0,12})?".prop_map(Value::from),
        1 => Just(Value::Array(vec![])),
        1 => Just(Value::Object(Default::default())),
    ]
}

fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            map.iter().for_each(|(k, v)| pointers(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out))
        }
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

/// A fixture where a few values (anywhere, the root included) became other JSON types.
fn retyped(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let root: Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
    let mut paths = Vec::new();
    pointers(&root, String::new(), &mut paths);
    prop::collection::vec((prop::sample::select(paths), arb_leaf()), 1..4).prop_map(move |swaps| {
        let mut value = root.clone();
        for (path, leaf) in swaps {
            if let Some(slot) = value.pointer_mut(&path) {
                *slot = leaf;
            }
        }
        serde_json::to_vec(&value).expect("serializable")
    })
}

fn order_body(platform: Platform) -> Vec<u8> {
    match platform {
        Platform::Shopify => fixture("shopify/orders_create.json"),
        Platform::Woocommerce => fixture("woocommerce/order_retrieve_727.json"),
        _ => fixture("bigcommerce/store_order_statusUpdated.json"),
    }
}

fn delivery_headers(platform: Platform, body: &[u8]) -> Headers {
    match platform {
        Platform::Shopify => shopify_headers("orders/create", body, SECRET),
        Platform::Woocommerce => woo_headers("order.updated", body, SECRET),
        _ => bigcommerce_headers(body, SECRET),
    }
}

/// Parsing must return, and an order it returns must be for the platform asked.
fn parse_holds_up(platform: Platform, body: &[u8]) {
    let headers = delivery_headers(platform, body);
    if let Ok(Parsed::Order { order, .. }) = parse(platform, &headers, body) {
        assert_eq!(order.platform, platform);
        assert!(!order.platform_order_id.is_empty());
    }
}

proptest! {
    #[test]
    fn any_body_under_a_wrong_secret_is_invalid(body in arb_body(), secret in wrong_secret(), skew in -300i64..=300) {
        let cases = [
            (Platform::Shopify, shopify_headers("orders/create", &body, &secret)),
            (Platform::Woocommerce, woo_headers("order.created", &body, &secret)),
            (Platform::Bigcommerce, bigcommerce_headers_at(&body, &secret, NOW_TS + skew)),
        ];
        for (platform, headers) in cases {
            prop_assert_eq!(verify(platform, &headers, &body, &key(), now()), Err(IngestError::InvalidSignature));
        }
    }

    #[test]
    fn any_signature_header_value_but_the_right_one_is_invalid(body in arb_body(), signature in any::<String>()) {
        let right = hmac_base64(SECRET.as_bytes(), &[&body]);
        prop_assume!(signature.trim().trim_end_matches('=') != right.trim_end_matches('='));
        for (platform, name) in [
            (Platform::Shopify, "X-Shopify-Hmac-Sha256"),
            (Platform::Woocommerce, "X-WC-Webhook-Signature"),
            (Platform::Bigcommerce, "webhook-signature"),
        ] {
            let mut headers = delivery_headers(platform, &body);
            set_header(&mut headers, name, &signature);
            prop_assert_eq!(verify(platform, &headers, &body, &key(), now()), Err(IngestError::InvalidSignature));
        }
    }

    #[test]
    fn nothing_panics_on_arbitrary_headers_and_bytes(headers in arb_headers(), body in arb_body(), secret in ".{0,20}") {
        let detected = detect_platform(&headers, &body);
        let _ = is_woocommerce_ping(&headers, &body);
        let key = VerifyKey { secret: &secret, custom_header: Some(("x-custom-auth", "value")) };
        for platform in PLATFORMS {
            let _ = store_identity(platform, &headers, &body);
            let _ = verify(platform, &headers, &body, &key, now());
            let _ = parse(platform, &headers, &body);
        }
        if let Some(platform) = detected {
            prop_assert_ne!(platform, Platform::Native);
        }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(body in arb_body()) {
        for platform in PLATFORMS {
            parse_holds_up(platform, &body);
        }
    }

    #[test]
    fn parse_never_panics_on_damaged_fixtures(
        shopify in mutated(order_body(Platform::Shopify)),
        woo in mutated(order_body(Platform::Woocommerce)),
        bc in mutated(order_body(Platform::Bigcommerce)),
    ) {
        parse_holds_up(Platform::Shopify, &shopify);
        parse_holds_up(Platform::Woocommerce, &woo);
        parse_holds_up(Platform::Bigcommerce, &bc);
    }

}

proptest! {
    // Few of a fixture's values are read, so a retyped field needs more cases to land on one.
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics_on_retyped_fixtures(
        shopify in retyped(order_body(Platform::Shopify)),
        woo in retyped(order_body(Platform::Woocommerce)),
        bc in retyped(order_body(Platform::Bigcommerce)),
    ) {
        parse_holds_up(Platform::Shopify, &shopify);
        parse_holds_up(Platform::Woocommerce, &woo);
        parse_holds_up(Platform::Bigcommerce, &bc);
    }

    #[test]
    fn normalize_bigcommerce_never_panics_on_arbitrary_bytes(a in arb_body(), b in arb_body(), c in arb_body()) {
        let _ = normalize_bigcommerce(&a, &b, &c);
    }

    #[test]
    fn normalize_bigcommerce_never_panics_on_retyped_fixtures(
        order in retyped(fixture("bigcommerce/v2_order_get_response.json")),
        products in retyped(fixture("bigcommerce/v2_order_products_response.json")),
        addresses in retyped(fixture("bigcommerce/v2_order_shipping_addresses_response.json")),
    ) {
        if let Ok(order) = normalize_bigcommerce(&order, &products, &addresses) {
            prop_assert_eq!(order.platform, Platform::Bigcommerce);
        }
    }
}

//! What must be refused, and the edges of what must be accepted: wrong secrets, a
//! flipped byte, missing headers, stale Standard Webhooks timestamps, several
//! signatures, custom BigCommerce headers, the WooCommerce ping, and bodies that verify
//! but cannot be normalized.

mod common;

use common::*;
use lastmile_core::Platform;
use lastmile_ingest::{
    detect_platform, is_woocommerce_ping, normalize_bigcommerce, parse, store_identity, verify, IngestError, Parsed,
    VerifyKey,
};

fn shopify_body() -> Vec<u8> {
    fixture("shopify/orders_create.json")
}
fn woo_body() -> Vec<u8> {
    fixture("woocommerce/order_retrieve_727.json")
}
fn bc_body() -> Vec<u8> {
    fixture("bigcommerce/store_order_created.json")
}

/// Each platform with a correctly signed delivery.
fn signed_deliveries() -> Vec<(Platform, Headers, Vec<u8>)> {
    let (s, w, b) = (shopify_body(), woo_body(), bc_body());
    vec![
        (Platform::Shopify, shopify_headers("orders/create", &s, SECRET), s),
        (Platform::Woocommerce, woo_headers("order.created", &w, SECRET), w),
        (Platform::Bigcommerce, bigcommerce_headers(&b, SECRET), b),
    ]
}

#[test]
fn a_wrong_secret_is_an_invalid_signature() {
    let wrong = VerifyKey { secret: "not-the-secret", custom_header: None };
    for (platform, headers, body) in signed_deliveries() {
        assert_eq!(verify(platform, &headers, &body, &key(), now()), Ok(()), "{platform}: control");
        assert_eq!(verify(platform, &headers, &body, &wrong, now()), Err(IngestError::InvalidSignature), "{platform}");
    }
}

#[test]
fn one_flipped_body_byte_is_an_invalid_signature() {
    for (platform, headers, body) in signed_deliveries() {
        for at in [0, body.len() / 2, body.len() - 1] {
            let mut tampered = body.clone();
            tampered[at] ^= 0x01;
            let got = verify(platform, &headers, &tampered, &key(), now());
            assert_eq!(got, Err(IngestError::InvalidSignature), "{platform} byte {at}");
        }
    }
}

#[test]
fn the_signature_covers_the_raw_bytes_not_the_json_meaning() {
    for (platform, headers, body) in signed_deliveries() {
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let reserialized = serde_json::to_vec(&value).expect("json");
        assert_ne!(reserialized, body);
        let got = verify(platform, &headers, &reserialized, &key(), now());
        assert_eq!(got, Err(IngestError::InvalidSignature), "{platform}");
    }
}

#[test]
fn a_missing_signature_header_is_named() {
    let cases = [
        (Platform::Shopify, "X-Shopify-Hmac-Sha256"),
        (Platform::Woocommerce, "X-WC-Webhook-Signature"),
        (Platform::Bigcommerce, "webhook-signature"),
        (Platform::Bigcommerce, "webhook-id"),
        (Platform::Bigcommerce, "webhook-timestamp"),
    ];
    for (platform, name) in cases {
        let (_, headers, body) =
            signed_deliveries().into_iter().find(|(p, _, _)| *p == platform).expect("a delivery per platform");
        let headers = without_header(&headers, name);
        let err = verify(platform, &headers, &body, &key(), now()).expect_err(name);
        assert_eq!(err, IngestError::MissingHeader(name), "{platform} without {name}");
        assert_eq!(err.code(), "missing_header");
    }
}

#[test]
fn shopify_parse_requires_the_headers_shopify_always_sends() {
    let body = shopify_body();
    let headers = shopify_headers("orders/create", &body, SECRET);
    assert!(matches!(parse(Platform::Shopify, &headers, &body), Ok(Parsed::Order { .. })));
    for name in ["X-Shopify-Topic", "X-Shopify-Shop-Domain", "X-Shopify-API-Version", "X-Shopify-Webhook-Id"] {
        let got = parse(Platform::Shopify, &without_header(&headers, name), &body);
        assert_eq!(got, Err(IngestError::MissingHeader(name)), "without {name}");
    }
}

#[test]
fn woocommerce_parse_requires_the_topic() {
    let body = woo_body();
    let headers = without_header(&woo_headers("order.created", &body, SECRET), "X-WC-Webhook-Topic");
    assert_eq!(parse(Platform::Woocommerce, &headers, &body), Err(IngestError::MissingHeader("X-WC-Webhook-Topic")));
}

#[test]
fn bigcommerce_timestamps_older_or_newer_than_five_minutes_are_stale() {
    let body = bc_body();
    for offset in [-301, 301, -86_400, 86_400, i64::from(i32::MAX)] {
        let headers = bigcommerce_headers_at(&body, SECRET, NOW_TS + offset);
        let err = verify(Platform::Bigcommerce, &headers, &body, &key(), now()).expect_err("stale");
        assert_eq!(err, IngestError::StaleTimestamp, "offset {offset}");
        assert_eq!(err.code(), "stale_timestamp");
    }
    for offset in [-300, 0, 300] {
        let headers = bigcommerce_headers_at(&body, SECRET, NOW_TS + offset);
        assert_eq!(verify(Platform::Bigcommerce, &headers, &body, &key(), now()), Ok(()), "offset {offset}");
    }
    let mut headers = bigcommerce_headers(&body, SECRET);
    set_header(&mut headers, "webhook-timestamp", "yesterday");
    assert_eq!(verify(Platform::Bigcommerce, &headers, &body, &key(), now()), Err(IngestError::InvalidSignature));
}

#[test]
fn any_matching_v1_signature_among_several_passes() {
    let body = bc_body();
    let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    let good = standard_signature(SECRET.as_bytes(), id, NOW_TS, &body);
    let rotated_out = standard_signature(b"previous-secret", id, NOW_TS, &body);
    let with = |signatures: &str| {
        let mut headers = bigcommerce_headers(&body, SECRET);
        set_header(&mut headers, "webhook-signature", signatures);
        verify(Platform::Bigcommerce, &headers, &body, &key(), now())
    };
    assert_eq!(with(&format!("{rotated_out} {good}")), Ok(()));
    assert_eq!(with(&format!("{good} {rotated_out}")), Ok(()));
    assert_eq!(with(&format!("v1a,garbage  {rotated_out}   {good}")), Ok(()));
    assert_eq!(with(&rotated_out), Err(IngestError::InvalidSignature));
    // Same MAC under another version tag is not a v1 signature.
    assert_eq!(with(&good.replacen("v1,", "v2,", 1)), Err(IngestError::InvalidSignature));
    assert_eq!(with(""), Err(IngestError::InvalidSignature));
}

#[test]
fn a_whsec_secret_is_the_base64_of_the_key() {
    let body = bc_body();
    let headers = bigcommerce_headers(&body, "raw client secret");
    // base64("raw client secret")
    let key = VerifyKey { secret: "whsec_cmF3IGNsaWVudCBzZWNyZXQ=", custom_header: None };
    assert_eq!(verify(Platform::Bigcommerce, &headers, &body, &key, now()), Ok(()));
}

#[test]
fn a_configured_bigcommerce_custom_header_replaces_the_signature() {
    let body = bc_body();
    let plain = headers(&[("Content-Type", "application/json"), ("X-Lastmile-Auth", "s3cret-value")]);
    let key_with = |value| VerifyKey { secret: SECRET, custom_header: Some(("x-lastmile-auth", value)) };
    assert_eq!(detect_platform(&plain, &body), Some(Platform::Bigcommerce), "detected by its body");
    assert_eq!(verify(Platform::Bigcommerce, &plain, &body, &key_with("s3cret-value"), now()), Ok(()));
    assert_eq!(
        verify(Platform::Bigcommerce, &plain, &body, &key_with("s3cret-valuf"), now()),
        Err(IngestError::InvalidSignature)
    );
    // An empty configured value must not turn "header present" into "authenticated".
    let empty = headers(&[("X-Lastmile-Auth", "")]);
    assert_eq!(
        verify(Platform::Bigcommerce, &empty, &body, &key_with(""), now()),
        Err(IngestError::MissingHeader("webhook-signature"))
    );
    // A wrong custom header still lets a valid signature through.
    let mut signed = bigcommerce_headers(&body, SECRET);
    set_header(&mut signed, "X-Lastmile-Auth", "wrong");
    assert_eq!(verify(Platform::Bigcommerce, &signed, &body, &key_with("s3cret-value"), now()), Ok(()));
}

#[test]
fn the_woocommerce_ping_is_recognised_unsigned() {
    let body = b"webhook_id=31";
    let headers = headers(&[
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("User-Agent", "WooCommerce/8.0 Hookshot (WordPress/6.3)"),
    ]);
    assert!(is_woocommerce_ping(&headers, body));
    assert_eq!(detect_platform(&headers, body), Some(Platform::Woocommerce));
    assert_eq!(parse(Platform::Woocommerce, &headers, body), Ok(Parsed::Ping));
    // A ping is not a way around the signature for anything else.
    assert!(!is_woocommerce_ping(&headers, b"webhook_id=31&status=completed"));
    assert!(!is_woocommerce_ping(&woo_headers("order.created", body, SECRET), body));
    assert_eq!(
        verify(Platform::Woocommerce, &headers, body, &key(), now()),
        Err(IngestError::MissingHeader("X-WC-Webhook-Signature"))
    );
}

#[test]
fn woocommerce_secrets_are_entity_decoded_like_wordpress_does() {
    let body = woo_body();
    let headers = woo_headers("order.created", &body, "a&b<c>'d\"");
    let stored = VerifyKey { secret: "a&amp;b&lt;c&gt;&#039;d&quot;", custom_header: None };
    assert_eq!(verify(Platform::Woocommerce, &headers, &body, &stored, now()), Ok(()));
    let plain = VerifyKey { secret: "a&b<c>'d\"", custom_header: None };
    assert_eq!(verify(Platform::Woocommerce, &headers, &body, &plain, now()), Ok(()));
}

#[test]
fn shopify_events_deliveries_use_lowercase_headers() {
    let body = shopify_body();
    let headers = headers(&[
        ("shopify-hmac-sha256", &hmac_base64(SECRET.as_bytes(), &[&body])),
        ("shopify-topic", "orders/updated"),
        ("shopify-shop-domain", "Acme.MyShopify.com"),
        ("shopify-api-version", "2026-04"),
        ("shopify-event-id", "evt-1"),
    ]);
    assert_eq!(detect_platform(&headers, &body), Some(Platform::Shopify));
    assert_eq!(store_identity(Platform::Shopify, &headers, &body).as_deref(), Some("acme.myshopify.com"));
    assert_eq!(verify(Platform::Shopify, &headers, &body, &key(), now()), Ok(()));
    let Ok(Parsed::Order { delivery_id, topic, .. }) = parse(Platform::Shopify, &headers, &body) else {
        panic!("an events delivery parses")
    };
    assert_eq!((topic.as_str(), delivery_id.as_deref()), ("orders/updated", Some("evt-1")));
}

#[test]
fn deletions_name_the_order_to_cancel() {
    let woo = br#"{"id":727}"#;
    let got = parse(Platform::Woocommerce, &woo_headers("order.deleted", woo, SECRET), woo);
    assert_eq!(got, Ok(Parsed::Deleted { topic: "order.deleted".into(), platform_order_id: "727".into() }));

    let shop = br#"{"id":820982911946154508}"#;
    let got = parse(Platform::Shopify, &shopify_headers("orders/delete", shop, SECRET), shop);
    let want = Parsed::Deleted { topic: "orders/delete".into(), platform_order_id: "820982911946154508".into() };
    assert_eq!(got, Ok(want));

    let bc = fixture("bigcommerce/store_order_archived.json");
    let got = parse(Platform::Bigcommerce, &bigcommerce_headers(&bc, SECRET), &bc);
    assert_eq!(got, Ok(Parsed::Deleted { topic: "store/order/archived".into(), platform_order_id: "250".into() }));
}

#[test]
fn exact_numeric_ids_survive_without_a_gid() {
    let mut order: serde_json::Value = serde_json::from_slice(&shopify_body()).expect("json");
    let object = order.as_object_mut().expect("object");
    object.remove("admin_graphql_api_id");
    // An id far above 2^53, as raw JSON digits: exact only if never read through f64.
    let text = serde_json::to_string(&order).expect("json").replace("820982911946154500", "18446744073709551557");
    let headers = shopify_headers("orders/create", text.as_bytes(), SECRET);
    let Ok(Parsed::Order { order, .. }) = parse(Platform::Shopify, &headers, text.as_bytes()) else { panic!("order") };
    assert_eq!(order.platform_order_id, "18446744073709551557");
}

#[test]
fn verified_bodies_that_cannot_be_normalized_are_malformed() {
    let not_json = b"<html>oops</html>";
    let cases = [
        (Platform::Shopify, shopify_headers("orders/create", not_json, SECRET)),
        (Platform::Woocommerce, woo_headers("order.created", not_json, SECRET)),
        (Platform::Bigcommerce, bigcommerce_headers(not_json, SECRET)),
    ];
    for (platform, headers) in cases {
        let err = parse(platform, &headers, not_json).expect_err("not json");
        assert!(matches!(err, IngestError::Malformed(_)), "{platform}: {err:?}");
        assert_eq!(err.code(), "unprocessable_payload");
    }
    let no_currency = br#"{"id":1,"total":"1.00","shipping":{"address_1":"1 Main St"}}"#;
    let got = parse(Platform::Woocommerce, &woo_headers("order.created", no_currency, SECRET), no_currency);
    assert!(matches!(got, Err(IngestError::Malformed(m)) if m.contains("currency")));
    let bad_price = br#"{"id":1,"currency":"USD","total":"1.00","shipping":{"address_1":"1 Main St"},
        "line_items":[{"name":"x","quantity":1,"price":"cheap"}]}"#;
    let got = parse(Platform::Woocommerce, &woo_headers("order.created", bad_price, SECRET), bad_price);
    assert!(matches!(got, Err(IngestError::Malformed(m)) if m.contains("price")));
}

#[test]
fn orders_with_nothing_to_deliver_are_ignored_or_refused() {
    let mut order: serde_json::Value = serde_json::from_slice(&shopify_body()).expect("json");
    order.as_object_mut().expect("object").remove("shipping_address");
    let body = serde_json::to_vec(&order).expect("json");
    let got = parse(Platform::Shopify, &shopify_headers("orders/create", &body, SECRET), &body);
    assert!(matches!(got, Ok(Parsed::Ignored { .. })), "{got:?}");

    let order = fixture("bigcommerce/v2_order_get_response.json");
    let products = fixture("bigcommerce/v2_order_products_response.json");
    let err = normalize_bigcommerce(&order, &products, b"[]").expect_err("no address");
    assert!(matches!(err, IngestError::Malformed(_)));
    let err = normalize_bigcommerce(&order, &products, b"").expect_err("204 No Content");
    assert!(matches!(err, IngestError::Malformed(_)));
}

#[test]
fn store_identities_are_normalized() {
    let body = woo_body();
    let headers = woo_headers("order.created", &body, SECRET);
    assert_eq!(store_identity(Platform::Woocommerce, &headers, &body).as_deref(), Some("https://shop.example.com"));
    let bc = fixture("bigcommerce/store_order_statusUpdated_overview_example.json");
    assert_eq!(store_identity(Platform::Bigcommerce, &[], &bc).as_deref(), Some("abcde"));
    assert_eq!(store_identity(Platform::Shopify, &[], b"{}"), None);
    assert_eq!(store_identity(Platform::Native, &headers, &body), None);
}

#[test]
fn other_topics_are_ignored_with_a_reason() {
    let woo = woo_body();
    let got = parse(Platform::Woocommerce, &woo_headers("product.updated", &woo, SECRET), &woo);
    assert!(matches!(got, Ok(Parsed::Ignored { ref topic, .. }) if topic == "product.updated"), "{got:?}");
    let bc = br#"{"scope":"store/product/updated","producer":"stores/abc","data":{"type":"product","id":5}}"#;
    let got = parse(Platform::Bigcommerce, &bigcommerce_headers(bc, SECRET), bc);
    assert!(matches!(got, Ok(Parsed::Ignored { ref topic, .. }) if topic == "store/product/updated"), "{got:?}");
}

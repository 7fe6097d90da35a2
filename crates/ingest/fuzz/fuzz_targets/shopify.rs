//! Shopify adapter: any body, signed or not, through detect → identity → verify → parse.
#![no_main]

use lastmile_core::Platform;
use lastmile_ingest::{detect_platform, parse, store_identity, verify, VerifyKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let headers: Vec<(String, String)> = [
        ("X-Shopify-Hmac-Sha256", "XWmrwMey6OsLMeiZKwP4FppHH3cmAiiJJAweH5Jo4bM="),
        ("X-Shopify-Topic", "orders/create"),
        ("X-Shopify-Shop-Domain", "acme.myshopify.com"),
        ("X-Shopify-API-Version", "2026-04"),
        ("X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let key = VerifyKey { secret: "fuzz-secret", custom_header: None };
    let _ = detect_platform(&headers, body);
    let _ = store_identity(Platform::Shopify, &headers, body);
    let _ = verify(Platform::Shopify, &headers, body, &key, chrono::Utc::now());
    for topic in ["orders/create", "orders/cancelled", "orders/delete", "fulfillments/create"] {
        let mut headers = headers.clone();
        headers[1].1 = topic.to_owned();
        let _ = parse(Platform::Shopify, &headers, body);
    }
});

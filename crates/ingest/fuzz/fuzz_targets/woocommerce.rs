//! WooCommerce adapter: any body (JSON order, `{"id"}` deletion or form ping) through
//! ping detection, verify and parse.
#![no_main]

use lastmile_core::Platform;
use lastmile_ingest::{detect_platform, is_woocommerce_ping, parse, store_identity, verify, VerifyKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = is_woocommerce_ping(&[], body);
    let _ = detect_platform(&[], body);
    let _ = parse(Platform::Woocommerce, &[], body);
    let key = VerifyKey { secret: "fuzz&amp;secret", custom_header: None };
    for topic in ["order.created", "order.updated", "order.deleted", "product.updated"] {
        let headers: Vec<(String, String)> = [
            ("X-WC-Webhook-Source", "https://Shop.Example.com/"),
            ("X-WC-Webhook-Topic", topic),
            ("X-WC-Webhook-Signature", "5poyFy4qB6fdvvT5pGbefZmfkpL48uD47F0WYwfmpo4="),
            ("X-WC-Webhook-Delivery-ID", "d1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let _ = store_identity(Platform::Woocommerce, &headers, body);
        let _ = verify(Platform::Woocommerce, &headers, body, &key, chrono::Utc::now());
        let _ = parse(Platform::Woocommerce, &headers, body);
    }
});

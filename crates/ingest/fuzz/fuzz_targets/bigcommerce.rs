//! BigCommerce adapter: the webhook body through detect/identity/verify/parse, and the
//! same bytes split in three as the V2 order, products and shipping-address bodies.
#![no_main]

use lastmile_core::Platform;
use lastmile_ingest::{detect_platform, normalize_bigcommerce, parse, store_identity, verify, VerifyKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let headers: Vec<(String, String)> = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,bm9wZQ=="),
        ("x-auth", "value"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let key = VerifyKey { secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", custom_header: Some(("x-auth", "other")) };
    let now = chrono::DateTime::from_timestamp(1614265330, 0).unwrap_or_default();
    let _ = detect_platform(&[], body);
    let _ = store_identity(Platform::Bigcommerce, &headers, body);
    let _ = verify(Platform::Bigcommerce, &headers, body, &key, now);
    let _ = parse(Platform::Bigcommerce, &headers, body);

    // Split on two 0xFF bytes (never valid inside JSON) into the three V2 bodies.
    let mut parts = body.splitn(3, |b| *b == 0xFF);
    let order = parts.next().unwrap_or_default();
    let products = parts.next().unwrap_or_default();
    let addresses = parts.next().unwrap_or_default();
    let _ = normalize_bigcommerce(order, products, addresses);
});

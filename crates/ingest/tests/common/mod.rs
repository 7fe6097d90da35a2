//! Shared by the integration tests: fixture loading and signing deliveries the way each
//! platform does, written independently of the crate's verifier.
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use lastmile_ingest::VerifyKey;
use sha2::Sha256;
use std::path::PathBuf;

pub const SECRET: &str = "test-secret-Ω-7f3a";
pub const SHOP: &str = "acme.myshopify.com";
pub const WOO_SITE: &str = "https://Shop.Example.com/";
pub const NOW_TS: i64 = 1_700_000_000;

pub type Headers = Vec<(String, String)>;

pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW_TS, 0).expect("valid time")
}

pub fn key() -> VerifyKey<'static> {
    VerifyKey { secret: SECRET, custom_header: None }
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(relative: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(relative)).unwrap_or_else(|e| panic!("fixture {relative}: {e}"))
}

pub fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub fn hmac_base64(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A classic Shopify delivery: every header Shopify's library requires.
pub fn shopify_headers(topic: &str, body: &[u8], secret: &str) -> Headers {
    headers(&[
        ("X-Shopify-Hmac-Sha256", &hmac_base64(secret.as_bytes(), &[body])),
        ("X-Shopify-Topic", topic),
        ("X-Shopify-Shop-Domain", SHOP),
        ("X-Shopify-API-Version", "2026-04"),
        ("X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
        ("Content-Type", "application/json"),
    ])
}

/// A WooCommerce delivery as `WC_Webhook::deliver()` sends it.
pub fn woo_headers(topic: &str, body: &[u8], secret: &str) -> Headers {
    let (resource, event) = topic.split_once('.').unwrap_or((topic, ""));
    headers(&[
        ("X-WC-Webhook-Source", WOO_SITE),
        ("X-WC-Webhook-Topic", topic),
        ("X-WC-Webhook-Resource", resource),
        ("X-WC-Webhook-Event", event),
        ("X-WC-Webhook-Signature", &hmac_base64(secret.as_bytes(), &[body])),
        ("X-WC-Webhook-ID", "31"),
        ("X-WC-Webhook-Delivery-ID", "a6f2c1e0b9d84f7e"),
        ("Content-Type", "application/json"),
    ])
}

/// A Standard Webhooks `v1,<base64>` entry over `{id}.{timestamp}.{body}`.
pub fn standard_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!("v1,{}", hmac_base64(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]))
}

/// A BigCommerce delivery signed with Standard Webhooks at `timestamp`.
pub fn bigcommerce_headers_at(body: &[u8], secret: &str, timestamp: i64) -> Headers {
    let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", &timestamp.to_string()),
        ("webhook-signature", &standard_signature(secret.as_bytes(), id, timestamp, body)),
        ("Content-Type", "application/json"),
    ])
}

pub fn bigcommerce_headers(body: &[u8], secret: &str) -> Headers {
    bigcommerce_headers_at(body, secret, NOW_TS)
}

/// Replace the value of `name` (case-insensitive), or add it.
pub fn set_header(headers: &mut Headers, name: &str, value: &str) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value.to_owned()));
}

pub fn without_header(headers: &Headers, name: &str) -> Headers {
    headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(name)).cloned().collect()
}

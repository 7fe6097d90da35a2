//! What a delivery says about itself before it is trusted: its headers, which platform
//! sent it, which store it names, and whether it is WooCommerce's unsigned ping.

use crate::signature::{SHOPIFY_EVENTS_HMAC, SHOPIFY_HMAC, SW_ID, SW_SIGNATURE, WOO_SIGNATURE};
use lastmile_core::Platform;
use serde::Deserialize;

/// Case-insensitive header lookup over (name, value) pairs; the first match wins.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn has_header_prefix(headers: &[(String, String)], prefix: &str) -> bool {
    headers.iter().any(|(k, _)| k.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix)))
}

/// The two fields that mark a BigCommerce webhook body; nothing else is read.
#[derive(Deserialize)]
struct BigCommerceMarks {
    producer: Option<String>,
    scope: Option<String>,
}

fn bigcommerce_marks(body: &[u8]) -> Option<BigCommerceMarks> {
    let trimmed = body.trim_ascii_start();
    if !trimmed.starts_with(b"{") {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// Which platform sent this delivery, from its headers, or for header-less deliveries
/// (a WooCommerce ping, a BigCommerce hook secured by a custom header) from its body.
pub fn detect_platform(headers: &[(String, String)], body: &[u8]) -> Option<Platform> {
    let shopify = [SHOPIFY_HMAC, "X-Shopify-Topic", SHOPIFY_EVENTS_HMAC, "shopify-topic"];
    if shopify.iter().any(|name| header(headers, name).is_some()) {
        return Some(Platform::Shopify);
    }
    if has_header_prefix(headers, "X-WC-Webhook-") || is_woocommerce_ping(headers, body) {
        return Some(Platform::Woocommerce);
    }
    if header(headers, SW_ID).is_some() && header(headers, SW_SIGNATURE).is_some() {
        return Some(Platform::Bigcommerce);
    }
    let marks = bigcommerce_marks(body)?;
    let producer = marks.producer.as_deref().is_some_and(|p| p.starts_with("stores/"));
    let scope = marks.scope.as_deref().is_some_and(|s| s.starts_with("store/"));
    (producer && scope).then_some(Platform::Bigcommerce)
}

/// Is this WooCommerce's activation ping: a form body `webhook_id=<digits>` with no
/// signature header? The server asks before verifying because pings are never signed.
pub fn is_woocommerce_ping(headers: &[(String, String)], body: &[u8]) -> bool {
    let signed = [WOO_SIGNATURE, SHOPIFY_HMAC, SHOPIFY_EVENTS_HMAC, SW_SIGNATURE];
    if signed.iter().any(|name| header(headers, name).is_some()) {
        return false;
    }
    // The ping body is tiny; anything long is not one, and need not be decoded.
    if body.len() > 64 {
        return false;
    }
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body.trim_ascii()) else {
        return false;
    };
    matches!(pairs.as_slice(), [(key, id)] if key == "webhook_id" && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// The store identity the delivery names, to compare with a store's `platform_store_id`:
/// the Shopify shop domain (lower case), the WooCommerce site URL (see
/// [`normalize_site_url`]), or the BigCommerce store hash from `producer: "stores/<hash>"`.
pub fn store_identity(platform: Platform, headers: &[(String, String)], body: &[u8]) -> Option<String> {
    let identity = match platform {
        Platform::Shopify => header(headers, "X-Shopify-Shop-Domain")
            .or_else(|| header(headers, "shopify-shop-domain"))
            .map(|domain| domain.trim().to_ascii_lowercase()),
        Platform::Woocommerce => header(headers, "X-WC-Webhook-Source").map(normalize_site_url),
        Platform::Bigcommerce => {
            let producer = bigcommerce_marks(body)?.producer?;
            producer.strip_prefix("stores/").map(|hash| hash.trim().to_owned())
        }
        Platform::Native => None,
    };
    identity.filter(|id| !id.is_empty())
}

/// A site URL in one canonical form, so `https://Shop.Example/` and
/// `https://shop.example` name the same WooCommerce store: trimmed, scheme and host in
/// lower case (the path keeps its case), trailing slashes removed.
pub fn normalize_site_url(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, url),
    };
    let (host, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        out.push_str(&scheme);
        out.push_str("://");
    }
    out.push_str(&host.to_ascii_lowercase());
    out.push_str(path.trim_end_matches('/'));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn header_lookup_ignores_case() {
        let headers = h(&[("X-Shopify-Topic", "orders/create"), ("x-shopify-topic", "second")]);
        assert_eq!(header(&headers, "x-SHOPIFY-topic"), Some("orders/create"));
        assert_eq!(header(&headers, "X-Shopify-Shop-Domain"), None);
    }

    #[test]
    fn site_urls_normalize_scheme_host_and_trailing_slash() {
        assert_eq!(normalize_site_url("https://Example.COM/"), "https://example.com");
        assert_eq!(normalize_site_url(" HTTPS://example.com/Shop/ "), "https://example.com/Shop");
        assert_eq!(normalize_site_url("https://example.com"), "https://example.com");
        assert_eq!(normalize_site_url("Example.com//"), "example.com");
        assert_eq!(normalize_site_url(""), "");
    }

    #[test]
    fn pings_are_exactly_one_numeric_webhook_id() {
        assert!(is_woocommerce_ping(&[], b"webhook_id=42"));
        assert!(is_woocommerce_ping(&h(&[("Content-Type", "application/x-www-form-urlencoded")]), b"webhook_id=7\n"));
        assert!(!is_woocommerce_ping(&[], b"webhook_id="));
        assert!(!is_woocommerce_ping(&[], b"webhook_id=4a"));
        assert!(!is_woocommerce_ping(&[], b"webhook_id=4&x=1"));
        assert!(!is_woocommerce_ping(&[], br#"{"webhook_id":4}"#));
        assert!(!is_woocommerce_ping(&h(&[("X-WC-Webhook-Signature", "abc")]), b"webhook_id=4"));
    }

    #[test]
    fn bigcommerce_is_recognised_by_body_alone() {
        let body = br#"{"scope":"store/order/created","producer":"stores/abc123","data":{"id":1}}"#;
        assert_eq!(detect_platform(&[], body), Some(Platform::Bigcommerce));
        assert_eq!(store_identity(Platform::Bigcommerce, &[], body).as_deref(), Some("abc123"));
        assert_eq!(detect_platform(&[], br#"{"scope":"x","producer":"stores/a"}"#), None);
        assert_eq!(detect_platform(&[], b"[1,2]"), None);
    }
}

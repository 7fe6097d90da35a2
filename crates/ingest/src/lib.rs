//! Inbound platform adapters: which platform sent a webhook, which store it names,
//! whether its signature holds, and what order it describes, normalized into
//! `lastmile_core::NormalizedOrder`.
//!
//! Owns: Shopify, WooCommerce and BigCommerce webhook formats, their signature schemes
//! (checked on the raw body, in constant time) and the mapping of their fields.
//! Must not: do I/O of any kind (no database, network, clock reads: the caller passes
//! `now`), hold state, or panic on any input. Fetching BigCommerce orders, storing,
//! deduplicating and answering HTTP belong to the server and connectors.

mod bigcommerce;
mod detect;
mod error;
mod fields;
mod shopify;
mod signature;
mod woocommerce;

pub use bigcommerce::normalize_bigcommerce;
pub use detect::{detect_platform, header, is_woocommerce_ping, normalize_site_url, store_identity};
pub use error::IngestError;
pub use signature::TIMESTAMP_TOLERANCE_SECS;

use chrono::{DateTime, Utc};
use lastmile_core::{NormalizedOrder, Platform};
use serde::Serialize;

/// What a store's configuration says to check a delivery against.
#[derive(Debug, Clone, Copy)]
pub struct VerifyKey<'a> {
    /// The webhook secret: Shopify's client secret (or the admin-page key), the
    /// WooCommerce webhook secret, the BigCommerce app client secret (raw, or `whsec_<base64>`).
    pub secret: &'a str,
    /// BigCommerce: a configured custom auth header (name, value) accepted instead of
    /// the signature. Ignored when the value is empty.
    pub custom_header: Option<(&'a str, &'a str)>,
}

/// Check the delivery's signature over the RAW body, before any parsing. `now` bounds
/// the BigCommerce (Standard Webhooks) timestamp to ±[`TIMESTAMP_TOLERANCE_SECS`].
pub fn verify(
    platform: Platform,
    headers: &[(String, String)],
    body: &[u8],
    key: &VerifyKey,
    now: DateTime<Utc>,
) -> Result<(), IngestError> {
    match platform {
        Platform::Shopify => signature::verify_shopify(headers, body, key.secret),
        Platform::Woocommerce => signature::verify_woocommerce(headers, body, key.secret),
        Platform::Bigcommerce => signature::verify_bigcommerce(headers, body, key, now),
        // Native orders come through the ordering API with a client JWT, never a webhook.
        Platform::Native => Err(IngestError::InvalidSignature),
    }
}

/// What a verified delivery asks Lastmile to do. Serializes as `{"kind": "order", ...}`
/// for logs and dead letters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// One `Parsed` exists per request and is consumed at once; boxing the order would only
// make every caller write `*order`.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// A full order to create or update. `delivery_id` is the platform's id for this
    /// delivery (X-Shopify-Webhook-Id / X-WC-Webhook-Delivery-ID / webhook-id); `topic`
    /// as the platform names it.
    Order { topic: String, delivery_id: Option<String>, order: NormalizedOrder },
    /// The platform says the order is gone (WooCommerce `order.deleted`, Shopify
    /// `orders/delete`, BigCommerce `store/order/archived`): cancel it.
    Deleted { topic: String, platform_order_id: String },
    /// BigCommerce: the body only carries ids; fetch the order and call
    /// [`normalize_bigcommerce`].
    NeedsFetch { topic: String, delivery_id: Option<String>, platform_order_id: String },
    /// WooCommerce's unsigned `webhook_id=` ping sent at webhook creation: answer 200,
    /// change nothing.
    Ping,
    /// A valid delivery we do not act on (another topic, or an order with nothing to
    /// deliver), with the reason.
    Ignored { topic: String, reason: String },
}

/// Parse an already verified body. Never panics on any input; a body that cannot be
/// normalized is `IngestError::Malformed`, for the server to dead-letter.
///
/// Text fields come back free of NUL (replaced by U+FFFD, see `lastmile_core::text`), so
/// every database can store them; the raw body keeps the original bytes.
pub fn parse(platform: Platform, headers: &[(String, String)], body: &[u8]) -> Result<Parsed, IngestError> {
    let mut parsed = match platform {
        Platform::Shopify => shopify::parse(headers, body),
        Platform::Woocommerce => woocommerce::parse(headers, body),
        Platform::Bigcommerce => bigcommerce::parse(headers, body),
        Platform::Native => Err(IngestError::malformed("native orders do not arrive as webhooks")),
    }?;
    parsed.scrub_text();
    Ok(parsed)
}

impl Parsed {
    fn scrub_text(&mut self) {
        use lastmile_core::text::{scrub_nul, scrub_nul_opt};
        match self {
            Parsed::Order { topic, delivery_id, order } => {
                scrub_nul(topic);
                scrub_nul_opt(delivery_id);
                order.scrub_text();
            }
            Parsed::Deleted { topic, platform_order_id } => {
                scrub_nul(topic);
                scrub_nul(platform_order_id);
            }
            Parsed::NeedsFetch { topic, delivery_id, platform_order_id } => {
                scrub_nul(topic);
                scrub_nul_opt(delivery_id);
                scrub_nul(platform_order_id);
            }
            Parsed::Ping => {}
            Parsed::Ignored { topic, reason } => {
                scrub_nul(topic);
                scrub_nul(reason);
            }
        }
    }
}

//! The one table of what each delivery action becomes at each platform. The connectors act
//! on [`PlatformTarget`]; `docs/status-mapping.md` explains the same rows (a test keeps the
//! two in step).

use lastmile_core::Platform;
use serde::{Deserialize, Serialize};

/// A [`crate::SyncAction`] without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    PickedUp,
    Delivered,
    Failed,
    Cancelled,
}

impl ActionKind {
    pub const ALL: [ActionKind; 4] =
        [ActionKind::PickedUp, ActionKind::Delivered, ActionKind::Failed, ActionKind::Cancelled];

    pub fn as_str(&self) -> &'static str {
        match self {
            ActionKind::PickedUp => "picked_up",
            ActionKind::Delivered => "delivered",
            ActionKind::Failed => "failed",
            ActionKind::Cancelled => "cancelled",
        }
    }
}

/// What the connector does at the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformTarget {
    /// Nothing: the platform has no counterpart, or it is not ours to change.
    NoCall,
    /// Shopify: `fulfillmentCreate` over every open fulfillment order, with tracking.
    ShopifyFulfil,
    /// Shopify: a `fulfillmentEventCreate` with this status on the order's fulfilment, after
    /// fulfilling it first when `fulfil_first` and it is not fulfilled yet.
    ShopifyEvent { status: &'static str, fulfil_first: bool },
    /// WooCommerce: `PUT /wp-json/wc/v3/orders/{id}` `{"status": ..}`.
    WooStatus(&'static str),
    /// BigCommerce: `PUT /v2/orders/{id}` `{"status_id": ..}`.
    BigCommerceStatus(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusMapping {
    pub action: ActionKind,
    pub platform: Platform,
    pub target: PlatformTarget,
    /// The platform status as `docs/status-mapping.md` shows it.
    pub platform_status: &'static str,
    pub why: &'static str,
}

const fn row(
    action: ActionKind,
    platform: Platform,
    target: PlatformTarget,
    platform_status: &'static str,
    why: &'static str,
) -> StatusMapping {
    StatusMapping { action, platform, target, platform_status, why }
}

use ActionKind::*;
use PlatformTarget::*;

const NOT_OURS: &str = "a delivery outcome, not an order outcome: the merchant decides what happens to the order";
const CANCELLED_HERE: &str =
    "cancelling the delivery does not cancel the store order; a store-side cancellation reaches us by webhook";

static MAPPING: [StatusMapping; 12] = [
    row(
        PickedUp,
        Platform::Shopify,
        ShopifyFulfil,
        "fulfilled (fulfillmentCreate)",
        "the driver has the goods: fulfil every open fulfillment order, with our tracking link (`public_url`) and number (our order id)",
    ),
    row(
        Delivered,
        Platform::Shopify,
        ShopifyEvent { status: "DELIVERED", fulfil_first: true },
        "fulfilled + DELIVERED event",
        "fulfil first if the pick-up sync never landed, then mark the fulfilment delivered",
    ),
    row(
        Failed,
        Platform::Shopify,
        ShopifyEvent { status: "FAILURE", fulfil_first: false },
        "FAILURE event (if fulfilled)",
        "tells the customer on the existing fulfilment, with the driver's reason as the event's message; an unfulfilled order is left alone",
    ),
    row(Cancelled, Platform::Shopify, NoCall, "no call", CANCELLED_HERE),
    row(
        PickedUp,
        Platform::Woocommerce,
        NoCall,
        "no call (stays processing)",
        "WooCommerce core has no out-for-delivery status",
    ),
    row(
        Delivered,
        Platform::Woocommerce,
        WooStatus("completed"),
        "completed",
        "WooCommerce's status for a fulfilled order",
    ),
    row(
        Failed,
        Platform::Woocommerce,
        NoCall,
        "no call",
        "WooCommerce's failed means a failed payment; the delivery outcome is not the order's",
    ),
    row(Cancelled, Platform::Woocommerce, NoCall, "no call", CANCELLED_HERE),
    row(PickedUp, Platform::Bigcommerce, BigCommerceStatus(2), "2 Shipped", "the goods have left the store"),
    row(
        Delivered,
        Platform::Bigcommerce,
        BigCommerceStatus(10),
        "10 Completed",
        "BigCommerce's status for a fulfilled order",
    ),
    row(Failed, Platform::Bigcommerce, NoCall, "no call", NOT_OURS),
    row(Cancelled, Platform::Bigcommerce, NoCall, "no call", CANCELLED_HERE),
];

/// Every (action, platform) pair of the three external platforms. Native orders have no
/// platform to report to and are not listed: [`lookup`] answers `NoCall` for them.
pub fn status_mapping() -> &'static [StatusMapping] {
    &MAPPING
}

pub(crate) fn lookup(platform: Platform, action: ActionKind) -> PlatformTarget {
    MAPPING.iter().find(|m| m.platform == platform && m.action == action).map_or(NoCall, |m| m.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_one_row_per_external_platform() {
        for platform in [Platform::Shopify, Platform::Woocommerce, Platform::Bigcommerce] {
            for action in ActionKind::ALL {
                let rows = MAPPING.iter().filter(|m| m.platform == platform && m.action == action).count();
                assert_eq!(rows, 1, "{platform} {}", action.as_str());
            }
        }
        assert_eq!(lookup(Platform::Native, Delivered), NoCall);
    }

    #[test]
    fn the_doc_lists_every_row() {
        let doc = include_str!("../../../docs/status-mapping.md");
        for m in status_mapping() {
            let line = format!("| {} | {} | {} | {} |", m.action.as_str(), m.platform, m.platform_status, m.why);
            assert!(doc.contains(&line), "docs/status-mapping.md lacks the row `{line}`");
        }
    }
}

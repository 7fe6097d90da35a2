//! Domain events. Every state change writes one to the outbox in the same transaction
//! (invariant 5); the relay publishes them in commit order; consumers dedupe by `id`.

use crate::{EventId, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    OrderCreated,
    OrderUpdated,
    OrderStatusChanged,
    OrderCancelled,
    OrderDispatchStalled,
    OfferSent,
    OfferDeclined,
    OfferExpired,
    OrderAssigned,
    DriverStatusChanged,
    /// A message was appended to a driver's inbox (data: driver_id, seq).
    InboxAppended,
    SyncDeadLettered,
    /// A driver lost an order they held (signed off, revoked, silent, or ops took it back);
    /// the order is back in matching (data: order_id, driver_id, cause).
    OrderUnassigned,
    /// A picked-up order whose driver can no longer finish it: flagged for ops (data:
    /// order_id, driver_id, reason).
    OrderNeedsAttention,
    /// The geocoder could not locate an order's dropoff; it stays `needs_location` (data: order_id, reason).
    OrderGeocodeFailed,
    /// A store's menu or its live stock changed (a menu put, a dish patched, stock reserved
    /// by an order or given back): data `store_id`, `version` (the menu's ETag source).
    /// Every node drops its rendered copy of that menu when it sees one.
    MenuChanged,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::OrderCreated,
        EventKind::OrderUpdated,
        EventKind::OrderStatusChanged,
        EventKind::OrderCancelled,
        EventKind::OrderDispatchStalled,
        EventKind::OfferSent,
        EventKind::OfferDeclined,
        EventKind::OfferExpired,
        EventKind::OrderAssigned,
        EventKind::DriverStatusChanged,
        EventKind::InboxAppended,
        EventKind::SyncDeadLettered,
        EventKind::OrderUnassigned,
        EventKind::OrderNeedsAttention,
        EventKind::OrderGeocodeFailed,
        EventKind::MenuChanged,
    ];

    /// Whether tenants may subscribe webhook endpoints to this kind (inbox appends are the
    /// driver transport's own bookkeeping).
    pub fn subscribable(&self) -> bool {
        *self != EventKind::InboxAppended
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::OrderCreated => "order_created",
            EventKind::OrderUpdated => "order_updated",
            EventKind::OrderStatusChanged => "order_status_changed",
            EventKind::OrderCancelled => "order_cancelled",
            EventKind::OrderDispatchStalled => "order_dispatch_stalled",
            EventKind::OfferSent => "offer_sent",
            EventKind::OfferDeclined => "offer_declined",
            EventKind::OfferExpired => "offer_expired",
            EventKind::OrderAssigned => "order_assigned",
            EventKind::DriverStatusChanged => "driver_status_changed",
            EventKind::InboxAppended => "inbox_appended",
            EventKind::SyncDeadLettered => "sync_dead_lettered",
            EventKind::OrderUnassigned => "order_unassigned",
            EventKind::OrderNeedsAttention => "order_needs_attention",
            EventKind::OrderGeocodeFailed => "order_geocode_failed",
            EventKind::MenuChanged => "menu_changed",
        }
    }

    /// The bus subject suffix (`lastmile.events.<kind>`).
    pub fn subject(&self) -> String {
        format!("lastmile.events.{}", self.as_str())
    }
}

/// One event as it crosses the bus: a serialized message with an id, so any transport
/// (in-process or NATS JetStream) carries it unchanged.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    /// Position in the outbox: strictly increasing in commit order.
    pub seq: i64,
    pub tenant_id: TenantId,
    pub kind: EventKind,
    /// The id of the thing the event is about (an order id, a driver id).
    pub subject_id: String,
    pub data: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

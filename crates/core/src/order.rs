//! Orders: the normalized shape every platform adapter produces, the stored order, and
//! the status machine that says which moves are legal.

use crate::GeoPoint;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The systems orders come from and fulfilments go back to.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Shopify,
    Woocommerce,
    Bigcommerce,
    Native,
}

impl Platform {
    pub const ALL: [Platform; 4] = [Platform::Shopify, Platform::Woocommerce, Platform::Bigcommerce, Platform::Native];
    pub fn as_str(&self) -> &'static str {
        match self {
            Platform::Shopify => "shopify",
            Platform::Woocommerce => "woocommerce",
            Platform::Bigcommerce => "bigcommerce",
            Platform::Native => "native",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownValue(pub String);

/// Where we are with an order. `dispatch_stalled` is a flag beside the status, not a status.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    NeedsLocation,
    Received,
    Dispatching,
    Assigned,
    PickedUp,
    Delivered,
    Failed,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::NeedsLocation,
        OrderStatus::Received,
        OrderStatus::Dispatching,
        OrderStatus::Assigned,
        OrderStatus::PickedUp,
        OrderStatus::Delivered,
        OrderStatus::Failed,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::NeedsLocation => "needs_location",
            OrderStatus::Received => "received",
            OrderStatus::Dispatching => "dispatching",
            OrderStatus::Assigned => "assigned",
            OrderStatus::PickedUp => "picked_up",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Failed => "failed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, OrderStatus::Delivered | OrderStatus::Failed | OrderStatus::Cancelled)
    }

    /// True while a driver holds the order (counts against the driver's capacity).
    pub fn holds_driver(&self) -> bool {
        matches!(self, OrderStatus::Assigned | OrderStatus::PickedUp)
    }

    /// The status machine. Anything not listed is illegal.
    pub fn can_move_to(&self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (NeedsLocation, Received)
                | (Received, Dispatching)
                // Ops assigning a driver directly (`force`), without an offer.
                | (Received, Assigned)
                | (Dispatching, Received)
                | (Dispatching, Assigned)
                | (Assigned, PickedUp)
                | (Assigned, Received)
                | (Assigned, Failed)
                | (PickedUp, Delivered)
                | (PickedUp, Failed)
                | (NeedsLocation | Received | Dispatching | Assigned | PickedUp, Cancelled)
                | (Cancelled, Received)
                | (Cancelled, NeedsLocation)
        )
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Customer {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Address {
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default)]
    pub region: Option<String>,
    pub postal_code: String,
    pub country: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropoff {
    pub address: Address,
    /// Absent until the payload or an operator gives coordinates.
    pub lat: Option<f64>,
    pub lng: Option<f64>,
}

impl Dropoff {
    pub fn point(&self) -> Option<GeoPoint> {
        GeoPoint::new(self.lat?, self.lng?).ok()
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub sku: Option<String>,
    pub name: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub subtotal_minor: i64,
    pub shipping_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
}

/// What the platform says about the order's life, mapped onto the few things we act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformState {
    /// Open and to be delivered.
    Open,
    /// Cancelled, refunded, voided or deleted at the platform: stop delivery.
    Cancelled,
    /// Already fulfilled/completed at the platform (nothing for us to change).
    Completed,
}

/// An order as an adapter (or the ordering API) hands it to the core: everything the
/// platform told us, normalized, with no ids of ours yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizedOrder {
    pub platform: Platform,
    /// The platform's id, as a string (Shopify ids are 64-bit and must never be rounded).
    pub platform_order_id: String,
    /// The number a human sees ("#1001").
    pub platform_order_number: Option<String>,
    pub state: PlatformState,
    pub customer: Customer,
    pub dropoff: Dropoff,
    pub items: Vec<LineItem>,
    pub totals: Totals,
    pub notes: Option<String>,
    pub placed_at: Option<DateTime<Utc>>,
    /// The platform's last-modified time; orders out-of-order updates (invariant 3).
    pub platform_updated_at: Option<DateTime<Utc>>,
}

impl NormalizedOrder {
    /// Replace NUL in every text field (see [`crate::text`]): a signed delivery is stored
    /// with the offending characters replaced, never refused. Returns whether any was found.
    pub fn scrub_text(&mut self) -> bool {
        use crate::text::{scrub_nul, scrub_nul_opt};
        let mut found = scrub_nul(&mut self.platform_order_id);
        found |= scrub_nul_opt(&mut self.platform_order_number);
        found |= scrub_nul(&mut self.customer.name);
        found |= scrub_nul_opt(&mut self.customer.email);
        found |= scrub_nul_opt(&mut self.customer.phone);
        let a = &mut self.dropoff.address;
        for field in [&mut a.line1, &mut a.city, &mut a.postal_code, &mut a.country] {
            found |= scrub_nul(field);
        }
        found |= scrub_nul_opt(&mut a.line2);
        found |= scrub_nul_opt(&mut a.region);
        for item in &mut self.items {
            found |= scrub_nul_opt(&mut item.sku);
            found |= scrub_nul(&mut item.name);
        }
        found |= scrub_nul(&mut self.totals.currency);
        found |= scrub_nul_opt(&mut self.notes);
        found
    }
}

/// Money parsing shared by adapters: platforms send decimal strings ("199.00") or numbers.
/// Returns integer minor units for the currency's exponent.
pub fn decimal_to_minor(text: &str, currency: &str) -> Option<i64> {
    let exp = currency_exponent(currency);
    let text = text.trim();
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.chars().all(|c| c.is_ascii_digit()) || !frac_part.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut value: i64 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
    for _ in 0..exp {
        value = value.checked_mul(10)?;
    }
    let mut frac: i64 = 0;
    let mut scale = exp;
    let frac_digits: Vec<u32> = frac_part.chars().filter_map(|c| c.to_digit(10)).collect();
    for (i, d) in frac_digits.iter().enumerate() {
        if i < exp as usize {
            frac = frac * 10 + *d as i64;
            scale -= 1;
        } else if i == exp as usize {
            // Round half away from zero on the first dropped digit.
            if *d >= 5 {
                frac += 1;
            }
            break;
        }
    }
    for _ in 0..scale {
        frac *= 10;
    }
    let total = value.checked_add(frac)?;
    Some(if neg { -total } else { total })
}

/// ISO 4217 minor-unit exponent; 2 unless the currency is known to differ.
pub fn currency_exponent(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// A stored order, as every endpoint returns it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: crate::OrderId,
    #[serde(skip_serializing)]
    pub tenant_id: crate::TenantId,
    pub store_id: crate::StoreId,
    pub platform: Platform,
    pub platform_order_id: String,
    pub platform_order_number: Option<String>,
    pub status: OrderStatus,
    pub dispatch_stalled: bool,
    /// Why the order waits in `needs_location`, or why dispatch stalled.
    pub status_reason: Option<String>,
    pub customer: Customer,
    pub dropoff: Dropoff,
    pub items: Vec<LineItem>,
    pub totals: Totals,
    pub notes: Option<String>,
    pub placed_at: Option<DateTime<Utc>>,
    pub ready_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub platform_updated_at: Option<DateTime<Utc>>,
    pub tracking_token: String,
    pub driver_id: Option<crate::DriverId>,
    pub eta: Option<DateTime<Utc>>,
    pub raw_payload_id: Option<crate::PayloadId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_machine_allows_the_happy_path_only_forward() {
        use OrderStatus::*;
        let path = [Received, Dispatching, Assigned, PickedUp, Delivered];
        for w in path.windows(2) {
            assert!(w[0].can_move_to(w[1]), "{} -> {}", w[0], w[1]);
            assert!(!w[1].can_move_to(w[0]) || (w[1] == Dispatching), "{} -> {}", w[1], w[0]);
        }
        assert!(!Delivered.can_move_to(Cancelled));
        assert!(!PickedUp.can_move_to(Received));
    }

    #[test]
    fn statuses_round_trip_through_strings() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        for p in Platform::ALL {
            assert_eq!(p.as_str().parse::<Platform>().unwrap(), p);
        }
    }

    #[test]
    fn decimals_become_minor_units() {
        assert_eq!(decimal_to_minor("199.00", "USD"), Some(19900));
        assert_eq!(decimal_to_minor("12.5", "EUR"), Some(1250));
        assert_eq!(decimal_to_minor("7", "EUR"), Some(700));
        assert_eq!(decimal_to_minor("1000", "JPY"), Some(1000));
        assert_eq!(decimal_to_minor("0.125", "USD"), Some(13));
        assert_eq!(decimal_to_minor("-3.10", "USD"), Some(-310));
        assert_eq!(decimal_to_minor("1.234", "KWD"), Some(1234));
        assert_eq!(decimal_to_minor("abc", "USD"), None);
        assert_eq!(decimal_to_minor("", "USD"), None);
        assert_eq!(decimal_to_minor("99999999999999999999", "USD"), None);
    }
}

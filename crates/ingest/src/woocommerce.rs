//! WooCommerce order webhooks (the REST v3 order resource) into `NormalizedOrder`.
//!
//! `order.created`, `order.updated` and `order.restored` carry the full order;
//! `order.deleted` carries only `{"id"}`; the activation ping is a form body.

use crate::fields::{self, currency, from_json, full_name, id_text, minor, non_empty, required_minor, Scalar};
use crate::{header, is_woocommerce_ping, IngestError, Parsed};
use lastmile_core::{Address, Customer, Dropoff, LineItem, NormalizedOrder, Platform, PlatformState, Totals};
use serde::Deserialize;

pub(crate) const TOPIC: &str = "X-WC-Webhook-Topic";
const DELIVERY_ID: &str = "X-WC-Webhook-Delivery-ID";

#[derive(Deserialize)]
struct Order {
    id: Option<Scalar>,
    number: Option<Scalar>,
    status: Option<String>,
    currency: Option<String>,
    date_created_gmt: Option<String>,
    date_modified_gmt: Option<String>,
    shipping_total: Option<Scalar>,
    total: Option<Scalar>,
    total_tax: Option<Scalar>,
    customer_note: Option<String>,
    billing: Option<Contact>,
    shipping: Option<Contact>,
    line_items: Option<Vec<OrderLine>>,
}

/// WooCommerce's `billing` and `shipping` objects (shipping has no email; `phone`
/// appeared on shipping in WooCommerce 5.6).
#[derive(Deserialize, Default)]
struct Contact {
    first_name: Option<String>,
    last_name: Option<String>,
    address_1: Option<String>,
    address_2: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postcode: Option<String>,
    country: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

impl Contact {
    fn has_address(&self) -> bool {
        non_empty(self.address_1.as_deref()).is_some()
    }
}

#[derive(Deserialize)]
struct OrderLine {
    sku: Option<String>,
    name: Option<String>,
    quantity: Option<i64>,
    /// A JSON number (the unit price before discounts), unlike the string totals.
    price: Option<Scalar>,
    subtotal: Option<Scalar>,
}

#[derive(Deserialize)]
struct Deleted {
    id: Option<Scalar>,
}

pub(crate) fn parse(headers: &[(String, String)], body: &[u8]) -> Result<Parsed, IngestError> {
    if is_woocommerce_ping(headers, body) {
        return Ok(Parsed::Ping);
    }
    let topic = header(headers, TOPIC)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(IngestError::MissingHeader(TOPIC))?
        .to_owned();
    let delivery_id = non_empty(header(headers, DELIVERY_ID));
    match topic.to_ascii_lowercase().as_str() {
        "order.created" | "order.updated" | "order.restored" => match normalize(body)? {
            Some(order) => Ok(Parsed::Order { topic, delivery_id, order }),
            None => Ok(Parsed::Ignored { topic, reason: "order has no delivery address: nothing to deliver".into() }),
        },
        "order.deleted" => {
            let deleted: Deleted = from_json("WooCommerce order.deleted body", body)?;
            Ok(Parsed::Deleted { topic, platform_order_id: id_text("id", deleted.id.as_ref())? })
        }
        _ => Ok(Parsed::Ignored { topic, reason: "not an order topic Lastmile acts on".into() }),
    }
}

fn state(status: Option<&str>) -> PlatformState {
    match status.map(str::trim) {
        Some("cancelled" | "refunded" | "failed" | "trash") => PlatformState::Cancelled,
        Some("completed") => PlatformState::Completed,
        _ => PlatformState::Open,
    }
}

/// The order, or `None` when neither the shipping nor the billing object has an address.
fn normalize(body: &[u8]) -> Result<Option<NormalizedOrder>, IngestError> {
    let o: Order = from_json("WooCommerce order body", body)?;
    let platform_order_id = id_text("id", o.id.as_ref())?;
    let currency = currency("currency", o.currency.as_deref())?;
    let billing = o.billing.unwrap_or_default();
    let shipping = o.shipping.unwrap_or_default();
    // Ship to the shipping address; stores that collect only billing details deliver there.
    let place = if shipping.has_address() {
        &shipping
    } else if billing.has_address() {
        &billing
    } else {
        return Ok(None);
    };

    let mut items = Vec::new();
    let mut subtotal_minor: i64 = 0;
    for line in o.line_items.unwrap_or_default() {
        if let Some(subtotal) = &line.subtotal {
            subtotal_minor = subtotal_minor
                .checked_add(minor("line item subtotal", subtotal, &currency)?)
                .ok_or_else(|| IngestError::malformed("subtotal overflows"))?;
        }
        items.push(line_item(line, &currency)?);
    }
    let totals = Totals {
        subtotal_minor,
        shipping_minor: fields::minor_or_zero("shipping_total", o.shipping_total.as_ref(), &currency)?,
        tax_minor: fields::minor_or_zero("total_tax", o.total_tax.as_ref(), &currency)?,
        total_minor: required_minor("total", o.total.as_ref(), &currency)?,
        currency,
    };
    let customer = Customer {
        name: full_name(shipping.first_name.as_deref(), shipping.last_name.as_deref())
            .or_else(|| full_name(billing.first_name.as_deref(), billing.last_name.as_deref()))
            .unwrap_or_default(),
        email: non_empty(billing.email.as_deref()),
        // The recipient's phone when WooCommerce (5.6+) collected one, else the buyer's.
        phone: non_empty(shipping.phone.as_deref()).or_else(|| non_empty(billing.phone.as_deref())),
    };
    let dropoff = Dropoff {
        address: Address {
            line1: non_empty(place.address_1.as_deref()).unwrap_or_default(),
            line2: non_empty(place.address_2.as_deref()),
            city: non_empty(place.city.as_deref()).unwrap_or_default(),
            region: non_empty(place.state.as_deref()),
            postal_code: non_empty(place.postcode.as_deref()).unwrap_or_default(),
            country: non_empty(place.country.as_deref()).unwrap_or_default(),
        },
        // WooCommerce orders carry no coordinates.
        lat: None,
        lng: None,
    };

    Ok(Some(NormalizedOrder {
        platform: Platform::Woocommerce,
        platform_order_id,
        platform_order_number: o.number.map(|n| n.text).filter(|n| !n.trim().is_empty()),
        state: state(o.status.as_deref()),
        customer,
        dropoff,
        items,
        totals,
        notes: non_empty(o.customer_note.as_deref()),
        placed_at: fields::naive_utc("date_created_gmt", o.date_created_gmt.as_deref())?,
        platform_updated_at: fields::naive_utc("date_modified_gmt", o.date_modified_gmt.as_deref())?,
    }))
}

fn line_item(line: OrderLine, currency: &str) -> Result<LineItem, IngestError> {
    let price = line.price.ok_or_else(|| IngestError::malformed("line item `price` is missing"))?;
    Ok(LineItem {
        sku: non_empty(line.sku.as_deref()),
        name: non_empty(line.name.as_deref()).unwrap_or_default(),
        quantity: line.quantity.ok_or_else(|| IngestError::malformed("line item `quantity` is missing"))?,
        unit_price_minor: minor("line item price", &price, currency)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_onto_platform_states() {
        for s in ["cancelled", "refunded", "failed", "trash"] {
            assert_eq!(state(Some(s)), PlatformState::Cancelled, "{s}");
        }
        assert_eq!(state(Some("completed")), PlatformState::Completed);
        for s in ["processing", "pending", "on-hold", "anything-custom"] {
            assert_eq!(state(Some(s)), PlatformState::Open, "{s}");
        }
        assert_eq!(state(None), PlatformState::Open);
    }
}

//! Shopify order webhooks (REST-shaped JSON, API 2021-01 onwards) into `NormalizedOrder`.
//!
//! Ids are 64-bit: the exact order id comes from `admin_graphql_api_id`
//! ("gid://shopify/Order/820982911946154508"), else from `id` read as an integer, never
//! through `f64`.

use crate::fields::{
    self, coordinates, currency, from_json, full_name, id_text, minor, minor_or_zero, non_empty, required_minor, Scalar,
};
use crate::{header, IngestError, Parsed};
use lastmile_core::{Address, Customer, Dropoff, LineItem, NormalizedOrder, Platform, PlatformState, Totals};
use serde::Deserialize;

#[derive(Deserialize)]
struct Order {
    id: Option<Scalar>,
    admin_graphql_api_id: Option<String>,
    name: Option<String>,
    order_number: Option<Scalar>,
    email: Option<String>,
    contact_email: Option<String>,
    phone: Option<String>,
    currency: Option<String>,
    subtotal_price: Option<Scalar>,
    total_price: Option<Scalar>,
    total_tax: Option<Scalar>,
    total_shipping_price_set: Option<MoneySet>,
    shipping_lines: Option<Vec<ShippingLine>>,
    note: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    cancelled_at: Option<String>,
    fulfillment_status: Option<String>,
    customer: Option<OrderCustomer>,
    shipping_address: Option<MailingAddress>,
    line_items: Option<Vec<OrderLine>>,
}

#[derive(Deserialize)]
struct MoneySet {
    shop_money: Option<Money>,
}

#[derive(Deserialize)]
struct Money {
    amount: Option<Scalar>,
}

#[derive(Deserialize)]
struct ShippingLine {
    price: Option<Scalar>,
}

#[derive(Deserialize)]
struct OrderCustomer {
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

#[derive(Deserialize)]
struct MailingAddress {
    name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    address1: Option<String>,
    address2: Option<String>,
    city: Option<String>,
    province: Option<String>,
    province_code: Option<String>,
    zip: Option<String>,
    country: Option<String>,
    country_code: Option<String>,
    phone: Option<String>,
    latitude: Option<Scalar>,
    longitude: Option<Scalar>,
}

#[derive(Deserialize)]
struct OrderLine {
    sku: Option<String>,
    name: Option<String>,
    title: Option<String>,
    quantity: Option<i64>,
    price: Option<Scalar>,
}

/// The body of `orders/delete`: only the id.
#[derive(Deserialize)]
struct Deleted {
    id: Option<Scalar>,
    admin_graphql_api_id: Option<String>,
}

/// What a delivery's topic asks of us.
enum Topic {
    Order { cancelled: bool },
    Delete,
    Other,
}

fn topic_kind(topic: &str) -> Topic {
    // Webhook headers say "orders/create"; some tools store it as "ORDERS_CREATE".
    match topic.trim().to_ascii_lowercase().replace('_', "/").as_str() {
        "orders/create" | "orders/updated" | "orders/fulfilled" | "orders/paid" => Topic::Order { cancelled: false },
        "orders/cancelled" => Topic::Order { cancelled: true },
        "orders/delete" => Topic::Delete,
        _ => Topic::Other,
    }
}

/// A Shopify header under its classic `X-Shopify-` name or the Events `shopify-` name.
fn shopify_header<'a>(headers: &'a [(String, String)], suffix: &str) -> Option<&'a str> {
    header(headers, &format!("X-Shopify-{suffix}")).or_else(|| header(headers, &format!("shopify-{suffix}")))
}

fn required<'a>(headers: &'a [(String, String)], suffix: &str, name: &'static str) -> Result<&'a str, IngestError> {
    shopify_header(headers, suffix).filter(|v| !v.trim().is_empty()).ok_or(IngestError::MissingHeader(name))
}

pub(crate) fn parse(headers: &[(String, String)], body: &[u8]) -> Result<Parsed, IngestError> {
    // The headers Shopify's own library requires (validate.ts); Events deliveries carry
    // an event id where classic webhooks carry a webhook id.
    let topic = required(headers, "Topic", "X-Shopify-Topic")?.trim().to_owned();
    required(headers, "Shop-Domain", "X-Shopify-Shop-Domain")?;
    required(headers, "API-Version", "X-Shopify-API-Version")?;
    let delivery_id = shopify_header(headers, "Webhook-Id")
        .or_else(|| shopify_header(headers, "Event-Id"))
        .and_then(|v| non_empty(Some(v)))
        .ok_or(IngestError::MissingHeader("X-Shopify-Webhook-Id"))?;

    match topic_kind(&topic) {
        Topic::Order { cancelled } => match normalize(body, cancelled)? {
            Some(order) => Ok(Parsed::Order { topic, delivery_id: Some(delivery_id), order }),
            None => Ok(Parsed::Ignored { topic, reason: "order has no shipping address: nothing to deliver".into() }),
        },
        Topic::Delete => {
            let body: Deleted = from_json("Shopify orders/delete body", body)?;
            let platform_order_id = order_id(body.admin_graphql_api_id.as_deref(), body.id.as_ref())?;
            Ok(Parsed::Deleted { topic, platform_order_id })
        }
        Topic::Other => Ok(Parsed::Ignored { topic, reason: "not an order topic Lastmile acts on".into() }),
    }
}

/// The exact order id: the digits of the gid when it has them, else the integer `id`.
fn order_id(gid: Option<&str>, id: Option<&Scalar>) -> Result<String, IngestError> {
    let from_gid = gid
        .and_then(|g| g.trim().strip_prefix("gid://shopify/Order/"))
        .map(|rest| rest.split(['?', '/']).next().unwrap_or_default())
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    match from_gid {
        Some(digits) => Ok(digits.to_owned()),
        None => id_text("id", id),
    }
}

/// The order, or `None` for an order with nothing to deliver (no shipping address:
/// pickup, digital goods).
fn normalize(body: &[u8], cancelled_topic: bool) -> Result<Option<NormalizedOrder>, IngestError> {
    let o: Order = from_json("Shopify order body", body)?;
    let platform_order_id = order_id(o.admin_graphql_api_id.as_deref(), o.id.as_ref())?;
    let Some(ship) = o.shipping_address else { return Ok(None) };
    let currency = currency("currency", o.currency.as_deref())?;

    let items = o
        .line_items
        .unwrap_or_default()
        .into_iter()
        .map(|line| line_item(line, &currency))
        .collect::<Result<Vec<_>, _>>()?;
    let totals = Totals {
        subtotal_minor: minor_or_zero("subtotal_price", o.subtotal_price.as_ref(), &currency)?,
        shipping_minor: shipping_minor(o.total_shipping_price_set, o.shipping_lines, &currency)?,
        tax_minor: minor_or_zero("total_tax", o.total_tax.as_ref(), &currency)?,
        total_minor: required_minor("total_price", o.total_price.as_ref(), &currency)?,
        currency,
    };

    let state = if non_empty(o.cancelled_at.as_deref()).is_some() || cancelled_topic {
        PlatformState::Cancelled
    } else if o.fulfillment_status.as_deref() == Some("fulfilled") {
        PlatformState::Completed
    } else {
        PlatformState::Open
    };
    let customer_record = o.customer.as_ref();
    let customer = Customer {
        name: non_empty(ship.name.as_deref())
            .or_else(|| full_name(ship.first_name.as_deref(), ship.last_name.as_deref()))
            .or_else(|| customer_record.and_then(|c| full_name(c.first_name.as_deref(), c.last_name.as_deref())))
            .unwrap_or_default(),
        email: non_empty(o.email.as_deref())
            .or_else(|| non_empty(o.contact_email.as_deref()))
            .or_else(|| customer_record.and_then(|c| non_empty(c.email.as_deref()))),
        phone: non_empty(ship.phone.as_deref())
            .or_else(|| non_empty(o.phone.as_deref()))
            .or_else(|| customer_record.and_then(|c| non_empty(c.phone.as_deref()))),
    };
    let (lat, lng) = coordinates(ship.latitude.as_ref(), ship.longitude.as_ref());
    let dropoff = Dropoff {
        address: Address {
            line1: non_empty(ship.address1.as_deref()).unwrap_or_default(),
            line2: non_empty(ship.address2.as_deref()),
            city: non_empty(ship.city.as_deref()).unwrap_or_default(),
            region: non_empty(ship.province_code.as_deref()).or_else(|| non_empty(ship.province.as_deref())),
            postal_code: non_empty(ship.zip.as_deref()).unwrap_or_default(),
            country: non_empty(ship.country_code.as_deref())
                .or_else(|| non_empty(ship.country.as_deref()))
                .unwrap_or_default(),
        },
        lat,
        lng,
    };

    Ok(Some(NormalizedOrder {
        platform: Platform::Shopify,
        platform_order_id,
        platform_order_number: non_empty(o.name.as_deref()).or_else(|| o.order_number.map(|n| n.text)),
        state,
        customer,
        dropoff,
        items,
        totals,
        notes: non_empty(o.note.as_deref()),
        placed_at: fields::rfc3339("created_at", o.created_at.as_deref())?,
        platform_updated_at: fields::rfc3339("updated_at", o.updated_at.as_deref())?,
    }))
}

fn line_item(line: OrderLine, currency: &str) -> Result<LineItem, IngestError> {
    let price = line.price.ok_or_else(|| IngestError::malformed("line item `price` is missing"))?;
    Ok(LineItem {
        sku: non_empty(line.sku.as_deref()),
        // `name` includes the variant ("Shirt - Red"), which is what a driver hands over.
        name: non_empty(line.name.as_deref()).or_else(|| non_empty(line.title.as_deref())).unwrap_or_default(),
        quantity: line.quantity.ok_or_else(|| IngestError::malformed("line item `quantity` is missing"))?,
        unit_price_minor: minor("line item price", &price, currency)?,
    })
}

/// `total_shipping_price_set.shop_money.amount`, else the sum of the shipping lines.
fn shipping_minor(set: Option<MoneySet>, lines: Option<Vec<ShippingLine>>, currency: &str) -> Result<i64, IngestError> {
    if let Some(amount) = set.and_then(|s| s.shop_money).and_then(|m| m.amount) {
        return minor("total_shipping_price_set", &amount, currency);
    }
    lines.unwrap_or_default().iter().try_fold(0i64, |sum, line| {
        let price = minor_or_zero("shipping_lines.price", line.price.as_ref(), currency)?;
        sum.checked_add(price).ok_or_else(|| IngestError::malformed("shipping total overflows"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gid_digits_win_over_a_rounded_numeric_id() {
        let id: Scalar = serde_json::from_str("820982911946154500").expect("id");
        let exact = order_id(Some("gid://shopify/Order/820982911946154508"), Some(&id)).expect("gid");
        assert_eq!(exact, "820982911946154508");
        assert_eq!(order_id(None, Some(&id)).expect("id"), "820982911946154500");
        assert_eq!(
            order_id(Some("gid://shopify/Customer/1"), Some(&id)).expect("not an order gid"),
            "820982911946154500"
        );
        assert!(order_id(None, None).is_err());
    }

    #[test]
    fn topics_in_either_spelling() {
        assert!(matches!(topic_kind("ORDERS_CANCELLED"), Topic::Order { cancelled: true }));
        assert!(matches!(topic_kind("orders/paid"), Topic::Order { cancelled: false }));
        assert!(matches!(topic_kind("orders/delete"), Topic::Delete));
        assert!(matches!(topic_kind("fulfillments/create"), Topic::Other));
    }
}

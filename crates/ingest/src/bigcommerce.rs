//! BigCommerce: webhook bodies carry only ids (`{scope, store_id, data:{type, id}, hash,
//! created_at, producer}`), so an order event becomes `NeedsFetch`; the server fetches
//! the V2 order, its products and its shipping addresses, and [`normalize_bigcommerce`]
//! turns those three bodies into a `NormalizedOrder`.

use crate::fields::{
    self, currency, from_json, full_name, id_text, minor, minor_or_zero, non_empty, required_minor, Scalar,
};
use crate::signature::SW_ID;
use crate::{header, IngestError, Parsed};
use lastmile_core::{Address, Customer, Dropoff, LineItem, NormalizedOrder, Platform, PlatformState, Totals};
use serde::Deserialize;

#[derive(Deserialize)]
struct Callback {
    scope: Option<String>,
    data: Option<CallbackData>,
}

#[derive(Deserialize)]
struct CallbackData {
    id: Option<Scalar>,
}

pub(crate) fn parse(headers: &[(String, String)], body: &[u8]) -> Result<Parsed, IngestError> {
    let callback: Callback = from_json("BigCommerce webhook body", body)?;
    let topic = non_empty(callback.scope.as_deref()).ok_or_else(|| IngestError::malformed("`scope` is missing"))?;
    let order_id = || id_text("data.id", callback.data.as_ref().and_then(|d| d.id.as_ref()));
    // The Standard Webhooks id is stable across retries; `hash` is not a delivery id
    // (the body carries no change details, so two different updates can share it).
    let delivery_id = non_empty(header(headers, SW_ID));
    match topic.as_str() {
        "store/order/created" | "store/order/updated" | "store/order/statusUpdated" => {
            Ok(Parsed::NeedsFetch { platform_order_id: order_id()?, topic, delivery_id })
        }
        "store/order/archived" => Ok(Parsed::Deleted { platform_order_id: order_id()?, topic }),
        _ => Ok(Parsed::Ignored { topic, reason: "not an order scope Lastmile acts on".into() }),
    }
}

/// `GET /v2/orders/{id}`: only the fields we use.
#[derive(Deserialize)]
struct Order {
    id: Option<Scalar>,
    status_id: Option<i64>,
    date_created: Option<String>,
    date_modified: Option<String>,
    subtotal_ex_tax: Option<Scalar>,
    shipping_cost_ex_tax: Option<Scalar>,
    total_tax: Option<Scalar>,
    total_inc_tax: Option<Scalar>,
    currency_code: Option<String>,
    customer_message: Option<String>,
    billing_address: Option<OrderAddress>,
}

/// A billing address or a `GET /v2/orders/{id}/shipping_addresses` entry.
#[derive(Deserialize)]
struct OrderAddress {
    first_name: Option<String>,
    last_name: Option<String>,
    street_1: Option<String>,
    street_2: Option<String>,
    city: Option<String>,
    state: Option<String>,
    zip: Option<String>,
    country: Option<String>,
    country_iso2: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

/// A `GET /v2/orders/{id}/products` entry.
#[derive(Deserialize)]
struct OrderProduct {
    sku: Option<String>,
    name: Option<String>,
    quantity: Option<i64>,
    price_inc_tax: Option<Scalar>,
    base_price: Option<Scalar>,
}

/// V2 `status_id`: 4 Refunded, 5 Cancelled, 6 Declined stop delivery; 2 Shipped and
/// 10 Completed are done at the platform; everything else is open.
fn state(status_id: Option<i64>) -> PlatformState {
    match status_id {
        Some(4..=6) => PlatformState::Cancelled,
        Some(2 | 10) => PlatformState::Completed,
        _ => PlatformState::Open,
    }
}

/// A V2 collection body; BigCommerce answers an empty collection with `204 No Content`,
/// so an empty body is an empty list.
fn collection<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<Vec<T>, IngestError> {
    if body.trim_ascii().is_empty() {
        return Ok(Vec::new());
    }
    from_json::<Option<Vec<T>>>(what, body).map(Option::unwrap_or_default)
}

/// Build the normalized order from the bodies of BigCommerce V2 `GET /v2/orders/{id}`,
/// `GET /v2/orders/{id}/products` and `GET /v2/orders/{id}/shipping_addresses`.
/// The dropoff is the first shipping address; an order without one cannot be delivered.
pub fn normalize_bigcommerce(
    order: &[u8],
    products: &[u8],
    shipping_addresses: &[u8],
) -> Result<NormalizedOrder, IngestError> {
    let o: Order = from_json("BigCommerce order body", order)?;
    let products: Vec<OrderProduct> = collection("BigCommerce products body", products)?;
    let addresses: Vec<OrderAddress> = collection("BigCommerce shipping addresses body", shipping_addresses)?;
    let platform_order_id = id_text("id", o.id.as_ref())?;
    let currency = currency("currency_code", o.currency_code.as_deref())?;
    let ship = addresses.into_iter().next().ok_or_else(|| IngestError::malformed("order has no shipping address"))?;

    let items = products.into_iter().map(|p| line_item(p, &currency)).collect::<Result<Vec<_>, _>>()?;
    let totals = Totals {
        subtotal_minor: minor_or_zero("subtotal_ex_tax", o.subtotal_ex_tax.as_ref(), &currency)?,
        shipping_minor: minor_or_zero("shipping_cost_ex_tax", o.shipping_cost_ex_tax.as_ref(), &currency)?,
        tax_minor: minor_or_zero("total_tax", o.total_tax.as_ref(), &currency)?,
        total_minor: required_minor("total_inc_tax", o.total_inc_tax.as_ref(), &currency)?,
        currency,
    };
    let billing = o.billing_address.as_ref();
    let customer = Customer {
        name: full_name(ship.first_name.as_deref(), ship.last_name.as_deref())
            .or_else(|| billing.and_then(|b| full_name(b.first_name.as_deref(), b.last_name.as_deref())))
            .unwrap_or_default(),
        email: non_empty(ship.email.as_deref()).or_else(|| billing.and_then(|b| non_empty(b.email.as_deref()))),
        phone: non_empty(ship.phone.as_deref()).or_else(|| billing.and_then(|b| non_empty(b.phone.as_deref()))),
    };
    let dropoff = Dropoff {
        address: Address {
            line1: non_empty(ship.street_1.as_deref()).unwrap_or_default(),
            line2: non_empty(ship.street_2.as_deref()),
            city: non_empty(ship.city.as_deref()).unwrap_or_default(),
            region: non_empty(ship.state.as_deref()),
            postal_code: non_empty(ship.zip.as_deref()).unwrap_or_default(),
            country: non_empty(ship.country_iso2.as_deref())
                .or_else(|| non_empty(ship.country.as_deref()))
                .unwrap_or_default(),
        },
        // BigCommerce addresses carry no coordinates.
        lat: None,
        lng: None,
    };

    let mut order = NormalizedOrder {
        platform: Platform::Bigcommerce,
        // BigCommerce shows merchants and shoppers the order id itself ("Order #218").
        platform_order_number: Some(platform_order_id.clone()),
        platform_order_id,
        state: state(o.status_id),
        customer,
        dropoff,
        items,
        totals,
        notes: non_empty(o.customer_message.as_deref()),
        placed_at: fields::rfc2822("date_created", o.date_created.as_deref())?,
        platform_updated_at: fields::rfc2822("date_modified", o.date_modified.as_deref())?,
    };
    // Stored text must be free of NUL on every database (see `lastmile_core::text`).
    order.scrub_text();
    Ok(order)
}

fn line_item(p: OrderProduct, currency: &str) -> Result<LineItem, IngestError> {
    let price = p.price_inc_tax.or(p.base_price).ok_or_else(|| IngestError::malformed("product price is missing"))?;
    Ok(LineItem {
        sku: non_empty(p.sku.as_deref()),
        name: non_empty(p.name.as_deref()).unwrap_or_default(),
        quantity: p.quantity.ok_or_else(|| IngestError::malformed("product `quantity` is missing"))?,
        unit_price_minor: minor("product price", &price, currency)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ids_map_onto_platform_states() {
        for id in [4, 5, 6] {
            assert_eq!(state(Some(id)), PlatformState::Cancelled, "{id}");
        }
        for id in [2, 10] {
            assert_eq!(state(Some(id)), PlatformState::Completed, "{id}");
        }
        for id in [0, 1, 3, 7, 8, 9, 11, 12, 13, 14] {
            assert_eq!(state(Some(id)), PlatformState::Open, "{id}");
        }
    }

    #[test]
    fn an_empty_collection_body_is_an_empty_list() {
        let none: Vec<OrderProduct> = collection("p", b"  ").expect("empty");
        assert!(none.is_empty());
        let null: Vec<OrderProduct> = collection("p", b"null").expect("null");
        assert!(null.is_empty());
        assert!(collection::<OrderProduct>("p", b"{}").is_err());
    }
}

//! Menus as the admin sends them, checked field by field, and the pricing of catalog
//! orders (the catalog's prices win over anything a client sends).

use crate::hours::{parse_hhmm, OpeningHours, DAYS};
use lastmile_core::{LineItem, Totals};
use serde::{Deserialize, Serialize};

/// Most dishes one menu may hold; keeps a PUT and its index rebuild bounded.
pub const MAX_ITEMS: usize = 5_000;
const MAX_TEXT: usize = 200;
const MAX_DESCRIPTION: usize = 2_000;
const MAX_LIST: usize = 20;
/// A delivery radius beyond this is surely a unit mistake (metres, not kilometres).
const MAX_RADIUS_M: f64 = 100_000.0;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stock {
    /// A counted stock that orders draw down and cancellations give back.
    Count { quantity: i64 },
    /// Cooked on demand, at most `per_hour` of this dish per clock hour.
    MadeToOrder { per_hour: i64 },
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuItem {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub price_minor: i64,
    pub currency: String,
    pub prep_time_s: i64,
    #[serde(default)]
    pub photo_url: Option<String>,
    pub stock: Stock,
    /// Switched off by the store (sold out for the day, off the menu for now).
    #[serde(default = "yes")]
    pub available: bool,
}

fn yes() -> bool {
    true
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub name: String,
    pub items: Vec<MenuItem>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Menu {
    pub cuisine: Vec<String>,
    #[serde(default)]
    pub hours: Vec<OpeningHours>,
    #[serde(default)]
    pub delivery_radius_m: Option<f64>,
    pub categories: Vec<Category>,
}

/// A change to one dish: any subset of price, availability and stock.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemPatch {
    pub price_minor: Option<i64>,
    pub available: Option<bool>,
    pub stock: Option<Stock>,
}

/// Per-field problems, keyed by a JSON path such as `categories[0].items[2].price_minor`.
pub type FieldErrors = Vec<(String, String)>;

fn text(errors: &mut FieldErrors, path: String, value: &str, max: usize) {
    if value.trim().is_empty() {
        errors.push((path, "is required".into()));
    } else if value.chars().count() > max {
        errors.push((path, format!("must be at most {max} characters")));
    }
}

fn words(errors: &mut FieldErrors, path: String, list: &[String]) {
    if list.len() > MAX_LIST {
        errors.push((path.clone(), format!("must list at most {MAX_LIST} entries")));
    }
    for (i, w) in list.iter().enumerate() {
        text(errors, format!("{path}[{i}]"), w, MAX_TEXT);
    }
}

fn check_stock(errors: &mut FieldErrors, path: &str, stock: &Stock) {
    match *stock {
        Stock::Count { quantity } if quantity < 0 => {
            errors.push((format!("{path}.quantity"), "must be at least 0".into()))
        }
        Stock::MadeToOrder { per_hour } if per_hour < 1 => {
            errors.push((format!("{path}.per_hour"), "must be at least 1".into()))
        }
        _ => {}
    }
}

fn check_price(errors: &mut FieldErrors, path: String, price: i64) {
    if !(0..=100_000_000).contains(&price) {
        errors.push((path, "must be between 0 and 100000000".into()));
    }
}

fn lower_trim(list: &mut [String]) {
    for s in list {
        *s = s.trim().to_lowercase();
    }
}

impl Menu {
    /// Check every field and normalise words (cuisines, tags, aliases to lower case; the
    /// currency to upper case). All problems are reported at once.
    pub fn validate(mut self) -> Result<Menu, FieldErrors> {
        let mut errors = FieldErrors::new();
        if self.cuisine.is_empty() {
            errors.push(("cuisine".into(), "must list at least one cuisine".into()));
        }
        words(&mut errors, "cuisine".into(), &self.cuisine);
        lower_trim(&mut self.cuisine);
        for (i, h) in self.hours.iter().enumerate() {
            if h.days.is_empty() || h.days.iter().any(|d| !DAYS.contains(&d.as_str())) {
                errors.push((format!("hours[{i}].days"), "must list days as mon, tue, wed, thu, fri, sat, sun".into()));
            }
            for (field, v) in [("open", &h.open), ("close", &h.close)] {
                if parse_hhmm(v).is_none() {
                    errors.push((format!("hours[{i}].{field}"), "must be a time HH:MM (UTC)".into()));
                }
            }
        }
        if let Some(r) = self.delivery_radius_m {
            if !(r.is_finite() && r > 0.0 && r <= MAX_RADIUS_M) {
                errors.push(("delivery_radius_m".into(), format!("must be above 0 and at most {MAX_RADIUS_M}")));
            }
        }
        if self.categories.is_empty() {
            errors.push(("categories".into(), "must list at least one category".into()));
        }
        let mut skus = std::collections::HashSet::new();
        let mut currency: Option<String> = None;
        let mut count = 0;
        for (ci, cat) in self.categories.iter_mut().enumerate() {
            text(&mut errors, format!("categories[{ci}].name"), &cat.name, MAX_TEXT);
            for (ii, item) in cat.items.iter_mut().enumerate() {
                count += 1;
                let p = |f: &str| format!("categories[{ci}].items[{ii}].{f}");
                text(&mut errors, p("sku"), &item.sku, MAX_TEXT);
                if !skus.insert(item.sku.clone()) {
                    errors.push((p("sku"), "appears more than once in the menu".into()));
                }
                text(&mut errors, p("name"), &item.name, MAX_TEXT);
                if let Some(d) = &item.description {
                    if d.chars().count() > MAX_DESCRIPTION {
                        errors.push((p("description"), format!("must be at most {MAX_DESCRIPTION} characters")));
                    }
                }
                words(&mut errors, p("aliases"), &item.aliases);
                words(&mut errors, p("tags"), &item.tags);
                lower_trim(&mut item.aliases);
                lower_trim(&mut item.tags);
                check_price(&mut errors, p("price_minor"), item.price_minor);
                item.currency = item.currency.trim().to_uppercase();
                if item.currency.len() != 3 || !item.currency.chars().all(|c| c.is_ascii_uppercase()) {
                    errors.push((p("currency"), "must be an ISO 4217 code such as EUR".into()));
                } else if let Some(c) = &currency {
                    if *c != item.currency {
                        errors.push((p("currency"), format!("must match the menu's other items ({c})")));
                    }
                } else {
                    currency = Some(item.currency.clone());
                }
                if !(0..=86_400).contains(&item.prep_time_s) {
                    errors.push((p("prep_time_s"), "must be between 0 and 86400".into()));
                }
                if let Some(u) = &item.photo_url {
                    if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 2_000 {
                        errors.push((p("photo_url"), "must be an http(s) URL".into()));
                    }
                }
                check_stock(&mut errors, &p("stock"), &item.stock);
            }
        }
        if count > MAX_ITEMS {
            errors.push(("categories".into(), format!("must hold at most {MAX_ITEMS} items in all")));
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }
}

impl ItemPatch {
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::new();
        if self.price_minor.is_none() && self.available.is_none() && self.stock.is_none() {
            errors.push(("body".into(), "give price_minor, available or stock".into()));
        }
        if let Some(p) = self.price_minor {
            check_price(&mut errors, "price_minor".into(), p);
        }
        if let Some(s) = &self.stock {
            check_stock(&mut errors, "stock", s);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// A dish as an order line sees it: its current price and preparation time.
#[derive(Debug, Clone, PartialEq)]
pub struct PricedDish {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub prep_time_s: i64,
}

/// Line items and totals of a catalog order, every price from the catalog, plus the
/// seconds until it is ready (the slowest dish). `lines` pairs each dish with a quantity.
pub fn price_order(lines: &[(PricedDish, i64)]) -> (Vec<LineItem>, Totals, i64) {
    let items: Vec<LineItem> = lines
        .iter()
        .map(|(d, q)| LineItem {
            sku: Some(d.sku.clone()),
            name: d.name.clone(),
            quantity: *q,
            unit_price_minor: d.price_minor,
        })
        .collect();
    let subtotal = items.iter().map(|i| i.quantity.saturating_mul(i.unit_price_minor)).fold(0i64, i64::saturating_add);
    let currency = lines.first().map(|(d, _)| d.currency.clone()).unwrap_or_default();
    let prep = lines.iter().map(|(d, _)| d.prep_time_s).max().unwrap_or(0);
    let totals = Totals { subtotal_minor: subtotal, shipping_minor: 0, tax_minor: 0, total_minor: subtotal, currency };
    (items, totals, prep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn menu(v: serde_json::Value) -> Menu {
        serde_json::from_value(v).unwrap()
    }

    fn item(sku: &str) -> serde_json::Value {
        json!({"sku": sku, "name": "Kebab", "price_minor": 990, "currency": "eur", "prep_time_s": 600,
               "aliases": ["Kabob"], "stock": {"kind": "count", "quantity": 3}})
    }

    #[test]
    fn a_good_menu_is_normalised() {
        let m = menu(json!({"cuisine": ["Turkish"], "categories": [{"name": "Mains", "items": [item("k1")]}]}));
        let m = m.validate().unwrap();
        assert_eq!(m.cuisine, vec!["turkish"]);
        let it = &m.categories[0].items[0];
        assert_eq!(it.currency, "EUR");
        assert_eq!(it.aliases, vec!["kabob"]);
        assert!(it.available);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut bad = item("k1");
        bad["price_minor"] = json!(-1);
        bad["stock"] = json!({"kind": "made_to_order", "per_hour": 0});
        let m = menu(json!({"cuisine": [], "hours": [{"days": ["moon"], "open": "25:00", "close": "10:00"}],
            "categories": [{"name": "Mains", "items": [bad, item("k1")]}]}));
        let errs: std::collections::HashMap<_, _> = m.validate().unwrap_err().into_iter().collect();
        for f in [
            "cuisine",
            "hours[0].days",
            "hours[0].open",
            "categories[0].items[0].price_minor",
            "categories[0].items[0].stock.per_hour",
            "categories[0].items[1].sku",
        ] {
            assert!(errs.contains_key(f), "{f} missing from {errs:?}");
        }
    }

    #[test]
    fn orders_are_priced_from_the_catalog_and_ready_after_the_slowest_dish() {
        let d = |sku: &str, price, prep| PricedDish {
            sku: sku.into(),
            name: sku.into(),
            price_minor: price,
            currency: "EUR".into(),
            prep_time_s: prep,
        };
        let (items, totals, prep) = price_order(&[(d("a", 500, 300), 2), (d("b", 250, 900), 1)]);
        assert_eq!(items.len(), 2);
        assert_eq!(totals.total_minor, 1250);
        assert_eq!(prep, 900);
    }
}

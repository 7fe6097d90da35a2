//! The restaurant catalog, as pure logic: menu types and their validation, opening hours,
//! pricing a catalog order from its lines, the delivery ETA shown to shoppers, and the
//! in-process search index (typo-tolerant, with per-dish aliases and filters).
//!
//! Owns: what a valid menu is, how dishes and restaurants are matched and ranked, and how
//! prices and readiness follow from the menu. Must not: do I/O (storage persists menus and
//! reserves stock; the server caches and serves them) or know about HTTP.

mod hours;
mod menu;
mod search;

pub use hours::{is_open, OpeningHours};
pub use menu::*;
pub use search::{CatalogDish, CatalogSnapshot, CatalogStore, DishHit, SearchHits, SearchQuery, StoreHit, StoreQuery};

use lastmile_core::{EtaModel, GeoPoint};

/// Seconds until an order from a store `distance_m` away reaches the shopper: the store's
/// typical preparation time plus the drive, priced with the dispatch speed settings.
pub fn delivery_eta_s(model: &EtaModel, from: &GeoPoint, to: &GeoPoint, typical_prep_s: i64) -> i64 {
    (model.travel_s(from, to) + typical_prep_s.max(0) as f64).round() as i64
}

//! The restaurant catalog, as pure logic: menu types and their validation, opening hours,
//! pricing a catalog order from its lines, and the
//! in-process search index (typo-tolerant, with per-dish aliases and filters).
//!
//! Owns: what a valid menu is, how dishes and restaurants are matched and ranked, and how
//! prices and readiness follow from the menu. Must not: do I/O (storage persists menus and
//! reserves stock; the server caches and serves them) or know about HTTP. The delivery ETA
//! shown to shoppers is the server's learned model (`lastmile_server::eta`).

mod hours;
mod menu;
mod search;

pub use hours::{is_open, OpeningHours};
pub use menu::*;
pub use search::{CatalogDish, CatalogSnapshot, CatalogStore, DishHit, SearchHits, SearchQuery, StoreHit, StoreQuery};

//! Lastmile's domain: ids, money, places, orders and their status machine, drivers,
//! stores, tenants, events and the ETA model (and what it learns from deliveries).
//!
//! Owns: the types every other crate speaks and the pure rules over them.
//! Must not: do I/O of any kind (no database, network, clock reads outside `now()`
//! helpers passed in by callers), or depend on any other Lastmile crate.

pub mod eta;
pub mod event;
pub mod geo;
pub mod ids;
pub mod learned;
pub mod order;
pub mod roads;
pub mod text;

pub use eta::EtaModel;
pub use event::{Event, EventKind};
pub use geo::{GeoError, GeoPoint};
pub use ids::*;
pub use learned::LearnedEta;
pub use order::*;

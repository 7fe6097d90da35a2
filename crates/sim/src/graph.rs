//! The drivable road network, shared with the server's road-aware ETAs: see
//! [`lastmile_geo::roads`].

pub use lastmile_geo::roads::*;

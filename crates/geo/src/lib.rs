//! The OSM extract as a geocoder: an address index built from an OpenStreetMap `.osm.pbf`
//! (address-tagged nodes and buildings, named streets) and the lookup that turns an
//! address as people write it — any case, a typo or two in the street name, a staircase
//! and flat after the number, a postcode, city or country or none — into a point with a
//! confidence.
//!
//! Owns: reading addresses from an extract, parsing written addresses, street-name typo
//! matching, the address index and its accuracy test set. Must not: do I/O beyond reading
//! the extract it is given, speak HTTP (remote geocoding services are the server's), or
//! know about orders and storage. Also the drivable road network (`roads`): one-way streets
//! honoured, A* shortest paths, shared by the simulator's drivers and the server's ETAs.

pub mod extract;
pub mod index;
pub mod roads;
pub mod testset;
pub mod text;

pub use extract::{AddressPoint, Extract, StreetWay};
pub use index::{AddressIndex, IndexStats, Match, MatchKind};
pub use roads::RoadGraph;
pub use text::{parse, street_key, ParsedAddress};

/// The Helsinki extract the repository ships (`crates/sim/data`), for tests and benchmarks.
pub fn helsinki_pbf_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/data/helsinki.osm.pbf")
}

//! Reading an OpenStreetMap `.osm.pbf` extract for addresses: nodes and ways (buildings,
//! entrances) tagged `addr:street` + `addr:housenumber`, and the named streets themselves
//! (their geometry is the fallback when a house number is missing or unknown).

use lastmile_core::GeoPoint;
use std::collections::HashMap;

/// One address as OSM records it. A building way is reduced to the mean of its nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct AddressPoint {
    pub street: String,
    /// `addr:housenumber` as tagged ("31", "31a", "31-33", "2;4").
    pub housenumber: String,
    pub postcode: Option<String>,
    pub city: Option<String>,
    pub point: GeoPoint,
}

/// A named street: every node of its ways, and the other names it goes by (`name:sv`,
/// `name:fi`, `alt_name`, `old_name`) so "Annegatan" finds Annankatu.
#[derive(Debug, Clone, PartialEq)]
pub struct StreetWay {
    pub name: String,
    pub aliases: Vec<String>,
    pub points: Vec<GeoPoint>,
}

/// What an extract holds for geocoding.
#[derive(Debug, Clone, Default)]
pub struct Extract {
    pub addresses: Vec<AddressPoint>,
    pub streets: Vec<StreetWay>,
}

/// Address tags of one element, if it has a street and a house number.
#[derive(Default)]
struct AddrTags {
    street: Option<String>,
    housenumber: Option<String>,
    postcode: Option<String>,
    city: Option<String>,
}

impl AddrTags {
    fn read<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> Option<AddrTags> {
        let mut a = AddrTags::default();
        for (k, v) in tags {
            match k {
                // Some streets are tagged with a place before them ("Asemahalli, Kaivokatu").
                "addr:street" => a.street = v.rsplit(',').next().map(|s| s.trim().to_owned()),
                "addr:housenumber" => a.housenumber = Some(v.to_owned()),
                "addr:postcode" => a.postcode = Some(v.to_owned()),
                "addr:city" => a.city = Some(v.to_owned()),
                _ => {}
            }
        }
        (a.street.is_some() && a.housenumber.is_some()).then_some(a)
    }

    fn at(self, point: GeoPoint) -> AddressPoint {
        AddressPoint {
            street: self.street.unwrap_or_default(),
            housenumber: self.housenumber.unwrap_or_default(),
            postcode: self.postcode,
            city: self.city,
            point,
        }
    }
}

/// The names of a `highway=*` way, if it is a named street.
fn street_names<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> Option<(String, Vec<String>)> {
    let (mut highway, mut name, mut aliases) = (false, None, Vec::new());
    for (k, v) in tags {
        match k {
            "highway" => highway = true,
            "name" => name = Some(v.to_owned()),
            "name:fi" | "name:sv" | "alt_name" | "old_name" | "official_name" => aliases.push(v.to_owned()),
            _ => {}
        }
    }
    Some((name.filter(|_| highway)?, aliases))
}

/// The mean of points (fine at city scale, far from the antimeridian).
pub fn mean_point(points: &[GeoPoint]) -> Option<GeoPoint> {
    if points.is_empty() {
        return None;
    }
    let n = points.len() as f64;
    let (lat, lng) = points.iter().fold((0.0, 0.0), |(a, b), p| (a + p.lat, b + p.lng));
    GeoPoint::new(lat / n, lng / n).ok()
}

impl Extract {
    pub fn from_pbf_file(path: &std::path::Path) -> anyhow::Result<Extract> {
        use anyhow::Context;
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_pbf_bytes(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// One pass over the extract. Node coordinates are kept because ways name their nodes
    /// by id (PBF files list nodes before ways, so a way's nodes are known when it comes).
    pub fn from_pbf_bytes(bytes: &[u8]) -> anyhow::Result<Extract> {
        use osmpbf::{Element, ElementReader};
        let mut coords: HashMap<i64, GeoPoint> = HashMap::new();
        let mut out = Extract::default();
        let resolve = |coords: &HashMap<i64, GeoPoint>, refs: &mut dyn Iterator<Item = i64>| -> Vec<GeoPoint> {
            refs.filter_map(|id| coords.get(&id).copied()).collect()
        };
        let node = |coords: &mut HashMap<i64, GeoPoint>, out: &mut Extract, id, lat, lng, addr: Option<AddrTags>| {
            if let Ok(p) = GeoPoint::new(lat, lng) {
                coords.insert(id, p);
                if let Some(a) = addr {
                    out.addresses.push(a.at(p));
                }
            }
        };
        ElementReader::new(std::io::Cursor::new(bytes)).for_each(|element| match element {
            Element::Node(n) => node(&mut coords, &mut out, n.id(), n.lat(), n.lon(), AddrTags::read(n.tags())),
            Element::DenseNode(n) => node(&mut coords, &mut out, n.id(), n.lat(), n.lon(), AddrTags::read(n.tags())),
            Element::Way(w) => {
                if let Some(a) = AddrTags::read(w.tags()) {
                    if let Some(p) = mean_point(&resolve(&coords, &mut w.refs())) {
                        out.addresses.push(a.at(p));
                    }
                }
                if let Some((name, aliases)) = street_names(w.tags()) {
                    let points = resolve(&coords, &mut w.refs());
                    if !points.is_empty() {
                        out.streets.push(StreetWay { name, aliases, points });
                    }
                }
            }
            Element::Relation(_) => {}
        })?;
        Ok(out)
    }
}

//! The address index: streets by folded name (and by every name within two typos of it),
//! each with its house numbers, and the lookup that turns a written address into a point
//! with a confidence.
//!
//! Street names are matched exactly first (a hash lookup). Failing that, candidates come
//! from a deletion neighbourhood (every key with up to two letters deleted, on both sides:
//! two keys within edit distance two always share one) and are confirmed with
//! Damerau-Levenshtein distance from `strsim`, so a lookup never scans every street.

use crate::extract::{mean_point, Extract};
use crate::text::{number_key, parse, street_key};
use lastmile_core::GeoPoint;
use std::collections::HashMap;

/// Confidence of a match found at the exact address.
const CONF_ADDRESS: f64 = 1.0;
/// Confidence of a point interpolated between neighbouring house numbers on the street.
const CONF_INTERPOLATED: f64 = 0.7;
/// Confidence of the middle of the street: too vague to send a driver to by default.
const CONF_STREET: f64 = 0.4;
/// Each typo in the street name costs this share of confidence.
const TYPO_PENALTY: f64 = 0.1;
/// A postcode that disagrees with the address's own costs this share.
const POSTCODE_PENALTY: f64 = 0.2;

/// How the point was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Address,
    Interpolated,
    Street,
}

impl MatchKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            MatchKind::Address => "address",
            MatchKind::Interpolated => "interpolated",
            MatchKind::Street => "street",
        }
    }
}

/// A geocoded address.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub point: GeoPoint,
    /// 0..=1: how sure the index is that this is the address meant.
    pub confidence: f64,
    /// The address as the map knows it ("Annankatu 31, 00100 Helsinki").
    pub matched: String,
    pub kind: MatchKind,
}

/// Counts that `lastmile geocode import` prints and the benchmark reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Address-tagged nodes and ways read from the extract.
    pub address_points: usize,
    /// Distinct (street, house number) pairs.
    pub addresses: usize,
    pub streets: usize,
    /// Streets whose geometry (a named highway) is known, for the street fallback.
    pub streets_with_geometry: usize,
    /// Names and aliases that find a street.
    pub names: usize,
    /// Entries of the typo neighbourhood.
    pub typo_keys: usize,
}

#[derive(Debug, Clone)]
struct House {
    /// As tagged: "31a", "31-33".
    housenumber: String,
    point: GeoPoint,
    postcode: Option<String>,
    city: Option<String>,
}

#[derive(Debug, Clone)]
struct Street {
    name: String,
    key: String,
    /// Folded house number ("31a") → the address.
    houses: HashMap<String, House>,
    /// Plain numbers and where they are, sorted, for interpolating a missing number.
    numbered: Vec<(u32, GeoPoint)>,
    /// The street's own geometry, or its addresses' when no highway carries the name.
    centre: Option<GeoPoint>,
    has_geometry: bool,
}

/// An in-memory address index over one extract. Immutable once built; share it in an `Arc`.
#[derive(Debug, Clone)]
pub struct AddressIndex {
    streets: Vec<Street>,
    by_name: HashMap<String, u32>,
    /// Every name key with one or two letters deleted → the streets it came from.
    typo_keys: HashMap<String, Vec<u32>>,
    stats: IndexStats,
}

/// Most typos tolerated in a street name of this many letters: none in very short names
/// (where one edit makes another street), one in short ones, two from eight letters on.
fn max_edits(len: usize) -> usize {
    match len {
        0..=4 => 0,
        5..=7 => 1,
        _ => 2,
    }
}

/// `key` with up to `depth` letters deleted (the key itself excluded), each once.
fn deletions(key: &str, depth: usize, out: &mut Vec<String>) {
    let chars: Vec<char> = key.chars().collect();
    let start = out.len();
    for i in 0..chars.len() {
        let s: String = chars.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| c).collect();
        out.push(s);
    }
    if depth > 1 {
        let firsts: Vec<String> = out[start..].to_vec();
        for f in firsts {
            deletions(&f, depth - 1, out);
        }
    }
    let mut tail = out.split_off(start);
    tail.sort_unstable();
    tail.dedup();
    out.extend(tail);
}

/// A house number as tagged, split into the numbers it covers: "2;4" → 2 and 4,
/// "31-33" → "31-33", 31 and 33.
fn house_numbers(tagged: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in tagged.split([';', ',']).map(str::trim).filter(|p| !p.is_empty()) {
        out.push(part.to_owned());
        if let Some((a, b)) = part.split_once('-') {
            for end in [a, b] {
                if end.trim().starts_with(|c: char| c.is_ascii_digit()) {
                    out.push(end.trim().to_owned());
                }
            }
        }
    }
    out
}

fn leading_number(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// The point of `points` nearest to their mean: the middle of a street, on the street.
fn middle(points: &[GeoPoint]) -> Option<GeoPoint> {
    let mean = mean_point(points)?;
    points.iter().copied().min_by(|a, b| a.distance_m(&mean).total_cmp(&b.distance_m(&mean)))
}

impl AddressIndex {
    pub fn from_pbf_file(path: &std::path::Path) -> anyhow::Result<AddressIndex> {
        Ok(Self::build(&Extract::from_pbf_file(path)?))
    }

    pub fn from_pbf_bytes(bytes: &[u8]) -> anyhow::Result<AddressIndex> {
        Ok(Self::build(&Extract::from_pbf_bytes(bytes)?))
    }

    pub fn build(extract: &Extract) -> AddressIndex {
        let mut streets: Vec<Street> = Vec::new();
        let mut by_name: HashMap<String, u32> = HashMap::new();
        let mut street_of = |name: &str, streets: &mut Vec<Street>| -> Option<u32> {
            let key = street_key(name);
            if key.is_empty() {
                return None;
            }
            Some(*by_name.entry(key.clone()).or_insert_with(|| {
                streets.push(Street {
                    name: name.trim().to_owned(),
                    key,
                    houses: HashMap::new(),
                    numbered: Vec::new(),
                    centre: None,
                    has_geometry: false,
                });
                (streets.len() - 1) as u32
            }))
        };
        // Several points may carry one address (a building and its entrances): their mean.
        let mut points: HashMap<(u32, String), (Vec<GeoPoint>, &crate::extract::AddressPoint)> = HashMap::new();
        for a in &extract.addresses {
            let Some(id) = street_of(&a.street, &mut streets) else { continue };
            for n in house_numbers(&a.housenumber) {
                points.entry((id, number_key(&n))).or_insert_with(|| (Vec::new(), a)).0.push(a.point);
            }
        }
        for ((id, key), (pts, a)) in points {
            let Some(point) = mean_point(&pts) else { continue };
            let street = &mut streets[id as usize];
            if let Some(n) = leading_number(&key).filter(|_| key.bytes().all(|b| b.is_ascii_digit())) {
                street.numbered.push((n, point));
            }
            let housenumber = if house_numbers(&a.housenumber).len() > 1 { key.clone() } else { a.housenumber.clone() };
            street.houses.insert(key, House { housenumber, point, postcode: a.postcode.clone(), city: a.city.clone() });
        }
        let mut geometry: HashMap<u32, Vec<GeoPoint>> = HashMap::new();
        let mut aliases: Vec<(String, u32)> = Vec::new();
        for way in &extract.streets {
            let Some(id) = street_of(&way.name, &mut streets) else { continue };
            geometry.entry(id).or_default().extend(way.points.iter().copied());
            aliases.extend(way.aliases.iter().map(|a| (street_key(a), id)));
        }
        for (id, street) in streets.iter_mut().enumerate() {
            street.numbered.sort_by_key(|(n, _)| *n);
            match geometry.get(&(id as u32)) {
                Some(g) => (street.centre, street.has_geometry) = (middle(g), true),
                None => street.centre = middle(&street.houses.values().map(|h| h.point).collect::<Vec<_>>()),
            }
        }
        for (key, id) in aliases {
            if !key.is_empty() {
                by_name.entry(key).or_insert(id);
            }
        }
        let mut typo_keys: HashMap<String, Vec<u32>> = HashMap::new();
        let mut scratch = Vec::new();
        for (key, &id) in &by_name {
            scratch.clear();
            deletions(key, max_edits(key.chars().count()), &mut scratch);
            for d in scratch.drain(..) {
                let ids = typo_keys.entry(d).or_default();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let stats = IndexStats {
            address_points: extract.addresses.len(),
            addresses: streets.iter().map(|s| s.houses.len()).sum(),
            streets: streets.len(),
            streets_with_geometry: streets.iter().filter(|s| s.has_geometry).count(),
            names: by_name.len(),
            typo_keys: typo_keys.len(),
        };
        AddressIndex { streets, by_name, typo_keys, stats }
    }

    pub fn stats(&self) -> IndexStats {
        self.stats
    }

    /// Every address in the index: (street, house number as tagged, postcode, point).
    pub fn addresses(&self) -> impl Iterator<Item = (&str, &str, Option<&str>, GeoPoint)> + '_ {
        self.streets.iter().flat_map(|s| {
            s.houses.values().map(move |h| (s.name.as_str(), h.housenumber.as_str(), h.postcode.as_deref(), h.point))
        })
    }

    /// Is this folded name (or alias) a street of the index?
    pub fn knows_street(&self, key: &str) -> bool {
        self.by_name.contains_key(key)
    }

    /// Streets whose folded name is within the tolerated typos of `key`, with their distance.
    fn candidates(&self, key: &str) -> Vec<(u32, usize)> {
        if let Some(&id) = self.by_name.get(key) {
            return vec![(id, 0)];
        }
        let limit = max_edits(key.chars().count());
        if limit == 0 {
            return Vec::new();
        }
        let mut variants = vec![key.to_owned()];
        deletions(key, limit, &mut variants);
        let mut found: Vec<(u32, usize)> = Vec::new();
        for v in &variants {
            // The query with letters deleted may be a whole name (letters were added)...
            let exact = self.by_name.get(v.as_str()).map(std::slice::from_ref).unwrap_or_default();
            // ...or share a deletion with one (letters swapped, changed or missing).
            let shared = self.typo_keys.get(v.as_str()).map(Vec::as_slice).unwrap_or_default();
            for &id in exact.iter().chain(shared) {
                if found.iter().any(|(f, _)| *f == id) {
                    continue;
                }
                let d = strsim::damerau_levenshtein(key, &self.streets[id as usize].key);
                if d <= limit {
                    found.push((id, d));
                }
            }
        }
        found
    }

    /// Geocode one written address. `None` when no street of that name (give or take two
    /// typos) is in the extract.
    pub fn lookup(&self, q: &str) -> Option<Match> {
        let parsed = parse(q)?;
        let mut best: Option<(Match, usize)> = None;
        for (id, edits) in self.candidates(&parsed.street_key) {
            let street = &self.streets[id as usize];
            let Some(mut m) = self.place(street, &parsed) else { continue };
            m.confidence *= 1.0 - TYPO_PENALTY * edits as f64;
            // Fewer typos first; among equals, the more precise placement.
            let better = match &best {
                None => true,
                Some((b, e)) => (edits, -m.confidence) < (*e, -b.confidence),
            };
            if better {
                best = Some((m, edits));
            }
        }
        best.map(|(m, _)| m)
    }

    /// Where on `street` the parsed address is.
    fn place(&self, street: &Street, q: &crate::text::ParsedAddress) -> Option<Match> {
        if let Some(n) = q.number {
            let with_letter = q.letter.map(|l| format!("{n}{l}"));
            let plain = n.to_string();
            // "31 B" may be house 31b or staircase B of house 31; a bare "7" may be only "7a" on the map.
            let found = with_letter
                .as_deref()
                .and_then(|k| street.houses.get(k))
                .or_else(|| street.houses.get(&plain))
                .or_else(|| ['a', 'b', 'c'].iter().find_map(|l| street.houses.get(&format!("{n}{l}"))));
            if let Some(h) = found {
                let mut confidence = CONF_ADDRESS;
                if let (Some(want), Some(have)) = (&q.postcode, &h.postcode) {
                    if want != have {
                        confidence *= 1.0 - POSTCODE_PENALTY;
                    }
                }
                let place =
                    [h.postcode.as_deref(), h.city.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
                let matched = if place.is_empty() {
                    format!("{} {}", street.name, h.housenumber)
                } else {
                    format!("{} {}, {place}", street.name, h.housenumber)
                };
                return Some(Match { point: h.point, confidence, matched, kind: MatchKind::Address });
            }
            if let Some(point) = interpolate(&street.numbered, n) {
                return Some(Match {
                    point,
                    confidence: CONF_INTERPOLATED,
                    matched: format!("{} {n} (interpolated)", street.name),
                    kind: MatchKind::Interpolated,
                });
            }
        }
        street.centre.map(|point| Match {
            point,
            confidence: CONF_STREET,
            matched: street.name.clone(),
            kind: MatchKind::Street,
        })
    }
}

/// A point for house number `n` between the nearest numbers on the same side of the
/// street (same parity), or on either side when one side has none.
fn interpolate(numbered: &[(u32, GeoPoint)], n: u32) -> Option<GeoPoint> {
    let side: Vec<(u32, GeoPoint)> = numbered.iter().copied().filter(|(m, _)| m % 2 == n % 2).collect();
    let pool = if side.is_empty() { numbered } else { &side[..] };
    let below = pool.iter().rev().find(|(m, _)| *m < n);
    let above = pool.iter().find(|(m, _)| *m > n);
    match (below, above) {
        (Some((a, pa)), Some((b, pb))) => {
            let t = f64::from(n - a) / f64::from(b - a);
            GeoPoint::new(pa.lat + (pb.lat - pa.lat) * t, pa.lng + (pb.lng - pa.lng) * t).ok()
        }
        (Some((_, p)), None) | (None, Some((_, p))) => Some(*p),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{AddressPoint, StreetWay};

    fn pt(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    fn addr(street: &str, n: &str, lat: f64, lng: f64) -> AddressPoint {
        AddressPoint {
            street: street.into(),
            housenumber: n.into(),
            postcode: Some("00100".into()),
            city: Some("Helsinki".into()),
            point: pt(lat, lng),
        }
    }

    fn sample() -> AddressIndex {
        AddressIndex::build(&Extract {
            addresses: vec![
                addr("Annankatu", "29", 60.1660, 24.9380),
                addr("Annankatu", "31", 60.1665, 24.9385),
                addr("Annankatu", "35", 60.1675, 24.9395),
                addr("Annankatu", "2;4", 60.1600, 24.9300),
                addr("Töölönkatu", "4", 60.1800, 24.9200),
                addr("Iso Roobertinkatu", "7b", 60.1610, 24.9420),
            ],
            streets: vec![StreetWay {
                name: "Annankatu".into(),
                aliases: vec!["Annegatan".into()],
                points: vec![pt(60.1600, 24.9300), pt(60.1650, 24.9350), pt(60.1700, 24.9400)],
            }],
        })
    }

    #[test]
    fn written_styles_find_the_address() {
        let ix = sample();
        let at = |q: &str| ix.lookup(q).map(|m| (m.point, m.kind));
        let exact = Some((pt(60.1665, 24.9385), MatchKind::Address));
        for q in ["annankatu 31", "Annankatu 31 A 5, 00100 Helsinki", "Anankatu 31", "ANNANKATU 31 B", "Annegatan 31"] {
            assert_eq!(at(q), exact, "{q}");
        }
        assert_eq!(at("Annankatu 31, Helsinki, Finland"), exact);
        assert_eq!(at("Anankatt 31"), exact, "two typos in a long name");
        assert_eq!(at("Toolonkatu 4").map(|m| m.1), Some(MatchKind::Address));
        assert_eq!(at("Iso-Roobertinkatu 7 B").map(|m| m.1), Some(MatchKind::Address));
        assert_eq!(at("Annankatu 4").map(|m| m.0), Some(pt(60.1600, 24.9300)), "one of a list");
    }

    #[test]
    fn missing_numbers_interpolate_and_streets_fall_back() {
        let ix = sample();
        let m = ix.lookup("Annankatu 33").unwrap();
        assert_eq!(m.kind, MatchKind::Interpolated);
        assert!(m.point.distance_m(&pt(60.1670, 24.9390)) < 1.0, "{m:?}");
        let s = ix.lookup("Annankatu").unwrap();
        assert_eq!((s.kind, s.point), (MatchKind::Street, pt(60.1650, 24.9350)));
        assert!(s.confidence < m.confidence);
    }

    #[test]
    fn typos_and_postcodes_cost_confidence_and_garbage_finds_nothing() {
        let ix = sample();
        let exact = ix.lookup("Annankatu 31").unwrap().confidence;
        let typo = ix.lookup("Anankatu 31").unwrap().confidence;
        let wrong_postcode = ix.lookup("Annankatu 31, 00990 Helsinki").unwrap().confidence;
        assert!(typo < exact && wrong_postcode < exact);
        assert_eq!(ix.lookup("Xyzzyplugh 12"), None);
        assert_eq!(ix.lookup("Annnnnnkatu 31"), None, "three typos");
        assert_eq!(ix.lookup(""), None);
    }

    #[test]
    fn deletions_cover_two_edits() {
        let mut out = Vec::new();
        deletions("abc", 2, &mut out);
        assert_eq!(out, ["a", "ab", "ac", "b", "bc", "c"]);
    }
}

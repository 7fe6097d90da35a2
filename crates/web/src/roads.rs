//! The streets of an OpenStreetMap extract as GeoJSON, for maps that have no tile server:
//! the drivable ways (the simulator's rule, [`lastmile_core::roads::classify_way`]) as two
//! `MultiLineString` features, `major` and `minor` roads, coordinates rounded to ~1 m.

use anyhow::Context;
use lastmile_core::roads::classify_way;
use std::collections::HashMap;

fn is_major(highway: &str) -> bool {
    matches!(highway.trim_end_matches("_link"), "motorway" | "trunk" | "primary" | "secondary" | "tertiary")
}

/// Read an `.osm.pbf` and answer a GeoJSON FeatureCollection of its drivable streets,
/// plus the bounding box of what it drew.
pub fn roads_geojson(pbf: &[u8]) -> anyhow::Result<Vec<u8>> {
    use osmpbf::{Element, ElementReader};
    let mut coords: HashMap<i64, (f64, f64)> = HashMap::new();
    let mut ways: Vec<(bool, Vec<i64>)> = Vec::new();
    ElementReader::new(std::io::Cursor::new(pbf))
        .for_each(|element| match element {
            Element::Node(n) => {
                coords.insert(n.id(), (n.lon(), n.lat()));
            }
            Element::DenseNode(n) => {
                coords.insert(n.id(), (n.lon(), n.lat()));
            }
            Element::Way(w) => {
                if classify_way(w.tags()).is_some() {
                    let major = w.tags().any(|(k, v)| k == "highway" && is_major(v));
                    ways.push((major, w.refs().collect()));
                }
            }
            Element::Relation(_) => {}
        })
        .context("reading the OpenStreetMap extract")?;
    anyhow::ensure!(!ways.is_empty(), "the extract has no drivable streets");
    let round = |x: f64| (x * 1e5).round() / 1e5;
    let (mut min, mut max) = ((f64::MAX, f64::MAX), (f64::MIN, f64::MIN));
    let mut lines: [Vec<serde_json::Value>; 2] = [Vec::new(), Vec::new()];
    for (major, refs) in &ways {
        let line: Vec<[f64; 2]> = refs
            .iter()
            .filter_map(|r| coords.get(r))
            .map(|&(lng, lat)| {
                min = (min.0.min(lng), min.1.min(lat));
                max = (max.0.max(lng), max.1.max(lat));
                [round(lng), round(lat)]
            })
            .collect();
        if line.len() >= 2 {
            lines[usize::from(*major)].push(serde_json::json!(line));
        }
    }
    let [minor, major] = lines;
    let feature = |class: &str, lines: Vec<serde_json::Value>| {
        serde_json::json!({"type": "Feature", "properties": {"class": class},
                           "geometry": {"type": "MultiLineString", "coordinates": lines}})
    };
    let doc = serde_json::json!({
        "type": "FeatureCollection",
        "bbox": [round(min.0), round(min.1), round(max.0), round(max.1)],
        "features": [feature("minor", minor), feature("major", major)],
    });
    Ok(serde_json::to_vec(&doc)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_extract_gives_streets_inside_helsinki() {
        let pbf = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../sim/data/helsinki.osm.pbf")).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&super::roads_geojson(&pbf).unwrap()).unwrap();
        let bbox = doc["bbox"].as_array().unwrap();
        let (lng, lat) = (bbox[0].as_f64().unwrap(), bbox[1].as_f64().unwrap());
        assert!((24.0..26.0).contains(&lng) && (59.0..61.0).contains(&lat), "{bbox:?}");
        let major = doc["features"][1]["geometry"]["coordinates"].as_array().unwrap();
        let minor = doc["features"][0]["geometry"]["coordinates"].as_array().unwrap();
        assert!(major.len() > 50 && minor.len() > 50, "{} major, {} minor", major.len(), minor.len());
        assert!(super::roads_geojson(b"not a pbf").is_err());
    }
}

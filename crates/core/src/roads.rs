//! Which OpenStreetMap ways a delivery vehicle may drive, and in which direction: the
//! one rule the simulator's road graph and the web map's street layer share.

/// Which way traffic may use a way, from OSM's `oneway`, `junction` and `highway` tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Both,
    Forward,
    Backward,
}

/// Highway values a delivery car or scooter may use.
fn is_drivable(highway: &str) -> bool {
    matches!(
        highway,
        "motorway"
            | "motorway_link"
            | "trunk"
            | "trunk_link"
            | "primary"
            | "primary_link"
            | "secondary"
            | "secondary_link"
            | "tertiary"
            | "tertiary_link"
            | "unclassified"
            | "residential"
            | "living_street"
            | "service"
            | "road"
    )
}

/// Read a way's tags: `None` when cars may not use it, else which way they may go.
pub fn classify_way<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> Option<Direction> {
    let (mut highway, mut oneway, mut junction, mut access) = (None, None, None, None);
    for (k, v) in tags {
        match k {
            "highway" => highway = Some(v),
            "oneway" => oneway = Some(v),
            "junction" => junction = Some(v),
            "access" | "motor_vehicle" => access = access.or(Some(v)),
            "area" if v == "yes" => return None,
            _ => {}
        }
    }
    let highway = highway.filter(|h| is_drivable(h))?;
    if matches!(access, Some("no" | "private")) {
        return None;
    }
    Some(match oneway {
        Some("yes" | "1" | "true") => Direction::Forward,
        Some("-1" | "reverse") => Direction::Backward,
        Some("no" | "false" | "0") => Direction::Both,
        _ if matches!(junction, Some("roundabout" | "circular")) => Direction::Forward,
        _ if matches!(highway, "motorway" | "motorway_link") => Direction::Forward,
        _ => Direction::Both,
    })
}

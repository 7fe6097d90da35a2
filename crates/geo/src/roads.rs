//! The drivable road network: an OpenStreetMap `.osm.pbf` read into a directed graph
//! (one-way streets honoured), cut down to its largest strongly connected part so every
//! node can reach every other, with A* shortest paths over road distance.

use anyhow::Context;
use lastmile_core::GeoPoint;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

pub use lastmile_core::roads::{classify_way, Direction};

/// Central Helsinki, © OpenStreetMap contributors, ODbL 1.0 (see `crates/sim/data/README.md`).
/// Embedded so `lastmile demo` works from any directory of a fresh clone.
pub const HELSINKI_PBF: &[u8] = include_bytes!("../../sim/data/helsinki.osm.pbf");

/// One OSM way that cars may drive, before it is cut into edges.
#[derive(Debug, Clone)]
pub struct RoadWay {
    pub refs: Vec<i64>,
    pub direction: Direction,
}

#[derive(Debug, Clone, Copy)]
pub struct Edge {
    pub to: u32,
    pub length_m: f64,
}

/// A directed road graph. Node indices are dense `u32`s into `points`.
#[derive(Debug, Clone)]
pub struct RoadGraph {
    points: Vec<GeoPoint>,
    out: Vec<Vec<Edge>>,
}

/// A shortest path: the nodes it visits, in order, and its length along the roads.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub nodes: Vec<u32>,
    pub length_m: f64,
}

impl RoadGraph {
    /// The embedded central-Helsinki network.
    pub fn helsinki() -> anyhow::Result<RoadGraph> {
        Self::from_pbf_bytes(HELSINKI_PBF).context("reading the embedded Helsinki map")
    }

    pub fn from_pbf_file(path: &std::path::Path) -> anyhow::Result<RoadGraph> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_pbf_bytes(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn from_pbf_bytes(bytes: &[u8]) -> anyhow::Result<RoadGraph> {
        use osmpbf::{Element, ElementReader};
        let mut coords: HashMap<i64, GeoPoint> = HashMap::new();
        let mut ways = Vec::new();
        let mut put = |id: i64, lat: f64, lng: f64| {
            if let Ok(p) = GeoPoint::new(lat, lng) {
                coords.insert(id, p);
            }
        };
        ElementReader::new(std::io::Cursor::new(bytes)).for_each(|element| match element {
            Element::Node(n) => put(n.id(), n.lat(), n.lon()),
            Element::DenseNode(n) => put(n.id(), n.lat(), n.lon()),
            Element::Way(w) => {
                if let Some(direction) = classify_way(w.tags()) {
                    ways.push(RoadWay { refs: w.refs().collect(), direction });
                }
            }
            Element::Relation(_) => {}
        })?;
        let graph = Self::from_ways(&coords, &ways);
        anyhow::ensure!(graph.len() >= 2, "the map has no drivable road network");
        Ok(graph)
    }

    /// Build from node coordinates and drivable ways, keeping the largest strongly
    /// connected component (so a route exists between any two nodes).
    pub fn from_ways(coords: &HashMap<i64, GeoPoint>, ways: &[RoadWay]) -> RoadGraph {
        let mut index: HashMap<i64, u32> = HashMap::new();
        let mut points = Vec::new();
        let mut out: Vec<Vec<Edge>> = Vec::new();
        let mut node = |id: i64, points: &mut Vec<GeoPoint>, out: &mut Vec<Vec<Edge>>| -> Option<u32> {
            let p = *coords.get(&id)?;
            Some(*index.entry(id).or_insert_with(|| {
                points.push(p);
                out.push(Vec::new());
                (points.len() - 1) as u32
            }))
        };
        for way in ways {
            // A way whose nodes fall outside the extract is cut where they are missing.
            let mut prev: Option<u32> = None;
            for &id in &way.refs {
                let cur = node(id, &mut points, &mut out);
                if let (Some(a), Some(b)) = (prev, cur) {
                    if a != b {
                        let length_m = points[a as usize].distance_m(&points[b as usize]);
                        if way.direction != Direction::Backward {
                            out[a as usize].push(Edge { to: b, length_m });
                        }
                        if way.direction != Direction::Forward {
                            out[b as usize].push(Edge { to: a, length_m });
                        }
                    }
                }
                prev = cur;
            }
        }
        RoadGraph { points, out }.largest_component()
    }

    /// Keep only the largest strongly connected component: for a few well-connected
    /// roots, the nodes reachable both from and to the root; the biggest such set wins.
    fn largest_component(self) -> RoadGraph {
        let n = self.points.len();
        if n == 0 {
            return self;
        }
        let mut incoming: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (from, edges) in self.out.iter().enumerate() {
            for e in edges {
                incoming[e.to as usize].push(from as u32);
            }
        }
        let reach = |start: u32, next: &dyn Fn(u32) -> Vec<u32>| {
            let mut seen = vec![false; n];
            let mut stack = vec![start];
            seen[start as usize] = true;
            while let Some(v) = stack.pop() {
                for w in next(v) {
                    if !std::mem::replace(&mut seen[w as usize], true) {
                        stack.push(w);
                    }
                }
            }
            seen
        };
        let mut best: Vec<bool> = vec![false; n];
        let mut best_size = 0;
        let mut covered = vec![false; n];
        let mut roots: Vec<u32> = (0..n as u32).collect();
        roots.sort_by_key(|&v| std::cmp::Reverse(self.out[v as usize].len() + incoming[v as usize].len()));
        for root in roots.into_iter().take(64) {
            if covered[root as usize] {
                continue;
            }
            let fwd = reach(root, &|v| self.out[v as usize].iter().map(|e| e.to).collect());
            let bwd = reach(root, &|v| incoming[v as usize].clone());
            let scc: Vec<bool> = fwd.iter().zip(&bwd).map(|(a, b)| *a && *b).collect();
            let size = scc.iter().filter(|x| **x).count();
            for (c, s) in covered.iter_mut().zip(&scc) {
                *c |= *s;
            }
            if size > best_size {
                best_size = size;
                best = scc;
            }
            if best_size * 2 > n {
                break;
            }
        }
        let mut remap = vec![u32::MAX; n];
        let mut points = Vec::with_capacity(best_size);
        for (old, keep) in best.iter().enumerate() {
            if *keep {
                remap[old] = points.len() as u32;
                points.push(self.points[old]);
            }
        }
        let out = (0..n)
            .filter(|&v| best[v])
            .map(|v| {
                self.out[v]
                    .iter()
                    .filter(|e| best[e.to as usize])
                    .map(|e| Edge { to: remap[e.to as usize], length_m: e.length_m })
                    .collect()
            })
            .collect();
        RoadGraph { points, out }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn edge_count(&self) -> usize {
        self.out.iter().map(Vec::len).sum()
    }

    pub fn point(&self, node: u32) -> GeoPoint {
        self.points[node as usize]
    }

    pub fn edges(&self, node: u32) -> &[Edge] {
        &self.out[node as usize]
    }

    /// The geographic middle of the network (mean of its nodes).
    pub fn centre(&self) -> GeoPoint {
        let n = self.points.len().max(1) as f64;
        let (lat, lng) = self.points.iter().fold((0.0, 0.0), |(a, b), p| (a + p.lat, b + p.lng));
        GeoPoint { lat: lat / n, lng: lng / n }
    }

    /// The node closest to `p` as the crow flies (a linear scan: city extracts are small).
    pub fn nearest_node(&self, p: &GeoPoint) -> u32 {
        let mut best = (f64::INFINITY, 0u32);
        for (i, q) in self.points.iter().enumerate() {
            let d = q.distance_m(p);
            if d < best.0 {
                best = (d, i as u32);
            }
        }
        best.1
    }

    /// Nodes within `radius_m` of `p`, in index order.
    pub fn nodes_within(&self, p: &GeoPoint, radius_m: f64) -> Vec<u32> {
        (0..self.points.len() as u32).filter(|&i| self.points[i as usize].distance_m(p) <= radius_m).collect()
    }

    /// A* over road length with the straight-line distance as the (admissible) heuristic.
    pub fn shortest_path(&self, from: u32, to: u32) -> Option<Path> {
        self.search(from, to, true)
    }

    /// Plain Dijkstra (A* without the heuristic), kept to check A* against.
    pub fn dijkstra(&self, from: u32, to: u32) -> Option<Path> {
        self.search(from, to, false)
    }

    fn search(&self, from: u32, to: u32, heuristic: bool) -> Option<Path> {
        let n = self.points.len();
        if from as usize >= n || to as usize >= n {
            return None;
        }
        let goal = self.points[to as usize];
        let h = |v: u32| if heuristic { self.points[v as usize].distance_m(&goal) } else { 0.0 };
        let mut dist = vec![f64::INFINITY; n];
        let mut prev = vec![u32::MAX; n];
        let mut heap = BinaryHeap::new();
        dist[from as usize] = 0.0;
        heap.push(Frontier { estimate: h(from), node: from });
        while let Some(Frontier { node, estimate }) = heap.pop() {
            if node == to {
                break;
            }
            let d = dist[node as usize];
            if estimate > d + h(node) + 1e-9 {
                continue; // a stale heap entry
            }
            for e in &self.out[node as usize] {
                let nd = d + e.length_m;
                if nd < dist[e.to as usize] {
                    dist[e.to as usize] = nd;
                    prev[e.to as usize] = node;
                    heap.push(Frontier { estimate: nd + h(e.to), node: e.to });
                }
            }
        }
        if !dist[to as usize].is_finite() {
            return None;
        }
        let mut nodes = vec![to];
        let mut v = to;
        while v != from {
            v = prev[v as usize];
            nodes.push(v);
        }
        nodes.reverse();
        Some(Path { nodes, length_m: dist[to as usize] })
    }

    /// The points a path passes through.
    pub fn polyline(&self, path: &Path) -> Vec<GeoPoint> {
        path.nodes.iter().map(|&v| self.point(v)).collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct Frontier {
    estimate: f64,
    node: u32,
}

impl PartialEq for Frontier {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Frontier {}
impl PartialOrd for Frontier {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Frontier {
    /// Reversed: `BinaryHeap` is a max-heap and we want the smallest estimate first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.estimate.total_cmp(&self.estimate).then_with(|| other.node.cmp(&self.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn p(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint::new(lat, lng).unwrap()
    }

    /// A square a-b-c-d of ~111 m sides, a one-way diagonal a→c, and a dead end e off d
    /// reachable only one way (so it is cut off).
    fn toy() -> RoadGraph {
        let coords: HashMap<i64, GeoPoint> = [
            (1, p(60.0, 25.0)),
            (2, p(60.0, 25.002)),
            (3, p(60.001, 25.002)),
            (4, p(60.001, 25.0)),
            (5, p(60.002, 25.0)),
        ]
        .into_iter()
        .collect();
        let ways = vec![
            RoadWay { refs: vec![1, 2, 3, 4, 1], direction: Direction::Both },
            RoadWay { refs: vec![1, 3], direction: Direction::Forward },
            RoadWay { refs: vec![5, 4], direction: Direction::Forward },
        ];
        RoadGraph::from_ways(&coords, &ways)
    }

    #[test]
    fn tags_decide_drivability_and_direction() {
        let c = |tags: &[(&'static str, &'static str)]| classify_way(tags.iter().copied());
        assert_eq!(c(&[("highway", "residential")]), Some(Direction::Both));
        assert_eq!(c(&[("highway", "primary"), ("oneway", "yes")]), Some(Direction::Forward));
        assert_eq!(c(&[("highway", "secondary"), ("oneway", "-1")]), Some(Direction::Backward));
        assert_eq!(c(&[("highway", "tertiary"), ("junction", "roundabout")]), Some(Direction::Forward));
        assert_eq!(c(&[("highway", "footway")]), None);
        assert_eq!(c(&[("highway", "service"), ("access", "private")]), None);
        assert_eq!(c(&[("building", "yes")]), None);
    }

    #[test]
    fn one_way_streets_are_honoured_and_unreachable_nodes_cut() {
        let g = toy();
        assert_eq!(g.len(), 4, "node 5 can leave but never be reached, so it is dropped");
        let a = g.nearest_node(&p(60.0, 25.0));
        let c = g.nearest_node(&p(60.001, 25.002));
        let there = g.shortest_path(a, c).unwrap();
        let back = g.shortest_path(c, a).unwrap();
        assert_eq!(there.nodes.len(), 2, "a→c takes the one-way diagonal");
        assert!(back.nodes.len() == 3, "c→a must go around the square: {back:?}");
        assert!(back.length_m > there.length_m * 1.3);
    }

    #[test]
    fn the_helsinki_extract_is_a_real_connected_network() {
        let g = RoadGraph::helsinki().unwrap();
        assert!(g.len() > 800 && g.len() < 20_000, "{} nodes", g.len());
        assert!(g.edge_count() > g.len(), "{} edges", g.edge_count());
        let c = g.centre();
        assert!((c.lat - 60.17).abs() < 0.05 && (c.lng - 24.94).abs() < 0.08, "{c:?}");
    }

    #[test]
    fn a_star_finds_the_same_lengths_as_dijkstra_on_the_real_map() {
        let g = RoadGraph::helsinki().unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..40 {
            let (a, b) = (rng.gen_range(0..g.len() as u32), rng.gen_range(0..g.len() as u32));
            let fast = g.shortest_path(a, b).expect("strongly connected");
            let slow = g.dijkstra(a, b).expect("strongly connected");
            assert!((fast.length_m - slow.length_m).abs() < 1e-6, "{a}->{b}: {fast:?} vs {slow:?}");
            let crow = g.point(a).distance_m(&g.point(b));
            assert!(fast.length_m + 1e-6 >= crow, "roads are never shorter than a straight line");
            assert_eq!((fast.nodes[0], *fast.nodes.last().unwrap()), (a, b));
            for w in fast.nodes.windows(2) {
                assert!(g.edges(w[0]).iter().any(|e| e.to == w[1]), "path follows edges");
            }
        }
    }
}

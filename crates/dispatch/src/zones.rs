//! Zones: a batch split into groups of orders that share no candidate driver, so that each
//! group is an assignment problem of its own, solved apart from the others and in parallel.
//!
//! A zone is a connected component of the candidate graph (orders and drivers, an edge per
//! priced pair). Zones follow the city's geography without a fixed grid: orders at nearby
//! stores that reach for the same drivers fall in one zone, wherever a cell border would
//! have run between them, and a driver who is a candidate of orders on both sides of such a
//! border joins their zones into one. Splitting this way is exact: no pair joins two zones,
//! so the batch's optimum is the union of the zones' optima and its dual bound the sum of
//! theirs. A batch's cost follows its largest zone rather than the whole city, and when
//! `Matcher::Optimal` widens a few orders' candidate lists, only the zones those orders
//! touch are solved again.

use crate::assign::{Candidates, CostModel, OrderSlot};
use crate::matching::SparseProblem;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many candidate pairs a batch's zones are solved on the calling thread:
/// starting a thread costs more than the work.
const PARALLEL_MIN_EDGES: usize = 4_096;

/// Threads a batch may use; 0 = as many as the machine has cores.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Cap the threads one batch's candidate search and zone solves use (0, the default, means
/// one per core). Answers do not depend on it; only wall time does.
pub fn set_matching_threads(threads: usize) {
    THREADS.store(threads, Ordering::Relaxed);
}

fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// `f` over `items`, in order, split in contiguous chunks over the threads when there are
/// at least `min` items.
pub(crate) fn parallel_map<T: Sync, R: Send>(items: &[T], min: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads().min(items.len() / min.max(1)).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let f = &f;
        let others: Vec<_> = items
            .chunks(chunk)
            .skip(1)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = items[..chunk].iter().map(f).collect();
        for handle in others {
            out.extend(handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        out
    })
}

/// A batch's zones.
pub(crate) struct Zones {
    /// Each zone's orders (positions in the batch), ascending; zones by their first order.
    pub rows: Vec<Vec<usize>>,
    /// Each zone's number of drivers.
    pub width: Vec<usize>,
    /// Each driver column's position among its zone's drivers (`u32::MAX` if no order's
    /// candidate).
    pub local: Vec<u32>,
}

/// Split a batch into zones by its candidate lists; `columns` is how many drivers were found.
pub(crate) fn split(candidates: &[Candidates], columns: usize) -> Zones {
    let n = candidates.len();
    let mut sets = DisjointSets::new(n + columns);
    for (i, c) in candidates.iter().enumerate() {
        for e in &c.edges {
            sets.union(i, n + e.driver);
        }
    }
    let mut zone_of_root = vec![u32::MAX; n + columns];
    let mut rows: Vec<Vec<usize>> = Vec::new();
    for i in 0..n {
        let root = sets.find(i);
        if zone_of_root[root] == u32::MAX {
            zone_of_root[root] = rows.len() as u32;
            rows.push(Vec::new());
        }
        rows[zone_of_root[root] as usize].push(i);
    }
    let mut local = vec![u32::MAX; columns];
    let mut width = vec![0usize; rows.len()];
    for (zone, members) in rows.iter().enumerate() {
        for &i in members {
            for e in &candidates[i].edges {
                if local[e.driver] == u32::MAX {
                    local[e.driver] = width[zone] as u32;
                    width[zone] += 1;
                }
            }
        }
    }
    Zones { rows, width, local }
}

/// One zone's optimum.
#[derive(Debug, Clone)]
pub(crate) struct ZoneSolution {
    /// The zone's orders, as in [`Zones::rows`].
    pub rows: Vec<usize>,
    /// Each of those orders' driver column (batch-wide numbering), `None` if left out.
    pub col_of: Vec<Option<usize>>,
    /// Each of those orders' dual price.
    pub price: Vec<f64>,
    /// The zone's certified lower bound (see [`SparseProblem::dual_bound`]).
    pub bound: f64,
}

/// What solving a zone needs of the batch.
pub(crate) struct Batch<'a> {
    pub orders: &'a [OrderSlot],
    pub candidates: &'a [Candidates],
    pub model: &'a CostModel,
    /// Per order, the least any driver beyond its candidate list can cost it.
    pub floors: &'a [f64],
}

/// Solve the zones numbered `which`, in parallel when there is enough work; the answers
/// follow `which`.
pub(crate) fn solve(batch: &Batch, zones: &Zones, which: &[usize]) -> Vec<ZoneSolution> {
    let edges = |z: usize| zones.rows[z].iter().map(|&i| batch.candidates[i].edges.len() + 1).sum::<usize>();
    let total: usize = which.iter().map(|&z| edges(z)).sum();
    let workers = if total < PARALLEL_MIN_EDGES { 1 } else { threads().min(which.len()).max(1) };
    if workers == 1 {
        return which.iter().map(|&z| solve_zone(batch, zones, z)).collect();
    }
    // Largest zones first, each to the least loaded worker.
    let mut by_size: Vec<usize> = which.to_vec();
    by_size.sort_by_key(|&z| std::cmp::Reverse(edges(z)));
    let mut bins: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); workers];
    for z in by_size {
        let bin = bins.iter_mut().min_by_key(|(load, _)| *load).expect("at least one worker");
        bin.0 += edges(z);
        bin.1.push(z);
    }
    let solved =
        parallel_map(&bins, 1, |(_, zs)| zs.iter().map(|&z| (z, solve_zone(batch, zones, z))).collect::<Vec<_>>());
    let mut by_zone: Vec<Option<ZoneSolution>> = vec![None; zones.rows.len()];
    for (z, s) in solved.into_iter().flatten() {
        by_zone[z] = Some(s);
    }
    which.iter().map(|&z| by_zone[z].take().expect("every zone asked for was solved")).collect()
}

fn solve_zone(batch: &Batch, zones: &Zones, zone: usize) -> ZoneSolution {
    let rows = &zones.rows[zone];
    let mut problem = SparseProblem::new(zones.width[zone]);
    let mut global = vec![0usize; zones.width[zone]];
    for &i in rows {
        let edges = batch.candidates[i].edges.iter().map(|e| {
            let l = zones.local[e.driver] as usize;
            global[l] = e.driver;
            (l, e.cost)
        });
        problem.push_row(edges, batch.model.unassigned_cost(&batch.orders[i]));
    }
    let solution = problem.solve();
    let bound = problem.dual_bound(&solution, |r| batch.floors[rows[r]]);
    ZoneSolution {
        rows: rows.clone(),
        col_of: solution.col_of.iter().map(|c| c.map(|l| global[l])).collect(),
        price: solution.row_potential,
        bound,
    }
}

/// Union–find with path halving and union by size.
struct DisjointSets {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self { parent: (0..n as u32).collect(), size: vec![1; n] }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] as usize != x {
            let up = self.parent[self.parent[x] as usize];
            self.parent[x] = up;
            x = up as usize;
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a as u32;
        self.size[a] += self.size[b];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::Edge;

    fn candidates(drivers: &[usize]) -> Candidates {
        Candidates {
            edges: drivers.iter().map(|&driver| Edge { driver, eta_s: 1.0, cost: 1.0 }).collect(),
            frontier_eta_s: None,
        }
    }

    #[test]
    fn orders_sharing_a_driver_share_a_zone() {
        // Orders 0 and 1 share driver 2, orders 2 and 3 driver 5; order 4 has no candidate.
        let lists = [candidates(&[0, 2]), candidates(&[2, 1]), candidates(&[3, 5]), candidates(&[5]), candidates(&[])];
        let zones = split(&lists, 6);
        assert_eq!(zones.rows, vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert_eq!(zones.width, vec![3, 2, 0]);
        assert_eq!(zones.local[4], u32::MAX, "driver 4 is nobody's candidate");
        assert_eq!((zones.local[0], zones.local[2], zones.local[1]), (0, 1, 2));
    }

    #[test]
    fn parallel_map_keeps_order() {
        let items: Vec<usize> = (0..1_000).collect();
        assert_eq!(parallel_map(&items, 10, |x| x * 2), items.iter().map(|x| x * 2).collect::<Vec<_>>());
    }
}

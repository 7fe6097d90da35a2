//! Minimum-cost assignment solvers: the dense Hungarian method (the reference optimum) and
//! a sparse shortest-augmenting-path solver over candidate edges (what `Matcher::Optimal`
//! runs every tick).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Exact minimum-cost assignment of rows to distinct columns (Hungarian method with
/// potentials, shortest augmenting paths, O(rows² · cols)).
///
/// Returns the column of each row. When rows ≤ cols every row gets a column; with more rows
/// than columns the problem is solved transposed and the rows left over get `None`.
/// Non-finite entries and entries missing from short rows are forbidden: the solver uses
/// them only if no complete assignment avoids them, and reports such rows as `None`.
pub fn hungarian(cost: &[Vec<f64>]) -> Vec<Option<usize>> {
    let rows = cost.len();
    let cols = cost.iter().map(Vec::len).max().unwrap_or(0);
    if rows == 0 || cols == 0 {
        return vec![None; rows];
    }
    let max_abs = cost.iter().flatten().filter(|c| c.is_finite()).fold(0.0f64, |m, c| m.max(c.abs()));
    // Dearer than any complete assignment without forbidden entries can differ by.
    let forbidden = (rows.max(cols) as f64 + 1.0) * (2.0 * max_abs + 1.0);
    let entry = |r: usize, c: usize| cost[r].get(c).copied().filter(|x| x.is_finite()).unwrap_or(forbidden);
    let is_forbidden = |r: usize, c: usize| !cost[r].get(c).is_some_and(|x| x.is_finite());
    if rows <= cols {
        let flat: Vec<f64> = (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| entry(r, c)).collect();
        let col_of = dense_rows_le_cols(&flat, rows, cols);
        col_of.into_iter().enumerate().map(|(r, c)| (!is_forbidden(r, c)).then_some(c)).collect()
    } else {
        let flat: Vec<f64> = (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| entry(r, c)).collect();
        let mut col_of = vec![None; rows];
        for (c, r) in dense_rows_le_cols(&flat, cols, rows).into_iter().enumerate() {
            col_of[r] = (!is_forbidden(r, c)).then_some(c);
        }
        col_of
    }
}

/// The Hungarian core on a row-major `rows × cols` matrix, rows ≤ cols. Index 0 of the
/// potential and matching arrays is a virtual column that roots each search tree.
fn dense_rows_le_cols(a: &[f64], rows: usize, cols: usize) -> Vec<usize> {
    let mut u = vec![0.0; rows + 1];
    let mut v = vec![0.0; cols + 1];
    // Row (1-based) matched to each column, 0 for none; `way` is the search tree.
    let mut row_of = vec![0usize; cols + 1];
    let mut way = vec![0usize; cols + 1];
    let mut min_to = vec![f64::INFINITY; cols + 1];
    let mut used = vec![false; cols + 1];
    for i in 1..=rows {
        row_of[0] = i;
        let mut j0 = 0;
        min_to.fill(f64::INFINITY);
        used.fill(false);
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let row = &a[(i0 - 1) * cols..i0 * cols];
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=cols {
                if !used[j] {
                    let reduced = row[j - 1] - u[i0] - v[j];
                    if reduced < min_to[j] {
                        min_to[j] = reduced;
                        way[j] = j0;
                    }
                    if min_to[j] < delta {
                        delta = min_to[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=cols {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_to[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        while j0 != 0 {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
        }
    }
    let mut col_of = vec![0; rows];
    for (j, &i) in row_of.iter().enumerate().skip(1) {
        if i != 0 {
            col_of[i - 1] = j - 1;
        }
    }
    col_of
}

/// A sparse assignment problem: each row may take one of its candidate columns or stay
/// unassigned at its own price. Costs must be finite and non-negative.
#[derive(Debug, Default)]
pub(crate) struct SparseProblem {
    cols: usize,
    row_start: Vec<usize>,
    edges: Vec<(u32, f64)>,
    unassigned: Vec<f64>,
}

impl SparseProblem {
    pub fn new(cols: usize) -> Self {
        Self { cols, row_start: vec![0], ..Self::default() }
    }

    /// Add a row with its candidate `(column, cost)` edges and its price for staying unassigned.
    pub fn push_row(&mut self, edges: impl IntoIterator<Item = (usize, f64)>, unassigned: f64) {
        self.edges.extend(edges.into_iter().map(|(c, cost)| (c as u32, cost)));
        self.row_start.push(self.edges.len());
        self.unassigned.push(unassigned);
    }

    fn rows(&self) -> usize {
        self.unassigned.len()
    }

    /// Row `i`'s edges, its private "unassigned" column (`cols + i`) last.
    fn edges_of(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let own = &self.edges[self.row_start[i]..self.row_start[i + 1]];
        own.iter().map(|&(c, cost)| (c as usize, cost)).chain(std::iter::once((self.cols + i, self.unassigned[i])))
    }

    /// Minimum total cost, by successive shortest augmenting paths (Dijkstra on reduced costs
    /// `cost − u[row] − v[col]`, which the potentials keep non-negative). Each search stops at
    /// the first free column, and touches only what it reached, so a batch where most orders
    /// have an uncontested nearby driver costs little more than reading its edges.
    pub fn solve(&self) -> SparseSolution {
        let (rows, all_cols) = (self.rows(), self.cols + self.rows());
        let mut u = vec![0.0; rows];
        let mut v = vec![0.0; all_cols];
        let mut row_of = vec![usize::MAX; all_cols];
        let mut col_of = vec![usize::MAX; rows];
        let mut search = Search::new(all_cols);
        for start in 0..rows {
            search.relax(self, start, 0.0, u[start], &v);
            let (free_col, reach) = loop {
                let Reached { dist: d, col: j } = search.heap.pop().expect("a row's unassigned column is reachable");
                if search.done[j] || d > search.dist[j] {
                    continue;
                }
                search.done[j] = true;
                search.settled.push(j);
                match row_of[j] {
                    usize::MAX => break (j, d),
                    i => search.relax(self, i, d, u[i], &v),
                }
            };
            // Potentials: tight on the new path and the matching, non-negative elsewhere.
            u[start] += reach;
            for &j in &search.settled {
                if j != free_col {
                    u[row_of[j]] += reach - search.dist[j];
                    v[j] -= reach - search.dist[j];
                }
            }
            let mut j = free_col;
            loop {
                let i = search.pred[j];
                let previous = col_of[i];
                row_of[j] = i;
                col_of[i] = j;
                if i == start {
                    break;
                }
                j = previous;
            }
            search.reset();
        }
        let col_of = col_of.into_iter().map(|j| (j < self.cols).then_some(j)).collect();
        SparseSolution { col_of, row_potential: u, col_potential: v }
    }

    /// A certified lower bound on the optimum of the *full* problem whose edges this problem
    /// holds a subset of: the LP dual objective `Σ u + Σ v` at potentials made feasible.
    ///
    /// The full problem is: each row takes one of its columns (or its own "unassigned"
    /// column at its price), each column at most once. Its LP relaxation has integral optima,
    /// and any `u` (free) and `v ≤ 0` with `u[i] + v[j] ≤ cost(i, j)` for every edge of the
    /// full problem gives `Σ u + Σ v ≤` its optimum (weak duality). `row_cap[i]` must be a
    /// lower bound on the cost of every edge of row `i` that this problem lacks (infinite
    /// when it lacks none); since `v ≤ 0`, `u[i] ≤ row_cap[i]` makes all those edges
    /// feasible. Each row's potential is lowered to its cap and to the least slack over its
    /// own edges (float rounding in the solve can leave a slack of −1e-12), so the bound
    /// holds whatever the solver's state.
    pub fn dual_bound(&self, solution: &SparseSolution, row_cap: impl Fn(usize) -> f64) -> f64 {
        let v = &solution.col_potential;
        debug_assert!(v.iter().all(|&x| x <= 0.0));
        let rows: f64 = (0..self.rows())
            .map(|i| {
                let own = self.edges_of(i).map(|(j, cost)| cost - v[j].min(0.0)).fold(f64::INFINITY, f64::min);
                solution.row_potential[i].min(own).min(row_cap(i))
            })
            .sum();
        rows + v.iter().map(|x| x.min(0.0)).sum::<f64>()
    }
}

/// A solved [`SparseProblem`].
#[derive(Debug)]
pub(crate) struct SparseSolution {
    /// Each row's column; `None` for a row left unassigned.
    pub col_of: Vec<Option<usize>>,
    /// Dual price of each row. Column prices are never positive, so an edge left out of the
    /// problem could only have improved the solution if it cost less than its row's price:
    /// with every left-out edge at least that dear, the solution is optimal over all edges.
    pub row_potential: Vec<f64>,
    /// Dual price of each column (drivers, then each row's "unassigned" column); never positive.
    pub col_potential: Vec<f64>,
}

/// Scratch state of one Dijkstra search, reset between searches by what it touched only.
struct Search {
    dist: Vec<f64>,
    /// The row each reached column was reached from.
    pred: Vec<usize>,
    done: Vec<bool>,
    touched: Vec<usize>,
    settled: Vec<usize>,
    heap: BinaryHeap<Reached>,
}

impl Search {
    fn new(cols: usize) -> Self {
        Self {
            dist: vec![f64::INFINITY; cols],
            pred: vec![usize::MAX; cols],
            done: vec![false; cols],
            touched: Vec::new(),
            settled: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    /// Relax the edges of row `i`, reached at distance `d_i`.
    fn relax(&mut self, problem: &SparseProblem, i: usize, d_i: f64, u_i: f64, v: &[f64]) {
        for (j, cost) in problem.edges_of(i) {
            let d = d_i + (cost - u_i - v[j]).max(0.0);
            if !self.done[j] && d < self.dist[j] {
                if self.dist[j].is_infinite() {
                    self.touched.push(j);
                }
                self.dist[j] = d;
                self.pred[j] = i;
                self.heap.push(Reached { dist: d, col: j });
            }
        }
    }

    fn reset(&mut self) {
        for &j in &self.touched {
            self.dist[j] = f64::INFINITY;
            self.done[j] = false;
        }
        self.touched.clear();
        self.settled.clear();
        self.heap.clear();
    }
}

/// A Dijkstra heap entry, smallest distance first.
#[derive(Debug, Clone, Copy)]
struct Reached {
    dist: f64,
    col: usize,
}

impl PartialEq for Reached {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Reached {}
impl PartialOrd for Reached {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Reached {
    fn cmp(&self, other: &Self) -> Ordering {
        other.dist.total_cmp(&self.dist).then(other.col.cmp(&self.col))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn total(cost: &[Vec<f64>], col_of: &[Option<usize>]) -> f64 {
        col_of.iter().enumerate().filter_map(|(r, c)| c.map(|c| cost[r][c])).sum()
    }

    /// Cheapest assignment of every row to distinct columns, by trying every choice.
    fn brute_force(cost: &[Vec<f64>], row: usize, used: &mut Vec<bool>) -> f64 {
        if row == cost.len() {
            return 0.0;
        }
        let mut best = f64::INFINITY;
        for c in 0..used.len() {
            if !used[c] {
                used[c] = true;
                best = best.min(cost[row][c] + brute_force(cost, row + 1, used));
                used[c] = false;
            }
        }
        best
    }

    #[test]
    fn solves_a_textbook_instance() {
        let cost = vec![vec![4.0, 1.0, 3.0], vec![2.0, 0.0, 5.0], vec![3.0, 2.0, 2.0]];
        assert_eq!(hungarian(&cost), vec![Some(1), Some(0), Some(2)]);
        let tall = vec![vec![1.0], vec![0.5], vec![3.0]];
        assert_eq!(hungarian(&tall), vec![None, Some(0), None]);
        let forbidden = vec![vec![f64::INFINITY, 1.0], vec![f64::NAN, 2.0]];
        assert_eq!(hungarian(&forbidden).iter().filter(|c| c.is_none()).count(), 1);
    }

    proptest! {
        #[test]
        fn hungarian_matches_brute_force(rows in 1usize..6, extra in 0usize..3, seed in prop::collection::vec(-50.0f64..100.0, 64)) {
            let cols = rows + extra;
            let cost: Vec<Vec<f64>> = (0..rows).map(|r| (0..cols).map(|c| seed[(r * cols + c) % 64]).collect()).collect();
            let col_of = hungarian(&cost);
            let mut distinct = col_of.iter().flatten().collect::<Vec<_>>();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), rows);
            let best = brute_force(&cost, 0, &mut vec![false; cols]);
            prop_assert!((total(&cost, &col_of) - best).abs() < 1e-9, "{} vs {}", total(&cost, &col_of), best);
        }

        /// The sparse problem holds a random subset of a full problem's edges; each row's cap
        /// is the least cost among its left-out edges. The dual bound never exceeds the full
        /// optimum, and meets it when every row's price is within its cap.
        #[test]
        fn dual_bound_is_a_lower_bound_on_the_full_problem(
            rows in 1usize..6,
            cols in 1usize..6,
            costs in prop::collection::vec(0.0f64..100.0, 36),
            kept in prop::collection::vec(prop::bool::weighted(0.5), 36),
            unassigned in prop::collection::vec(10.0f64..200.0, 6),
        ) {
            let mut sparse = SparseProblem::new(cols);
            let mut dense = vec![vec![f64::INFINITY; cols + rows]; rows];
            let mut caps = vec![f64::INFINITY; rows];
            for r in 0..rows {
                let mut edges = Vec::new();
                for c in 0..cols {
                    let x = costs[r * 6 + c];
                    dense[r][c] = x;
                    if kept[r * 6 + c] { edges.push((c, x)) } else { caps[r] = caps[r].min(x) }
                }
                dense[r][cols..].fill(unassigned[r]);
                sparse.push_row(edges, unassigned[r]);
            }
            let solution = sparse.solve();
            let bound = sparse.dual_bound(&solution, |i| caps[i]);
            let best = brute_force(&dense, 0, &mut vec![false; cols + rows]);
            prop_assert!(bound <= best + 1e-9, "bound {} above the optimum {}", bound, best);
            if (0..rows).all(|i| solution.row_potential[i] <= caps[i]) {
                prop_assert!((bound - best).abs() < 1e-6, "settled, yet bound {} vs optimum {}", bound, best);
            }
        }

        #[test]
        fn sparse_matches_dense_with_unassigned_columns(
            rows in 1usize..7,
            cols in 1usize..7,
            costs in prop::collection::vec(prop::option::weighted(0.6, 0.0f64..100.0), 49),
            unassigned in prop::collection::vec(10.0f64..200.0, 7),
        ) {
            let mut sparse = SparseProblem::new(cols);
            // Dense twin: a driver column per edge, then `rows` interchangeable "unassigned" columns.
            let mut dense = vec![vec![f64::INFINITY; cols + rows]; rows];
            for r in 0..rows {
                let edges: Vec<(usize, f64)> = (0..cols).filter_map(|c| costs[r * 7 + c].map(|x| (c, x))).collect();
                for &(c, x) in &edges {
                    dense[r][c] = x;
                }
                dense[r][cols..].fill(unassigned[r]);
                sparse.push_row(edges, unassigned[r]);
            }
            let sparse_cols = sparse.solve().col_of;
            let sparse_total: f64 = sparse_cols.iter().enumerate()
                .map(|(r, c)| c.map_or(unassigned[r], |c| dense[r][c])).sum();
            let mut used = sparse_cols.iter().flatten().collect::<Vec<_>>();
            used.sort();
            prop_assert!(used.windows(2).all(|w| w[0] != w[1]), "a column used twice: {:?}", sparse_cols);
            prop_assert!(sparse_cols.iter().enumerate().all(|(r, c)| c.is_none_or(|c| dense[r][c].is_finite())));
            let best = brute_force(&dense, 0, &mut vec![false; cols + rows]);
            prop_assert!((sparse_total - best).abs() < 1e-6, "sparse {} vs optimum {}", sparse_total, best);
            prop_assert!((total(&dense, &hungarian(&dense)) - best).abs() < 1e-6);
        }
    }
}

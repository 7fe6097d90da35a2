//! Multi-row statements for the batched write path: one `INSERT … VALUES (…), (…)` per
//! table per group commit instead of one statement per row.
//!
//! Rows are cut into power-of-two chunks (largest first), so a batch of any size uses at
//! most `log2(MAX_ROWS) + 1` distinct statement texts per table and each connection's
//! prepared-statement cache keeps them all; the chunk cap keeps every statement far below
//! SQLite's and PostgreSQL's bind-parameter limits.

use std::ops::Range;

/// Most rows one statement carries.
pub(crate) const MAX_ROWS: usize = 128;

/// `0..n` cut into power-of-two ranges of at most [`MAX_ROWS`], largest first.
pub(crate) fn chunks(n: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let left = n - start;
        let size = if left >= MAX_ROWS { MAX_ROWS } else { 1 << (usize::BITS - 1 - left.leading_zeros()) };
        out.push(start..start + size);
        start += size;
    }
    out
}

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` placeholders each.
pub(crate) fn values(rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

/// `$<start+1>, …, $<start+n>`: an `IN (…)` list after `start` earlier parameters.
pub(crate) fn list(start: usize, n: usize) -> String {
    (start + 1..=start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_covering_everything() {
        assert!(chunks(0).is_empty());
        assert_eq!(chunks(1), vec![0..1]);
        assert_eq!(chunks(100), vec![0..64, 64..96, 96..100]);
        assert_eq!(chunks(300), vec![0..128, 128..256, 256..288, 288..296, 296..300]);
        for n in 0..600 {
            let c = chunks(n);
            assert_eq!(c.iter().map(|r| r.len()).sum::<usize>(), n);
            assert!(c.iter().all(|r| r.len().is_power_of_two() && r.len() <= MAX_ROWS));
        }
    }

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(values(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(list(2, 3), "$3, $4, $5");
    }
}

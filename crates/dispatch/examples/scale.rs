//! Prints the city-scale report (Optimal and Greedy against the certified lower bound) for
//! one random city:
//! `cargo run --release -p lastmile-dispatch --example scale -- [seed] [orders] [drivers]`.

fn main() {
    let arg = |i: usize, default: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let report = lastmile_dispatch::scale_report(arg(1, 1), arg(2, 5_000) as usize, arg(3, 25_000) as usize);
    println!("{report:#?}");
}

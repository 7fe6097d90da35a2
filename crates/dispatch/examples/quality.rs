//! Prints the assignment quality report for one random city:
//! `cargo run --release -p lastmile-dispatch --example quality -- [seed] [orders] [drivers]`.

fn main() {
    let arg = |i: usize, default: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let report = lastmile_dispatch::quality_report(arg(1, 1), arg(2, 1_000) as usize, arg(3, 5_000) as usize);
    println!("{report:#?}");
}

//! Dispatch: the live spatial index of drivers, candidate search, when to offer an order,
//! and batched assignment of orders to drivers (optimal and greedy), with the dense
//! Hungarian solver as the reference optimum.
//!
//! Owns: pure, deterministic algorithms over in-memory snapshots, and their benchmarks.
//! Must not: do I/O of any kind (database, network, bus, files), be async, or read the clock
//! outside [`quality_report`], which times the solvers for `lastmile bench assignment`.

mod assign;
mod grid;
mod index;
mod matching;
mod quality;
mod readiness;
mod zones;

pub use assign::{
    assign, assign_certified, assign_live, batch_cost, Assignment, CertifiedAssignment, CostModel, DriverSlot,
    DriverSource, Matcher, OrderSlot,
};
pub use index::{DriverIndex, DEFAULT_CELL_M};
pub use matching::hungarian;
pub use quality::{quality_report, random_city, scale_report, QualityReport, ScaleReport, Scenario};
pub use readiness::{dispatch_slack_s, due_orders, due_orders_live, should_offer_now, DueOrder};
pub use zones::set_matching_threads;

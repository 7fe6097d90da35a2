//! Every order reaches a driver: orders of drivers who sign off, are revoked or fall silent
//! go back to matching (picked-up ones are flagged for ops); ops assign and unassign by
//! hand; the driver's `order_updated` carries the full dropoff; an order shows its proof of
//! delivery and its timeline; sync-back carries the tracking link and the driver's failure
//! reason; the tracking API answers browsers (CORS).

#[path = "api/helpers.rs"]
mod helpers;
// Stores wired to platform stand-ins, for the sync-back edges; this binary uses a part.
#[allow(dead_code)]
#[path = "sync/support.rs"]
mod sync_support;

mod recovery {
    pub mod drivers;
    pub mod edges;
    pub mod events_out;
    pub mod ops;
    pub mod orders;
    pub mod support;
}

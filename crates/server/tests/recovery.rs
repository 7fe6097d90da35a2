//! Every order reaches a driver: orders of drivers who sign off, are revoked or fall silent
//! go back to matching (picked-up ones are flagged for ops); ops assign and unassign by
//! hand; the driver's `order_updated` carries the full dropoff; an order shows its proof of
//! delivery and its timeline.

#[path = "api/helpers.rs"]
mod helpers;

mod recovery {
    pub mod drivers;
    pub mod ops;
    pub mod orders;
    pub mod support;
}

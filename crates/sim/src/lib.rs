//! The fleet and store simulator and load generator behind `lastmile demo`, `lastmile sim`
//! and `lastmile bench`.
//!
//! Owns: a drivable road graph read from OpenStreetMap data (the embedded Helsinki extract,
//! © OpenStreetMap contributors, ODbL), shortest paths and driving along them, seeded city
//! scenarios, simulated stores (signed platform webhooks in the platforms' payload shapes,
//! native orders) and driver apps (WebSocket, GPS, offers, pickup, delivery), and the
//! benchmark scenarios with their reports.
//!
//! Must not: reach into the server's internals. It is a client of the public HTTP and
//! WebSocket API only — the demo starts a server in-process through `lastmile_server::build`
//! and the benchmarks start `lastmile serve` as a child process, but every order, offer and
//! fix goes over the wire. The pure `knn` and `assignment` benchmarks call
//! `lastmile_dispatch` directly, since they measure that crate and not the server, and so
//! does the simulated-time city (`timesim`, `bench city-sim`), with the core ETA model.

pub mod bench;
pub mod city;
pub mod cli;
pub mod client;
pub mod demo;
pub mod driver;
pub mod graph;
pub mod movement;
pub mod payloads;
pub mod scenario;
pub mod stats;
pub mod store;
pub mod timesim;

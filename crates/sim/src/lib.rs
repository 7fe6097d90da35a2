//! Simulator and load generator for Lastmile: a client of the public HTTP/WebSocket API only.
pub mod cli;

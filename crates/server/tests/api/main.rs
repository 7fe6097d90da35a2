//! Black-box tests of the whole server: one integration-test binary.

mod helpers;

mod catalog;
mod edge;
mod eta;
mod foundation;
mod web;

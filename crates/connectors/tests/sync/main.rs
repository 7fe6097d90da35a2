//! Black-box tests of the connector hub against the platform stand-ins: one binary, one
//! module per platform plus the isolation machinery.

mod bigcommerce;
mod helpers;
mod isolation;
mod shopify;
mod woocommerce;

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Integration tests of berth-bundle: write -> open -> verify -> read, and the
//! refusals of the reader on bundles built by hand.

mod hostile;
mod props;
mod roundtrip;
mod tools;
mod util;
mod vectors;

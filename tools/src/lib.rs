//! What surrounds the service without being part of it: signed test data and the
//! relays that serve it, the demo, the benchmark and its yardstick. Only this crate
//! depends on nostr-relay-builder.

// Tools report bad input as errors too: a benchmark that panics measures nothing.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod baseline;
pub mod bench;
pub mod dataset;
pub mod dead;
pub mod demo;
pub mod lnurl;

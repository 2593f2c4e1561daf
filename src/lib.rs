//! nostr-sync keeps a SQL database in step with many Nostr relays.

// Nothing on the service's paths may panic on bad input: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod actors;
pub mod app;
pub mod bench;
pub mod config;
pub mod dataset;
pub mod dead;
pub mod demo;
pub mod fetch;
pub mod http;
pub mod metrics;
pub mod nostr;
pub mod status;
pub mod storage;
pub mod sync;

//! nostr-sync keeps a SQL database in step with many Nostr relays.

pub mod actors;
pub mod app;
pub mod bench;
pub mod config;
pub mod dataset;
pub mod demo;
pub mod metrics;
pub mod storage;

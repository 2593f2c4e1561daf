//! The pipeline. Every arrow is a bounded mailbox (capacities from `[mailbox]`) crossed
//! with `send().await`, so backpressure runs from the database back to each socket.
//!
//! ```text
//!   relay ws ──frames (relay_frames)──▶ RelayActor ×N   (Arbiters shared, one per core)
//!                                          │  Check (dedup)        ┌──────────────┐
//!                                          ├──────────────────────▶│ DedupActor   │ LRU of committed ids
//!                                          │◀── fresh items ───────│              │ + ids in flight
//!                                          │  Verify (chunks)      └──────▲───────┘
//!                                          ├──────▶ VerifyActor ×cores    │ Committed
//!                                          │        (SyncArbiter)         │
//!                                          │  StoreBatch, by author       │
//!                                          └──────▶ StorageActor ×workers ┤──Contribute (aggregator)──▶ AggregatorActor
//!                                                   (shared deadpool)     │                              (timer flush)
//!                                                                         └──Stored (zap receipts)──▶ ZapActor ◀── Learnt ── LnurlActor
//!                                                                                                     (own Arbiter, timer step)
//!          IntervalSupervisor ◀── CycleDone ── RelayActor; Restart ──▶ RelayActor (actix Supervisor)
//!          RegistryActor ── starts / Leave ──▶ RelayActor   (leases on the relay registry)
//! ```
//!
//! Shutdown order (see `app.rs`): the registry actor stops the relay actors and hands
//! back their leases, relay arbiters stop (no new input), storage
//! actors drain what they hold, the aggregator flushes, then the System stops.

pub mod ack;
pub mod aggregator;
pub mod dedup;
pub mod discovery;
pub mod interval;
pub mod item;
pub mod lnurl;
pub mod pipeline;
pub mod registry;
pub mod relay;
pub mod serve;
pub mod sightings;
pub mod storage;
pub mod verify;
pub mod zaps;

/// Health check: every actor answers (see `http::Health`); one that does not within
/// `http::LIVE_WITHIN` fails `/livez`.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Ping;

/// Start nothing new; answers whether work is still in flight. Sent until it answers
/// `false` before an actor's Arbiter is stopped: stopping it mid-call would cancel a
/// database call (which the SQLite wrapper cannot take).
#[derive(actix::Message)]
#[rtype(result = "bool")]
pub struct Quiesce;

/// Answers `Ping` for the given actors.
macro_rules! answers_ping {
    ($($actor:ty),* $(,)?) => {
        $(
            impl actix::Handler<$crate::actors::Ping> for $actor {
                type Result = ();
                fn handle(&mut self, _: $crate::actors::Ping, _: &mut Self::Context) {}
            }
        )*
    };
}
pub(crate) use answers_ping;

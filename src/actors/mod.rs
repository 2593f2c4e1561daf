//! The pipeline. Every arrow is a bounded mailbox (capacities from `[mailbox]`) crossed
//! with `send().await`, so backpressure runs from the database back to each socket.
//!
//! ```text
//!   relay ws ──frames (relay_frames)──▶ RelayActor ×N   (one Arbiter each)
//!                                          │  Check (dedup)        ┌──────────────┐
//!                                          ├──────────────────────▶│ DedupActor   │ LRU of committed ids
//!                                          │◀── fresh items ───────│              │ + ids in flight
//!                                          │  Verify (chunks)      └──────▲───────┘
//!                                          ├──────▶ VerifyActor ×cores    │ Committed
//!                                          │        (SyncArbiter)         │
//!                                          │  StoreBatch, by author       │
//!                                          └──────▶ StorageActor ×workers ┤──Contribute (aggregator)──▶ AggregatorActor
//!                                                   (shared deadpool)     │                              (timer flush)
//!          IntervalSupervisor ◀── CycleDone ── RelayActor; Restart ──▶ RelayActor (actix Supervisor)
//! ```
//!
//! Shutdown order (see `app.rs`): relay arbiters stop first (no new input), storage
//! actors drain what they hold, the aggregator flushes, then the System stops.

pub mod ack;
pub mod aggregator;
pub mod dedup;
pub mod interval;
pub mod relay;
pub mod storage;
pub mod verify;

use std::sync::Arc;

use actix::Addr;
use nostr_sdk::Event;

use self::ack::Pending;
use self::dedup::messages::{Check, Release};
use self::dedup::DedupActor;
use self::storage::messages::StoreBatch;
use self::storage::router::route;
use self::storage::StorageActor;
use self::verify::{Verify, VerifyActor};
use crate::metrics::{Counters, RelayCounters};

/// One received event on its way to storage, with its REQ's commit guard.
pub struct Item {
    pub event: Event,
    pub ack: Pending,
}

/// The addresses a relay actor hands events to.
#[derive(Clone)]
pub struct Pipeline {
    pub dedup: Addr<DedupActor>,
    pub verify: Addr<VerifyActor>,
    pub verify_threads: usize,
    pub storage: Vec<Addr<StorageActor>>,
    pub counters: Arc<Counters>,
}

/// Chunks smaller than this are not worth a thread hop.
const MIN_VERIFY_CHUNK: usize = 32;

impl Pipeline {
    /// Takes `items` through dedup, verification and storage routing. Returns once
    /// every item is queued for storage or resolved.
    pub async fn submit(&self, items: Vec<Item>, relay: &RelayCounters) {
        let mut todo = items;
        while !todo.is_empty() {
            let fresh = match self.dedup.send(Check(todo)).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::error!(error = %e, "dedup actor unavailable");
                    return;
                }
            };
            if fresh.is_empty() {
                return;
            }
            let (valid, invalid) = self.verify(fresh).await;
            let mut released = Vec::with_capacity(invalid.len());
            for (item, reason) in invalid {
                relay.reject(reason);
                released.push(item.event.id);
                item.ack.resolve(false);
            }
            let workers = self.storage.len();
            for (worker, batch) in route(valid, workers, |i: &Item| &i.event.pubkey)
                .into_iter()
                .enumerate()
            {
                if batch.is_empty() {
                    continue;
                }
                if let Err(e) = self.storage[worker].send(StoreBatch(batch)).await {
                    tracing::error!(worker, error = %e, "storage actor unavailable");
                }
            }
            todo = if released.is_empty() {
                Vec::new()
            } else {
                self.dedup.send(Release(released)).await.unwrap_or_default()
            };
        }
    }

    /// Verifies `items` in parallel chunks on the verifier threads.
    async fn verify(&self, items: Vec<Item>) -> (Vec<Item>, Vec<(Item, crate::metrics::Reject)>) {
        let chunk = items
            .len()
            .div_ceil(self.verify_threads.max(1))
            .max(MIN_VERIFY_CHUNK);
        let mut chunks = Vec::new();
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            chunks.push(
                self.verify
                    .send(Verify(items.by_ref().take(chunk).collect())),
            );
        }
        let mut valid = Vec::new();
        let mut invalid = Vec::new();
        for result in futures::future::join_all(chunks).await {
            match result {
                Ok(mut v) => {
                    valid.append(&mut v.valid);
                    invalid.append(&mut v.invalid);
                }
                Err(e) => tracing::error!(error = %e, "verifier unavailable"),
            }
        }
        self.counters
            .verified
            .fetch_add(valid.len() as u64, std::sync::atomic::Ordering::Relaxed);
        (valid, invalid)
    }
}

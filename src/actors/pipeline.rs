//! The addresses a relay actor hands events to, and the path of a relay's batches
//! through dedup, verification and storage.

use std::sync::Arc;

use actix::Addr;
use futures::{Stream, StreamExt};

use crate::actors::dedup::messages::{Check, Committed, Fresh, Release};
use crate::actors::dedup::DedupActor;
use crate::actors::item::Item;
use crate::actors::sightings::Sightings;
use crate::actors::storage::messages::StoreBatch;
use crate::actors::storage::router::route;
use crate::actors::storage::StorageActor;
use crate::actors::verify::{Verify, VerifyActor};
use crate::metrics::{Counters, RelayCounters};
use crate::storage::EventStore;

/// The addresses a relay actor hands events to.
#[derive(Clone)]
pub struct Pipeline {
    pub dedup: Addr<DedupActor>,
    pub verify: Addr<VerifyActor>,
    pub verify_threads: usize,
    pub storage: Vec<StorageHandle>,
    /// For looking up ids the dedup actor's filter may hold.
    pub store: Arc<dyn EventStore>,
    pub counters: Arc<Counters>,
    /// Bytes of raw frames all relays together may hold before parsing
    /// (`mailbox.frame_bytes_total`).
    pub frame_bytes: Arc<tokio::sync::Semaphore>,
    /// Deliveries of copies found stored, for provenance.
    pub sightings: Arc<Sightings>,
}

/// A storage actor and its admission semaphore (one permit per event it may hold).
#[derive(Clone)]
pub struct StorageHandle {
    pub addr: Addr<StorageActor>,
    pub admission: Arc<tokio::sync::Semaphore>,
}

/// Chunks smaller than this are not worth a thread hop.
const MIN_VERIFY_CHUNK: usize = 32;

impl Pipeline {
    /// Runs one relay's batches through dedup, verification and storage, in arrival
    /// order, with up to `depth` batches in verification at once so the verifier
    /// threads never wait for the next batch.
    pub async fn run(
        &self,
        batches: impl Stream<Item = Vec<Item>>,
        relay: &RelayCounters,
        depth: usize,
    ) {
        batches
            .then(|items| self.dedup(items))
            .map(|fresh| self.verify(fresh))
            .buffered(depth)
            .for_each(|(valid, invalid)| async move {
                let parked = self.settle(valid, invalid, relay).await;
                self.submit(parked, relay).await;
            })
            .await;
    }

    /// Takes `items` through the pipeline one step at a time (copies parked behind a
    /// forged in-flight event come back this way).
    pub async fn submit(&self, items: Vec<Item>, relay: &RelayCounters) {
        let mut todo = items;
        while !todo.is_empty() {
            let fresh = self.dedup(todo).await;
            let (valid, invalid) = self.verify(fresh).await;
            todo = self.settle(valid, invalid, relay).await;
        }
    }

    /// The items seen for the first time and not stored; the rest are resolved or
    /// parked.
    async fn dedup(&self, items: Vec<Item>) -> Vec<Item> {
        if items.is_empty() {
            return items;
        }
        let fresh = self.dedup.send(Check(items)).await.unwrap_or_else(|e| {
            // Dropping the items fails their REQs: no cursor moves past them.
            tracing::error!(error = %e, "dedup actor unavailable");
            Fresh::default()
        });
        self.drop_stored(fresh).await
    }

    /// Looks up the ids the committed-id filter may hold (older than the LRU's reach,
    /// or any while it loads) and drops those stored, as committed duplicates: an old
    /// copy costs an indexed lookup, not a signature check. If the lookup fails, all
    /// go on to be verified, as before.
    async fn drop_stored(&self, fresh: Fresh) -> Vec<Item> {
        if fresh.maybe_stored.is_empty() {
            return fresh.items;
        }
        let ids: Vec<String> = fresh.maybe_stored.iter().map(|id| id.to_hex()).collect();
        self.counters
            .stored_lookups
            .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
        // A task of its own: a relay actor's restart may drop this future mid-call
        // (see `relay::detached`).
        let store = self.store.clone();
        let found = match actix_rt::spawn(async move { store.stored_among(&ids).await }).await {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                tracing::debug!(%error, "looking up ids failed; verifying them");
                return fresh.items;
            }
            Err(_) => return fresh.items,
        };
        if found.is_empty() {
            return fresh.items;
        }
        // The few found are parsed back, rather than every fresh item's id formatted.
        let found: std::collections::HashSet<nostr_sdk::EventId> = found
            .iter()
            .filter_map(|id| nostr_sdk::EventId::from_hex(id).ok())
            .collect();
        let (stored, rest): (Vec<Item>, Vec<Item>) = fresh
            .items
            .into_iter()
            .partition(|i| found.contains(&i.event.id));
        let n = stored.len() as u64;
        // The dedup actor remembers them as committed before their claims go (copies
        // parked behind them resolve as duplicates).
        let ids = stored.iter().map(|i| (i.event.id, i.source, 0)).collect();
        for item in &stored {
            self.sightings.add(&item.event, item.source, 0);
        }
        if let Err(e) = self.dedup.send(Committed(ids)).await {
            tracing::error!(error = %e, "dedup actor unavailable");
        }
        stored.into_iter().for_each(Item::settle);
        let c = &self.counters;
        c.found_stored
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        c.duplicates
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        rest
    }

    /// Hands `valid` to storage and counts `invalid`; returns the copies that were
    /// parked behind the invalid ones, to be checked afresh.
    async fn settle(
        &self,
        valid: Vec<Item>,
        invalid: Vec<(Item, crate::metrics::Reject)>,
        relay: &RelayCounters,
    ) -> Vec<Item> {
        let mut released = Vec::with_capacity(invalid.len());
        for (item, reason) in invalid {
            relay.reject(reason);
            released.push(item.event.id);
            item.settle();
        }
        let workers = self.storage.len();
        for (worker, batch) in route(valid, workers, |i: &Item| &i.event.pubkey)
            .into_iter()
            .enumerate()
        {
            if batch.is_empty() {
                continue;
            }
            let handle = &self.storage[worker];
            // Waits while the worker holds its share: this is the backpressure.
            let Ok(permit) = handle
                .admission
                .clone()
                .acquire_many_owned(batch.len() as u32)
                .await
            else {
                tracing::error!(worker, "storage admission closed");
                continue;
            };
            let msg = StoreBatch {
                items: batch,
                permit,
            };
            match handle.addr.send(msg).await {
                // New, valid events on their way to commit: the relay is doing its job
                // (what the watchdog looks for; frames alone are not).
                Ok(()) => {
                    relay
                        .progress
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => tracing::error!(worker, error = %e, "storage actor unavailable"),
            }
        }
        if released.is_empty() {
            return Vec::new();
        }
        self.dedup.send(Release(released)).await.unwrap_or_default()
    }

    /// Verifies `items` in parallel chunks on the verifier threads.
    async fn verify(&self, items: Vec<Item>) -> (Vec<Item>, Vec<(Item, crate::metrics::Reject)>) {
        if items.is_empty() {
            return (items, Vec::new());
        }
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

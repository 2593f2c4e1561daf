//! Deliveries of events that are stored or in flight already (duplicate copies),
//! waiting for the next storage write to record them as provenance (`event_relays`).
//! The dedup actor and the pipeline add to it; each storage write takes what it holds
//! and writes it in the same transaction as its events, or alone when there are none.
//!
//! It holds at most [`HELD`] deliveries: while the database lags, the rest are counted
//! (`provenance_dropped_total`) and logged, never held without bound.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use nostr_sdk::Event;

use crate::metrics::Counters;
use crate::storage::{now_secs, Sighting};

/// Deliveries held at most (48 bytes each): about four writes' worth. While the
/// database stalls, relays keep sending copies; beyond this they are counted, not
/// held (the memory bound holds with a stalled database).
pub const HELD: usize = 20_000;

pub struct Sightings {
    held: Mutex<Vec<Sighting>>,
    counters: Arc<Counters>,
}

impl Sightings {
    pub fn new(counters: Arc<Counters>) -> Self {
        Self {
            held: Mutex::default(),
            counters,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Sighting>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `relay` delivered `event`, stored at row `seq` (0: not known, looked up by id);
    /// ignored for relay ids below 1 (provenance off).
    pub fn add(&self, event: &Event, relay: i32, seq: i64) {
        if relay <= 0 {
            return;
        }
        let mut held = self.held();
        if held.len() < HELD {
            held.push(Sighting::of(event, relay, now_secs(), seq));
            return;
        }
        drop(held);
        let before = self
            .counters
            .provenance_dropped
            .fetch_add(1, Ordering::Relaxed);
        // One line per doubling.
        if (before + 1).is_power_of_two() {
            tracing::warn!(
                total = before + 1,
                "writes lag: deliveries of duplicate copies are not recorded in provenance (provenance_dropped_total)"
            );
        }
    }

    /// Up to `max` of the held deliveries, for a write.
    pub fn take(&self, max: usize) -> Vec<Sighting> {
        let mut held = self.held();
        let n = held.len().min(max);
        held.drain(..n).collect()
    }

    /// Gives back what a failed write took.
    pub fn restore(&self, taken: Vec<Sighting>) {
        self.held().extend(taken);
    }

    pub fn is_empty(&self) -> bool {
        self.held().is_empty()
    }
}

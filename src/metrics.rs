//! Counters: the observable state of the pipeline. Tests, the demo and the benchmark
//! read the same numbers the logs report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Why an event was refused before storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reject {
    InvalidJson,
    BadId,
    BadSignature,
    TooLarge,
    TooManyTags,
    FutureTimestamp,
    UnknownSubscription,
}

impl Reject {
    pub const ALL: [Reject; 7] = [
        Reject::InvalidJson,
        Reject::BadId,
        Reject::BadSignature,
        Reject::TooLarge,
        Reject::TooManyTags,
        Reject::FutureTimestamp,
        Reject::UnknownSubscription,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::InvalidJson => "invalid_json",
            Reject::BadId => "bad_id",
            Reject::BadSignature => "bad_signature",
            Reject::TooLarge => "too_large",
            Reject::TooManyTags => "too_many_tags",
            Reject::FutureTimestamp => "future_timestamp",
            Reject::UnknownSubscription => "unknown_subscription",
        }
    }
}

/// A level that also remembers its peak.
#[derive(Debug, Default)]
pub struct Gauge {
    now: AtomicI64,
    peak: AtomicI64,
}

impl Gauge {
    pub fn add(&self, n: i64) {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.now.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> i64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Per-relay counters.
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub received: AtomicU64,
    pub rejected: [AtomicU64; 7],
    pub notices: AtomicU64,
    pub cycles_ok: AtomicU64,
    pub cycles_failed: AtomicU64,
    pub new_events: AtomicU64,
}

impl RelayCounters {
    pub fn reject(&self, reason: Reject) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// Pipeline-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events the pipeline holds between a relay's websocket and their commit.
    pub held: Arc<Gauge>,
    pub duplicates: AtomicU64,
    pub verified: AtomicU64,
    pub stored: AtomicU64,
    pub conflicts: AtomicU64,
    pub db_commits: AtomicU64,
    pub db_errors: AtomicU64,
    pub aggregated: AtomicU64,
    pub relays: std::sync::Mutex<BTreeMap<String, Arc<RelayCounters>>>,
}

impl Counters {
    pub fn relay(&self, url: &str) -> Arc<RelayCounters> {
        let mut relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
        relays.entry(url.to_owned()).or_default().clone()
    }

    fn sum(&self, f: impl Fn(&RelayCounters) -> u64) -> u64 {
        let relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
        relays.values().map(|r| f(r)).sum()
    }

    pub fn received(&self) -> u64 {
        self.sum(|r| r.received.load(Ordering::Relaxed))
    }

    pub fn rejected(&self) -> u64 {
        self.sum(|r| r.rejected_total())
    }

    pub fn rejected_by(&self, reason: Reject) -> u64 {
        self.sum(|r| r.rejected(reason))
    }

    /// Relays that completed at least `n` cycles, over all relays.
    pub fn relays_with_cycles(&self, n: u64) -> (usize, usize) {
        let relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
        let done = relays
            .values()
            .filter(|r| r.cycles_ok.load(Ordering::Relaxed) >= n)
            .count();
        (done, relays.len())
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

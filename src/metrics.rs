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
    /// Content or a tag holds U+0000, which PostgreSQL text cannot store.
    NulCharacter,
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

/// Receipt-to-commit latencies in buckets of 100 µs up to 10 s, plus the maximum and
/// the sum.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    max_us: AtomicU64,
    sum_us: AtomicU64,
}

const BUCKET_US: u64 = 100;
const BUCKETS: usize = 100_000;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(n={})", self.count())
    }
}

impl Histogram {
    pub fn record(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        let bucket = ((us / BUCKET_US) as usize).min(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Sum of the recorded latencies, in seconds.
    pub fn sum_secs(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Counts regrouped under coarser upper bounds (seconds, ascending, the last one
    /// infinite): each bound's own count, not cumulative.
    pub fn regrouped(&self, bounds_secs: &[f64]) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(bounds_secs.len());
        let mut next = 0;
        for &bound in bounds_secs {
            let last = ((bound * 1e6) as u64 / BUCKET_US).min(BUCKETS as u64) as usize;
            let mut n = 0;
            while next < last {
                n += self.buckets[next].load(Ordering::Relaxed);
                next += 1;
            }
            out.push((bound, n));
        }
        out
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in milliseconds, by bucket upper bound.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        self.max_ms()
    }

    pub fn max_ms(&self) -> f64 {
        self.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

/// Per-relay counters.
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub received: AtomicU64,
    pub rejected: [AtomicU64; 8],
    pub notices: AtomicU64,
    pub cycles_ok: AtomicU64,
    pub cycles_failed: AtomicU64,
    pub new_events: AtomicU64,
    /// 1 while the relay is connected, as the last check saw it.
    pub connected: AtomicU64,
    /// Every filter is synced up to here: the start of the last complete cycle (unix
    /// time; 0 before the first).
    pub cursor: AtomicU64,
    /// The polling interval the supervisor last chose, in milliseconds.
    pub interval_ms: AtomicU64,
    /// Restarts of the relay actor by the watchdog.
    pub restarts: AtomicU64,
    /// The `limit` REQs to this relay carry (config, NIP-11).
    pub page_limit: AtomicU64,
    /// Windows (one filter, one cycle) read completely, and ones that failed.
    pub windows_ok: AtomicU64,
    pub windows_failed: AtomicU64,
    /// Filters the relay refused (CLOSED `auth-required:`, `restricted:`, `blocked:`).
    pub filters_refused: AtomicU64,
    /// Things a window could not read (see `sync::plan::Shortfall`), each logged.
    pub shortfalls: AtomicU64,
    /// NIP-77 reconciliations completed, and events fetched by id after them.
    pub reconciliations: AtomicU64,
    pub fetched_by_id: AtomicU64,
    /// Repair passes completed, and the new events they stored.
    pub repairs: AtomicU64,
    pub repair_found: AtomicU64,
    /// Moves on every batch of frames read and every page committed: what the watchdog
    /// takes as a sign of life.
    pub progress: AtomicU64,
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

/// A Prometheus histogram (prometheus-client) with fixed upper bounds.
#[derive(Debug)]
pub struct Buckets(pub prometheus_client::metrics::histogram::Histogram);

impl Buckets {
    fn new(bounds: &[f64]) -> Self {
        Self(prometheus_client::metrics::histogram::Histogram::new(
            bounds.iter().copied(),
        ))
    }

    pub fn observe(&self, v: f64) {
        self.0.observe(v);
    }
}

/// Storage and aggregation timings, exported as histograms.
#[derive(Debug)]
pub struct Timings {
    /// Seconds per storage transaction (events and tags of one batch).
    pub commit_seconds: Buckets,
    /// Events per storage transaction.
    pub batch_events: Buckets,
    /// Seconds per aggregate flush.
    pub flush_seconds: Buckets,
}

impl Default for Timings {
    fn default() -> Self {
        let secs = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ];
        Self {
            commit_seconds: Buckets::new(&secs),
            batch_events: Buckets::new(&[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
            flush_seconds: Buckets::new(&secs),
        }
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
    /// Valid events the database refused while it answered everything else (see
    /// `StorageActor`); each is logged with the database's error.
    pub unstorable: AtomicU64,
    pub aggregated: AtomicU64,
    /// In-flight ids released because their copy was dropped uncommitted (a restart).
    pub abandoned: AtomicU64,
    /// From an event's frame leaving the socket to the commit of its row.
    pub latency: Histogram,
    pub timings: Timings,
    /// Aggregate deltas waiting for the next flush.
    pub pending_deltas: AtomicU64,
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

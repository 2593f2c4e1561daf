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
    /// Valid, but ephemeral (kinds 20000–29999): never stored.
    Ephemeral,
    /// Valid, but its NIP-40 expiration has passed.
    Expired,
    /// Valid, but its address is too long to be a database key.
    AddressTooLong,
}

impl Reject {
    /// Every reason, in declaration order (the index of its counter).
    pub const ALL: [Reject; 11] = [
        Reject::InvalidJson,
        Reject::BadId,
        Reject::BadSignature,
        Reject::TooLarge,
        Reject::TooManyTags,
        Reject::FutureTimestamp,
        Reject::UnknownSubscription,
        Reject::NulCharacter,
        Reject::Ephemeral,
        Reject::Expired,
        Reject::AddressTooLong,
    ];

    /// The `reason` label on `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Reject::InvalidJson => "invalid_json",
            Reject::BadId => "bad_id",
            Reject::BadSignature => "bad_signature",
            Reject::TooLarge => "too_large",
            Reject::TooManyTags => "too_many_tags",
            Reject::FutureTimestamp => "future_timestamp",
            Reject::UnknownSubscription => "unknown_subscription",
            Reject::NulCharacter => "nul_character",
            Reject::Ephemeral => "ephemeral",
            Reject::Expired => "expired",
            Reject::AddressTooLong => "address_too_long",
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

/// Receipt-to-commit latencies in log-scaled buckets: below 100 µs, then 2% wide up to
/// an hour and a half (900 counters, where linear 100 µs buckets to 10 s took 100,000
/// and saturated there), plus the maximum and the sum. Quantiles are read at a bucket's
/// upper bound, so within 2%.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    max_us: AtomicU64,
    sum_us: AtomicU64,
}

const FIRST_US: f64 = 100.0;
const GROWTH: f64 = 1.02;
const BUCKETS: usize = 900;

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

/// The bucket of `us` microseconds: 0 below 100 µs, else the one whose upper bound
/// (100 µs × 1.02^i) is the first at or above it.
fn bucket(us: u64) -> usize {
    if (us as f64) < FIRST_US {
        return 0;
    }
    let i = ((us as f64 / FIRST_US).ln() / GROWTH.ln()).ceil() as usize;
    i.min(BUCKETS - 1)
}

/// Upper bound of bucket `i`, in microseconds.
fn upper_us(i: usize) -> f64 {
    FIRST_US * GROWTH.powi(i as i32)
}

impl Histogram {
    pub fn record(&self, d: std::time::Duration) {
        let us = d.as_micros() as u64;
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in milliseconds, by bucket upper bound (never above
    /// the maximum recorded).
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
                return (upper_us(i) / 1000.0).min(self.max_ms());
            }
        }
        self.max_ms()
    }

    pub fn max_ms(&self) -> f64 {
        self.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Sum of the recorded latencies, in seconds.
    pub fn sum_secs(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Counts regrouped under coarser upper bounds (seconds, ascending, the last one
    /// infinite): each bound's own count, not cumulative. A bucket goes to the first
    /// bound at or above its upper bound.
    pub fn regrouped(&self, bounds_secs: &[f64]) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = bounds_secs.iter().map(|b| (*b, 0)).collect();
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let upper = upper_us(i) / 1e6;
            if let Some(slot) = out.iter_mut().find(|(bound, _)| *bound >= upper) {
                slot.1 += n;
            } else if let Some(last) = out.last_mut() {
                last.1 += n;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quantiles_within_two_percent_and_no_saturation() {
        let h = Histogram::default();
        for ms in 1..=1_000u64 {
            h.record(Duration::from_millis(ms));
        }
        h.record(Duration::from_secs(3_000));
        for (q, want) in [(0.5, 500.0), (0.99, 990.0)] {
            let got = h.quantile_ms(q);
            assert!((got - want).abs() / want <= 0.021, "q{q}: {got}");
        }
        assert_eq!(h.quantile_ms(1.0), 3_000_000.0);
        let groups = h.regrouped(&[0.01, 1.0, f64::INFINITY]);
        assert_eq!(groups.iter().map(|g| g.1).sum::<u64>(), 1_001);
        // Buckets go by their upper bound: the 2% just under a second count above it.
        assert!((1..=21).contains(&groups[2].1), "{groups:?}");
        assert_eq!(bucket(50), 0);
        assert_eq!(bucket(100), 0);
        assert_eq!(bucket(101), 1);
    }
}

/// Per-relay counters.
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub received: AtomicU64,
    pub rejected: [AtomicU64; Reject::ALL.len()],
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
    /// Our events (and ids looked up) that reconciliations from the fingerprints read:
    /// what they cost beyond the per-second sums.
    pub fingerprint_rows_read: AtomicU64,
    /// Repair passes completed, and the new events they stored.
    pub repairs: AtomicU64,
    pub repair_found: AtomicU64,
    /// Websocket messages over the size limit; each ends its connection.
    pub frames_too_large: AtomicU64,
    /// Moves on every batch of new, valid events handed to storage and every page read
    /// or committed: what the watchdog takes as a sign of life (frames alone are not).
    pub progress: AtomicU64,
    /// Cycles failed since the last good one.
    pub failures_in_row: AtomicU64,
    /// `score()`'s bits (0: not sampled yet).
    score_bits: AtomicU64,
}

/// Counts by state, as the last look found them.
pub type StateCounts = std::sync::Mutex<BTreeMap<&'static str, u64>>;

impl RelayCounters {
    /// Its score over the window (`discovery::score`), once sampled.
    pub fn score(&self) -> Option<f64> {
        let bits = self.score_bits.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    pub fn set_score(&self, score: f64) {
        // 0.0's bits mean "not sampled": a zero score is kept as the smallest above.
        let bits = score.max(f64::MIN_POSITIVE).to_bits();
        self.score_bits.store(bits, Ordering::Relaxed);
    }

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

/// A Prometheus histogram (prometheus-client) with fixed upper bounds, and the sum of
/// what it observed in millionths (for `bench`'s per-stage times). The histogram keeps
/// its own sum, but prometheus-client 0.24 reads it back only with its `test-util`
/// feature.
#[derive(Debug)]
pub struct Buckets(
    pub prometheus_client::metrics::histogram::Histogram,
    AtomicU64,
);

impl Buckets {
    fn new(bounds: &[f64]) -> Self {
        Self(
            prometheus_client::metrics::histogram::Histogram::new(bounds.iter().copied()),
            AtomicU64::new(0),
        )
    }

    pub fn observe(&self, v: f64) {
        self.0.observe(v);
        self.1
            .fetch_add((v * 1e6).max(0.0) as u64, Ordering::Relaxed);
    }

    /// The sum of everything observed.
    pub fn sum(&self) -> f64 {
        self.1.load(Ordering::Relaxed) as f64 / 1e6
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
    /// Seconds the verifier threads spent on each batch (ids, signatures, zap receipts).
    pub verify_seconds: Buckets,
    /// Seconds relay actors spent parsing and classifying each batch of frames.
    pub parse_seconds: Buckets,
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
            verify_seconds: Buckets::new(&secs),
            parse_seconds: Buckets::new(&secs),
        }
    }
}

/// The relay endpoint's counters (`[serve]`).
#[derive(Debug, Default)]
pub struct ServeCounters {
    pub connections: Gauge,
    /// Clients turned away: too many connections.
    pub connections_refused: AtomicU64,
    pub subscriptions: Gauge,
    /// Requests by type (`req`, `count`, `neg`, `event`) and outcome (`ok`,
    /// `invalid`, `blocked`, `rate_limited`, `error`).
    pub requests: std::sync::Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// COUNTs answered from the aggregates (the rest were counted in SQL).
    pub counts_from_aggregates: AtomicU64,
    pub events_sent: AtomicU64,
    /// Clients cut off: their unread replies passed `serve.max_outbound_bytes`, or
    /// they fell behind the live feed.
    pub slow_consumers: AtomicU64,
    /// Clients cut off for their messages: too large, unreadable, or past the rate
    /// limit.
    pub abusive_clients: AtomicU64,
    /// Rows the live feed read from the events table.
    pub feed_rows: AtomicU64,
}

impl ServeCounters {
    pub fn request(&self, kind: &'static str, outcome: &'static str) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((kind, outcome)).or_default() += 1;
    }

    pub fn requests(&self, kind: &str, outcome: &str) -> u64 {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests.get(&(kind, outcome)).copied().unwrap_or(0)
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
    /// The error of the last event write, while writes keep failing.
    pub last_write_error: std::sync::Mutex<Option<String>>,
    /// Valid events the database refused while it answered everything else (see
    /// `StorageActor`); each is logged with the database's error.
    pub unstorable: AtomicU64,
    pub aggregated: AtomicU64,
    /// Events whose aggregate row the database refused while it took the others: they
    /// are claimed counting nothing (each is logged).
    pub aggregates_isolated: AtomicU64,
    /// In-flight ids released because their copy was dropped uncommitted (a restart).
    pub abandoned: AtomicU64,
    /// Fresh ids (not in the LRU) the committed-id filter may hold, looked up in the
    /// database before verification; those found stored (duplicates, not verified
    /// again); and the filter's size.
    pub stored_lookups: AtomicU64,
    pub found_stored: AtomicU64,
    pub dedup_filter_bytes: AtomicU64,
    /// Versions not stored, or removed, because a newer version of their address is
    /// kept (NIP-01).
    pub superseded: AtomicU64,
    /// Events not stored, or removed, because their author deleted them (NIP-09).
    pub deleted: AtomicU64,
    /// Stored events removed because they expired (NIP-40).
    pub expired_purged: AtomicU64,
    /// Removed events whose aggregate contributions were queued for subtraction, and
    /// those subtracted so far.
    pub retractions_queued: AtomicU64,
    pub retracted: AtomicU64,
    /// Ids deletions named past their bound of unseen tombstones (not recorded), the
    /// tombstones for unseen ids removed past `retention.max_unseen_tombstones`, and
    /// how many of those are kept (as of the last sweep).
    pub tombstones_dropped: AtomicU64,
    /// Deliveries not recorded in provenance: more duplicate copies were waiting for a
    /// write than `actors::sightings` holds (the database is slow or down), or their
    /// batch was written event by event after a data error.
    pub provenance_dropped: AtomicU64,
    pub tombstones_evicted: AtomicU64,
    pub tombstones_unseen: AtomicU64,
    /// Zap receipts stored but not counted, by `nostr::zap::ZapReject` (its order).
    pub zap_rejects: [AtomicU64; crate::nostr::zap::ZapReject::ALL.len()],
    /// From an event's frame leaving the socket to the commit of its row.
    pub latency: Histogram,
    pub timings: Timings,
    /// Aggregate deltas waiting for the next flush.
    pub pending_deltas: AtomicU64,
    pub relays: std::sync::Mutex<BTreeMap<String, Arc<RelayCounters>>>,
    /// What relays that left counted, so that totals never go down.
    departed: RelayCounters,
    /// The fleet: registry relays by state (`RelayEntry::state`), leases this instance
    /// holds, leases it took from an instance that lapsed, and sync-state writes
    /// refused because the lease had moved on.
    pub relay_states: StateCounts,
    /// Relays discovery found, by state (candidate, active, blocked, evicted).
    pub discovery_states: StateCounts,
    pub leases_held: AtomicU64,
    pub lease_takeovers: AtomicU64,
    pub lease_writes_refused: AtomicU64,
    pub serve: ServeCounters,
}

impl Counters {
    pub fn relay(&self, url: &str) -> Arc<RelayCounters> {
        let mut relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
        relays.entry(url.to_owned()).or_default().clone()
    }

    /// Drops `url`'s series (it left this instance); its counts stay in the totals.
    pub fn forget_relay(&self, url: &str) {
        let mut relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gone) = relays.remove(url) {
            let add = |to: &AtomicU64, from: &AtomicU64| {
                to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
            };
            add(&self.departed.received, &gone.received);
            for (to, from) in self.departed.rejected.iter().zip(&gone.rejected) {
                add(to, from);
            }
        }
    }

    fn sum(&self, f: impl Fn(&RelayCounters) -> u64) -> u64 {
        let relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
        relays.values().map(|r| f(r)).sum::<u64>() + f(&self.departed)
    }

    pub fn received(&self) -> u64 {
        self.sum(|r| r.received.load(Ordering::Relaxed))
    }

    pub fn rejected(&self) -> u64 {
        self.sum(|r| r.rejected_total())
    }

    /// Why event writes are failing, if the last one failed.
    pub fn write_error(&self) -> Option<String> {
        self.last_write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records how the last event write went.
    pub fn set_write_error(&self, error: Option<String>) {
        *self
            .last_write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = error;
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

    /// Zap receipts judged to count nothing (judgements that made one wait are not
    /// rejections: it is judged again).
    pub fn zaps_rejected(&self) -> u64 {
        crate::nostr::zap::ZapReject::ALL
            .iter()
            .filter(|r| !r.waits())
            .map(|r| self.zap_rejects[*r as usize].load(Ordering::Relaxed))
            .sum()
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

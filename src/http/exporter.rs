//! `/metrics`: the service's counters in the Prometheus text format (OpenMetrics), read
//! at scrape time from the same counters the tests, logs and `bench` use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::metrics::{Buckets, Counters, Reject, RelayCounters, StateCounts, Timings};

/// The metrics, in the Prometheus text format (OpenMetrics); `max_held` is the bound
/// on events the pipeline may hold (`Settings::max_held_events`).
pub fn render(counters: &Arc<Counters>, max_held: u64) -> String {
    let mut registry = Registry::with_prefix("nostr_sync");
    registry.register_collector(Box::new(Snapshot(counters.clone(), max_held)));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        return String::new();
    }
    out
}

/// Reads the service's counters at scrape time: the numbers tests, logs and `bench`
/// use are the ones exported.
#[derive(Debug)]
struct Snapshot(Arc<Counters>, u64);

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BOUNDS: [f64; 14] = [
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];

/// One exported metric: its name (after the `nostr_sync_` prefix; counters get
/// `_total`), its help text, and how it is read.
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    read: Read,
}

/// How a metric is read from the counters at scrape time.
enum Read {
    /// A counter of the whole service.
    Total(fn(&Counters) -> u64),
    /// A gauge of the whole service; the second argument is the held-events bound.
    Level(fn(&Counters, u64) -> i64),
    /// One of the timing histograms.
    Timing(fn(&Timings) -> &Buckets),
    /// The receipt-to-commit latency, regrouped into `LATENCY_BOUNDS`.
    Latency,
    /// A counter per relay (label `relay`).
    PerRelay(fn(&RelayCounters) -> &AtomicU64),
    /// A gauge per relay at unix time `now`; `None` leaves the relay out.
    PerRelayLevel(fn(&RelayCounters, u64) -> Option<f64>),
    /// Per relay and rejection reason (labels `relay`, `reason`).
    Rejected,
    /// Per zap-receipt rejection reason (label `reason`).
    ZapRejected,
    /// Per state (label `state`): `(the counts, the states)`.
    States(fn(&Counters) -> &StateCounts, &'static [&'static str]),
    /// The relay endpoint's requests, by type and outcome (labels `type`, `outcome`).
    Served,
}

const fn metric(name: &'static str, help: &'static str, read: Read) -> Metric {
    Metric { name, help, read }
}

/// Every metric `/metrics` serves, in the order it serves them. docs/operating.md
/// describes each (a test holds the two together).
pub const METRICS: &[Metric] = &[
    metric(
        "duplicates",
        "Copies dropped as already stored or in flight",
        Read::Total(|c| get(&c.duplicates)),
    ),
    metric(
        "verified",
        "Events whose id and signature were checked",
        Read::Total(|c| get(&c.verified)),
    ),
    metric(
        "stored",
        "Events stored as new rows",
        Read::Total(|c| get(&c.stored)),
    ),
    metric(
        "conflicts",
        "Rows another writer had stored first",
        Read::Total(|c| get(&c.conflicts)),
    ),
    metric(
        "db_commits",
        "Storage transactions committed",
        Read::Total(|c| get(&c.db_commits)),
    ),
    metric(
        "db_errors",
        "Storage writes that failed and were retried",
        Read::Total(|c| get(&c.db_errors)),
    ),
    metric(
        "unstorable",
        "Valid events the database refused (logged)",
        Read::Total(|c| get(&c.unstorable)),
    ),
    metric(
        "aggregated",
        "Events whose aggregate deltas were committed",
        Read::Total(|c| get(&c.aggregated)),
    ),
    metric(
        "aggregates_isolated",
        "Events whose aggregate row the database refused (logged), counted nowhere",
        Read::Total(|c| get(&c.aggregates_isolated)),
    ),
    metric(
        "stored_lookups",
        "Ids past the dedup LRU that the committed-id filter may hold, looked up in the database",
        Read::Total(|c| get(&c.stored_lookups)),
    ),
    metric(
        "found_stored",
        "Looked-up ids found stored: duplicates dropped without verifying them again",
        Read::Total(|c| get(&c.found_stored)),
    ),
    metric(
        "dedup_filter_bytes",
        "Bytes of the committed-id Bloom filter",
        Read::Level(|c, _| get(&c.dedup_filter_bytes) as i64),
    ),
    metric(
        "abandoned",
        "In-flight ids released after their copy was dropped",
        Read::Total(|c| get(&c.abandoned)),
    ),
    metric(
        "versions_superseded",
        "Replaceable or addressable versions not stored or removed: a newer one is kept",
        Read::Total(|c| get(&c.superseded)),
    ),
    metric(
        "events_deleted",
        "Events not stored or removed because their author deleted them (NIP-09)",
        Read::Total(|c| get(&c.deleted)),
    ),
    metric(
        "events_expired",
        "Stored events removed once their NIP-40 expiration passed",
        Read::Total(|c| get(&c.expired_purged)),
    ),
    metric(
        "tombstones_unseen",
        "Tombstones kept for ids never stored when their deletion came (as of the last sweep)",
        Read::Level(|c, _| get(&c.tombstones_unseen) as i64),
    ),
    metric(
        "tombstones_dropped",
        "Ids deletions named beyond the 1,000 unseen ones each records",
        Read::Total(|c| get(&c.tombstones_dropped)),
    ),
    metric(
        "provenance_dropped",
        "Deliveries not recorded in provenance (writes lagged, or a batch was isolated)",
        Read::Total(|c| get(&c.provenance_dropped)),
    ),
    metric(
        "tombstones_evicted",
        "Oldest tombstones for unseen ids removed past retention.max_unseen_tombstones",
        Read::Total(|c| get(&c.tombstones_evicted)),
    ),
    metric(
        "aggregate_retractions_queued",
        "Contributions of removed events queued for subtraction",
        Read::Total(|c| get(&c.retractions_queued)),
    ),
    metric(
        "aggregate_retractions",
        "Contributions of removed events subtracted from the aggregates",
        Read::Total(|c| get(&c.retracted)),
    ),
    metric(
        "relays",
        "Relays in the registry, by state (active: synced by the fleet)",
        Read::States(|c| &c.relay_states, &["active", "paused", "disabled"]),
    ),
    metric(
        "discovery_relays",
        "Relays discovery found (candidate: named and admissible, not synced), by state",
        Read::States(
            |c| &c.discovery_states,
            &["candidate", "active", "blocked", "evicted"],
        ),
    ),
    metric(
        "leases_held",
        "Relay leases this instance holds",
        Read::Level(|c, _| get(&c.leases_held) as i64),
    ),
    metric(
        "lease_takeovers",
        "Relay leases taken over from an instance whose lease lapsed",
        Read::Total(|c| get(&c.lease_takeovers)),
    ),
    metric(
        "lease_writes_refused",
        "Cursor and window writes refused because the relay's lease moved on",
        Read::Total(|c| get(&c.lease_writes_refused)),
    ),
    metric(
        "received",
        "EVENT frames received, all relays",
        Read::Total(Counters::received),
    ),
    metric(
        "held_events",
        "Events held between a socket and their commit",
        Read::Level(|c, _| c.held.get()),
    ),
    metric(
        "held_events_peak",
        "Most events held at once",
        Read::Level(|c, _| c.held.peak()),
    ),
    metric(
        "held_events_bound",
        "Most events the pipeline may hold",
        Read::Level(|_, bound| bound as i64),
    ),
    metric(
        "storage_commit_seconds",
        "Seconds per storage transaction",
        Read::Timing(|t| &t.commit_seconds),
    ),
    metric(
        "storage_batch_events",
        "Events per storage transaction",
        Read::Timing(|t| &t.batch_events),
    ),
    metric(
        "aggregate_flush_seconds",
        "Seconds per aggregate flush",
        Read::Timing(|t| &t.flush_seconds),
    ),
    metric(
        "verify_batch_seconds",
        "Seconds a verifier thread spent on a batch (ids, signatures, zap receipts)",
        Read::Timing(|t| &t.verify_seconds),
    ),
    metric(
        "parse_batch_seconds",
        "Seconds a relay actor spent parsing and classifying a batch of frames",
        Read::Timing(|t| &t.parse_seconds),
    ),
    metric(
        "aggregate_pending_deltas",
        "Aggregate deltas waiting for the next flush",
        Read::Level(|c, _| get(&c.pending_deltas) as i64),
    ),
    metric(
        "receipt_to_commit_seconds",
        "From an event's frame leaving the socket to the commit of its row",
        Read::Latency,
    ),
    metric(
        "relay_received",
        "EVENT frames received",
        Read::PerRelay(|r| &r.received),
    ),
    metric(
        "relay_notices",
        "NOTICE frames received",
        Read::PerRelay(|r| &r.notices),
    ),
    metric(
        "relay_novel_events",
        "Events first stored from the relay (no other relay had delivered them)",
        Read::PerRelay(|r| &r.new_events),
    ),
    metric(
        "relay_cycles_ok",
        "Sync cycles completed",
        Read::PerRelay(|r| &r.cycles_ok),
    ),
    metric(
        "relay_cycles_failed",
        "Sync cycles failed",
        Read::PerRelay(|r| &r.cycles_failed),
    ),
    metric(
        "relay_windows_ok",
        "Windows (filter, cycle) read completely",
        Read::PerRelay(|r| &r.windows_ok),
    ),
    metric(
        "relay_windows_failed",
        "Windows that failed (reason in the log)",
        Read::PerRelay(|r| &r.windows_failed),
    ),
    metric(
        "relay_filters_refused",
        "Filters the relay refused (CLOSED auth-required/restricted/blocked)",
        Read::PerRelay(|r| &r.filters_refused),
    ),
    metric(
        "relay_shortfalls",
        "Things a window could not read (logged at warn)",
        Read::PerRelay(|r| &r.shortfalls),
    ),
    metric(
        "relay_reconciliations",
        "NIP-77 reconciliations completed",
        Read::PerRelay(|r| &r.reconciliations),
    ),
    metric(
        "relay_reconcile_rows_read",
        "Stored events read and ids looked up by NIP-77 reconciliations from the per-second fingerprints",
        Read::PerRelay(|r| &r.fingerprint_rows_read),
    ),
    metric(
        "relay_fetched_by_id",
        "Events fetched by id after a reconciliation",
        Read::PerRelay(|r| &r.fetched_by_id),
    ),
    metric(
        "relay_repairs",
        "Repair passes completed",
        Read::PerRelay(|r| &r.repairs),
    ),
    metric(
        "relay_repair_found",
        "New events found by repair passes",
        Read::PerRelay(|r| &r.repair_found),
    ),
    metric(
        "relay_frames_too_large",
        "Websocket messages over the size limit (each ends its connection)",
        Read::PerRelay(|r| &r.frames_too_large),
    ),
    metric(
        "relay_restarts",
        "Relay actor restarts by the watchdog",
        Read::PerRelay(|r| &r.restarts),
    ),
    metric(
        "relay_progress",
        "Batches of new events handed to storage, pages read and committed",
        Read::PerRelay(|r| &r.progress),
    ),
    metric(
        "zap_receipts_rejected",
        "Zap receipts stored but not counted (NIP-57), by reason",
        Read::ZapRejected,
    ),
    metric(
        "relay_rejected",
        "Events rejected before storage, by reason",
        Read::Rejected,
    ),
    metric(
        "relay_connected",
        "1 while the relay is connected",
        Read::PerRelayLevel(|r, _| Some(r.connected.load(Ordering::Relaxed) as f64)),
    ),
    metric(
        "relay_page_limit",
        "The limit REQs to the relay carry (config, NIP-11)",
        Read::PerRelayLevel(|r, _| Some(r.page_limit.load(Ordering::Relaxed) as f64)),
    ),
    metric(
        "relay_cursor_lag_seconds",
        "Now minus the start of the relay's last complete cycle",
        Read::PerRelayLevel(|r, now| {
            let cursor = r.cursor.load(Ordering::Relaxed);
            (cursor > 0).then(|| now.saturating_sub(cursor) as f64)
        }),
    ),
    metric(
        "relay_poll_interval_seconds",
        "The polling interval the supervisor chose last",
        Read::PerRelayLevel(|r, _| Some(r.interval_ms.load(Ordering::Relaxed) as f64 / 1000.0)),
    ),
    metric(
        "serve_connections",
        "Clients connected to the relay endpoint",
        Read::Level(|c, _| c.serve.connections.get()),
    ),
    metric(
        "serve_connections_refused",
        "Clients the relay endpoint turned away (serve.max_connections)",
        Read::Total(|c| get(&c.serve.connections_refused)),
    ),
    metric(
        "serve_subscriptions",
        "Open subscriptions on the relay endpoint",
        Read::Level(|c, _| c.serve.subscriptions.get()),
    ),
    metric(
        "serve_requests",
        "Relay endpoint requests (req, count, neg, event) by outcome",
        Read::Served,
    ),
    metric(
        "serve_counts_from_aggregates",
        "COUNTs the relay endpoint answered from event_stats",
        Read::Total(|c| get(&c.serve.counts_from_aggregates)),
    ),
    metric(
        "serve_events_sent",
        "Events the relay endpoint sent (stored and live)",
        Read::Total(|c| get(&c.serve.events_sent)),
    ),
    metric(
        "serve_slow_consumers",
        "Clients cut off for not reading (serve.max_outbound_bytes) or falling behind",
        Read::Total(|c| get(&c.serve.slow_consumers)),
    ),
    metric(
        "serve_abusive_clients",
        "Clients cut off for their messages (too large, unreadable, past the rate limit)",
        Read::Total(|c| get(&c.serve.abusive_clients)),
    ),
    metric(
        "serve_feed_rows",
        "Rows the relay endpoint's live feed read from the events table",
        Read::Total(|c| get(&c.serve.feed_rows)),
    ),
    metric(
        "relay_score",
        "Share of the relay's events that were novel, times its uptime, over discovery.score_window_secs",
        Read::PerRelayLevel(|r, _| r.score()),
    ),
    metric(
        "relay_failures_in_row",
        "Cycles of the relay that failed since its last good one",
        Read::PerRelayLevel(|r, _| Some(r.failures_in_row.load(Ordering::Relaxed) as f64)),
    ),
];

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (c, bound) = (&self.0, self.1);
        let relays: Vec<(String, Arc<RelayCounters>)> = {
            let relays = c.relays.lock().unwrap_or_else(|e| e.into_inner());
            relays.iter().map(|(u, r)| (u.clone(), r.clone())).collect()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for m in METRICS {
            let kind = match m.read {
                Read::Total(_)
                | Read::PerRelay(_)
                | Read::Rejected
                | Read::ZapRejected
                | Read::Served => MetricType::Counter,
                Read::Level(_) | Read::PerRelayLevel(_) | Read::States(..) => MetricType::Gauge,
                Read::Timing(_) | Read::Latency => MetricType::Histogram,
            };
            let mut family = encoder.encode_descriptor(m.name, m.help, None, kind)?;
            match &m.read {
                Read::Total(read) => ConstCounter::new(read(c)).encode(family)?,
                Read::Level(read) => ConstGauge::new(read(c, bound)).encode(family)?,
                Read::Timing(read) => read(&c.timings).0.encode(family)?,
                Read::Latency => {
                    let buckets = c.latency.regrouped(&LATENCY_BOUNDS);
                    let count = buckets.iter().map(|b| b.1).sum();
                    family.encode_histogram::<Vec<(String, String)>>(
                        c.latency.sum_secs(),
                        count,
                        &buckets,
                        None,
                    )?
                }
                Read::PerRelay(read) => {
                    for (url, r) in &relays {
                        let labels = [("relay", url.as_str())];
                        ConstCounter::new(get(read(r))).encode(family.encode_family(&labels)?)?;
                    }
                }
                Read::PerRelayLevel(read) => {
                    for (url, r) in &relays {
                        if let Some(v) = read(r, now) {
                            let labels = [("relay", url.as_str())];
                            ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                        }
                    }
                }
                Read::Rejected => {
                    for (url, r) in &relays {
                        for reason in Reject::ALL {
                            let labels = [("relay", url.as_str()), ("reason", reason.label())];
                            ConstCounter::new(r.rejected(reason))
                                .encode(family.encode_family(&labels)?)?;
                        }
                    }
                }
                Read::States(of, names) => {
                    let states = of(c).lock().unwrap_or_else(|e| e.into_inner());
                    for &state in names.iter() {
                        let labels = [("state", state)];
                        ConstGauge::new(states.get(state).copied().unwrap_or(0) as i64)
                            .encode(family.encode_family(&labels)?)?;
                    }
                }
                Read::Served => {
                    let requests: Vec<_> = {
                        let r = c.serve.requests.lock().unwrap_or_else(|e| e.into_inner());
                        r.iter().map(|(k, n)| (*k, *n)).collect()
                    };
                    for ((kind, outcome), n) in requests {
                        let labels = [("type", kind), ("outcome", outcome)];
                        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                    }
                }
                Read::ZapRejected => {
                    for reason in crate::nostr::zap::ZapReject::ALL {
                        let labels = [("reason", reason.label())];
                        ConstCounter::new(get(&c.zap_rejects[reason as usize]))
                            .encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::METRICS;

    /// The operator's list of metrics and the exporter's are the same list.
    #[test]
    fn docs_describe_every_metric() {
        let docs = include_str!("../../docs/operating.md");
        for m in METRICS {
            assert!(
                docs.contains(&format!("`{}", m.name)),
                "docs/operating.md does not describe {}",
                m.name
            );
        }
        let mut names: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "a metric is listed twice");
    }
}

//! `/metrics`: the service's counters in the Prometheus text format (OpenMetrics), read
//! at scrape time from the same counters the tests, logs and `bench` use.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Health;
use crate::metrics::{Counters, Reject, RelayCounters};

/// The metrics, in the Prometheus text format (OpenMetrics).
pub fn render(health: &Health) -> String {
    let mut registry = Registry::with_prefix("nostr_sync");
    registry.register_collector(Box::new(Snapshot(health.counters.clone(), health.max_held)));
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

type RelayField = fn(&RelayCounters) -> &std::sync::atomic::AtomicU64;

/// Per-relay counters: name, help, field.
const RELAY_COUNTERS: [(&str, &str, RelayField); 16] = [
    ("relay_received", "EVENT frames received", |r| &r.received),
    ("relay_notices", "NOTICE frames received", |r| &r.notices),
    ("relay_new_events", "Events stored that were new", |r| {
        &r.new_events
    }),
    ("relay_cycles_ok", "Sync cycles completed", |r| &r.cycles_ok),
    ("relay_cycles_failed", "Sync cycles failed", |r| {
        &r.cycles_failed
    }),
    (
        "relay_windows_ok",
        "Windows (filter, cycle) read completely",
        |r| &r.windows_ok,
    ),
    (
        "relay_windows_failed",
        "Windows that failed (reason in the log)",
        |r| &r.windows_failed,
    ),
    (
        "relay_filters_refused",
        "Filters the relay refused (CLOSED auth-required/restricted/blocked)",
        |r| &r.filters_refused,
    ),
    (
        "relay_shortfalls",
        "Things a window could not read (logged at warn)",
        |r| &r.shortfalls,
    ),
    (
        "relay_reconciliations",
        "NIP-77 reconciliations completed",
        |r| &r.reconciliations,
    ),
    (
        "relay_fetched_by_id",
        "Events fetched by id after a reconciliation",
        |r| &r.fetched_by_id,
    ),
    ("relay_repairs", "Repair passes completed", |r| &r.repairs),
    (
        "relay_repair_found",
        "New events found by repair passes",
        |r| &r.repair_found,
    ),
    (
        "relay_frames_too_large",
        "Websocket messages over the size limit (each ends its connection)",
        |r| &r.frames_too_large,
    ),
    (
        "relay_restarts",
        "Relay actor restarts by the watchdog",
        |r| &r.restarts,
    ),
    (
        "relay_progress",
        "Batches of new events handed to storage, pages read and committed",
        |r| &r.progress,
    ),
];

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, u64); 16] = [
            (
                "duplicates",
                "Copies dropped as already stored or in flight",
                get(&c.duplicates),
            ),
            (
                "verified",
                "Events whose id and signature were checked",
                get(&c.verified),
            ),
            ("stored", "Events stored as new rows", get(&c.stored)),
            (
                "conflicts",
                "Rows another writer had stored first",
                get(&c.conflicts),
            ),
            (
                "db_commits",
                "Storage transactions committed",
                get(&c.db_commits),
            ),
            (
                "db_errors",
                "Storage writes that failed and were retried",
                get(&c.db_errors),
            ),
            (
                "unstorable",
                "Valid events the database refused (logged)",
                get(&c.unstorable),
            ),
            (
                "aggregated",
                "Events whose aggregate deltas were committed",
                get(&c.aggregated),
            ),
            (
                "aggregates_isolated",
                "Events whose aggregate row the database refused (logged), counted nowhere",
                get(&c.aggregates_isolated),
            ),
            (
                "abandoned",
                "In-flight ids released after their copy was dropped",
                get(&c.abandoned),
            ),
            (
                "versions_superseded",
                "Replaceable or addressable versions not stored or removed: a newer one is kept",
                get(&c.superseded),
            ),
            (
                "events_deleted",
                "Events not stored or removed because their author deleted them (NIP-09)",
                get(&c.deleted),
            ),
            (
                "events_expired",
                "Stored events removed once their NIP-40 expiration passed",
                get(&c.expired_purged),
            ),
            (
                "aggregate_retractions_queued",
                "Contributions of removed events queued for subtraction",
                get(&c.retractions_queued),
            ),
            (
                "aggregate_retractions",
                "Contributions of removed events subtracted from the aggregates",
                get(&c.retracted),
            ),
            (
                "received",
                "EVENT frames received, all relays",
                c.received(),
            ),
        ];
        for (name, help, v) in counters {
            let counter = ConstCounter::new(v);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, i64); 3] = [
            (
                "held_events",
                "Events held between a socket and their commit",
                c.held.get(),
            ),
            (
                "held_events_peak",
                "Most events held at once",
                c.held.peak(),
            ),
            (
                "held_events_bound",
                "Most events the pipeline may hold",
                self.1 as i64,
            ),
        ];
        for (name, help, v) in gauges {
            let gauge = ConstGauge::new(v);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let t = &c.timings;
        let histograms = [
            (
                "storage_commit_seconds",
                "Seconds per storage transaction",
                &t.commit_seconds,
            ),
            (
                "storage_batch_events",
                "Events per storage transaction",
                &t.batch_events,
            ),
            (
                "aggregate_flush_seconds",
                "Seconds per aggregate flush",
                &t.flush_seconds,
            ),
            (
                "verify_batch_seconds",
                "Seconds a verifier thread spent on a batch (ids, signatures, zap receipts)",
                &t.verify_seconds,
            ),
            (
                "parse_batch_seconds",
                "Seconds a relay actor spent parsing and classifying a batch of frames",
                &t.parse_seconds,
            ),
        ];
        for (name, help, h) in histograms {
            h.0.encode(encoder.encode_descriptor(name, help, None, h.0.metric_type())?)?;
        }
        let pending = ConstGauge::new(get(&c.pending_deltas) as i64);
        pending.encode(encoder.encode_descriptor(
            "aggregate_pending_deltas",
            "Aggregate deltas waiting for the next flush",
            None,
            pending.metric_type(),
        )?)?;
        let mut latency = encoder.encode_descriptor(
            "receipt_to_commit_seconds",
            "From an event's frame leaving the socket to the commit of its row",
            None,
            MetricType::Histogram,
        )?;
        let buckets = c.latency.regrouped(&LATENCY_BOUNDS);
        let count = buckets.iter().map(|b| b.1).sum();
        latency.encode_histogram::<Vec<(String, String)>>(
            c.latency.sum_secs(),
            count,
            &buckets,
            None,
        )?;

        let relays: Vec<(String, Arc<RelayCounters>)> = {
            let relays = c.relays.lock().unwrap_or_else(|e| e.into_inner());
            relays.iter().map(|(u, r)| (u.clone(), r.clone())).collect()
        };
        for (name, help, field) in &RELAY_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (url, r) in &relays {
                let labels = [("relay", url.as_str())];
                ConstCounter::new(get(field(r))).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut zaps = encoder.encode_descriptor(
            "zap_receipts_rejected",
            "Zap receipts stored but not counted (NIP-57), by reason",
            None,
            MetricType::Counter,
        )?;
        for reason in crate::nostr::zap::ZapReject::ALL {
            let labels = [("reason", reason.label())];
            ConstCounter::new(get(&c.zap_rejects[reason as usize]))
                .encode(zaps.encode_family(&labels)?)?;
        }
        let mut rejected = encoder.encode_descriptor(
            "relay_rejected",
            "Events rejected before storage, by reason",
            None,
            MetricType::Counter,
        )?;
        for (url, r) in &relays {
            for reason in Reject::ALL {
                let labels = [("relay", url.as_str()), ("reason", reason.label())];
                ConstCounter::new(r.rejected(reason)).encode(rejected.encode_family(&labels)?)?;
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Per-relay gauges; `None` leaves a relay out (no lag before its first cycle).
        type RelayGauge = fn(&RelayCounters, u64) -> Option<f64>;
        let relay_gauges: [(&str, &str, RelayGauge); 4] = [
            (
                "relay_connected",
                "1 while the relay is connected",
                |r, _| Some(r.connected.load(Ordering::Relaxed) as f64),
            ),
            (
                "relay_page_limit",
                "The limit REQs to the relay carry (config, NIP-11)",
                |r, _| Some(r.page_limit.load(Ordering::Relaxed) as f64),
            ),
            (
                "relay_cursor_lag_seconds",
                "Now minus the start of the relay's last complete cycle",
                |r, now| {
                    let cursor = r.cursor.load(Ordering::Relaxed);
                    (cursor > 0).then(|| now.saturating_sub(cursor) as f64)
                },
            ),
            (
                "relay_poll_interval_seconds",
                "The polling interval the supervisor chose last",
                |r, _| Some(r.interval_ms.load(Ordering::Relaxed) as f64 / 1000.0),
            ),
        ];
        for (name, help, value) in relay_gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (url, r) in &relays {
                if let Some(v) = value(r, now) {
                    let labels = [("relay", url.as_str())];
                    ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

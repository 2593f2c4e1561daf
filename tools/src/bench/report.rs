//! What a run measured, and the table it prints.

use serde::Serialize;

use super::args::{Mode, Profile};
use super::system::{IDLE_SETTLE, IDLE_SPELL};

#[derive(Debug, Clone, Serialize)]
pub struct Stages {
    /// Relay actors parsing and classifying frames.
    pub parse_s: f64,
    /// Verifier threads: ids, signatures, zap receipts.
    pub verify_s: f64,
    /// Storage transactions, from the write call to its commit.
    pub store_s: f64,
    /// Aggregate flushes.
    pub aggregate_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub profile: Profile,
    pub db: String,
    pub mode: Mode,
    pub relays: usize,
    pub unique_events: u64,
    pub received_events: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub elapsed_s: f64,
    pub unique_per_s: f64,
    pub received_per_s: f64,
    pub latency_ms: Latency,
    pub db_commits: u64,
    pub db_commits_per_s: f64,
    pub peak_rss_mb: f64,
    pub cpu_s: f64,
    /// CPU time of the relay process over the same run: on this machine the relays
    /// and the syncer share two cores.
    pub relays_cpu_s: f64,
    /// The syncer's CPU per unique event and per event received, in microseconds.
    /// The cost of a duplicate copy is the difference of two runs: (cpu at overlap 1.0
    /// minus cpu at overlap 0) / the duplicates of the first.
    pub cpu_us_per_unique: f64,
    pub cpu_us_per_received: f64,
    /// Seconds spent inside each stage, summed over the threads that run it (wall time
    /// on those threads: on a busy machine it includes time waiting for a core).
    pub stages: Stages,
    /// Misbehaving relays configured beside the good ones.
    pub dead_relays: usize,
    /// The syncer's most OS threads, sampled every second.
    pub peak_threads: usize,
    /// With dead relays: the syncer's CPU over an idle spell after the sync, in % of
    /// one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_cpu_pct: Option<f64>,
    /// Zap receipts waiting for their recipient's server when the live window opened,
    /// and the seconds from its opening until all of them counted.
    pub pending_zaps: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zaps_settled_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup: Option<f64>,
    /// With `--discovery`: seconds from the start until every bench relay was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relays_found_s: Option<f64>,
    /// Whether provenance was recorded (`storage.provenance`), its rows per stored
    /// event, and what the database holds on disk per stored event (tables, indexes).
    pub provenance: bool,
    pub provenance_per_event: f64,
    pub db_bytes_per_event: f64,
    /// With `--serve`: the relay endpoint over the database the run filled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve: Option<super::serve::ServeReport>,
}

pub(super) fn print_table(reports: &[Report]) {
    println!(
        "\n{:<9} {:<8} {:<8} {:>6} {:>9} {:>9} {:>9} {:>8} {:>10} {:>11} {:>7} {:>7} {:>8} {:>9} {:>7} {:>6} {:>8} {:>9}",
        "profile", "db", "mode", "relays", "unique", "received", "dups", "elapsed", "unique/s", "received/s",
        "p50 ms", "p99 ms", "commits", "commits/s", "rss MB", "cpu s", "relays s", "µs/unique"
    );
    for r in reports {
        println!(
            "{:<9} {:<8} {:<8} {:>6} {:>9} {:>9} {:>9} {:>8.2} {:>10.0} {:>11.0} {:>7.1} {:>7.1} {:>8} {:>9.1} {:>7.1} {:>6.1} {:>8.1} {:>9.1}",
            format!("{:?}", r.profile).to_lowercase(),
            r.db,
            format!("{:?}", r.mode).to_lowercase(),
            r.relays,
            r.unique_events,
            r.received_events,
            r.duplicates,
            r.elapsed_s,
            r.unique_per_s,
            r.received_per_s,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.db_commits,
            r.db_commits_per_s,
            r.peak_rss_mb,
            r.cpu_s,
            r.relays_cpu_s,
            r.cpu_us_per_unique
        );
    }
    for r in reports {
        let s = &r.stages;
        println!(
            "stages ({}): parse {:.1} s, verify {:.1} s, store {:.1} s, aggregate {:.1} s",
            format!("{:?}", r.profile).to_lowercase(),
            s.parse_s,
            s.verify_s,
            s.store_s,
            s.aggregate_s
        );
    }
    for r in reports {
        println!(
            "threads ({}): at most {}{}",
            format!("{:?}", r.profile).to_lowercase(),
            r.peak_threads,
            match r.idle_cpu_pct {
                Some(cpu) => format!(
                    "; with {} dead relays, idle CPU {cpu:.2}% of a core over {} s, {} s after the sync",
                    r.dead_relays,
                    IDLE_SPELL.as_secs(),
                    IDLE_SETTLE.as_secs()
                ),
                None => String::new(),
            }
        );
    }
    for r in reports {
        println!(
            "disk ({}): {:.0} bytes per stored event; provenance {}, {:.2} relays per event",
            format!("{:?}", r.profile).to_lowercase(),
            r.db_bytes_per_event,
            if r.provenance { "on" } else { "off" },
            r.provenance_per_event
        );
    }
    for r in reports {
        if let Some(s) = r.relays_found_s {
            println!(
                "discovery ({}): all {} relays found {s:.1} s after the start",
                format!("{:?}", r.profile).to_lowercase(),
                r.relays
            );
        }
    }
    for r in reports {
        if let Some(s) = r.zaps_settled_s {
            println!(
                "pending zaps ({}): {} receipts counted {s:.1} s into the live window",
                format!("{:?}", r.profile).to_lowercase(),
                r.pending_zaps
            );
        }
    }
    for r in reports {
        if let Some(s) = &r.serve {
            s.print();
        }
    }
    if let Some(s) = reports.last().and_then(|r| r.speedup) {
        println!("speedup (default / baseline unique events/s): {s:.1}x");
    }
}

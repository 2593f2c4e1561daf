//! The benchmark's command line.

use std::path::PathBuf;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Backfill,
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The shipped defaults.
    Default,
    /// The Go predecessor's design ([`crate::baseline`]): one storage worker, one
    /// transaction per event, a database lookup instead of the LRU, aggregates updated
    /// inline.
    Baseline,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Database URL; default: a fresh SQLite file. A PostgreSQL URL gets a fresh schema.
    #[arg(long)]
    pub db: Option<String>,
    /// Relays (in the child process).
    #[arg(long, default_value_t = 4)]
    pub relays: usize,
    /// Unique events (backfill).
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Fraction of events that also appear on each other relay.
    #[arg(long, default_value_t = 0.5)]
    pub overlap: f64,
    #[arg(long, value_enum, default_value = "backfill")]
    pub mode: Mode,
    /// Events/s published during live mode.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Seconds of live publishing.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    #[arg(long, value_enum, default_value = "default")]
    pub profile: Profile,
    /// Run the baseline and the default profile and print the ratio.
    #[arg(long)]
    pub compare: bool,
    /// Write the report(s) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Most events a bench relay returns for one REQ (silently, as public relays do):
    /// one value for every relay, or one per relay (`100,500,5000,0`); 0 is unclamped.
    #[arg(long, value_delimiter = ',', default_value = "500")]
    pub relay_limit: Vec<usize>,
    /// Fraction of the events the database already holds when the run starts (as if
    /// other relays had given them): measures catch-up. Backfill only.
    #[arg(long, default_value_t = 0.0)]
    pub held: f64,
    /// Where signed events are cached.
    #[arg(long, default_value = ".bench-cache")]
    pub cache_dir: PathBuf,
    /// Misbehaving relays configured beside the good ones, in turn silent (TCP
    /// accepted, nothing said), wedged (handshake, then nothing), junk (handshake, then
    /// binary and unparsable frames without end) and closed (connection refused). The
    /// run then also measures threads and the CPU of an idle spell after the sync.
    #[arg(long, default_value_t = 0)]
    pub dead_relays: usize,
    /// Zap receipts for one recipient stored before a live run, waiting for the
    /// recipient's LNURL server (`zap_verification = "lnurl"`); the recipient's profile,
    /// naming a loopback LNURL server, is published as the live window opens, so that
    /// all of them are judged during it. The run then also reports how long they took
    /// to count. Live only.
    #[arg(long, default_value_t = 0)]
    pub pending_zaps: usize,
    /// Syncer processes sharing the relays through the registry (backfill; several
    /// need a PostgreSQL --db); 0: one syncer in this process, as usual.
    #[arg(long, default_value_t = 0)]
    pub instances: usize,
    /// Find the relays through outbox discovery (NIP-65): each author's events are on
    /// the relay its relay list names, a seed relay holds the lists, and the syncer is
    /// given the seed relay alone. Reports the seconds until every relay was found.
    /// Backfill; its events are signed apart (cached with their authors' keys).
    #[arg(long)]
    pub discovery: bool,
    /// After the backfill, serve the database as a relay (`[serve]`) and measure it:
    /// paging the whole history at `limit` 500, COUNT round trips for 10,000 notes,
    /// and live fan-out to 1,000 subscriptions while events are committed at
    /// `--rate` per second. Backfill, in one process.
    #[arg(long)]
    pub serve: bool,
}

//! `nostr-sync-tools bench`: the real pipeline against real relays on loopback.
//!
//! The relays run in a child process (`nostr-sync-tools bench-relays`), so the syncer's CPU
//! and memory are its own. Events are signed once and cached on disk; the run checks
//! its own result (stored count and aggregates) and fails if they differ.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use nostr_sdk::{Event, JsonUtil, Timestamp};
use serde::Serialize;

use crate::dataset::{expected_stats, place, sign_events, EventMaker, HostedRelay};
use nostr_sync::app::App;
use nostr_sync::config::Settings;
use nostr_sync::metrics::Counters;
use nostr_sync::nostr::aggregate::StatsDelta;
use nostr_sync::storage::{self, migrate, Backend};

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
}

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup: Option<f64>,
}

/// Runs the benchmark; must be called outside any async runtime.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.relays > 0, "--relays must be at least 1");
    ensure!(
        args.relay_limit.len() == 1 || args.relay_limit.len() == args.relays,
        "--relay-limit takes one value or one per relay"
    );
    ensure!(
        (0.0..1.0).contains(&args.held) && (args.held == 0.0 || args.mode == Mode::Backfill),
        "--held must be within 0..1, in backfill mode"
    );
    ensure!(
        (0.0..=1.0).contains(&args.overlap),
        "--overlap must be within 0..=1"
    );
    let events_file = match args.mode {
        Mode::Backfill => Some(cached_events(&args.cache_dir, args.events)?),
        Mode::Live => None,
    };
    let profiles = if args.compare {
        vec![Profile::Baseline, Profile::Default]
    } else {
        vec![args.profile]
    };
    let mut reports: Vec<Report> = Vec::new();
    for profile in profiles {
        let report = run_profile(&args, profile, events_file.as_deref())?;
        reports.push(report);
    }
    if let [baseline, default] = reports.as_mut_slice() {
        default.speedup = Some(default.unique_per_s / baseline.unique_per_s.max(f64::MIN_POSITIVE));
    }
    print_table(&reports);
    if let Some(path) = &args.json {
        let json = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])?
        } else {
            serde_json::to_string_pretty(&reports)?
        };
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run_profile(
    args: &BenchArgs,
    profile: Profile,
    events_file: Option<&Path>,
) -> anyhow::Result<Report> {
    let db = BenchDb::fresh(args.db.as_deref())?;
    migrate::run_pending(&db.url)?;
    if let (Some(file), true) = (events_file, args.held > 0.0) {
        hold(&db.url, file, args.held)?;
    }
    let mut relays = RelayProcess::spawn(args, events_file)?;
    // Defaults plus any NOSTR_SYNC__* overrides, so a tuning can be measured as is.
    let mut settings = Settings::load(None)?;
    settings.relays = relays.urls.clone();
    settings.database.url = db.url.clone();
    settings.sync.live = args.mode == Mode::Live;
    settings.sync.eose_timeout_secs = 120;
    settings.http.listen = String::new();
    // The generated receipts come from a zapper with no LNURL server; the check below
    // counts them as they hold together.
    settings.aggregates.zap_verification = nostr_sync::config::ZapVerification::None;
    if profile == Profile::Baseline {
        settings.dedup.lru_capacity = 1;
        settings.storage.workers = 1;
        settings.sync.performance.batch_size = 1;
        settings.sync.performance.max_batch_rows = 1;
        settings.sync.performance.min_commit_interval_ms = 0;
    }
    reset_peak_rss();
    let relay_stat = format!("/proc/{}/stat", relays.child.id());
    let cpu_before = cpu_seconds("/proc/self/stat");
    let relays_before = cpu_seconds(&relay_stat);
    PEAK_THREADS.store(0, std::sync::atomic::Ordering::Relaxed);
    let outcome = actix_rt::System::new().block_on(sync(args, profile, settings, &mut relays));
    let cpu_s = cpu_seconds("/proc/self/stat") - cpu_before;
    let relays_cpu_s = cpu_seconds(&relay_stat) - relays_before;
    let peak_rss_mb = peak_rss_mb();
    relays.stop();
    let (counters, elapsed, mut expected, idle_cpu_pct) = outcome?;
    if args.mode == Mode::Backfill {
        expected.stats = Some(load_expected_stats(&args.cache_dir, args.events)?);
    }

    // Check the result against what the relays were given.
    let (count, stats, recount) = actix_rt::System::new().block_on(async {
        let store = storage::open(&db.url, 2).await?;
        let count = store.count_events().await?;
        let stats = store.stats().await?;
        let recount = storage::recount(&*store).await?;
        anyhow::Ok((count, stats, recount))
    })?;
    ensure!(
        count as u64 == expected.count,
        "stored {count} events, expected {}",
        expected.count
    );
    if let Some(want) = &expected.stats {
        ensure!(
            &stats == want,
            "aggregates differ from the generated events"
        );
    }
    ensure!(
        stats == recount,
        "aggregates differ from a recount of the stored events"
    );

    let stored = Counters::get(&counters.stored);
    let secs = elapsed.as_secs_f64();
    let commits = Counters::get(&counters.db_commits) - expected.commits_before;
    let l = &counters.latency;
    Ok(Report {
        profile,
        db: match Backend::of_url(&db.url) {
            Some(Backend::Postgres) => "postgres".into(),
            _ => "sqlite".into(),
        },
        mode: args.mode,
        relays: args.relays,
        unique_events: stored,
        received_events: counters.received(),
        duplicates: Counters::get(&counters.duplicates),
        rejected: counters.rejected(),
        elapsed_s: secs,
        unique_per_s: stored as f64 / secs,
        received_per_s: counters.received() as f64 / secs,
        latency_ms: Latency {
            p50: l.quantile_ms(0.50),
            p95: l.quantile_ms(0.95),
            p99: l.quantile_ms(0.99),
            max: l.max_ms(),
        },
        db_commits: commits,
        db_commits_per_s: commits as f64 / secs,
        peak_rss_mb,
        cpu_s,
        relays_cpu_s,
        cpu_us_per_unique: cpu_s * 1e6 / stored.max(1) as f64,
        cpu_us_per_received: cpu_s * 1e6 / counters.received().max(1) as f64,
        stages: Stages {
            parse_s: counters.timings.parse_seconds.sum(),
            verify_s: counters.timings.verify_seconds.sum(),
            store_s: counters.timings.commit_seconds.sum(),
            aggregate_s: counters.timings.flush_seconds.sum(),
        },
        speedup: None,
        dead_relays: args.dead_relays,
        peak_threads: PEAK_THREADS.load(std::sync::atomic::Ordering::Relaxed),
        idle_cpu_pct,
    })
}

/// The syncer's most threads seen by `progress`.
static PEAK_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// This process's OS threads now.
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The idle spell measured after a sync with dead relays, and the wait before it.
const IDLE_SPELL: Duration = Duration::from_secs(30);
const IDLE_SETTLE: Duration = Duration::from_secs(60);

/// Until every good relay (the first `good` URLs) finished a cycle.
async fn good_relays_synced(app: &App, urls: &[String], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if urls
            .iter()
            .all(|u| Counters::get(&app.counters.relay(u).cycles_ok) >= 1)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Stores a fraction `held` of the events (every one whose position falls in it) and
/// their aggregates before the run, outside the measurement.
fn hold(url: &str, events_file: &Path, held: f64) -> anyhow::Result<()> {
    let events = load_events(events_file)?;
    let keep = |i: usize| ((i as f64 * held).floor() - ((i as f64 - 1.0) * held).floor()) >= 1.0;
    let held: Vec<Event> = events
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, e)| e)
        .collect();
    actix_rt::System::new().block_on(async {
        let store = storage::open(url, 2).await?;
        for chunk in held.chunks(5_000) {
            store.insert_events(chunk).await?;
        }
        nostr_sync::actors::aggregator::apply_backlog(&*store, &Default::default()).await?;
        eprintln!("  the database holds {} events before the run", held.len());
        anyhow::Ok(())
    })
}

/// What the run must end with.
struct Expected {
    count: u64,
    /// Generated with the events for backfill; live runs check against a recount instead.
    stats: Option<HashMap<String, StatsDelta>>,
    /// Commits made before the measured window (live mode's initial cycles).
    commits_before: u64,
}

async fn sync(
    args: &BenchArgs,
    profile: Profile,
    settings: Settings,
    relays: &mut RelayProcess,
) -> anyhow::Result<(Arc<Counters>, Duration, Expected, Option<f64>)> {
    let started = Instant::now();
    let good: Vec<String> = settings.relays[..args.relays].to_vec();
    let app = match profile {
        Profile::Baseline => {
            App::start_with(settings, |store| Arc::new(crate::baseline::Baseline(store))).await?
        }
        Profile::Default => App::start(settings).await?,
    };
    let counters = app.counters.clone();
    let mut idle_cpu_pct = None;
    let result: anyhow::Result<(Duration, Expected)> = match args.mode {
        Mode::Backfill => {
            let total = args.events as u64;
            let done = progress(&app, total, started, async {
                good_relays_synced(&app, &good, Duration::from_secs(3_600)).await
            })
            .await;
            let elapsed = started.elapsed();
            ensure!(done, "relays did not finish their first cycle");
            if args.dead_relays > 0 {
                // Dead relays keep failing and backing off; the good ones poll. Once
                // the backoffs have grown (a minute), the spell is measured.
                tokio::time::sleep(IDLE_SETTLE).await;
                let before = cpu_seconds("/proc/self/stat");
                let spell = Instant::now();
                progress(&app, total, started, async {
                    tokio::time::sleep(IDLE_SPELL).await;
                    true
                })
                .await;
                let cpu = cpu_seconds("/proc/self/stat") - before;
                idle_cpu_pct = Some(100.0 * cpu / spell.elapsed().as_secs_f64());
            }
            // The generated aggregates are loaded once the peak RSS is read: at a
            // million events they took some 80 MB of peak RSS.
            let expected = Expected {
                count: total,
                stats: None,
                commits_before: 0,
            };
            Ok((elapsed, expected))
        }
        Mode::Live => {
            ensure!(
                app.wait_for_cycles(1, Duration::from_secs(60)).await,
                "relays did not connect"
            );
            let total = args.rate * args.duration;
            let live_started = Instant::now();
            // Only the live window counts: the first cycles found empty relays.
            let commits_before = Counters::get(&counters.db_commits);
            relays.go()?;
            let stored = progress(&app, total, live_started, async {
                let deadline = Instant::now() + Duration::from_secs(args.duration + 60);
                while Counters::get(&app.counters.stored) < total && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Counters::get(&app.counters.stored) >= total
            })
            .await;
            ensure!(
                stored,
                "live events were not all stored within a minute of the end"
            );
            let expected = Expected {
                count: total,
                stats: None,
                commits_before,
            };
            Ok((live_started.elapsed(), expected))
        }
    };
    app.shutdown(Duration::from_secs(60)).await;
    let (elapsed, expected) = result?;
    Ok((counters, elapsed, expected, idle_cpu_pct))
}

/// Prints a progress line every second while `work` runs.
async fn progress<F: std::future::Future<Output = bool>>(
    app: &App,
    total: u64,
    started: Instant,
    work: F,
) -> bool {
    let counters = app.counters.clone();
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let done = Counters::get(&counters.stored);
            let secs = started.elapsed().as_secs_f64();
            let rate = done as f64 / secs;
            let eta = if rate > 0.0 {
                (total.saturating_sub(done)) as f64 / rate
            } else {
                f64::INFINITY
            };
            PEAK_THREADS.fetch_max(threads(), std::sync::atomic::Ordering::Relaxed);
            eprint!("\r  {done}/{total} stored, {rate:.0} events/s, eta {eta:.0}s      ");
        }
    };
    let out = tokio::select! {
        done = work => done,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    eprintln!();
    out
}

fn print_table(reports: &[Report]) {
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
    if let Some(s) = reports.last().and_then(|r| r.speedup) {
        println!("speedup (default / baseline unique events/s): {s:.1}x");
    }
}

/// The cached event file for `n` events, signing them first if needed.
fn cached_events(dir: &Path, n: usize) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("events-v2-{n}.jsonl"));
    let stats_path = dir.join(format!("events-v2-{n}.stats.json"));
    if path.exists() && stats_path.exists() {
        return Ok(path);
    }
    eprintln!("signing {n} events once (cached in {})...", path.display());
    let events = sign_events(n, 42);
    // Written aside and renamed, so an interrupted run leaves no half cache.
    let partial = path.with_extension("partial");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&partial)?);
    for e in &events {
        writeln!(out, "{}", e.as_json())?;
    }
    out.flush()?;
    let stats = expected_stats(&events);
    std::fs::write(&stats_path, serde_json::to_string(&to_json_stats(&stats))?)?;
    std::fs::rename(&partial, &path)?;
    // The heap that held the events stays with this process and would count in its
    // peak RSS: measure in a fresh one, which finds the cache.
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let program = args.next().context("no program name")?;
    Err(Command::new(program).args(args).exec().into())
}

fn to_json_stats(stats: &HashMap<String, StatsDelta>) -> HashMap<&str, [i64; 5]> {
    stats
        .iter()
        .map(|(k, d)| {
            (
                k.as_str(),
                [d.reactions, d.replies, d.reposts, d.zaps, d.zap_msats],
            )
        })
        .collect()
}

fn load_expected_stats(dir: &Path, n: usize) -> anyhow::Result<HashMap<String, StatsDelta>> {
    let text = std::fs::read_to_string(dir.join(format!("events-v2-{n}.stats.json")))?;
    let raw: HashMap<String, [i64; 5]> = serde_json::from_str(&text)?;
    Ok(raw
        .into_iter()
        .map(|(k, [reactions, replies, reposts, zaps, zap_msats])| {
            (
                k,
                StatsDelta {
                    reactions,
                    replies,
                    reposts,
                    zaps,
                    zap_msats,
                },
            )
        })
        .collect())
}

fn load_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    BufReader::new(file)
        .lines()
        .map(|line| Ok(Event::from_json(line?)?))
        .collect()
}

/// A database for one run: a fresh SQLite file, or a fresh schema in PostgreSQL.
struct BenchDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

impl BenchDb {
    fn fresh(url: Option<&str>) -> anyhow::Result<BenchDb> {
        match url {
            None => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                Ok(BenchDb {
                    url,
                    _dir: Some(dir),
                    schema: None,
                })
            }
            Some(url) if Backend::of_url(url) == Some(Backend::Sqlite) => {
                let path = storage::sqlite_path(url);
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
                Ok(BenchDb {
                    url: url.to_owned(),
                    _dir: None,
                    schema: None,
                })
            }
            Some(url) if Backend::of_url(url) == Some(Backend::Postgres) => {
                let schema = format!("bench_{:08x}", rand::random::<u32>());
                migrate::execute(url, &format!("CREATE SCHEMA {schema}"))?;
                let sep = if url.contains('?') { '&' } else { '?' };
                Ok(BenchDb {
                    url: format!("{url}{sep}options=-c%20search_path%3D{schema}"),
                    _dir: None,
                    schema: Some((url.to_owned(), schema)),
                })
            }
            Some(url) => bail!("unsupported --db {url:?}: use sqlite:// or postgres://"),
        }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Some((base, schema)) = &self.schema {
            let _ = migrate::execute(base, &format!("DROP SCHEMA {schema} CASCADE"));
        }
    }
}

/// The child process hosting the relays.
struct RelayProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    urls: Vec<String>,
}

impl RelayProcess {
    fn spawn(args: &BenchArgs, events_file: Option<&Path>) -> anyhow::Result<RelayProcess> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("bench-relays")
            .args(["--relays", &args.relays.to_string()])
            .args(["--overlap", &args.overlap.to_string()])
            .args(["--relay-limit", &limits(&args.relay_limit)])
            .args(["--rate", &args.rate.to_string()])
            .args(["--duration", &args.duration.to_string()])
            .args(["--dead-relays", &args.dead_relays.to_string()]);
        if let Some(f) = events_file {
            cmd.arg("--events-file").arg(f);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("relay process stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .next()
            .context("relay process exited before READY")??;
        let urls: Vec<String> = ready
            .strip_prefix("READY ")
            .with_context(|| format!("unexpected line from relay process: {ready}"))?
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        Ok(RelayProcess {
            child,
            stdin,
            lines,
            urls,
        })
    }

    /// Starts live publishing.
    fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("relay process stdin")?;
        writeln!(stdin, "GO")?;
        stdin.flush()?;
        Ok(())
    }

    fn stop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.lines.next();
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    #[arg(long)]
    pub events_file: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub relays: usize,
    #[arg(long, default_value_t = 0.5)]
    pub overlap: f64,
    #[arg(long, value_delimiter = ',', default_value = "500")]
    pub relay_limit: Vec<usize>,
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Misbehaving endpoints to host after the relays (see `BenchArgs::dead_relays`).
    #[arg(long, default_value_t = 0)]
    pub dead_relays: usize,
}

fn limits(l: &[usize]) -> String {
    l.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The REQ cap of relay `r`: its own, or the one for all; 0 is unclamped.
fn relay_limit(limits: &[usize], r: usize) -> usize {
    match limits.get(r).or(limits.last()).copied().unwrap_or(0) {
        0 => usize::MAX / 2,
        n => n,
    }
}

/// `nostr-sync bench-relays`: hosts the relays, prints `READY url...`, and on `GO`
/// publishes `rate` fresh events per second for `duration` seconds.
pub async fn host_relays(args: RelayArgs) -> anyhow::Result<()> {
    let events = match &args.events_file {
        Some(path) => load_events(path)?,
        None => Vec::new(),
    };
    let placement = place(events.len(), args.relays, args.overlap, 42);
    let mut relays = Vec::new();
    for (r, held) in placement.iter().enumerate() {
        let limit = relay_limit(&args.relay_limit, r);
        relays.push(HostedRelay::start(held.iter().map(|i| &events[*i]), limit).await?);
    }
    drop(events);
    let mut urls = Vec::new();
    for r in &relays {
        urls.push(r.url().await);
    }
    for i in 0..args.dead_relays {
        urls.push(crate::dead::start(crate::dead::Dead::ALL[i % 4]).await?);
    }
    println!("READY {}", urls.join(" "));
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    if stdin.read_line(&mut line).await? == 0 {
        return Ok(());
    }
    // GO: publish live events, signed as they go out so they are dated now.
    let mut maker = EventMaker::new(200, rand::random());
    let total = args.rate * args.duration;
    let started = Instant::now();
    let mut rng_state: u64 = 0x9e3779b97f4a7c15;
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / args.rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let event = maker.next(Timestamp::now());
        let home = (i as usize) % relays.len();
        for (r, relay) in relays.iter().enumerate() {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            let roll = (rng_state % 1_000_000) as f64 / 1_000_000.0;
            if r == home || roll < args.overlap {
                if let Err(e) = relay.publish(&event).await {
                    eprintln!("bench relay: publishing {} failed: {e}", event.id);
                }
            }
        }
    }
    println!("PUBLISHED {total}");
    // Keep serving until the syncer is done with us.
    let _ = stdin.read_line(&mut line).await;
    Ok(())
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User plus system CPU time of a process, from its `/proc/<pid>/stat`.
fn cpu_seconds(stat_path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(stat_path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

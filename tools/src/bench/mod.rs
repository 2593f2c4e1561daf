//! `nostr-sync-tools bench`: the real pipeline against real relays on loopback.
//!
//! The relays run in a child process (`nostr-sync-tools bench-relays`), so the syncer's CPU
//! and memory are its own. Events are signed once and cached on disk; the run checks
//! its own result (stored count and aggregates) and fails if they differ.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use nostr_sdk::{Event, EventBuilder, EventId, Keys, Kind, PublicKey, Timestamp};

mod args;
mod data;
mod fleet;
mod relays;
mod report;
mod serve;
mod system;

pub use args::{BenchArgs, Mode, Profile};
pub use fleet::{instance, InstanceArgs};
pub use relays::{host_relays, RelayArgs};

use self::data::{cached_events, load_events, load_expected_stats, BenchDb};
use self::relays::RelayProcess;
use self::report::{print_table, Latency, Report, Stages};
use self::system::{
    cpu_seconds, peak_rss_mb, reset_peak_rss, threads, IDLE_SETTLE, IDLE_SPELL, PEAK_THREADS,
};

use nostr_sync::app::App;
use nostr_sync::config::Settings;
use nostr_sync::metrics::Counters;
use nostr_sync::nostr::aggregate::StatsDelta;
use nostr_sync::nostr::zap::ZapPolicy;
use nostr_sync::storage::{self, migrate, Backend};

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
        args.pending_zaps == 0 || args.mode == Mode::Live,
        "--pending-zaps is for live mode"
    );
    ensure!(
        (0.0..=1.0).contains(&args.overlap),
        "--overlap must be within 0..=1"
    );
    ensure!(
        !args.discovery || (args.mode == Mode::Backfill && args.instances == 0),
        "--discovery is for backfill, in one process"
    );
    ensure!(
        !args.serve || (args.mode == Mode::Backfill && args.instances == 0),
        "--serve is for backfill, in one process"
    );
    let events_file = match args.mode {
        Mode::Backfill => Some(cached_events(&args.cache_dir, args.events, args.discovery)?),
        Mode::Live => None,
    };
    if args.instances > 0 {
        let file = events_file.context("--instances is for backfill")?;
        return fleet::run(&args, &file);
    }
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
    let mut relays = RelayProcess::spawn(args, events_file)?;
    if let (Some(file), true) = (events_file, args.held > 0.0) {
        hold(&db.url, file, args.held, Holders::of(args, &relays))?;
    }
    let pending = match args.pending_zaps {
        0 => None,
        n => Some(pend_zaps(&db.url, n)?),
    };
    let good: Vec<String> = relays.urls[..args.relays].to_vec();
    let mut settings = match &relays.seed {
        Some(seed) => {
            let mut s = bench_settings(&db.url, std::slice::from_ref(seed))?;
            let d = &mut s.discovery;
            d.enabled = true;
            d.allow_private = true;
            d.max_relays = d.max_relays.max(args.relays);
            s
        }
        None => bench_settings(&db.url, &relays.urls)?,
    };
    settings.sync.live = args.mode == Mode::Live;
    // The generated receipts come from a zapper with no LNURL server; the check below
    // counts them as they hold together. With pending zaps, the recipients' servers
    // decide (the generated ones, with none, wait), as by default.
    settings.aggregates.zap_verification = if pending.is_some() {
        settings.aggregates.lnurl_allow_private = true;
        settings.aggregates.lnurl_fetches_per_sec = 1_000;
        settings.aggregates.lnurl_host_fetches_per_sec = 1_000;
        nostr_sync::config::ZapVerification::Lnurl
    } else {
        nostr_sync::config::ZapVerification::None
    };
    let zaps = settings.aggregates.zap_policy();
    let provenance = settings.storage.provenance && profile != Profile::Baseline;
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
    let outcome = actix_rt::System::new().block_on(sync(
        args,
        profile,
        settings,
        &mut relays,
        &good,
        pending.as_ref(),
    ));
    let cpu_s = cpu_seconds("/proc/self/stat") - cpu_before;
    let relays_cpu_s = cpu_seconds(&relay_stat) - relays_before;
    let peak_rss_mb = peak_rss_mb();
    relays.stop();
    let Outcome {
        counters,
        elapsed,
        mut expected,
        idle_cpu_pct,
        zaps_settled_s,
        relays_found_s,
    } = outcome?;
    if let Some(file) = events_file {
        expected.stats = Some(load_expected_stats(file)?);
    }

    // Check the result against what the relays were given.
    let (count, stats, recount, footprint) = actix_rt::System::new().block_on(async {
        let store = storage::open(&db.url, 2).await?;
        let count = store.count_events().await?;
        let stats = store.stats().await?;
        let recount = storage::recount(&*store, &zaps).await?;
        let footprint = store.footprint().await?;
        anyhow::Ok((count, stats, recount, footprint))
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

    let serve = match args.serve && profile == Profile::Default {
        true => Some(serve::measure(&db.url, count as u64, args.rate)?),
        false => None,
    };
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
        relays_found_s,
        provenance,
        provenance_per_event: footprint.provenance_rows as f64 / count.max(1) as f64,
        db_bytes_per_event: footprint.bytes as f64 / count.max(1) as f64,
        serve,
        dead_relays: args.dead_relays,
        peak_threads: PEAK_THREADS.load(std::sync::atomic::Ordering::Relaxed),
        idle_cpu_pct,
        pending_zaps: args.pending_zaps,
        zaps_settled_s,
    })
}

/// The settings of a bench syncer: defaults plus any `NOSTR_SYNC__*` overrides (so a
/// tuning can be measured as is), these relays and database, no live subscription,
/// zap receipts counted as they hold together.
pub(super) fn bench_settings(db: &str, relays: &[String]) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(None)?;
    settings.relays = relays.to_vec();
    settings.database.url = db.to_owned();
    settings.sync.live = false;
    settings.sync.eose_timeout_secs = 120;
    settings.http.listen = String::new();
    // The generated receipts come from a zapper with no LNURL server.
    settings.aggregates.zap_verification = nostr_sync::config::ZapVerification::None;
    Ok(settings)
}

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

/// The bench relays and the events each holds (as `bench-relays` places them).
struct Holders {
    urls: Vec<String>,
    placement: Vec<Vec<usize>>,
}

impl Holders {
    /// The relays of a run without discovery (whose relays are found, not given).
    fn of(args: &BenchArgs, relays: &RelayProcess) -> Option<Holders> {
        (!args.discovery).then(|| Holders {
            urls: relays.urls[..args.relays].to_vec(),
            placement: crate::dataset::place(args.events, args.relays, args.overlap, 42),
        })
    }
}

/// Stores a fraction `held` of the events (every one whose position falls in it) and
/// their aggregates before the run, outside the measurement. With `holders`, each as
/// delivered by every relay holding it (provenance), as a database that synced them
/// from those relays holds them.
fn hold(url: &str, events_file: &Path, held: f64, holders: Option<Holders>) -> anyhow::Result<()> {
    use nostr_sync::storage::registry::NewRelay;
    use nostr_sync::storage::Sighting;
    let events = load_events(events_file)?;
    let keep = |i: usize| ((i as f64 * held).floor() - ((i as f64 - 1.0) * held).floor()) >= 1.0;
    actix_rt::System::new().block_on(async {
        let store = storage::open(url, 2).await?;
        let now = storage::now_secs();
        let mut delivered: Vec<Vec<i32>> = vec![Vec::new(); events.len()];
        if let Some(h) = holders {
            let reg = store.registry();
            for url in &h.urls {
                let relay = NewRelay {
                    url: url.clone(),
                    source: "config",
                    settings: String::new(),
                };
                reg.add_relay(&relay, now).await?;
            }
            let ids: HashMap<String, i32> = reg
                .lease_round("bench-hold", now, 30)
                .await?
                .held
                .into_iter()
                .map(|l| (l.url, l.id))
                .collect();
            reg.leave("bench-hold").await?;
            for (r, placed) in h.placement.iter().enumerate() {
                let id = ids.get(&h.urls[r]).copied().unwrap_or(0);
                for &i in placed {
                    if let Some(d) = delivered.get_mut(i) {
                        d.push(id);
                    }
                }
            }
        }
        let held: Vec<(Event, Vec<i32>)> = events
            .into_iter()
            .zip(delivered)
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, held)| held)
            .collect();
        for chunk in held.chunks(5_000) {
            let events: Vec<Event> = chunk.iter().map(|(e, _)| e.clone()).collect();
            let sightings: Vec<Sighting> = chunk
                .iter()
                .flat_map(|(e, relays)| relays.iter().map(|r| Sighting::of(e, *r, now, 0)))
                .collect();
            store.write_batch(&events, &sightings).await?;
        }
        nostr_sync::actors::aggregator::apply_backlog(&*store, &Default::default()).await?;
        nostr_sync::actors::zaps::judge::judge_backlog(
            &*store.zap_store(),
            &ZapPolicy::default(),
            storage::now_secs(),
            86_400,
        )
        .await?;
        eprintln!("  the database holds {} events before the run", held.len());
        anyhow::Ok(())
    })
}

/// Zap receipts stored before a live run, waiting for their recipient's server.
struct PendingZaps {
    recipient: Keys,
    /// The recipient's note they zap.
    target: EventId,
    /// The key the recipient's LNURL server names, which signed them.
    server: PublicKey,
    count: usize,
}

/// Stores `n` zap receipts for one recipient's note (and the note), signed by a
/// server the database does not know yet, outside the measurement.
fn pend_zaps(url: &str, n: usize) -> anyhow::Result<PendingZaps> {
    let recipient = Keys::generate();
    let zapper = crate::dataset::Zapper::new(9_735);
    let sender = Keys::generate();
    let note = EventBuilder::text_note("zap me")
        .custom_created_at(Timestamp::from(Timestamp::now().as_secs() - 86_400))
        .sign_with_keys(&recipient)?;
    let at = note.created_at.as_secs();
    let receipts: Vec<Event> = (0..n)
        .map(|i| {
            let when = Timestamp::from(at + 1 + (i as u64 % 80_000));
            zapper.receipt(
                &sender,
                (note.id, recipient.public_key()),
                1_000 + i as u64,
                when,
            )
        })
        .collect();
    actix_rt::System::new().block_on(async {
        let store = storage::open(url, 2).await?;
        store.insert_events(std::slice::from_ref(&note)).await?;
        for chunk in receipts.chunks(5_000) {
            store.insert_events(chunk).await?;
        }
        eprintln!("  {n} zap receipts wait for their recipient's server");
        anyhow::Ok(())
    })?;
    Ok(PendingZaps {
        server: zapper.keys.public_key(),
        recipient,
        target: note.id,
        count: n,
    })
}

/// Starts `pending`'s recipient's LNURL server and publishes the recipient's profile
/// naming it to `relay`.
async fn learn_recipient(
    pending: &PendingZaps,
    relay: &str,
) -> anyhow::Result<crate::lnurl::LnurlServer> {
    let server = crate::lnurl::LnurlServer::start(pending.server).await?;
    let content = format!(
        r#"{{"name":"zapped","lud06":"{}"}}"#,
        server.lud06("zapped")
    );
    let profile = EventBuilder::new(Kind::Metadata, content).sign_with_keys(&pending.recipient)?;
    let client = nostr_sdk::Client::default();
    client.add_relay(relay).await?;
    client.connect().await;
    client.send_event(&profile).await?;
    client.disconnect().await;
    Ok(server)
}

/// What the run must end with.
struct Expected {
    count: u64,
    /// Generated with the events for backfill; live runs check against a recount instead.
    stats: Option<HashMap<String, StatsDelta>>,
    /// Commits made before the measured window (live mode's initial cycles).
    commits_before: u64,
}

/// What a run's sync gives back for the report.
struct Outcome {
    counters: Arc<Counters>,
    elapsed: Duration,
    expected: Expected,
    idle_cpu_pct: Option<f64>,
    zaps_settled_s: Option<f64>,
    relays_found_s: Option<f64>,
}

async fn sync(
    args: &BenchArgs,
    profile: Profile,
    settings: Settings,
    relays: &mut RelayProcess,
    good: &[String],
    pending: Option<&PendingZaps>,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let discovering = settings.discovery.enabled;
    let app = match profile {
        Profile::Baseline => {
            App::start_with(settings, |store| Arc::new(crate::baseline::Baseline(store))).await?
        }
        Profile::Default => App::start(settings).await?,
    };
    let counters = app.counters.clone();
    let mut idle_cpu_pct = None;
    let mut zaps_settled_s = None;
    let mut relays_found_s = None;
    let result: anyhow::Result<(Duration, Expected)> = match args.mode {
        Mode::Backfill => {
            // With discovery, the relay lists too (one per author).
            let lists = if discovering {
                let keys =
                    self::data::keys_path(&cached_events(&args.cache_dir, args.events, true)?);
                relays::load_keys(&keys)?.len() as u64
            } else {
                0
            };
            let total = args.events as u64 + lists;
            let found = async {
                if !discovering {
                    return;
                }
                let registry = app.store.registry();
                loop {
                    let rows = registry.relays().await.unwrap_or_default();
                    let n = rows.iter().filter(|r| r.source == "discovered").count();
                    if n >= good.len() {
                        relays_found_s = Some(started.elapsed().as_secs_f64());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            let done = progress(&app, total, started, async {
                let (_, done) = tokio::join!(
                    found,
                    good_relays_synced(&app, good, Duration::from_secs(3_600))
                );
                done
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
            let _server = match pending {
                Some(p) => Some(learn_recipient(p, &good[0]).await?),
                None => None,
            };
            let deadline = Instant::now() + Duration::from_secs(args.duration + 60);
            let settled = async {
                let Some(p) = pending else { return true };
                let target = p.target.to_hex();
                while Instant::now() < deadline {
                    let zaps = app.store.stats_of(&target).await.ok().flatten();
                    if zaps.is_some_and(|s| s.zaps >= p.count as i64) {
                        zaps_settled_s = Some(live_started.elapsed().as_secs_f64());
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                false
            };
            let stored = progress(&app, total + 1, live_started, async {
                // The live events and the recipient's profile, while the receipts settle.
                let stored = async {
                    let want = total + u64::from(pending.is_some());
                    while Counters::get(&app.counters.stored) < want && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                tokio::join!(stored, settled);
                Counters::get(&app.counters.stored) >= total
            })
            .await;
            ensure!(
                pending.is_none() || zaps_settled_s.is_some(),
                "the pending zap receipts were not all counted within a minute of the end"
            );
            ensure!(
                stored,
                "live events were not all stored within a minute of the end"
            );
            let expected = Expected {
                // Live events; with pending zaps, also the receipts, their note and the
                // recipient's profile.
                count: total + pending.map_or(0, |p| p.count as u64 + 2),
                stats: None,
                commits_before,
            };
            Ok((live_started.elapsed(), expected))
        }
    };
    app.shutdown(Duration::from_secs(60)).await;
    // The arbiters outlive this future: stopped, no timer of theirs (the purge every
    // `retention.expiry_check_secs`) opens a transaction while the run's schema is
    // dropped, which would wait for it forever.
    actix_rt::System::current().stop();
    let (elapsed, expected) = result?;
    Ok(Outcome {
        counters,
        elapsed,
        expected,
        idle_cpu_pct,
        zaps_settled_s,
        relays_found_s,
    })
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

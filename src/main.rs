//! CLI entry: parse, load and validate config, init tracing, migrate, start the System.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use nostr_sync::app::App;
use nostr_sync::config::Settings;
use nostr_sync::storage::{self, migrate};

/// jemalloc instead of glibc's malloc: events are allocated on the relay threads and
/// freed on the storage thread, and glibc spent about 5% of the syncer's CPU in malloc
/// and free. Measured with `bench` (README, "Performance"): less CPU per event, a few
/// MB more peak memory; mimalloc doubled the peak.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Two arenas (jemalloc's default is four per core): the hot paths allocate on a few
/// threads only, and each arena holds memory of its own.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"narenas:2\0";

#[derive(Parser)]
#[command(
    name = "nostr-sync",
    version,
    about = "Keeps a SQL database in step with many Nostr relays"
)]
struct Cli {
    /// Config file (TOML); see config/default.toml for every key. Default: the file
    /// in $NOSTR_SYNC_CONFIG, else /etc/nostr-sync/config.toml if it exists.
    #[arg(long, global = true, env = "NOSTR_SYNC_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "NOSTR_SYNC_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service until SIGTERM or Ctrl-C.
    Run,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Sync in-process demo relays into a fresh SQLite file in the temporary directory
    /// (never the configured database) and print the result.
    Demo {
        /// Unique events to generate.
        #[arg(long, default_value_t = 3000)]
        events: usize,
        /// Database to fill instead of a fresh temporary file.
        #[arg(long)]
        db: Option<String>,
    },
    /// Benchmark the pipeline against relays in a child process.
    Bench(nostr_sync::bench::BenchArgs),
    /// The benchmark's relay process.
    #[command(hide = true)]
    BenchRelays(nostr_sync::bench::RelayArgs),
    /// Per relay and filter: cursor and lag, backfill progress, last success, failures
    /// and last error; event counts and migrations. Reads the database only.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One event's aggregates (reactions, replies, reposts, zaps and their amount).
    Stats {
        /// The event: 64 hex digits, note1… or nevent1….
        event: String,
    },
    /// Recount every aggregate from the stored events and compare with the stats table.
    /// `--repair` rewrites the table: stop the service first, or its flushes race it.
    CheckAggregates {
        /// Rewrite the stats table from the recount.
        #[arg(long)]
        repair: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Bench(args) => return exit(nostr_sync::bench::run(args)),
        Command::BenchRelays(args) => {
            let hosted = tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(nostr_sync::bench::host_relays(args)));
            return exit(hosted);
        }
        _ => {}
    }
    let config = cli.config.clone().or_else(|| {
        let system = PathBuf::from("/etc/nostr-sync/config.toml");
        system.exists().then_some(system)
    });
    let settings = match Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::Run) && settings.relay_urls().is_empty() {
        eprintln!("`relays` is empty: there is nothing to sync (set relays in the config file or NOSTR_SYNC__RELAYS)");
        return ExitCode::from(2);
    }
    if let Command::CheckConfig = cli.command {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let mut settings = settings;
    if let Command::Demo { db, .. } = &cli.command {
        settings.database.url = db.clone().unwrap_or_else(|| {
            let file =
                std::env::temp_dir().join(format!("nostr-sync-demo-{}.db", std::process::id()));
            format!("sqlite://{}", file.display())
        });
        println!(
            "demo database: {}",
            migrate::redacted(&settings.database.url)
        );
    }
    // Read-only commands never migrate; `run` does unless told not to.
    let migrate = match &cli.command {
        Command::Run => settings.database.migrate_on_start,
        Command::Migrate | Command::Demo { .. } => true,
        _ => false,
    };
    if migrate {
        match migrate::run_pending(&settings.database.url) {
            Ok(n) if n > 0 => tracing::info!(migrations = n, "database migrated"),
            Ok(_) => {}
            Err(e) => {
                eprintln!("database.url: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let result = match cli.command {
        Command::Migrate => Ok(()),
        Command::Run => {
            exit_on_panic();
            actix_rt::System::new().block_on(run(settings))
        }
        Command::Demo { events, .. } => {
            actix_rt::System::new().block_on(nostr_sync::demo::run(settings, events))
        }
        Command::CheckAggregates { repair } => {
            return actix_rt::System::new().block_on(check_aggregates(settings, repair));
        }
        Command::Status { json } => {
            return actix_rt::System::new().block_on(status(settings, json));
        }
        Command::Stats { event } => {
            return actix_rt::System::new().block_on(stats(settings, &event));
        }
        Command::CheckConfig | Command::Bench(_) | Command::BenchRelays(_) => {
            unreachable!("handled above")
        }
    };
    exit(result)
}

/// A panic is a bug, but it must never leave the service looking alive while an actor
/// that every event passes through is gone (nothing would be stored, nothing would say
/// so). Exit instead: the service manager restarts it, and a restart re-reads whatever
/// was not committed (the same guarantee as after SIGKILL).
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        if nostr_sync::app::SHUTTING_DOWN.load(std::sync::atomic::Ordering::Relaxed) {
            // Tearing down: what was not committed is re-read at the next start anyway.
            return;
        }
        tracing::error!(%info, "internal error: exiting so that the service manager restarts the service");
        std::process::exit(i32::from(PANIC_EXIT));
    }));
}

/// Exit status after a panic (EX_SOFTWARE).
const PANIC_EXIT: u8 = 70;

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // nostr-sdk's own lines repeat what the relay actors log and count (a failed
        // connection, an unreadable frame), some of them once per frame.
        "info,nostr_relay_pool=off,nostr_sdk=off,nostr_relay_builder=off".into()
    });
    // Colour codes only for a person at a terminal, never into a file or the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let timeout = Duration::from_secs(settings.shutdown.timeout_secs);
    // Installed before start-up, so a signal during start-up stops the service cleanly
    // once it is up instead of killing it.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let app = App::start(settings).await?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: committing what was received");
    // A second signal exits at once.
    actix_rt::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    let clean = app.shutdown(timeout).await;
    tracing::info!(clean, "stopped");
    anyhow::ensure!(
        clean,
        "shutdown timed out after {timeout:?}: events received may not be committed"
    );
    Ok(())
}

async fn stats(settings: Settings, event: &str) -> ExitCode {
    use nostr_sdk::nips::nip19::{FromBech32, Nip19Event};
    let id = nostr_sdk::EventId::parse(event)
        .ok()
        .or_else(|| Nip19Event::from_bech32(event).ok().map(|e| e.event_id));
    let Some(id) = id else {
        eprintln!("{event:?} is not an event id (64 hex digits, note1… or nevent1…)");
        return ExitCode::from(2);
    };
    let result = async {
        let store = storage::open(&settings.database.url, 1).await?;
        let stats = store.stats_of(&id.to_hex()).await?;
        anyhow::Ok(stats)
    }
    .await;
    match result {
        Ok(s) => {
            let s = s.unwrap_or_default();
            println!("event     {}", id.to_hex());
            println!("reactions {}", s.reactions);
            println!("replies   {}", s.replies);
            println!("reposts   {}", s.reposts);
            println!("zaps      {}", s.zaps);
            println!("zap msats {}", s.zap_msats);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn status(settings: Settings, json: bool) -> ExitCode {
    let result = async {
        let store = storage::open(&settings.database.url, 1).await?;
        let overview = store.overview().await?;
        let configured: Vec<(String, Vec<String>)> = settings
            .relay_urls()
            .into_iter()
            .map(|url| {
                let keys = settings
                    .filters_for(&url)
                    .iter()
                    .map(nostr_sync::sync::filter::filter_key)
                    .collect();
                (url, keys)
            })
            .collect();
        let now = nostr_sdk::Timestamp::now().as_secs() as i64;
        let report = nostr_sync::status::report(&configured, &overview, now);
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", nostr_sync::status::render(&report));
        }
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn check_aggregates(settings: Settings, repair: bool) -> ExitCode {
    let result = async {
        let store = storage::open(&settings.database.url, 2).await?;
        nostr_sync::actors::lnurl::load_trust(&settings, &*store).await?;
        let recount = storage::recount(&*store).await?;
        let stored = store.stats().await?;
        let mut diffs = 0;
        for id in recount
            .keys()
            .chain(stored.keys().filter(|k| !recount.contains_key(*k)))
        {
            let (want, got) = (
                recount.get(id).copied().unwrap_or_default(),
                stored.get(id).copied().unwrap_or_default(),
            );
            if want != got {
                diffs += 1;
                println!("{id}: stored {got:?}, recount {want:?}");
            }
        }
        println!("{} targets recounted, {diffs} differ", recount.len());
        if diffs > 0 && repair {
            println!(
                "rewriting the stats table: the service must be stopped, or its flushes race this"
            );
            store.replace_stats(&recount).await?;
            println!("stats table rewritten from the recount");
            return Ok::<_, anyhow::Error>(0);
        }
        Ok(diffs)
    }
    .await;
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

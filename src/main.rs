//! CLI entry: parse, load and validate config, init tracing, migrate, start the System.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use nostr_sync::app::App;
use nostr_sync::config::Settings;
use nostr_sync::storage::{self, migrate};

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
    /// Recount the per-second fingerprints that NIP-77 reconciliation reads from the
    /// stored events and compare. `--repair` rewrites the table; it may run beside the
    /// service (its writes wait meanwhile).
    CheckFingerprints {
        /// Rewrite the fingerprints table from the recount.
        #[arg(long)]
        repair: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    nostr_sync::logging::init(matches!(cli.log_format, LogFormat::Json));
    let config = nostr_sync::logging::config_path(cli.config.clone());
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
    // Read-only commands never migrate; `run` does unless told not to.
    let migrate = match &cli.command {
        Command::Run => settings.database.migrate_on_start,
        Command::Migrate => true,
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
        Command::CheckAggregates { repair } => {
            return actix_rt::System::new().block_on(check_aggregates(settings, repair));
        }
        Command::CheckFingerprints { repair } => {
            return actix_rt::System::new().block_on(check_fingerprints(settings, repair));
        }
        Command::Status { json } => {
            return actix_rt::System::new().block_on(status(settings, json));
        }
        Command::Stats { event } => {
            return actix_rt::System::new().block_on(stats(settings, &event));
        }
        Command::CheckConfig => {
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

/// A check's exit code: 0 when nothing differs, 1 when something does, 2 on an error.
fn check_exit(differing: anyhow::Result<u64>) -> ExitCode {
    match differing {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn check_fingerprints(settings: Settings, repair: bool) -> ExitCode {
    let result = async {
        let store = storage::open(&settings.database.url, 2).await?;
        let (recounted, differing) = store.check_fingerprints(repair).await?;
        println!("{recounted} fingerprint rows recounted, {differing} differ");
        if differing > 0 && repair {
            println!("fingerprints table rewritten from the recount");
            return Ok::<_, anyhow::Error>(0);
        }
        Ok(differing)
    }
    .await;
    check_exit(result)
}

async fn check_aggregates(settings: Settings, repair: bool) -> ExitCode {
    let result = async {
        let store = storage::open(&settings.database.url, 2).await?;
        let zaps = settings.aggregates.zap_policy();
        let recount = storage::recount(&*store, &zaps).await?;
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
    check_exit(result)
}

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
    /// One event's aggregates (reactions, replies, reposts, zaps and their amount) and
    /// the relays that delivered it, with when each first did.
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
    /// The relay registry every instance on this database shares: list it, or change
    /// it while the service runs (every instance applies a change within
    /// `fleet.poll_secs`).
    Relays {
        #[command(subcommand)]
        action: RelaysAction,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RelaysAction {
    /// Every relay with its source, state, holder, lease and token.
    List,
    /// Add a relay (or enable and resume it).
    Add {
        url: String,
    },
    /// Remove a relay from the registry (its cursors are kept). A relay the
    /// configuration lists comes back at the next start or SIGHUP.
    Remove {
        url: String,
    },
    /// Stop syncing a relay until `resume`.
    Pause {
        url: String,
    },
    Resume {
        url: String,
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
            if settings.relay_urls().is_empty()
                && !actix_rt::System::new().block_on(registry_has_relays(&settings))
            {
                eprintln!("`relays` is empty and the registry holds none: there is nothing to sync (set relays in the config file or NOSTR_SYNC__RELAYS, or `nostr-sync relays add`)");
                return ExitCode::from(2);
            }
            exit_on_panic();
            actix_rt::System::new().block_on(run(settings, config))
        }
        Command::Relays { action, json } => {
            return actix_rt::System::new().block_on(relays(settings, action, json));
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

async fn run(settings: Settings, config: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let timeout = Duration::from_secs(settings.shutdown.timeout_secs);
    // Installed before start-up, so a signal during start-up stops the service cleanly
    // once it is up instead of killing it.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut running = settings.clone();
    let app = App::start(settings).await?;
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => match Settings::load(config.as_deref()) {
                Ok(read) => running = app.reload(&running, read),
                // Nothing changes; every problem is named.
                Err(e) => tracing::error!(error = %e, "configuration not reloaded"),
            },
        }
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
        let sources = store.sources(&id.to_hex()).await?;
        anyhow::Ok((stats, sources))
    }
    .await;
    match result {
        Ok((s, sources)) => {
            let s = s.unwrap_or_default();
            println!("event     {}", id.to_hex());
            println!("reactions {}", s.reactions);
            println!("replies   {}", s.replies);
            println!("reposts   {}", s.reposts);
            println!("zaps      {}", s.zaps);
            println!("zap msats {}", s.zap_msats);
            for source in sources {
                println!("relay     {} first {}", source.relay, source.first_seen);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether the registry holds a relay to sync (the configuration may list none).
async fn registry_has_relays(settings: &Settings) -> bool {
    match storage::open(&settings.database.url, 1).await {
        Ok(store) => store
            .registry()
            .relays()
            .await
            .is_ok_and(|r| r.iter().any(|r| r.active())),
        Err(_) => false,
    }
}

async fn relays(settings: Settings, action: RelaysAction, json: bool) -> ExitCode {
    use nostr_sync::storage::registry::NewRelay;
    let result = async {
        let store = storage::open(&settings.database.url, 1).await?;
        let registry = store.registry();
        let url = |u: &str| nostr_sync::fleet::normalise(u).map_err(|e| anyhow::anyhow!(e));
        let changed = match &action {
            RelaysAction::List => None,
            RelaysAction::Add { url: u } => {
                let relay = NewRelay {
                    url: url(u)?,
                    source: "cli",
                    settings: String::new(),
                };
                let new = registry.add_relay(&relay, storage::now_secs()).await?;
                Some((relay.url, Some(if new { "added" } else { "enabled" })))
            }
            RelaysAction::Remove { url: u } => {
                let u = url(u)?;
                let was = registry.remove_relay(&u).await?;
                Some((u, was.then_some("removed")))
            }
            RelaysAction::Pause { url: u } | RelaysAction::Resume { url: u } => {
                let (u, pause) = (url(u)?, matches!(action, RelaysAction::Pause { .. }));
                let was = registry.set_paused(&u, pause).await?;
                Some((u, was.then_some(if pause { "paused" } else { "resumed" })))
            }
        };
        if let Some((url, done)) = changed {
            let done = done.ok_or_else(|| anyhow::anyhow!("{url} is not in the registry"))?;
            if json {
                println!("{}", serde_json::json!({ "url": url, "result": done }));
            } else {
                println!("{url}: {done}");
            }
            return Ok(());
        }
        let states = store.overview().await?.states;
        let rows = nostr_sync::status::registry_rows(registry.relays().await?, &states);
        if json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!(
                "{}",
                nostr_sync::status::render_registry(&rows, storage::now_secs())
            );
        }
        anyhow::Ok(())
    }
    .await;
    exit_2(result)
}

async fn status(settings: Settings, json: bool) -> ExitCode {
    let result = async {
        let store = storage::open(&settings.database.url, 1).await?;
        let overview = store.overview().await?;
        let registry = store.registry().relays().await?;
        let filter_keys = |url: &str, stored: &str| -> Vec<String> {
            settings.relay_config(url, stored).map_or(Vec::new(), |c| {
                c.filters
                    .iter()
                    .map(nostr_sync::sync::filter::filter_key)
                    .collect()
            })
        };
        let mut configured: Vec<(String, Vec<String>)> = settings
            .relay_urls()
            .into_iter()
            .map(|url| {
                let keys = filter_keys(&url, "");
                (url, keys)
            })
            .collect();
        // Relays the registry syncs beyond the configuration's (added from the CLI).
        for r in registry.iter().filter(|r| r.active()) {
            if !configured.iter().any(|(url, _)| *url == r.url) {
                configured.push((r.url.clone(), filter_keys(&r.url, &r.settings)));
            }
        }
        let now = nostr_sdk::Timestamp::now().as_secs() as i64;
        let report = nostr_sync::status::report(&configured, &registry, &overview, now);
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", nostr_sync::status::render(&report));
        }
        anyhow::Ok(())
    }
    .await;
    exit_2(result)
}

/// A read or registry command's exit code: 0, or 2 with the error.
fn exit_2(result: anyhow::Result<()>) -> ExitCode {
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

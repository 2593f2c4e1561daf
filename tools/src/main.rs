//! `nostr-sync-tools`: the demo and the benchmark, around the real service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nostr_sync::config::Settings;
use nostr_sync::storage::migrate;
use nostr_sync_tools::bench;

#[derive(Parser)]
#[command(
    name = "nostr-sync-tools",
    version,
    about = "The demo and the benchmark of nostr-sync"
)]
struct Cli {
    /// Config file (TOML) the demo starts from; see config/default.toml. Default: the
    /// file in $NOSTR_SYNC_CONFIG, else /etc/nostr-sync/config.toml if it exists.
    #[arg(long, global = true, env = "NOSTR_SYNC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    Bench(bench::BenchArgs),
    /// The benchmark's relay process.
    #[command(hide = true)]
    BenchRelays(bench::RelayArgs),
    /// One syncer of `bench --instances`.
    #[command(hide = true)]
    BenchInstance(bench::InstanceArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    nostr_sync::logging::init(false);
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::BenchRelays(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(bench::host_relays(args))),
        Command::BenchInstance(args) => bench::instance(args),
        Command::Demo { events, db } => demo(cli.config, events, db),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(config: Option<PathBuf>, events: usize, db: Option<String>) -> anyhow::Result<()> {
    let mut settings = Settings::load(nostr_sync::logging::config_path(config).as_deref())?;
    settings.database.url = db.unwrap_or_else(|| {
        let file = std::env::temp_dir().join(format!("nostr-sync-demo-{}.db", std::process::id()));
        format!("sqlite://{}", file.display())
    });
    println!(
        "demo database: {}",
        migrate::redacted(&settings.database.url)
    );
    migrate::run_pending(&settings.database.url)?;
    actix_rt::System::new().block_on(nostr_sync_tools::demo::run(settings, events))
}

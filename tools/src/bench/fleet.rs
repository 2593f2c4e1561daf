//! `bench --instances N`: N syncer processes on one database sharing the relays through
//! the registry. Each instance is this binary (`bench-instance`), built with the same
//! settings as an in-process run; the report gives each instance's relays, events,
//! unique/s, peak RSS and CPU, and the combined rate, checked exact.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::ensure;

use super::args::{BenchArgs, Mode};
use super::bench_settings;
use super::data::{load_expected_stats, BenchDb};
use super::relays::RelayProcess;
use super::system::{cpu_seconds, peak_rss_mb_of};
use nostr_sync::app::App;
use nostr_sync::storage::{self, migrate};

/// One syncer process of a fleet run (`nostr-sync-tools bench-instance`).
#[derive(Debug, Clone, clap::Args)]
pub struct InstanceArgs {
    #[arg(long)]
    pub db: String,
    #[arg(long, value_delimiter = ',')]
    pub relays: Vec<String>,
    #[arg(long)]
    pub id: String,
    /// Where its `/metrics` are served.
    #[arg(long)]
    pub listen: String,
}

/// Runs one instance until SIGTERM.
pub fn instance(args: InstanceArgs) -> anyhow::Result<()> {
    let mut settings = bench_settings(&args.db, &args.relays)?;
    settings.fleet.instance_id = args.id;
    settings.http.listen = args.listen;
    actix_rt::System::new().block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let app = App::start(settings).await?;
        term.recv().await;
        app.shutdown(Duration::from_secs(60)).await;
        anyhow::Ok(())
    })
}

struct Instance {
    id: String,
    child: Child,
    listen: std::net::SocketAddr,
}

impl Instance {
    fn metric(&self, name: &str) -> f64 {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(self.listen) else {
            return 0.0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }
}

pub(super) fn run(args: &BenchArgs, events_file: &Path) -> anyhow::Result<()> {
    ensure!(args.mode == Mode::Backfill, "--instances is for backfill");
    let db = BenchDb::fresh(args.db.as_deref())?;
    migrate::run_pending(&db.url)?;
    ensure!(
        args.instances == 1 || db.url.starts_with("postgres"),
        "several instances share a PostgreSQL database (--db postgres://…)"
    );
    let mut relays = RelayProcess::spawn(args, Some(events_file))?;
    if args.held > 0.0 {
        super::hold(
            &db.url,
            events_file,
            args.held,
            super::Holders::of(args, &relays),
        )?;
    }
    let total = args.events as i64;
    let started = Instant::now();
    let mut fleet = Vec::new();
    for i in 0..args.instances {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let id = format!("bench-{i}");
        let child = Command::new(std::env::current_exe()?)
            .arg("bench-instance")
            .args([
                "--db",
                &db.url,
                "--id",
                &id,
                "--listen",
                &listen.to_string(),
            ])
            .arg("--relays")
            .arg(relays.urls.join(","))
            .spawn()?;
        fleet.push(Instance { id, child, listen });
    }
    let (store, count) = actix_rt::System::new().block_on(async {
        let store = storage::open(&db.url, 2).await?;
        let deadline = Instant::now() + Duration::from_secs(3_600);
        loop {
            let count = store.count_events().await?;
            if count >= total || Instant::now() > deadline {
                return anyhow::Ok((store, count));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    // Read before stopping: what each holds and did, and its peak memory.
    let rows: Vec<(String, f64, f64, f64, f64)> = fleet
        .iter()
        .map(|i| {
            (
                i.id.clone(),
                i.metric("nostr_sync_leases_held"),
                i.metric("nostr_sync_stored_total"),
                peak_rss_mb_of(&format!("/proc/{}/status", i.child.id())),
                cpu_seconds(&format!("/proc/{}/stat", i.child.id())),
            )
        })
        .collect();
    for i in &fleet {
        let _ = Command::new("kill")
            .args(["-TERM", &i.child.id().to_string()])
            .status();
    }
    for mut i in fleet {
        let _ = i.child.wait();
    }
    relays.stop();
    ensure!(count == total, "stored {count} events, expected {total}");
    let expected = load_expected_stats(events_file)?;
    let (stats, recount) = actix_rt::System::new().block_on(async {
        let stats = store.stats().await?;
        let policy = bench_settings(&db.url, &[])?.aggregates.zap_policy();
        let recount = storage::recount(&*store, &policy).await?;
        anyhow::Ok((stats, recount))
    })?;
    ensure!(
        stats == expected,
        "aggregates differ from the generated events"
    );
    ensure!(stats == recount, "aggregates differ from a recount");
    println!(
        "{:<10} {:>7} {:>10} {:>10} {:>9} {:>7}",
        "instance", "relays", "stored", "unique/s", "rss MB", "cpu s"
    );
    for (id, held, stored, rss, cpu) in &rows {
        println!(
            "{id:<10} {held:>7.0} {stored:>10.0} {:>10.0} {rss:>9.1} {cpu:>7.1}",
            stored / elapsed
        );
    }
    println!(
        "{:<10} {:>7} {:>10} {:>10.0}   {elapsed:.1} s, checked exact",
        "all",
        relays.urls.len(),
        count,
        count as f64 / elapsed
    );
    Ok(())
}

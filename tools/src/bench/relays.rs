//! The relays of a run, in a child process of their own.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nostr_sdk::{Event, EventBuilder, Keys, Kind, Tag, Timestamp};

use super::args::BenchArgs;
use super::data::load_events;
use crate::dataset::{home_of, place, place_by_author, EventMaker, HostedRelay};

/// The child process hosting the relays.
pub(super) struct RelayProcess {
    pub(super) child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    pub(super) urls: Vec<String>,
    /// With `--discovery`: the relay holding the authors' relay lists.
    pub(super) seed: Option<String>,
}

impl RelayProcess {
    pub(super) fn spawn(
        args: &BenchArgs,
        events_file: Option<&Path>,
    ) -> anyhow::Result<RelayProcess> {
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
            if args.discovery {
                cmd.arg("--authors-file").arg(super::data::keys_path(f));
            }
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("relay process stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut ready = lines
            .next()
            .context("relay process exited before READY")??;
        let mut seed = None;
        if let Some(url) = ready.strip_prefix("SEED ") {
            seed = Some(url.to_owned());
            ready = lines
                .next()
                .context("relay process exited before READY")??;
        }
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
            seed,
        })
    }

    /// Starts live publishing.
    pub(super) fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("relay process stdin")?;
        writeln!(stdin, "GO")?;
        stdin.flush()?;
        Ok(())
    }

    pub(super) fn stop(&mut self) {
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
    /// The authors' secret keys (hex, one per line): each author's events are held by
    /// the relay its relay list names (`dataset::home_of`), and a seed relay holding
    /// those relay lists is hosted too (`SEED url` before `READY`).
    #[arg(long)]
    pub authors_file: Option<PathBuf>,
}

/// Secret keys, hex, one per line.
pub(super) fn load_keys(path: &Path) -> anyhow::Result<Vec<Keys>> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(Keys::parse(l.trim())?))
        .collect()
}

/// Each author's NIP-65 relay list, naming for writing the relay that holds its events.
fn relay_lists(authors: &[Keys], urls: &[String]) -> anyhow::Result<Vec<Event>> {
    authors
        .iter()
        .map(|k| {
            let home = &urls[home_of(&k.public_key(), urls.len())];
            let tag = Tag::parse(["r", home.as_str()])?;
            Ok(EventBuilder::new(Kind::RelayList, "")
                .tag(tag)
                .sign_with_keys(k)?)
        })
        .collect()
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

/// `nostr-sync-tools bench-relays`: hosts the relays, prints `READY url...`, and on `GO`
/// publishes `rate` fresh events per second for `duration` seconds.
pub async fn host_relays(args: RelayArgs) -> anyhow::Result<()> {
    let events = match &args.events_file {
        Some(path) => load_events(path)?,
        None => Vec::new(),
    };
    let placement = match &args.authors_file {
        Some(_) => place_by_author(&events, args.relays, args.overlap, 42),
        None => place(events.len(), args.relays, args.overlap, 42),
    };
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
    let _seed = match &args.authors_file {
        Some(path) => {
            let lists = relay_lists(&load_keys(path)?, &urls)?;
            let seed = HostedRelay::start(lists.iter(), 500).await?;
            println!("SEED {}", seed.url().await);
            Some(seed)
        }
        None => None,
    };
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

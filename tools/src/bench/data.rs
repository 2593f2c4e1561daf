//! Signed events cached on disk with their expected aggregates, and a fresh database
//! per run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use nostr_sdk::{Event, JsonUtil};

use crate::dataset::{expected_stats, sign_events_by};
use nostr_sync::nostr::aggregate::StatsDelta;
use nostr_sync::storage::{self, migrate, Backend};

/// The cached event file for `n` events, signing them first if needed; `with_keys`:
/// a set of its own whose authors' keys are kept beside it (`keys_path`), for
/// `bench --discovery`.
pub(super) fn cached_events(dir: &Path, n: usize, with_keys: bool) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = if with_keys {
        "authored-v2"
    } else {
        "events-v2"
    };
    let path = dir.join(format!("{name}-{n}.jsonl"));
    let stats_path = stats_path(&path);
    let keys = keys_path(&path);
    if path.exists() && stats_path.exists() && (!with_keys || keys.exists()) {
        return Ok(path);
    }
    eprintln!("signing {n} events once (cached in {})...", path.display());
    let (events, authors, zapper) = sign_events_by(n, 42);
    if with_keys {
        // Every signer, the zapper service too: each gets a relay list.
        let hex: Vec<String> = authors
            .iter()
            .chain([&zapper])
            .map(|k| k.secret_key().to_secret_hex())
            .collect();
        std::fs::write(&keys, hex.join("\n"))?;
    }
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

/// Where the expected aggregates of an event file are.
fn stats_path(events: &Path) -> PathBuf {
    events.with_extension("stats.json")
}

/// Where the authors' keys of an event file are (`cached_events` with keys).
pub(super) fn keys_path(events: &Path) -> PathBuf {
    events.with_extension("keys")
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

pub(super) fn load_expected_stats(events: &Path) -> anyhow::Result<HashMap<String, StatsDelta>> {
    let text = std::fs::read_to_string(stats_path(events))?;
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

pub(super) fn load_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    BufReader::new(file)
        .lines()
        .map(|line| Ok(Event::from_json(line?)?))
        .collect()
}

/// A database for one run: a fresh SQLite file, or a fresh schema in PostgreSQL.
pub(super) struct BenchDb {
    pub(super) url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

impl BenchDb {
    pub(super) fn fresh(url: Option<&str>) -> anyhow::Result<BenchDb> {
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

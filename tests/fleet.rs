//! The fleet, as operators run it: the built binary as several processes on one
//! database, sharing one relay registry. Each relay is synced by one instance at a
//! time, the shares are even, a killed or stopped instance's relays are taken over,
//! a stale instance's late writes are refused, and the registry changes while the
//! service runs (`relays add|remove|pause|resume`, SIGHUP). Every run ends exact:
//! every event stored once, aggregates equal to the NIPs' recount.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{run, Backend, TestDb};
use nostr_sdk::prelude::*;
use nostr_sync::fleet::normalise;
use nostr_sync::storage::{self, EventStore};
use nostr_sync_tools::dataset::{Dataset, EventMaker};

/// Lease and round short enough for tests: a lapsed lease is taken within about 4 s.
const LEASE_SECS: u64 = 3;

both_backends!(relays_change_while_the_service_runs);

#[test]
fn instances_share_relays_take_over_and_are_fenced() {
    if let Some(db) = TestDb::new(Backend::Postgres) {
        fleet(db);
    }
}

/// One instance: its process, its config file, its `/metrics` address.
struct Instance {
    id: String,
    child: Child,
    config: PathBuf,
    metrics: std::net::SocketAddr,
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn write_config(path: &Path, relays: &[String]) {
    let list: Vec<String> = relays.iter().map(|u| format!("{u:?}")).collect();
    std::fs::write(path, format!("relays = [{}]\n", list.join(", "))).unwrap();
}

impl Instance {
    fn start(db: &TestDb, dir: &Path, id: &str, relays: &[String]) -> Instance {
        let config = dir.join(format!("{id}.toml"));
        write_config(&config, relays);
        let metrics = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_nostr-sync"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("NOSTR_SYNC__DATABASE__URL", &db.url)
            .env("NOSTR_SYNC__FLEET__INSTANCE_ID", id)
            .env("NOSTR_SYNC__FLEET__LEASE_SECS", LEASE_SECS.to_string())
            .env("NOSTR_SYNC__FLEET__POLL_SECS", "1")
            .env("NOSTR_SYNC__HTTP__LISTEN", metrics.to_string())
            .env("NOSTR_SYNC__SYNC__LIVE", "false")
            .env("NOSTR_SYNC__SHUTDOWN__TIMEOUT_SECS", "20")
            .env("NOSTR_SYNC__INTERVAL__IDLE_SECS", "1")
            .env("NOSTR_SYNC__INTERVAL__NORMAL_SECS", "1")
            .env("NOSTR_SYNC__AGGREGATES__ZAP_VERIFICATION", "none")
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        Instance {
            id: id.to_owned(),
            child,
            config,
            metrics,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// `/metrics`, or empty while it does not answer.
    fn metrics(&self) -> String {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2))
        else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// The relays with series in `/metrics`: those this instance runs.
    fn relays_in_metrics(&self) -> BTreeSet<String> {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("nostr_sync_relay_cycles_ok_total{"))
            .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
            .collect()
    }

    fn counter(&self, name: &str) -> Option<u64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// SIGTERM, then its exit code.
    async fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        let since = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "no exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registry holder of each relay (`None`: not held or lapsed).
async fn holders(store: &dyn EventStore) -> BTreeMap<String, Option<String>> {
    let now = storage::now_secs();
    store
        .registry()
        .relays()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.active())
        .map(|r| {
            let live = r.holder.filter(|_| r.lease_until >= now);
            (r.url, live)
        })
        .collect()
}

/// How many active relays each instance holds.
async fn shares(store: &dyn EventStore) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for holder in holders(store).await.into_values().flatten() {
        *out.entry(holder).or_default() += 1;
    }
    out
}

/// Polls `done` every 100 ms until it holds or `limit` passes; how long it took.
async fn until<F, Fut>(limit: Duration, what: &str, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let since = Instant::now();
    while !done().await {
        assert!(since.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    since.elapsed()
}

fn want_shares(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Every cursor `(relay, key) → created_at`.
async fn cursors(store: &dyn EventStore) -> BTreeMap<(String, String), i64> {
    store
        .overview()
        .await
        .unwrap()
        .cursors
        .into_iter()
        .map(|(r, k, at)| ((r, k), at))
        .collect()
}

fn fleet(db: TestDb) {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::generate(30_000, 6, 0.5, 41);
        let (relays, urls) = common::host(&data, &[500]).await;
        let urls: Vec<String> = urls.iter().map(|u| normalise(u).unwrap()).collect();
        let store = storage::open(&db.url, 2).await.unwrap();
        let total = data.events.len() as i64;

        // Two instances, one relay list: three relays each, mid-sync.
        let a = Instance::start(&db, dir.path(), "a", &urls);
        let b = Instance::start(&db, dir.path(), "b", &urls);
        until(Duration::from_secs(30), "shares of 3 and 3", || async {
            shares(&*store).await == want_shares(&[("a", 3), ("b", 3)])
        })
        .await;
        // Each runs exactly the relays it holds, none runs another's.
        until(
            Duration::from_secs(10),
            "metrics follow the leases",
            || async {
                let h = holders(&*store).await;
                let of = |who: &str| -> BTreeSet<String> {
                    h.iter()
                        .filter(|(_, w)| w.as_deref() == Some(who))
                        .map(|(u, _)| u.clone())
                        .collect()
                };
                a.relays_in_metrics() == of("a") && b.relays_in_metrics() == of("b")
            },
        )
        .await;
        let stored_at_kill = store.count_events().await.unwrap();
        eprintln!("{stored_at_kill} of {total} stored when b is killed");

        // SIGKILL b: a holds all six within the lease plus a round or two.
        b.signal("-KILL");
        let took = until(Duration::from_secs(20), "a takes over", || async {
            shares(&*store).await == want_shares(&[("a", 6)])
        })
        .await;
        eprintln!("takeover after SIGKILL: {:.1} s", took.as_secs_f64());
        assert!(
            took <= Duration::from_secs(LEASE_SECS + 5),
            "takeover took {took:?}"
        );
        drop(b);
        until(Duration::from_secs(120), "every event stored", || async {
            store.count_events().await.unwrap() >= total
        })
        .await;
        assert!(a.counter("nostr_sync_lease_takeovers_total").unwrap_or(0) >= 3);

        // c joins, is stopped past its lease, a takes over and moves on; woken, c
        // writes no cursor of its own old leases.
        let c = Instance::start(&db, dir.path(), "c", &urls);
        until(Duration::from_secs(30), "shares of 3 and 3", || async {
            shares(&*store).await == want_shares(&[("a", 3), ("c", 3)])
        })
        .await;
        c.signal("-STOP");
        until(Duration::from_secs(20), "a takes over from c", || async {
            shares(&*store).await == want_shares(&[("a", 6)])
        })
        .await;
        // New events, so that a's cycles move the cursors past c's.
        let mut maker = EventMaker::new(3, 42);
        let late: Vec<Event> = (0..60).map(|_| maker.next(Timestamp::now())).collect();
        for (i, e) in late.iter().enumerate() {
            relays[i % relays.len()].publish(e).await.unwrap();
        }
        until(Duration::from_secs(30), "the new events stored", || async {
            store.count_events().await.unwrap() >= total + late.len() as i64
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = cursors(&*store).await;
        c.signal("-CONT");
        until(Duration::from_secs(30), "c rejoins", || async {
            shares(&*store).await == want_shares(&[("a", 3), ("c", 3)])
        })
        .await;
        let after = cursors(&*store).await;
        for (key, at) in &before {
            if let Some(now) = after.get(key) {
                assert!(now >= at, "cursor {key:?} moved back from {at} to {now}");
            }
        }
        eprintln!(
            "c's writes refused after waking: {:?}",
            c.counter("nostr_sync_lease_writes_refused_total")
        );

        // d joins: two each.
        let d = Instance::start(&db, dir.path(), "d", &urls);
        until(Duration::from_secs(30), "shares of 2, 2 and 2", || async {
            shares(&*store).await == want_shares(&[("a", 2), ("c", 2), ("d", 2)])
        })
        .await;
        for i in [a, c, d] {
            let id = i.id.clone();
            assert_eq!(i.stop().await, Some(0), "{id} did not stop cleanly");
        }
        // A clean stop hands every lease back.
        assert!(holders(&*store).await.values().all(Option::is_none));
        let mut all = data.events.clone();
        all.extend(late);
        common::assert_exact(&db, &all).await;
    });
}

/// `nostr-sync relays …` against the database; its stdout.
fn relays_cmd(db: &TestDb, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nostr-sync"))
        .env("NOSTR_SYNC__DATABASE__URL", &db.url)
        .arg("relays")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "relays {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn relays_change_while_the_service_runs(db: TestDb) {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let data = Dataset::generate(3_000, 3, 0.0, 43);
        let (relays, urls) = common::host(&data, &[500]).await;
        let urls: Vec<String> = urls.iter().map(|u| normalise(u).unwrap()).collect();
        let store = storage::open(&db.url, 2).await.unwrap();
        let of = |r: usize| data.relay_events(r).cloned().collect::<Vec<Event>>();
        let count = || async { store.count_events().await.unwrap() as usize };

        let service = Instance::start(&db, dir.path(), "one", &urls[..2]);
        until(Duration::from_secs(60), "two relays synced", || async {
            count().await == of(0).len() + of(1).len()
        })
        .await;

        // Added from the command line: its events within 10 s. Written another way,
        // it is the same relay.
        let shouting = urls[2].replace("ws://", "WS://");
        let out = relays_cmd(&db, &["add", &shouting]);
        assert!(out.contains("added"), "{out}");
        until(
            Duration::from_secs(10),
            "the added relay synced",
            || async { count().await == data.events.len() },
        )
        .await;
        assert!(relays_cmd(&db, &["add", &urls[2]]).contains("enabled"));

        // Removed: its actor stops within 10 s; what it gets later is not synced.
        relays_cmd(&db, &["remove", &urls[1]]);
        until(
            Duration::from_secs(10),
            "the removed relay stops",
            || async {
                let running = service.relays_in_metrics();
                !running.contains(&urls[1]) && running.contains(&urls[0])
            },
        )
        .await;
        let mut maker = EventMaker::new(2, 44);
        let late = maker.next(Timestamp::now());
        relays[1].publish(&late).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(count().await, data.events.len(), "a removed relay synced");

        // Paused and resumed.
        relays_cmd(&db, &["pause", &urls[2]]);
        until(
            Duration::from_secs(10),
            "the paused relay stops",
            || async { !service.relays_in_metrics().contains(&urls[2]) },
        )
        .await;
        let list: serde_json::Value =
            serde_json::from_str(&relays_cmd(&db, &["list", "--json"])).unwrap();
        let paused = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["url"] == urls[2].as_str())
            .unwrap();
        assert_eq!(paused["paused"], true, "{list}");
        relays_cmd(&db, &["resume", &urls[2]]);
        until(
            Duration::from_secs(10),
            "the resumed relay runs",
            || async { service.relays_in_metrics().contains(&urls[2]) },
        )
        .await;

        // SIGHUP with relay 1 back in the file and relay 0 out of it.
        write_config(&service.config, &urls[1..2]);
        service.signal("-HUP");
        until(
            Duration::from_secs(10),
            "the edited list applies",
            || async {
                let running = service.relays_in_metrics();
                running.contains(&urls[1]) && !running.contains(&urls[0])
            },
        )
        .await;
        until(Duration::from_secs(10), "the late event synced", || async {
            count().await == data.events.len() + 1
        })
        .await;
        let states = || async {
            let rows = store.registry().relays().await.unwrap();
            rows.into_iter()
                .map(|r| (r.url.clone(), r.state(), r.source))
                .collect::<Vec<_>>()
        };
        let edited = states().await;
        let state = |u: &str| edited.iter().find(|r| r.0 == u).unwrap().1;
        assert_eq!(
            (state(&urls[0]), state(&urls[1]), state(&urls[2])),
            ("disabled", "active", "active")
        );

        // SIGHUP with a broken file: nothing changes, the service keeps running.
        std::fs::write(
            &service.config,
            "relays = [\n[database]\nmax_connections = -3",
        )
        .unwrap();
        service.signal("-HUP");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            service.relays_in_metrics(),
            BTreeSet::from([urls[1].clone(), urls[2].clone()])
        );
        assert_eq!(states().await, edited);

        assert_eq!(service.stop().await, Some(0));
        let mut all = data.events.clone();
        all.push(late);
        common::assert_exact(&db, &all).await;
    });
}

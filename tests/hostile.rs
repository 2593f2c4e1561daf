//! What any stranger can do on a public relay, and relays that misbehave on purpose:
//! pages of events the service refuses, addresses too long for a database key,
//! oversized and endless answers. Each ends with every valid event stored once and
//! aggregates equal to a recount written from the NIPs.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::hostile::{Act, HostileRelay};
use common::{assert_exact, oracle, run, settings, sync_once, TestDb};
use nostr_sdk::prelude::*;
use nostr_sync::config::Negentropy;
use nostr_sync::metrics::{Counters, Reject};
use nostr_sync::storage;
use nostr_sync_tools::dataset::Dataset;

/// A relay sending 1,000 binary frames and 1,000 frames no parser can read, to the
/// built binary with its shipped log settings: they are counted, not logged one line
/// each (nostr-sdk logged every one, the unparsable ones whole, at WARN or ERROR), and
/// log lines written to a pipe carry no colour codes.
#[test]
fn junk_frames_make_no_log_lines() {
    let Some(db) = TestDb::new(common::Backend::Sqlite) else {
        return;
    };
    let data = Dataset::generate(100, 1, 0.0, 165);
    let junk: Vec<String> = (0..1_000)
        .map(|i| format!(r#"["NOTICE",{{"junk":{i}}}"#))
        .collect();
    // The relay serves from a runtime of its own while the binary runs.
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        run(async move {
            let relay = HostileRelay::start(
                data.events.clone(),
                vec![Act::Binary(1_000), Act::Prefix(junk)],
                0,
            )
            .await;
            url_tx.send(relay.url.clone()).unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
    });
    let url = url_rx.recv().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_nostr-sync"))
        .env("NOSTR_SYNC__DATABASE__URL", &db.url)
        .env("NOSTR_SYNC__RELAYS", &url)
        .env("NOSTR_SYNC__HTTP__LISTEN", "")
        .env("NOSTR_SYNC__INTERVAL__IDLE_SECS", "1")
        .env("NOSTR_SYNC__INTERVAL__NORMAL_SECS", "1")
        .env_remove("RUST_LOG")
        .arg("run")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Two cycles: one met the binary frames, the other the unparsable ones.
    std::thread::sleep(Duration::from_secs(8));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    // A line per failed cycle at most, none per frame.
    assert!(
        loud.len() <= 4,
        "{} loud lines:\n{}",
        loud.len(),
        loud.join("\n")
    );
    assert!(!log.contains('\u{1b}'), "colour codes in a piped log");
    run(async {
        let store = storage::open(&db.url, 1).await.unwrap();
        assert_eq!(store.count_events().await.unwrap(), 100);
    });
}

/// A client that sends half a request to `/metrics` and then nothing is dropped once
/// the header timeout passes, and scrapes keep being answered meanwhile.
#[test]
fn a_slowloris_client_on_metrics_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(db) = TestDb::new(common::Backend::Sqlite) else {
        return;
    };
    run(async {
        let mut s = settings(&db, vec!["ws://127.0.0.1:9".into()]);
        s.http.listen = "127.0.0.1:0".into();
        let app = nostr_sync::app::App::start(s).await.unwrap();
        let addr = app.http_addr().unwrap();
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        assert_eq!(common::http_get(addr, "/livez").await.0, 200);
        let began = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(20), slow.read(&mut buf)).await;
        let closed_after = began.elapsed();
        assert!(
            matches!(read, Ok(Ok(_)) | Ok(Err(_))),
            "the half-sent request was still open after 20 s"
        );
        assert!(closed_after < Duration::from_secs(15), "{closed_after:?}");
        assert!(app.shutdown(Duration::from_secs(10)).await);
    });
}

/// A relay answers the first NIP-77 message and then never again, while its
/// connection keeps bringing frames: the reconciliation ends at its idle timeout (the
/// relay is paged instead) and the cycle completes. A connection-wide idle clock never
/// fired, and that relay's cycles hung.
#[test]
fn a_relay_that_stops_reconciling_does_not_hang_its_cycle() {
    let Some(db) = TestDb::new(common::Backend::Sqlite) else {
        return;
    };
    run(async {
        let data = Dataset::generate(50, 1, 0.0, 166);
        let relay = HostileRelay::start(data.events.clone(), vec![], 0).await;
        // Version 0x61, one range up to infinity, a fingerprint that matches nothing:
        // the client must answer, and hears nothing more.
        let first = format!("61000001{}", "00".repeat(16));
        relay.answer_negentropy_with(vec![format!(r#"["NEG-MSG","{{sub}}","{first}"]"#)]);
        relay.chatter();
        let mut s = settings(&db, vec![relay.url.clone()]);
        s.sync.eose_timeout_secs = 2;
        // The second cycle is a repair pass, which reconciles.
        s.sync.repair_interval_secs = 1;
        let app = nostr_sync::app::App::start(s).await.unwrap();
        let c = app.counters.relay(&relay.url);
        let began = std::time::Instant::now();
        while Counters::get(&c.repairs) < 1 && began.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(relay.negentropy_opens() >= 1, "no reconciliation was tried");
        assert!(
            Counters::get(&c.repairs) >= 1,
            "the repair pass did not end: {:?}",
            began.elapsed()
        );
        assert!(app.shutdown(Duration::from_secs(30)).await);
        let store = storage::open(&db.url, 1).await.unwrap();
        assert_eq!(store.count_events().await.unwrap(), 50);
    });
}

both_backends!(
    pages_of_refused_events_hide_nothing,
    an_address_too_long_for_a_key_breaks_nothing,
    an_aggregate_row_the_database_refuses_is_isolated,
    oversized_and_endless_answers_are_cut_off,
);

/// Largest event the tests accept, so that oversized ones stay cheap to sign.
const MAX_EVENT_BYTES: usize = 4_096;

struct Refused {
    /// What each relay holds of the normal events.
    normal: Dataset,
    /// Per relay: 600 events the service refuses, all newer than its normal ones.
    future: Vec<Event>,
    nul: Vec<Event>,
    oversize: Vec<Event>,
}

/// Signed once per run.
fn refused() -> &'static Refused {
    static DATA: OnceLock<Refused> = OnceLock::new();
    DATA.get_or_init(|| {
        let now = Timestamp::now().as_secs();
        let keys: Vec<Keys> = (0..6).map(|_| Keys::generate()).collect();
        let make = |content: &dyn Fn(usize) -> String, at: &dyn Fn(u64) -> u64| {
            (0..600)
                .map(|i| {
                    EventBuilder::text_note(content(i))
                        .custom_created_at(Timestamp::from(at(i as u64)))
                        .sign_with_keys(&keys[i % keys.len()])
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        Refused {
            normal: Dataset::generate(1_200, 3, 0.0, 161),
            // Twenty minutes ahead: relays accept it, the service (15 minutes) does not.
            future: make(&|i| format!("later {i}"), &|i| now + 1_200 + i / 3),
            nul: make(&|i| format!("nul\0{i}"), &|i| now - 300 + i / 3),
            oversize: make(&|i| format!("{i}{}", "x".repeat(5_000)), &|i| {
                now - 300 + i / 3
            }),
        }
    })
}

/// Three relays clamped at 500 whose newest 600 events are each refused (dated 20
/// minutes ahead, holding NUL, too large): the planner once took such a page for the
/// end of the window and stored 13 of 19,691 events.
fn pages_of_refused_events_hide_nothing(db: TestDb) {
    run(async {
        let data = refused();
        let mut relays = Vec::new();
        for (r, bad) in [&data.future, &data.nul, &data.oversize]
            .into_iter()
            .enumerate()
        {
            let mut events: Vec<Event> = data.normal.relay_events(r).cloned().collect();
            events.extend(bad.iter().cloned());
            relays.push(HostileRelay::paged(events, 500).await);
        }
        let urls: Vec<String> = relays.iter().map(|r| r.url.clone()).collect();
        let mut s = settings(&db, urls.clone());
        s.sync.negentropy = Negentropy::Off;
        s.limits.max_event_bytes = MAX_EVENT_BYTES;
        let counters = sync_once(s).await;
        assert_exact(&db, &data.normal.events).await;
        for (url, reason) in urls.iter().zip([
            Reject::FutureTimestamp,
            Reject::NulCharacter,
            Reject::TooLarge,
        ]) {
            let c = counters.relay(url);
            assert!(c.rejected(reason) >= 600, "{url}: {reason:?}");
            assert_eq!(Counters::get(&c.windows_failed), 0, "{url}");
        }
    });
}

/// A repost naming an address with an 8 kB `d`, a reaction to it, and a kind 30023 at
/// that address: longer than a PostgreSQL btree entry. Once, every aggregate flush
/// failed from then on and the restart crash-looped in its backlog.
fn an_address_too_long_for_a_key_breaks_nothing(db: TestDb) {
    run(async {
        let author = Keys::generate();
        let fan = Keys::generate();
        let d = "d".repeat(8_000);
        let long = EventBuilder::new(Kind::from(30_023), "long d")
            .tag(Tag::identifier(&d))
            .sign_with_keys(&author)
            .unwrap();
        let address = format!("30023:{}:{d}", author.public_key().to_hex());
        let repost = EventBuilder::new(Kind::GenericRepost, "")
            .tag(Tag::parse(["a", address.as_str()]).unwrap())
            .tag(Tag::parse(["k", "30023"]).unwrap())
            .sign_with_keys(&fan)
            .unwrap();
        let reaction = EventBuilder::new(Kind::Reaction, "+")
            .tag(Tag::event(repost.id))
            .sign_with_keys(&author)
            .unwrap();
        // A short address next to it still counts.
        let short = EventBuilder::new(Kind::from(30_023), "short d")
            .tag(Tag::identifier("short"))
            .sign_with_keys(&author)
            .unwrap();
        let short_address = format!("30023:{}:short", author.public_key().to_hex());
        let short_repost = EventBuilder::new(Kind::GenericRepost, "")
            .tag(Tag::parse(["a", short_address.as_str()]).unwrap())
            .sign_with_keys(&fan)
            .unwrap();
        let mut events = vec![long, repost, reaction, short, short_repost];
        events.extend(Dataset::generate(300, 1, 0.0, 162).events);
        let relay = HostileRelay::paged(events.clone(), 500).await;
        let mut s = settings(&db, vec![relay.url.clone()]);
        s.sync.negentropy = Negentropy::Off;
        let counters = sync_once(s.clone()).await;
        let want = oracle::kept(&events, Timestamp::now().as_secs());
        assert_eq!(
            want.len(),
            events.len() - 1,
            "the oracle keeps the long one"
        );
        assert_exact(&db, &want).await;
        assert_eq!(
            Counters::get(&counters.relay(&relay.url).rejected[Reject::AddressTooLong as usize]),
            1
        );
        assert_eq!(Counters::get(&counters.aggregates_isolated), 0);
        // A restart comes up and changes nothing.
        sync_once(s).await;
        assert_exact(&db, &want).await;
    });
}

/// The database refuses one aggregate row (a rule of the operator's the service knows
/// nothing about): that row is isolated and counted, every other count is exact, and
/// a start with that row in its backlog comes up.
fn an_aggregate_row_the_database_refuses_is_isolated(db: TestDb) {
    let data = Dataset::generate(400, 1, 0.0, 163);
    let counted = oracle::expected_stats(&data.events);
    let (target, _) = counted
        .iter()
        .find(|(_, d)| d.reactions + d.replies + d.reposts > 1)
        .expect("a target counted twice");
    db.execute(&match db.backend {
        common::Backend::Sqlite => format!(
            "CREATE TRIGGER no_row BEFORE INSERT ON event_stats WHEN NEW.event_id = '{target}' \
             BEGIN SELECT RAISE(ABORT, 'row refused'); END;"
        ),
        common::Backend::Postgres => {
            format!("ALTER TABLE event_stats ADD CONSTRAINT no_row CHECK (event_id <> '{target}')")
        }
    });
    run(async {
        // Stored without aggregating, as a crash between commit and flush leaves them.
        let store = storage::open(&db.url, 2).await.unwrap();
        store.insert_events(&data.events).await.unwrap();
        let isolated = Counters::default();
        nostr_sync::actors::aggregator::apply_backlog(&*store, &isolated)
            .await
            .expect("the backlog is applied around the refused row");
        let zaps = nostr_sync::actors::zaps::judge::judge_backlog(
            &*store.zap_store(),
            &Default::default(),
            storage::now_secs(),
            86_400,
        )
        .await
        .expect("receipts are judged around the refused row");
        isolated
            .aggregates_isolated
            .fetch_add(zaps.isolated, std::sync::atomic::Ordering::Relaxed);
        let mut want = counted.clone();
        want.remove(target);
        assert_eq!(store.stats().await.unwrap(), want);
        // Each event that counts toward the target, judged beside the target itself (a
        // zap counts only for its target's author).
        let target_event: Vec<&nostr_sdk::Event> = data
            .events
            .iter()
            .filter(|e| e.id.to_hex() == *target)
            .collect();
        let expected_isolated = data
            .events
            .iter()
            .filter(|e| {
                oracle::expected_stats(target_event.iter().copied().chain([*e]))
                    .contains_key(target.as_str())
            })
            .count() as u64;
        assert_eq!(
            Counters::get(&isolated.aggregates_isolated),
            expected_isolated
        );
        assert!(store.unaggregated(0, 10).await.unwrap().is_empty());
    });
}

/// A relay that sends one 50 MiB frame before its answer, and one that never stops
/// sending frames for a REQ: the first connection is ended at the size limit, the
/// endless REQ at the frame cap; the next cycles store everything.
fn oversized_and_endless_answers_are_cut_off(db: TestDb) {
    run(async {
        let data = Dataset::generate(300, 2, 0.0, 164);
        let huge = format!(r#"["NOTICE","{}"]"#, "x".repeat(50 << 20));
        let big = HostileRelay::start(
            data.relay_events(0).cloned().collect(),
            vec![Act::Prefix(vec![huge])],
            0,
        )
        .await;
        let endless = HostileRelay::start(
            data.relay_events(1).cloned().collect(),
            vec![Act::Endless],
            0,
        )
        .await;
        let mut s = settings(&db, vec![big.url.clone(), endless.url.clone()]);
        s.sync.negentropy = Negentropy::Off;
        s.limits.max_frames_per_req = 2_000;
        let app = nostr_sync::app::App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, common::SYNC_TIMEOUT).await);
        let counters = app.counters.clone();
        assert!(app.shutdown(Duration::from_secs(30)).await);
        assert_exact(&db, &data.events).await;
        let c = counters.relay(&big.url);
        assert!(Counters::get(&c.frames_too_large) >= 1);
        let c = counters.relay(&endless.url);
        assert!(Counters::get(&c.windows_failed) >= 1);
    });
}

//! A faithful copy: only the newest version of replaceable and addressable
//! events, deletions by their authors, expiry, ephemeral events, and zap receipts that
//! hold together. The expected state comes from `common::oracle::kept`, written from
//! NIP-01, NIP-09 and NIP-40, and the aggregates from `oracle::expected_stats`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{oracle, run, settings, stored_ids, sync_once, TestDb, SYNC_TIMEOUT};
use nostr_sdk::prelude::*;
use nostr_sync::app::App;
use nostr_sync::metrics::Counters;
use nostr_sync::nostr::aggregate::StatsDelta;
use nostr_sync::storage::{self, EventStore};
use nostr_sync_tools::dataset::{HostedRelay, Zapper};

both_backends!(
    versions_deletions_and_zaps_end_as_the_nips_say,
    an_event_expiring_while_stored_is_purged,
    an_ephemeral_event_on_a_live_subscription_is_not_stored,
    configured_filters_select_what_they_say,
);

#[test]
fn two_instances_keep_one_version_of_each_address() {
    if let Some(db) = TestDb::new(common::Backend::Postgres) {
        two_instances_keep_one_version(db);
    }
}

/// A day ago: every event of the data is history.
fn base() -> u64 {
    Timestamp::now().as_secs() - 86_400
}

fn sign(keys: &Keys, kind: u16, at: u64, content: &str, tags: Vec<Vec<String>>) -> Event {
    EventBuilder::new(Kind::from(kind), content)
        .tags(tags.into_iter().map(|t| Tag::parse(t).unwrap()))
        .custom_created_at(Timestamp::from(at))
        .sign_with_keys(keys)
        .unwrap()
}

fn tag(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// The test data, signed once per run, and where each part is placed.
struct Data {
    /// On three relays in the first sync (`first[r]` for relay `r`).
    first: [Vec<Event>; 3],
    /// On one relay in a second sync: targets of deletions already stored, a deleted
    /// event again, and versions older than the ones kept.
    later: Vec<Event>,
}

impl Data {
    fn all(&self) -> Vec<Event> {
        let mut all: Vec<Event> = self.first.iter().flatten().cloned().collect();
        all.extend(self.later.iter().cloned());
        all
    }
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let t = base();
        let (a, b, c) = (Keys::generate(), Keys::generate(), Keys::generate());
        let mut first: [Vec<Event>; 3] = Default::default();
        let mut later = Vec::new();

        // Versions: profiles, contact lists, a relay list and articles, of two authors,
        // spread over the relays so that each relay serves a different newest version.
        for (n, keys) in [&a, &b].into_iter().enumerate() {
            for step in 0..6u64 {
                let at = t + 10 * step;
                let relay = (step as usize + n) % 3;
                first[relay].push(sign(keys, 0, at, &format!("profile {step}"), vec![]));
                first[(relay + 1) % 3].push(sign(
                    keys,
                    10_002,
                    at,
                    &format!("relays {step}"),
                    vec![],
                ));
                let post = vec![tag(&["d", "post"])];
                first[(relay + 2) % 3].push(sign(keys, 30_023, at, &format!("post {step}"), post));
                let empty_d = vec![tag(&["d", ""])];
                let untagged = sign(keys, 30_023, at + 1, &format!("untagged {step}"), empty_d);
                first[relay].push(untagged);
            }
            // Two contact lists in one second: the lower id is kept.
            first[0].push(sign(
                keys,
                3,
                t + 100,
                "",
                vec![tag(&["p", &a.public_key().to_hex()])],
            ));
            first[1].push(sign(
                keys,
                3,
                t + 100,
                "",
                vec![tag(&["p", &c.public_key().to_hex()])],
            ));
            // Delivered after the newer ones are stored: never stored.
            later.push(sign(keys, 0, t + 5, "an old profile", vec![]));
            later.push(sign(
                keys,
                30_023,
                t + 3,
                "an old post",
                vec![tag(&["d", "post"])],
            ));
        }

        // Notes by A, with reactions, replies, reposts and zaps.
        let notes: Vec<Event> = (0..6)
            .map(|i| sign(&a, 1, t + 200 + i, &format!("note {i}"), vec![]))
            .collect();
        let e = |n: &Event| tag(&["e", &n.id.to_hex()]);
        first[0].extend(notes.iter().cloned());
        let reaction_b1 = sign(&b, 7, t + 300, "+", vec![e(&notes[1])]);
        let reaction_b2 = sign(&b, 7, t + 301, "+", vec![e(&notes[2])]);
        let reaction_c1 = sign(&c, 7, t + 302, "+", vec![e(&notes[1])]);
        let repost_b3 = sign(&b, 6, t + 303, "", vec![e(&notes[3])]);
        let reply_c2 = sign(
            &c,
            1,
            t + 304,
            "a reply",
            vec![tag(&["e", &notes[2].id.to_hex(), "", "reply"])],
        );
        let post_address = format!("30023:{}:post", a.public_key().to_hex());
        let generic_repost = sign(&b, 16, t + 305, "", vec![tag(&["a", &post_address])]);
        first[1].extend([
            reaction_b1.clone(),
            reaction_b2.clone(),
            reaction_c1.clone(),
        ]);
        first[0].push(repost_b3.clone());
        first[2].push(generic_repost);

        // Zap receipts: one that holds together, and forgeries that must add nothing.
        let zapper = Zapper::new(9);
        let valid = zapper.receipt(
            &b,
            (notes[4].id, a.public_key()),
            21_000,
            Timestamp::from(t + 400),
        );
        let request = |msats: u64| {
            sign(
                &b,
                9734,
                t + 401,
                "",
                vec![
                    tag(&["p", &a.public_key().to_hex()]),
                    e(&notes[4]),
                    tag(&["amount", &msats.to_string()]),
                ],
            )
            .as_json()
        };
        let receipt = |bolt11: &str, description: &str, at: u64| {
            sign(
                &zapper.keys,
                9735,
                at,
                "",
                vec![
                    tag(&["p", &a.public_key().to_hex()]),
                    e(&notes[4]),
                    tag(&["bolt11", bolt11]),
                    tag(&["description", description]),
                ],
            )
        };
        let btc21 = 21 * 100_000_000_000;
        let good_request = request(btc21);
        let other_hash = zapper.invoice("not the request", btc21, Timestamp::from(t + 401));
        let good_invoice = zapper.invoice(&good_request, btc21, Timestamp::from(t + 401));
        let mismatched = request(1_000);
        let mismatched_invoice = zapper.invoice(&mismatched, 5_000, Timestamp::from(t + 401));
        // More bitcoin than will ever exist: no invoice can say so (the decoder's
        // pico-BTC amount overflows), so a forger writes it by hand.
        let huge_request = request(30_000_000 * 100_000_000_000);
        let huge_invoice = format!("lnbc30000000{}", &good_invoice[12..]);
        let truncated = &good_invoice[..good_invoice.len() - 12];
        let non_ascii = format!("lnbc2100é{}", &good_invoice[9..]);
        first[0].extend([
            valid,
            receipt(&other_hash, &good_request, t + 402),
            receipt(truncated, &good_request, t + 403),
            receipt(&non_ascii, &good_request, t + 404),
            receipt(&mismatched_invoice, &mismatched, t + 405),
            receipt(&huge_invoice, &huge_request, t + 406),
        ]);

        // Deletions. B retracts a reaction (delivered again later) and its repost,
        // whichever of them arrives first; A two articles by their addresses: one
        // whose versions all predate the deletion, one with a newer version, which
        // stays. C deletes its reply before the reply ever arrives (it comes from
        // another relay in the second sync), and forges a deletion of A's note, which
        // changes nothing. In the second sync B deletes a reaction stored and counted
        // in the first.
        let address = |d: &str| format!("30023:{}:{d}", a.public_key().to_hex());
        for (r, at) in [(0, 500), (1, 510)] {
            first[r].push(sign(&a, 30_023, t + at, "gone", vec![tag(&["d", "gone"])]));
        }
        for (r, at) in [(0, 500), (1, 520), (2, 540)] {
            first[r].push(sign(
                &a,
                30_023,
                t + at,
                "other",
                vec![tag(&["d", "other"])],
            ));
        }
        first[2].extend([
            sign(&b, 5, t + 600, "", vec![e(&reaction_b1)]),
            sign(&b, 5, t + 601, "", vec![e(&repost_b3)]),
            sign(&a, 5, t + 530, "", vec![tag(&["a", &address("gone")])]),
            sign(&a, 5, t + 530, "", vec![tag(&["a", &address("other")])]),
            sign(&c, 5, t + 602, "", vec![e(&reply_c2)]),
            sign(&c, 5, t + 603, "", vec![e(&notes[5])]),
        ]);
        later.extend([reply_c2, reaction_b1]);
        later.push(sign(&b, 5, t + 700, "", vec![e(&reaction_b2)]));
        Data { first, later }
    })
}

/// The stats table without rows that count nothing (left by retractions).
async fn counted(store: &dyn EventStore) -> HashMap<String, StatsDelta> {
    let mut stats = store.stats().await.unwrap();
    stats.retain(|_, d| *d != StatsDelta::default());
    stats
}

/// The database holds exactly what the oracle keeps of `events`, with its aggregates,
/// and a recount (`check-aggregates`) finds what the flushes wrote.
async fn assert_faithful(db: &TestDb, events: &[Event]) {
    let store = storage::open(&db.url, 2).await.unwrap();
    let want = oracle::kept(events, Timestamp::now().as_secs());
    let ids = stored_ids(&*store).await;
    let got: HashSet<EventId> = ids.iter().copied().collect();
    assert_eq!(ids.len(), got.len(), "an event is stored twice");
    let expected: HashSet<EventId> = want.iter().map(|e| e.id).collect();
    let kinds = |set: &HashSet<EventId>| {
        let mut k: Vec<(u16, String)> = events
            .iter()
            .filter(|e| set.contains(&e.id))
            .map(|e| (e.kind.as_u16(), e.content.chars().take(20).collect()))
            .collect();
        k.sort();
        k
    };
    assert!(
        got == expected,
        "missing {:?}, unexpected {:?}",
        kinds(&expected.difference(&got).copied().collect()),
        kinds(&got.difference(&expected).copied().collect()),
    );
    let stats = counted(&*store).await;
    assert_eq!(stats, oracle::expected_stats(&want), "aggregates");
    let mut recount = storage::recount(&*store, &Default::default())
        .await
        .unwrap();
    recount.retain(|_, d| *d != StatsDelta::default());
    assert_eq!(stats, recount, "check-aggregates would find a difference");
}

/// Three relays serve versions in different orders, deletions, forged deletions and
/// zap receipts; a second sync then delivers older versions, a deleted event again and
/// the target of a deletion that arrived first.
fn versions_deletions_and_zaps_end_as_the_nips_say(db: TestDb) {
    run(async {
        let data = data();
        let mut relays = Vec::new();
        let mut urls = Vec::new();
        for events in &data.first {
            let relay = HostedRelay::start(events, 500).await.unwrap();
            urls.push(relay.url().await);
            relays.push(relay);
        }
        let mut s = settings(&db, urls);
        s.storage.workers = 3;
        s.database.max_connections = 8;
        let counters = sync_once(s).await;
        let first: Vec<Event> = data.first.iter().flatten().cloned().collect();
        assert_faithful(&db, &first).await;
        assert!(Counters::get(&counters.superseded) > 0);
        assert_eq!(Counters::zaps_rejected(&counters), 5, "the forged receipts");

        let relay = HostedRelay::start(&data.later, 500).await.unwrap();
        let counters = sync_once(settings(&db, vec![relay.url().await])).await;
        assert_faithful(&db, &data.all()).await;
        assert_eq!(Counters::get(&counters.stored), 1, "only the new deletion");
        // Two deleted events offered again, one removed (and its reaction retracted).
        assert_eq!(Counters::get(&counters.deleted), 3);
        assert_eq!(Counters::get(&counters.retracted), 1);
    });
}

/// A reaction that expires a few seconds after it is stored: counted, then purged
/// with what it counted.
fn an_event_expiring_while_stored_is_purged(db: TestDb) {
    run(async {
        let (a, b) = (Keys::generate(), Keys::generate());
        let now = Timestamp::now().as_secs();
        let note = sign(&a, 1, now - 60, "note", vec![]);
        let e = tag(&["e", &note.id.to_hex()]);
        let lasting = sign(&b, 7, now - 50, "+", vec![e.clone()]);
        let expires = (now + 10).to_string();
        let fleeting = sign(
            &a,
            7,
            now - 40,
            "+",
            vec![e.clone(), tag(&["expiration", &expires])],
        );
        let gone = sign(
            &a,
            7,
            now - 30,
            "-",
            vec![e, tag(&["expiration", &(now - 1).to_string()])],
        );
        let events = vec![note.clone(), lasting, fleeting, gone];
        // A scripted relay: ours serves what it holds, expired or not.
        let relay = common::hostile::HostileRelay::start(events.clone(), vec![], 0).await;
        let mut s = settings(&db, vec![relay.url.clone()]);
        s.retention.expiry_check_secs = 1;
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        let store = storage::open(&db.url, 1).await.unwrap();
        let reactions = || {
            let store = store.clone();
            let id = note.id.to_hex();
            async move {
                store
                    .stats_of(&id)
                    .await
                    .unwrap()
                    .unwrap_or_default()
                    .reactions
            }
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while reactions().await < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = reactions().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Counters::get(&app.counters.expired_purged) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while reactions().await > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let counters = app.counters.clone();
        assert!(app.shutdown(Duration::from_secs(30)).await);
        assert_eq!(
            before, 2,
            "the expiring reaction counted while it was stored"
        );
        assert_eq!(Counters::get(&counters.expired_purged), 1);
        // Served again at every cycle, and refused each time.
        assert!(
            counters.rejected_by(nostr_sync::metrics::Reject::Expired) >= 1,
            "the reaction that had expired already"
        );
        assert_faithful(&db, &events).await;
    });
}

/// An ephemeral event published on a live subscription is counted as skipped, never
/// stored; a note published after it is.
fn an_ephemeral_event_on_a_live_subscription_is_not_stored(db: TestDb) {
    run(async {
        let relay = HostedRelay::start(std::iter::empty(), 500).await.unwrap();
        let mut s = settings(&db, vec![relay.url().await]);
        s.sync.live = true;
        s.interval.idle_secs = 30;
        s.interval.normal_secs = 30;
        s.interval.busy_secs = 30;
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        let keys = Keys::generate();
        let ephemeral = sign(&keys, 20_001, Timestamp::now().as_secs(), "typing", vec![]);
        let note = sign(&keys, 1, Timestamp::now().as_secs(), "after", vec![]);
        relay.publish(&ephemeral).await.unwrap();
        relay.publish(&note).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Counters::get(&app.counters.stored) < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counters = app.counters.clone();
        assert!(app.shutdown(Duration::from_secs(30)).await);
        let skipped = counters.rejected_by(nostr_sync::metrics::Reject::Ephemeral);
        assert_eq!(skipped, 1, "the ephemeral event was not seen");
        let store = storage::open(&db.url, 1).await.unwrap();
        assert_eq!(stored_ids(&*store).await, vec![note.id]);
    });
}

/// Two service instances on one PostgreSQL database, each with several storage
/// workers, sync versions from overlapping relays at once: exactly the newest of each
/// address survives.
fn two_instances_keep_one_version(db: TestDb) {
    run(async {
        let t = base();
        let authors: Vec<Keys> = (0..20).map(|_| Keys::generate()).collect();
        let mut events = Vec::new();
        for keys in &authors {
            for step in 0..8u64 {
                let at = t + step;
                events.push(sign(keys, 0, at, &format!("profile {step}"), vec![]));
                let d = vec![tag(&["d", "post"])];
                events.push(sign(keys, 30_001, at, &format!("post {step}"), d));
            }
        }
        // Four relays, each holding every version with its own share: a relay keeps
        // only its newest version, so each serves a different one.
        let mut relays = Vec::new();
        let mut urls = Vec::new();
        for r in 0..4 {
            let held: Vec<&Event> = events
                .iter()
                .enumerate()
                .filter(|(i, _)| (i / 2 + r) % 4 != 0)
                .map(|(_, e)| e)
                .collect();
            let relay = HostedRelay::start(held, 500).await.unwrap();
            urls.push(relay.url().await);
            relays.push(relay);
        }
        let instance = |relays: Vec<String>| {
            let mut s = settings(&db, relays);
            s.storage.workers = 3;
            s
        };
        let one = App::start(instance(urls[..3].to_vec())).await.unwrap();
        let two = App::start(instance(urls[1..].to_vec())).await.unwrap();
        assert!(one.wait_for_cycles(1, SYNC_TIMEOUT).await);
        assert!(two.wait_for_cycles(1, SYNC_TIMEOUT).await);
        assert!(one.shutdown(Duration::from_secs(30)).await);
        assert!(two.shutdown(Duration::from_secs(30)).await);
        // What the relays served is what they kept: the oracle's newest of all.
        assert_faithful(&db, &events).await;
    });
}

#[test]
fn an_upgrade_applies_the_rules_to_stored_events_sqlite() {
    if let Some(db) = TestDb::unmigrated(common::Backend::Sqlite) {
        an_upgrade_applies_the_rules_to_stored_events(db);
    }
}

#[test]
fn an_upgrade_applies_the_rules_to_stored_events_postgres() {
    if let Some(db) = TestDb::unmigrated(common::Backend::Postgres) {
        an_upgrade_applies_the_rules_to_stored_events(db);
    }
}

/// The first migration of this issue.
const FAITHFUL: &str = "2026-11-28-100000";

/// A database filled by the previous release (every version kept, deletions stored
/// beside their targets and counted, an expired event) is
/// migrated: afterwards, and after the start-up purge and backlog, it holds what the
/// oracle keeps, with matching aggregates.
fn an_upgrade_applies_the_rules_to_stored_events(db: TestDb) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(match db.backend {
        common::Backend::Sqlite => "migrations/sqlite",
        common::Backend::Postgres => "migrations/postgres",
    });
    let mut previous: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.as_str() < FAITHFUL)
        .collect();
    previous.sort();
    // The previous release's schema, recorded the way diesel records what it ran.
    db.execute(
        "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
         run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    );
    for name in &previous {
        db.execute(&std::fs::read_to_string(dir.join(name).join("up.sql")).unwrap());
        let version: String = name[..17].chars().filter(char::is_ascii_digit).collect();
        db.execute(&format!(
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('{version}')"
        ));
    }

    let t = base();
    let (a, b) = (Keys::generate(), Keys::generate());
    let note = sign(&a, 1, t, "note", vec![]);
    let reaction = sign(&b, 7, t + 1, "+", vec![tag(&["e", &note.id.to_hex()])]);
    let events = vec![
        sign(&a, 0, t, "profile 1", vec![]),
        sign(&a, 0, t + 10, "profile 2", vec![]),
        sign(&a, 30_023, t, "x 1", vec![tag(&["d", "x"])]),
        sign(
            &a,
            30_023,
            t + 10,
            "x 2",
            vec![tag(&["title", "t"]), tag(&["d", "x"])],
        ),
        sign(&a, 30_023, t + 20, "y 1", vec![tag(&["d", "y"])]),
        note.clone(),
        reaction.clone(),
        sign(&b, 5, t + 2, "", vec![tag(&["e", &reaction.id.to_hex()])]),
        sign(
            &a,
            5,
            t + 15,
            "",
            vec![tag(&["a", &format!("30023:{}:x", a.public_key().to_hex())])],
        ),
        sign(
            &a,
            1,
            t,
            "gone",
            vec![tag(&["expiration", &(t + 5).to_string()])],
        ),
    ];
    // Rows as the previous release wrote them: everything stored, the reaction counted.
    for (seq, e) in events.iter().enumerate() {
        let counts = e.kind == Kind::Reaction;
        db.execute(&format!(
            "INSERT INTO events (seq, id, pubkey, created_at, kind, tags, content, sig, first_seen, aggregated) \
             VALUES ({}, '{}', '{}', {}, {}, '{}', '{}', '{}', {}, {})",
            seq + 1,
            e.id,
            e.pubkey,
            e.created_at.as_secs(),
            e.kind.as_u16(),
            serde_json::to_string(&e.tags).unwrap().replace('\'', "''"),
            e.content,
            e.sig,
            t,
            if counts { "TRUE" } else { "FALSE" },
        ));
    }
    db.execute(&format!(
        "INSERT INTO event_stats (event_id, reactions, replies, reposts, zaps, zap_msats) \
         VALUES ('{}', 1, 0, 0, 0, 0)",
        note.id
    ));

    storage::migrate::run_pending(&db.url).unwrap();
    run(async {
        let store = storage::open(&db.url, 2).await.unwrap();
        let purged = store
            .purge(Timestamp::now().as_secs() as i64, u64::MAX)
            .await
            .unwrap();
        // The expired note; the deleted reaction and the deleted address's version.
        assert_eq!(
            (purged.expired, purged.deleted, purged.retractions),
            (1, 2, 1)
        );
        nostr_sync::actors::aggregator::apply_backlog(&*store, &Default::default())
            .await
            .unwrap();
        assert_faithful(&db, &events).await;
        // What the next events meet: the heads and tombstones the migration filled.
        let stale = sign(&a, 30_023, t + 5, "y 0", vec![tag(&["d", "y"])]);
        let redelivered = reaction.clone();
        let written = store.insert_events(&[stale, redelivered]).await.unwrap();
        assert_eq!(written.rows, vec![None, None]);
        assert_eq!(
            (written.removals.superseded, written.removals.deleted),
            (1, 1)
        );
    });
}

/// Per-relay filters (`[[relay]]`) with tag filters, `until`, and an author list split
/// across REQs: what is stored is what the filters select (written here from NIP-01's
/// filter rules), nothing missing.
fn configured_filters_select_what_they_say(db: TestDb) {
    run(async {
        let t = base();
        let authors: Vec<Keys> = (0..5).map(|_| Keys::generate()).collect();
        let stranger = Keys::generate();
        let mut events = Vec::new();
        for (n, keys) in authors.iter().chain([&stranger]).enumerate() {
            for i in 0..6u64 {
                let topic = if i % 2 == 0 { "nostr" } else { "other" };
                let at = t + 100 * i + n as u64;
                events.push(sign(
                    keys,
                    1,
                    at,
                    &format!("{n} {i}"),
                    vec![tag(&["t", topic])],
                ));
            }
        }
        let target = events[0].clone();
        for (n, keys) in authors.iter().enumerate() {
            let e = if n % 2 == 0 { &target } else { &events[7] };
            events.push(sign(
                keys,
                7,
                t + 50,
                "+",
                vec![tag(&["e", &e.id.to_hex()])],
            ));
        }
        let until = t + 300;
        let notes = HostedRelay::start(&events, 500).await.unwrap();
        let reactions = HostedRelay::start(&events, 500).await.unwrap();
        let mut s = settings(&db, vec![]);
        s.sync.max_authors_per_req = 2;
        let hex: Vec<String> = authors.iter().map(|k| k.public_key().to_hex()).collect();
        s.relay.push(nostr_sync::config::RelaySettings {
            url: notes.url().await,
            filters: vec![nostr_sync::config::FilterSettings {
                kinds: vec![1],
                authors: hex.clone(),
                t: vec!["nostr".into()],
                until,
                ..Default::default()
            }],
            page_limit: 2,
            ..Default::default()
        });
        s.relay.push(nostr_sync::config::RelaySettings {
            url: reactions.url().await,
            filters: vec![nostr_sync::config::FilterSettings {
                kinds: vec![7],
                e: vec![target.id.to_hex()],
                ..Default::default()
            }],
            ..Default::default()
        });
        sync_once(s).await;
        // NIP-01: every condition of a filter holds; a tag filter matches an event
        // with one of the values in that tag; `until` is inclusive.
        let has = |e: &Event, name: &str, value: &str| {
            e.tags
                .iter()
                .map(|t| t.as_slice())
                .any(|t| t.len() > 1 && t[0] == name && t[1] == value)
        };
        let want: HashSet<EventId> = events
            .iter()
            .filter(|e| {
                let note = e.kind == Kind::TextNote
                    && hex.contains(&e.pubkey.to_hex())
                    && has(e, "t", "nostr")
                    && e.created_at.as_secs() <= until;
                let reaction = e.kind == Kind::Reaction && has(e, "e", &target.id.to_hex());
                note || reaction
            })
            .map(|e| e.id)
            .collect();
        let store = storage::open(&db.url, 1).await.unwrap();
        let got: HashSet<EventId> = stored_ids(&*store).await.into_iter().collect();
        assert_eq!(got, want);
        let states = store.overview().await.unwrap().states;
        assert_eq!(
            states.len(),
            4,
            "three REQ filters for five authors, one for reactions"
        );
    });
}

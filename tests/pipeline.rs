//! End to end: real relays on loopback, the real pipeline, a real database.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{lock_writes, run, settings, stored_ids, sync_once, TestDb, SYNC_TIMEOUT};
use nostr_sdk::prelude::*;
use nostr_sync::app::App;
use nostr_sync::config::{Negentropy, ReconcileFrom};
use nostr_sync::metrics::{Counters, Reject};
use nostr_sync::storage;
use nostr_sync_tools::dataset::{Dataset, HostedRelay};

/// Ephemeral events (NIP-01) and events whose NIP-40 expiration has passed are
/// counted and never stored, whether backfilled or live; an event expiring later is.
fn ephemeral_and_expired_events_are_not_stored(db: TestDb) {
    run(async {
        let data = Dataset::generate(200, 1, 0.0, 34);
        let keys = Keys::generate();
        let now = Timestamp::now().as_secs();
        let sign = |b: EventBuilder| b.sign_with_keys(&keys).unwrap();
        let expiring = |at: u64, i: usize| {
            sign(
                EventBuilder::text_note(format!("expiring {i}"))
                    .tag(Tag::parse(["expiration", &at.to_string()]).unwrap()),
            )
        };
        let ephemeral: Vec<Event> = (0..30)
            .map(|i| sign(EventBuilder::new(Kind::from(20_001), format!("typing {i}"))))
            .collect();
        let expired: Vec<Event> = (0..20).map(|i| expiring(now - 60, i)).collect();
        let later: Vec<Event> = (0..10).map(|i| expiring(now + 86_400, 100 + i)).collect();
        // nostr-relay-builder keeps neither ephemeral nor expired events, as relays
        // should not: a scripted relay serves those.
        let relay = HostedRelay::start(data.events.iter().chain(&later), 500)
            .await
            .unwrap();
        let careless = common::hostile::HostileRelay::start(
            ephemeral.iter().chain(&expired).cloned().collect(),
            vec![],
            0,
        )
        .await;
        let mut s = settings(&db, vec![relay.url().await, careless.url.clone()]);
        s.sync.live = true;
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        // Live: an ephemeral event, then a note to wait for.
        let live_ephemeral = sign(EventBuilder::new(Kind::from(20_002), "live typing"));
        let live_note = sign(EventBuilder::text_note("live note"));
        relay.publish(&live_ephemeral).await.unwrap();
        relay.publish(&live_note).await.unwrap();
        let want = 200 + 10 + 1;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while Counters::get(&app.counters.stored) < want && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counters = app.counters.clone();
        assert!(app.shutdown(Duration::from_secs(30)).await);
        let (ephemeral_seen, expired_seen) = (
            counters.rejected_by(Reject::Ephemeral),
            counters.rejected_by(Reject::Expired),
        );
        eprintln!("skipped: {ephemeral_seen} ephemeral, {expired_seen} expired");
        assert!(ephemeral_seen >= 31, "{ephemeral_seen}");
        assert!(expired_seen >= 20, "{expired_seen}");
        let store = storage::open(&db.url, 2).await.unwrap();
        let ids: HashSet<EventId> = stored_ids(&*store).await.into_iter().collect();
        let mut expected: HashSet<EventId> = data.events.iter().map(|e| e.id).collect();
        expected.extend(later.iter().map(|e| e.id));
        expected.insert(live_note.id);
        assert_eq!(ids, expected);
    });
}

/// 100,000 events on one relay, signed once per run.
fn hundred_thousand() -> &'static Dataset {
    static DATA: std::sync::OnceLock<Dataset> = std::sync::OnceLock::new();
    DATA.get_or_init(|| Dataset::generate(100_000, 1, 0.0, 6))
}

/// A relay holds 100,000 events of which we hold 99,000 (from elsewhere): the
/// reconciliation (NIP-77, our side from the fingerprints) transfers about 1,000
/// events, not 100,000, and the copy ends complete and exact. A relay holding one
/// more, new to us, is compared with every stored event; one that provenance records
/// as having delivered every other event we hold is compared with what it delivered
/// (against every stored event, every range would differ): either way the one it has
/// more costs its second, not the rest.
fn negentropy_catch_up_transfers_only_what_is_missing(db: TestDb) {
    run(async {
        let data = hundred_thousand();
        let store = storage::open(&db.url, 2).await.unwrap();
        let held: Vec<Event> = data
            .events
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 100 != 7)
            .map(|(_, e)| e.clone())
            .collect();
        for chunk in held.chunks(2_000) {
            store.insert_events(chunk).await.unwrap();
        }
        assert_eq!(store.count_events().await.unwrap(), 99_000);
        let relay = HostedRelay::start(&data.events, 100_000).await.unwrap();
        let url = relay.url().await;
        let from_fingerprints = |urls| {
            let mut s = settings(&db, urls);
            s.sync.reconcile_from = ReconcileFrom::Fingerprints;
            s
        };
        let counters = sync_once(from_fingerprints(vec![url.clone()])).await;
        let relay_counters = counters.relay(&url);
        let received = counters.received();
        assert!(
            (1_000..=1_100).contains(&received),
            "{received} events received for 1,000 missing"
        );
        assert!(Counters::get(&relay_counters.reconciliations) >= 1);
        assert_eq!(Counters::get(&relay_counters.fetched_by_id), 1_000);
        assert_eq!(store.count_events().await.unwrap(), 100_000);
        assert_eq!(
            store.stats().await.unwrap(),
            common::oracle::expected_stats(&data.events)
        );
        // Our side came from the per-second fingerprints: what was read of the
        // 99,000 held is about the ids the relay listed near the missing ones.
        let read = Counters::get(&relay_counters.fingerprint_rows_read);
        eprintln!("rows read: {read}");
        assert!(
            read < 50_000,
            "{read} rows read for 1,000 missing of 100,000"
        );

        // Another relay holds all of them and one more, dated in the oldest hour: it
        // is found, and what is read of ours is about that hour's second, not the rest.
        let extra = EventBuilder::text_note("late")
            .custom_created_at(data.events[5].created_at)
            .sign_with_keys(&Keys::generate())
            .unwrap();
        let all: Vec<&Event> = data.events.iter().chain([&extra]).collect();
        let relay = HostedRelay::start(all.iter().copied(), 100_000)
            .await
            .unwrap();
        let url = relay.url().await;
        let counters = sync_once(from_fingerprints(vec![url.clone()])).await;
        let c = counters.relay(&url);
        assert_eq!(Counters::get(&c.fetched_by_id), 1);
        assert_eq!(store.count_events().await.unwrap(), 100_001);
        let read = Counters::get(&c.fingerprint_rows_read);
        assert!(
            (1..=64).contains(&read),
            "{read} rows read for one event missing of 100,001"
        );

        // A relay that delivered every other event (provenance says so), holding one
        // more.
        let another = EventBuilder::text_note("later still")
            .custom_created_at(data.events[50_000].created_at)
            .sign_with_keys(&Keys::generate())
            .unwrap();
        let half: Vec<&Event> = data.events.iter().step_by(2).collect();
        let relay = HostedRelay::start(half.iter().copied().chain([&another]), 100_000)
            .await
            .unwrap();
        let url = relay.url().await;
        let reg = store.registry();
        let entry = nostr_sync::storage::registry::NewRelay {
            url: nostr_sync::fleet::normalise(&url).unwrap(),
            source: "config",
            settings: String::new(),
        };
        reg.add_relay(&entry, 1).await.unwrap();
        let round = reg.lease_round("delivered", 1, 30).await.unwrap();
        let source = round.held.iter().find(|l| l.url == entry.url).unwrap().id;
        reg.leave("delivered").await.unwrap();
        let delivered: Vec<nostr_sync::storage::Sighting> = half
            .iter()
            .map(|e| nostr_sync::storage::Sighting::of(e, source, 1, 0))
            .collect();
        for chunk in delivered.chunks(5_000) {
            store.write_batch(&[], chunk).await.unwrap();
        }
        let theirs = store
            .fingerprint_sums(source, &[], &[(0, i64::MAX)])
            .await
            .unwrap();
        assert_eq!(theirs[0].count, 50_000);
        let counters = sync_once(from_fingerprints(vec![url.clone()])).await;
        let c = counters.relay(&url);
        assert_eq!(Counters::get(&c.fetched_by_id), 1);
        assert_eq!(store.count_events().await.unwrap(), 100_002);
        let read = Counters::get(&c.fingerprint_rows_read);
        assert!(
            (1..=64).contains(&read),
            "{read} rows read for one event missing of the relay's 50,001"
        );
    });
}

both_backends!(
    ephemeral_and_expired_events_are_not_stored,
    negentropy_catch_up_transfers_only_what_is_missing,
    overlapping_relays_store_each_event_once,
    stored_copies_are_looked_up_not_verified_again,
    forged_events_are_rejected_and_never_stored,
    restart_resumes_without_gaps_or_double_counts,
    relay_page_limit_is_paged_through,
    stalled_storage_bounds_what_is_held,
    hundred_thousand_events_survive_a_slow_database,
    an_interrupted_sync_resumes_where_it_stopped,
);

/// `n` events on one relay capped at `max_limit` per REQ, and settings syncing it.
async fn one_relay(
    db: &TestDb,
    n: usize,
    seed: u64,
    max_limit: usize,
) -> (Dataset, HostedRelay, nostr_sync::config::Settings) {
    let data = Dataset::generate(n, 1, 0.0, seed);
    let relay = HostedRelay::start(data.relay_events(0), max_limit)
        .await
        .unwrap();
    let s = settings(db, vec![relay.url().await]);
    (data, relay, s)
}

fn overlapping_relays_store_each_event_once(db: TestDb) {
    run(async {
        let data = Dataset::generate(1_500, 3, 0.5, 1);
        let (_relays, urls) = common::host(&data, &[500]).await;
        let counters = sync_once(settings(&db, urls)).await;

        let store = storage::open(&db.url, 2).await.unwrap();
        let ids = stored_ids(&*store).await;
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(ids.len(), unique.len(), "an event is stored twice");
        let expected: HashSet<_> = data.events.iter().map(|e| &e.id).collect();
        assert_eq!(unique, expected);
        let delivered: usize = data.placement.iter().map(Vec::len).sum();
        // Paging back re-reads the boundary second of each full page.
        assert!(counters.received() as usize >= delivered);
        assert_eq!(Counters::get(&counters.stored) as usize, data.events.len());
        assert_eq!(
            store.stats().await.unwrap(),
            common::oracle::expected_stats(&data.events)
        );
        assert_eq!(
            storage::recount(&*store, &Default::default())
                .await
                .unwrap(),
            common::oracle::expected_stats(&data.events)
        );
    });
}

/// Copies of stored events that the dedup LRU does not hold (a new run, relays new to
/// it, paged from the top) are found in the database and dropped before verification:
/// each id is looked up once, none is verified or stored again.
fn stored_copies_are_looked_up_not_verified_again(db: TestDb) {
    run(async {
        let data = Dataset::generate(1_500, 2, 0.5, 11);
        let (_relays, urls) = common::host(&data, &[500]).await;
        let mut s = settings(&db, urls);
        s.sync.negentropy = Negentropy::Off;
        let first = sync_once(s.clone()).await;
        assert_eq!(Counters::get(&first.stored) as usize, data.events.len());

        let (_again, urls) = common::host(&data, &[500]).await;
        s.relays = urls;
        let second = sync_once(s).await;
        assert!(second.received() as usize >= data.events.len());
        assert_eq!(Counters::get(&second.stored), 0);
        assert_eq!(
            Counters::get(&second.verified),
            0,
            "a stored event was verified again"
        );
        assert_eq!(
            Counters::get(&second.found_stored) as usize,
            data.events.len(),
            "each stored id is looked up once"
        );
    });
}

/// `event` with its signature replaced by another event's.
fn bad_signature(event: &Event, other: &Event) -> Event {
    let mut json: serde_json::Value = serde_json::from_str(&event.as_json()).unwrap();
    json["sig"] = other.sig.to_string().into();
    Event::from_json(json.to_string()).unwrap()
}

/// `event` with its content changed but its id and signature kept.
fn wrong_id(event: &Event) -> Event {
    let mut json: serde_json::Value = serde_json::from_str(&event.as_json()).unwrap();
    json["content"] = "tampered".into();
    Event::from_json(json.to_string()).unwrap()
}

fn forged_events_are_rejected_and_never_stored(db: TestDb) {
    run(async {
        let data = Dataset::generate(300, 1, 0.0, 2);
        let (good, rest) = data.events.split_at(100);
        // Forgeries of events no relay holds genuinely: all must be counted.
        let orphans: Vec<Event> = rest[..30]
            .iter()
            .map(|e| bad_signature(e, &good[0]))
            .chain(rest[30..60].iter().map(wrong_id))
            .collect();
        // Forged copies of genuine events another relay holds: the genuine one wins.
        let copies: Vec<Event> = good[..20]
            .iter()
            .map(|e| bad_signature(e, &good[99]))
            .chain(good[20..40].iter().map(wrong_id))
            .collect();
        let hostile = HostedRelay::start(orphans.iter().chain(&copies), 500)
            .await
            .unwrap();
        let honest = HostedRelay::start(good, 500).await.unwrap();
        let counters =
            sync_once(settings(&db, vec![hostile.url().await, honest.url().await])).await;

        // Each orphan forgery is counted; a forged copy is counted when it reached
        // verification before its genuine event was stored, or skipped as a duplicate.
        // Paging reads each page's oldest second again (more events may share it), so
        // a forgery dated there is received, and counted, once more.
        for reason in [Reject::BadSignature, Reject::BadId] {
            let n = counters.rejected_by(reason);
            assert!((30..=55).contains(&n), "{reason:?}: {n}");
        }
        let store = storage::open(&db.url, 2).await.unwrap();
        let stored: Vec<Event> = store
            .events_after(0, 1_000)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        assert_eq!(stored.len(), 100);
        for e in &stored {
            assert!(e.verify().is_ok(), "stored event {} does not verify", e.id);
        }
        let ids: HashSet<_> = stored.iter().map(|e| e.id).collect();
        assert!(orphans.iter().all(|e| !ids.contains(&e.id)));
    });
}

fn restart_resumes_without_gaps_or_double_counts(db: TestDb) {
    run(async {
        let data = Dataset::generate(1_000, 2, 0.5, 3);
        let (relays, urls) = common::host(&data, &[500]).await;
        let s = settings(&db, urls);
        sync_once(s.clone()).await;

        // New events arrive on both relays while the syncer is down: replies,
        // reactions and zaps to events stored in the first run.
        let keys = Keys::generate();
        let mut later = Vec::new();
        for (i, target) in data.events.iter().take(200).enumerate() {
            let builder = match i % 3 {
                0 => EventBuilder::new(Kind::Reaction, "+").tag(Tag::event(target.id)),
                1 => EventBuilder::text_note("later reply")
                    .tag(Tag::parse(["e", &target.id.to_hex(), "", "reply"]).unwrap()),
                _ => EventBuilder::new(Kind::ZapReceipt, "")
                    .tag(Tag::event(target.id))
                    .tag(Tag::parse(["bolt11", "lnbc10u1pjq"]).unwrap()),
            };
            later.push(builder.sign_with_keys(&keys).unwrap());
        }
        for (i, event) in later.iter().enumerate() {
            relays[i % 2].publish(event).await.unwrap();
            if i % 4 == 0 {
                relays[(i + 1) % 2].publish(event).await.unwrap();
            }
        }
        let counters = sync_once(s).await;

        let store = storage::open(&db.url, 2).await.unwrap();
        assert_eq!(store.count_events().await.unwrap() as usize, 1_200);
        assert_eq!(
            Counters::get(&counters.stored),
            200,
            "second run stored old events again"
        );
        let all: Vec<Event> = data.events.iter().chain(&later).cloned().collect();
        assert_eq!(
            store.stats().await.unwrap(),
            common::oracle::expected_stats(&all)
        );
    });
}

fn relay_page_limit_is_paged_through(db: TestDb) {
    run(async {
        let (_data, _relay, mut s) = one_relay(&db, 5_000, 4, 500).await;
        s.sync.negentropy = Negentropy::Off;
        let counters = sync_once(s).await;
        let store = storage::open(&db.url, 2).await.unwrap();
        assert_eq!(store.count_events().await.unwrap(), 5_000);
        assert!(counters.received() >= 5_000);
    });
}

fn stalled_storage_bounds_what_is_held(db: TestDb) {
    run(async {
        let (_data, _relay, mut s) = one_relay(&db, 5_000, 5, 5_000).await;
        s.mailbox.max_batch_events = 50;
        s.mailbox.storage = 200;
        s.mailbox.relay_frames = 64;
        s.storage.workers = 2;
        s.sync.performance.max_batch_rows = 100;
        s.database.retry_max_ms = 200;
        s.validate().unwrap();
        let bound = s.max_held_events() as i64;
        common::take_leases(&mut s).await;

        let release = lock_writes(&db).await;
        let app = App::start(s).await.unwrap();
        // Let the relay push as hard as it can against the stalled database.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let held = app.counters.held.get();
        let stored_while_stalled = Counters::get(&app.counters.stored);
        release();

        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        let peak = app.counters.held.peak();
        let store = app.store.clone();
        assert!(app.shutdown(Duration::from_secs(30)).await);

        assert_eq!(stored_while_stalled, 0, "the database was not stalled");
        assert!(held > 0, "nothing reached the pipeline while stalled");
        assert!(peak <= bound, "held {peak} events, bound {bound}");
        assert_eq!(store.count_events().await.unwrap(), 5_000);
    });
}

/// nostr-sdk's own event path drops events when its consumer lags; the measured loss
/// with 100,000 events was most of them. One REQ returns all 100,000 here while the
/// database stalls twice mid-stream.
fn hundred_thousand_events_survive_a_slow_database(db: TestDb) {
    run(async {
        let data = hundred_thousand();
        let relay = HostedRelay::start(&data.events, 100_000).await.unwrap();
        let mut s = settings(&db, vec![relay.url().await]);
        // One REQ streams all 100,000 (reconciliation would fetch them by id).
        s.sync.negentropy = Negentropy::Off;
        s.sync.page_limit = 100_000;
        s.sync.eose_timeout_secs = 300;
        s.database.retry_max_ms = 200;
        let app = App::start(s).await.unwrap();
        for _ in 0..2 {
            while Counters::get(&app.counters.stored) == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let release = lock_writes(&db).await;
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            release();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(app.wait_for_cycles(1, Duration::from_secs(600)).await);
        let store = app.store.clone();
        let counters = app.counters.clone();
        assert!(app.shutdown(Duration::from_secs(30)).await);
        assert_eq!(store.count_events().await.unwrap(), 100_000);
        assert!(counters.received() >= 100_000);
        assert_eq!(
            store.stats().await.unwrap(),
            common::oracle::expected_stats(&data.events)
        );
    });
}

/// A cycle stopped halfway leaves its progress behind: the next run reads what is
/// newer, then carries on from where the first stopped instead of from the top.
fn an_interrupted_sync_resumes_where_it_stopped(db: TestDb) {
    run(async {
        let (data, _relay, mut s) = one_relay(&db, 30_000, 7, 500).await;
        // Few events in flight: those committed at the stop but not yet recorded as
        // progress are read again.
        s.mailbox.storage = 500;
        s.mailbox.max_batch_events = 100;
        let in_flight = s.max_held_events() as u64;
        let app = App::start(s.clone()).await.unwrap();
        while Counters::get(&app.counters.stored) < 5_000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(app.shutdown(Duration::from_secs(30)).await);
        let store = storage::open(&db.url, 2).await.unwrap();
        let first = store.count_events().await.unwrap() as u64;
        assert!(first < 30_000, "the first run finished its cycle");

        let counters = sync_once(s).await;
        assert_eq!(store.count_events().await.unwrap(), 30_000);
        assert_eq!(
            store.stats().await.unwrap(),
            common::oracle::expected_stats(&data.events)
        );
        // What was left, what was in flight at the stop, and a margin for the overlap
        // window and boundary seconds; a run from the top would read all 30,000.
        let received = counters.received();
        eprintln!("resumed: {first} stored at the stop, {received} received after it");
        assert!(
            received <= 30_000 - first + in_flight + 1_000,
            "second run received {received} after {first} were stored"
        );
    });
}

//! The `EventStore` contract, the same cases on PostgreSQL and SQLite: what a store
//! keeps of a set of events and what it counts for them follow the NIPs (the oracle in
//! `common::oracle`) whatever order and batches the events arrive in; writing again
//! changes nothing. (Cursors and window outcomes: `tests/registry.rs`.)

mod common;

use std::collections::HashMap;

use common::oracle::{expected_stats, kept};
use common::{run, stored_ids, TestDb};
use nostr_sdk::prelude::*;
use nostr_sync::actors::aggregator::apply_backlog;
use nostr_sync::metrics::Counters;
use nostr_sync::nostr::aggregate::StatsDelta;
use nostr_sync::storage::{self, EventStore, ItemQuery};

/// Notes, replies, reactions and reposts among three authors; versions of a profile
/// and of an article; deletions by id and by address, before and after what they
/// name, and one by a stranger that must delete nothing.
fn events() -> Vec<Event> {
    let keys: Vec<Keys> = (1..=3u8)
        .map(|i| Keys::new(SecretKey::from_slice(&[i; 32]).unwrap()))
        .collect();
    let t0 = 1_700_000_000u64;
    let sign = |k: &Keys, b: EventBuilder, at: u64| {
        b.custom_created_at(Timestamp::from(at))
            .sign_with_keys(k)
            .unwrap()
    };
    let tag = |parts: &[&str]| Tag::parse(parts.iter().copied()).unwrap();
    let mut out = Vec::new();
    let notes: Vec<Event> = (0..6)
        .map(|i| {
            sign(
                &keys[i % 3],
                EventBuilder::text_note(format!("note {i}")),
                t0 + i as u64,
            )
        })
        .collect();
    out.extend(notes.iter().cloned());
    for (i, n) in notes.iter().enumerate() {
        let id = n.id.to_hex();
        let author = &keys[(i + 1) % 3];
        out.push(sign(
            author,
            EventBuilder::new(Kind::Reaction, "+").tag(tag(&["e", &id])),
            t0 + 100 + i as u64,
        ));
        out.push(sign(
            author,
            EventBuilder::text_note(format!("reply {i}")).tag(tag(&["e", &id, "", "reply"])),
            t0 + 200 + i as u64,
        ));
        out.push(sign(
            &keys[(i + 2) % 3],
            EventBuilder::new(Kind::Repost, "").tag(tag(&["e", &id])),
            t0 + 300 + i as u64,
        ));
    }
    // Versions: three of a profile, three of an article (two at the same second).
    for v in 0..3u64 {
        out.push(sign(
            &keys[0],
            EventBuilder::new(Kind::Metadata, format!("{{\"name\":\"v{v}\"}}")),
            t0 + 400 + v,
        ));
    }
    for (v, at) in [(0u64, 500u64), (1, 510), (2, 510)] {
        out.push(sign(
            &keys[1],
            EventBuilder::new(Kind::LongFormTextNote, format!("draft {v}"))
                .tag(tag(&["d", "essay"])),
            t0 + at,
        ));
    }
    let essay = format!("30023:{}:essay", keys[1].public_key().to_hex());
    out.push(sign(
        &keys[2],
        EventBuilder::new(Kind::GenericRepost, "").tag(tag(&["a", &essay])),
        t0 + 520,
    ));
    // Deletions: an author's own note (and, in the same request, someone else's note,
    // which must stay); an author's own reaction; every version of the article up to
    // the second of its newest two.
    let reaction = out
        .iter()
        .find(|e| e.kind == Kind::Reaction && e.pubkey == keys[2].public_key())
        .unwrap()
        .id
        .to_hex();
    out.push(sign(
        &keys[0],
        EventBuilder::new(Kind::EventDeletion, "")
            .tag(tag(&["e", &notes[0].id.to_hex()]))
            .tag(tag(&["e", &notes[1].id.to_hex()])),
        t0 + 600,
    ));
    out.push(sign(
        &keys[2],
        EventBuilder::new(Kind::EventDeletion, "").tag(tag(&["e", &reaction])),
        t0 + 601,
    ));
    out.push(sign(
        &keys[1],
        EventBuilder::new(Kind::EventDeletion, "").tag(tag(&["a", &essay])),
        t0 + 510,
    ));
    out
}

/// Applies every aggregate left: contributions, retractions, and zap receipts judged
/// by the rules alone.
async fn apply_all(store: &dyn EventStore) {
    apply_backlog(store, &Counters::default()).await.unwrap();
    nostr_sync::actors::zaps::judge::judge_backlog(
        &*store.zap_store(),
        &Default::default(),
        nostr_sync::storage::now_secs(),
        86_400,
    )
    .await
    .unwrap();
}

/// Writes `batches` in order, then applies every aggregate, and checks the store
/// against the oracle: the events kept, and the stats table.
async fn write_and_check(store: &dyn EventStore, all: &[Event], batches: Vec<Vec<Event>>) {
    for batch in &batches {
        store.insert_events(batch).await.unwrap();
    }
    apply_all(store).await;
    let want = kept(all, u64::MAX / 2);
    let mut got = stored_ids(store).await;
    got.sort();
    let want_ids: Vec<EventId> = want.iter().map(|e| e.id).collect();
    assert_eq!(got, want_ids, "events kept");
    let stats: HashMap<String, StatsDelta> = store
        .stats()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, s)| *s != StatsDelta::default())
        .collect();
    assert_eq!(stats, expected_stats(&want), "stats");
    assert_fingerprints(store).await;
}

/// The fingerprint of `events` by the protocol's reference (the `negentropy` crate).
fn reference(events: &[&Event]) -> [u8; 16] {
    use negentropy::{Id, NegentropyStorageBase, NegentropyStorageVector};
    let mut v = NegentropyStorageVector::new();
    for e in events {
        v.insert(e.created_at.as_secs(), Id::from_byte_array(e.id.to_bytes()))
            .unwrap();
    }
    v.seal().unwrap();
    v.fingerprint(0, events.len()).unwrap().to_bytes()
}

/// The maintained fingerprints are those of the stored events, computed apart by the
/// protocol's reference (the `negentropy` crate): per second and kind, and in total
/// (where rows of what was removed would show); the store's own recount agrees.
async fn assert_fingerprints(store: &dyn EventStore) {
    let stored: Vec<Event> = store
        .events_after(0, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let mut groups: HashMap<(u64, u16), Vec<&Event>> = HashMap::new();
    for e in &stored {
        groups
            .entry((e.created_at.as_secs(), e.kind.as_u16()))
            .or_default()
            .push(e);
    }
    for ((at, kind), events) in &groups {
        let at = *at as i64;
        let sums = store
            .fingerprint_sums(0, &[i32::from(*kind)], &[(at, at + 1)])
            .await
            .unwrap();
        assert_eq!(
            sums[0].count,
            events.len() as i64,
            "second {at}, kind {kind}"
        );
        assert_eq!(
            sums[0].fingerprint(),
            reference(events),
            "second {at}, kind {kind}"
        );
    }
    // Per second, every kind: what a reconciliation reads first.
    let mut seconds: std::collections::BTreeMap<i64, Vec<&Event>> = Default::default();
    for e in &stored {
        seconds
            .entry(e.created_at.as_secs() as i64)
            .or_default()
            .push(e);
    }
    let read = store
        .fingerprint_seconds(0, &[], 0, i64::MAX, 1_000_000)
        .await
        .unwrap();
    let read: Vec<(i64, i64, [u8; 16])> = read
        .iter()
        .map(|(at, sum)| (*at, sum.count, sum.fingerprint()))
        .collect();
    let expected: Vec<(i64, i64, [u8; 16])> = seconds
        .iter()
        .map(|(at, events)| (*at, events.len() as i64, reference(events)))
        .collect();
    assert_eq!(read, expected, "per-second sums");
    let all = store
        .fingerprint_sums(0, &[], &[(0, i64::MAX)])
        .await
        .unwrap();
    assert_eq!(
        all[0].fingerprint(),
        reference(&stored.iter().collect::<Vec<_>>())
    );
    let (recounted, differing) = store.check_fingerprints(false).await.unwrap();
    assert_eq!(differing, 0, "of {recounted} rows recounted");
}

fn arrival_order_changes_nothing(db: TestDb) {
    let all = events();
    let mut reversed = all.clone();
    reversed.reverse();
    // Interleaved: every third event first, then the rest.
    let interleaved: Vec<Event> = (0..3)
        .flat_map(|r| all.iter().skip(r).step_by(3).cloned().collect::<Vec<_>>())
        .collect();
    let orders: Vec<(&str, Vec<Vec<Event>>)> = vec![
        ("one batch", vec![all.clone()]),
        (
            "one at a time",
            all.iter().map(|e| vec![e.clone()]).collect(),
        ),
        (
            "reversed, one at a time",
            reversed.iter().map(|e| vec![e.clone()]).collect(),
        ),
        (
            "interleaved, in sevens",
            interleaved.chunks(7).map(<[Event]>::to_vec).collect(),
        ),
    ];
    // Each order on a fresh database of the same backend (made outside the runtime:
    // the harness sets PostgreSQL schemas up with blocking connections).
    let fresh: Vec<TestDb> = orders
        .iter()
        .map(|_| TestDb::new(db.backend).unwrap())
        .collect();
    run(async {
        for ((name, batches), fresh) in orders.into_iter().zip(&fresh) {
            eprintln!("order: {name}");
            let store = storage::open(&fresh.url, 2).await.unwrap();
            write_and_check(&*store, &all, batches).await;
        }
    });
}

fn writing_again_changes_nothing(db: TestDb) {
    run(async {
        let all = events();
        let store = storage::open(&db.url, 2).await.unwrap();
        let first = store.insert_events(&all).await.unwrap();
        assert!(first.rows.iter().any(Option::is_some));
        // The whole set again, and a batch holding each event twice.
        let again = store.insert_events(&all).await.unwrap();
        assert!(again.rows.iter().all(Option::is_none), "{again:?}");
        let twice: Vec<Event> = all.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
        let twice = store.insert_events(&twice).await.unwrap();
        assert!(twice.rows.iter().all(Option::is_none), "{twice:?}");
        assert_eq!(twice.removals.retractions, 0);
        // Aggregates applied twice count once.
        apply_all(&*store).await;
        let applied = store.stats().await.unwrap();
        apply_all(&*store).await;
        assert_eq!(store.stats().await.unwrap(), applied);
        write_and_check(&*store, &all, vec![all.clone()]).await;
    });
}

/// A batch's rows come back in input order: the row of each new event, `None` for
/// the rest.
fn rows_follow_the_batch(db: TestDb) {
    run(async {
        let all = events();
        let store = storage::open(&db.url, 2).await.unwrap();
        let notes: Vec<Event> = all
            .iter()
            .filter(|e| e.kind == Kind::TextNote)
            .cloned()
            .collect();
        let (old, new) = notes.split_at(notes.len() / 2);
        store.insert_events(old).await.unwrap();
        let mixed: Vec<Event> = new
            .iter()
            .zip(old)
            .flat_map(|(n, o)| [n.clone(), o.clone()])
            .collect();
        let written = store.insert_events(&mixed).await.unwrap();
        for (event, row) in mixed.iter().zip(&written.rows) {
            assert_eq!(row.is_some(), new.contains(event), "{}", event.id);
        }
        let by_seq = store.events_after(0, 1_000).await.unwrap();
        for (event, row) in mixed.iter().zip(&written.rows) {
            if let Some(seq) = row {
                assert!(by_seq.iter().any(|(s, e)| s == seq && e.id == event.id));
            }
        }
    });
}

fn queries_read_what_was_written(db: TestDb) {
    run(async {
        let all = events();
        let store = storage::open(&db.url, 2).await.unwrap();
        store.insert_events(&all).await.unwrap();
        let want = kept(&all, u64::MAX / 2);
        assert_eq!(store.count_events().await.unwrap(), want.len() as i64);
        // The newest profile version.
        let profile = want.iter().find(|e| e.kind == Kind::Metadata).unwrap();
        let got = store
            .profile(&profile.pubkey.to_hex())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.id, profile.id);
        // Items: one author's notes in a time range.
        let author = want
            .iter()
            .find(|e| e.kind == Kind::TextNote)
            .unwrap()
            .pubkey;
        let (since, until) = (1_700_000_000, 1_700_000_250);
        let mut want_items: Vec<(String, i64)> = want
            .iter()
            .filter(|e| e.kind == Kind::TextNote && e.pubkey == author)
            .filter(|e| (since..=until).contains(&(e.created_at.as_secs() as i64)))
            .map(|e| (e.id.to_hex(), e.created_at.as_secs() as i64))
            .collect();
        let q = ItemQuery {
            kinds: vec![1],
            authors: vec![author.to_hex()],
            since,
            until,
            limit: 100,
        };
        let mut items = store.items(&q).await.unwrap();
        items.sort();
        want_items.sort();
        assert_eq!(items, want_items);
        let overview = store.overview().await.unwrap();
        assert_eq!(overview.events, want.len() as i64);
    });
}

/// Deletions naming ids never stored, signed once per run: `(first, rest, blocked,
/// freed)`. `first` (by one author) names the id of `freed` and made-up ids; each of
/// the 499 `rest` (by another) names 2,000 ids, the last of them the id of `blocked`
/// too. Neither note is stored. Made-up ids start with `f` and the notes' do not, so
/// the notes' are among the 1,000 lowest (those a deletion records).
fn many_deletions() -> &'static (Event, Vec<Event>, Event, Event) {
    static SET: std::sync::OnceLock<(Event, Vec<Event>, Event, Event)> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let (k0, k) = (Keys::generate(), Keys::generate());
        let mut n = 0u128;
        let mut made_up = move || {
            n += 1;
            let x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            format!("f{:031x}{:032x}", x >> 4, x.rotate_left(61) ^ n)
        };
        let deletion = |keys: &Keys, ids: Vec<String>| {
            EventBuilder::new(Kind::EventDeletion, "")
                .tags(ids.iter().map(|id| Tag::parse(["e", id.as_str()]).unwrap()))
                .sign_with_keys(keys)
                .unwrap()
        };
        let note = |keys: &Keys, text: &str| {
            (0..)
                .map(|i| {
                    EventBuilder::text_note(format!("{text} {i}"))
                        .sign_with_keys(keys)
                        .unwrap()
                })
                .find(|e| !e.id.to_hex().starts_with('f'))
                .unwrap()
        };
        let (freed, blocked) = (note(&k0, "freed"), note(&k, "blocked"));
        let first = deletion(
            &k0,
            std::iter::once(freed.id.to_hex())
                .chain((1..2_000).map(|_| made_up()))
                .collect(),
        );
        let mut rest: Vec<Event> = (0..498)
            .map(|_| deletion(&k, (0..2_000).map(|_| made_up()).collect()))
            .collect();
        rest.push(deletion(
            &k,
            std::iter::once(blocked.id.to_hex())
                .chain((1..2_000).map(|_| made_up()))
                .collect(),
        ));
        (first, rest, blocked, freed)
    })
}

/// Runs `query` on `db` from inside the runtime (the harness's connection blocks).
fn sql(db: &TestDb, query: &str) {
    std::thread::scope(|s| {
        s.spawn(|| db.execute(query));
    });
}

/// 500 deletions naming 2,000 made-up ids each: each records its first 1,000
/// (`UNSEEN_TOMBSTONES_PER_DELETION`), the sweep reads only tombstones added since
/// the last one, and past the bound the oldest tombstones go first.
fn tombstones_are_swept_incrementally_and_bounded(db: TestDb) {
    use nostr_sync::storage::batch::UNSEEN_TOMBSTONES_PER_DELETION as PER;
    let (first, rest, blocked, freed) = many_deletions();
    run(async {
        let store = storage::open(&db.url, 2).await.unwrap();
        let mut dropped = 0;
        for batch in std::iter::once(first)
            .chain(rest)
            .collect::<Vec<_>>()
            .chunks(25)
        {
            let batch: Vec<Event> = batch.iter().map(|e| (*e).clone()).collect();
            dropped += store
                .insert_events(&batch)
                .await
                .unwrap()
                .removals
                .tombstones_dropped;
        }
        assert_eq!(dropped, 500 * (2_000 - PER as u64));
        // Dated an hour ago (the first deletion's two), so that the sweep counts them.
        sql(&db, "UPDATE deleted_events SET added_at = added_at - 3600");
        sql(
            &db,
            &format!(
                "UPDATE deleted_events SET added_at = added_at - 3600 WHERE pubkey = '{}'",
                first.pubkey
            ),
        );
        let purged = store.purge(0, u64::MAX).await.unwrap();
        assert_eq!((purged.unseen, purged.evicted), (500 * PER as u64, 0));

        // Incremental: a tombstone dated before the last sweep is not read again, one
        // added since is (as a concurrent writer's would be).
        let notes: Vec<Event> = (0..2)
            .map(|i| {
                EventBuilder::text_note(format!("raced {i}"))
                    .sign_with_keys(&Keys::generate())
                    .unwrap()
            })
            .collect();
        store.insert_events(&notes).await.unwrap();
        sql(
            &db,
            &format!(
            "INSERT INTO deleted_events (id, pubkey, added_at, seen) VALUES ('{}', '{}', 1, TRUE)",
            notes[0].id, notes[0].pubkey
        ),
        );
        sql(
            &db,
            &format!(
                "INSERT INTO deleted_events (id, pubkey, seen) VALUES ('{}', '{}', TRUE)",
                notes[1].id, notes[1].pubkey
            ),
        );
        let purged = store.purge(0, u64::MAX).await.unwrap();
        assert_eq!(purged.deleted, 1, "only the new tombstone's event goes");
        let held = stored_ids(&*store).await;
        assert!(held.contains(&notes[0].id) && !held.contains(&notes[1].id));

        // Bounded: one deletion's worth over, the oldest (the first deletion's) go.
        let max = 499 * PER as u64;
        let purged = store.purge(0, max).await.unwrap();
        assert_eq!((purged.unseen, purged.evicted), (max, PER as u64));
        let written = store
            .insert_events(&[freed.clone(), blocked.clone()])
            .await
            .unwrap();
        assert!(written.rows[0].is_some(), "its tombstone was evicted");
        assert!(written.rows[1].is_none(), "its tombstone is kept");
    });
}

/// Every way events come and go (inserts, deletions, replaced versions, expiry, the
/// tombstone sweep) keeps the fingerprints in step; a drifted row is found and
/// rewritten by the check.
fn fingerprints_follow_every_write(db: TestDb) {
    run(async {
        let store = storage::open(&db.url, 2).await.unwrap();
        let all = events();
        for batch in all.chunks(7) {
            store.insert_events(batch).await.unwrap();
        }
        assert_fingerprints(&*store).await;
        // Expiry.
        let keys = Keys::generate();
        let now = nostr_sync::storage::now_secs() as u64;
        let expiring: Vec<Event> = (0..3)
            .map(|i| {
                EventBuilder::text_note(format!("expiring {i}"))
                    .tag(Tag::parse(["expiration", &(now + 1_000).to_string()]).unwrap())
                    .custom_created_at(Timestamp::from(1_700_000_000 + i))
                    .sign_with_keys(&keys)
                    .unwrap()
            })
            .collect();
        store.insert_events(&expiring).await.unwrap();
        assert_fingerprints(&*store).await;
        let purged = store.purge(now as i64 + 2_000, u64::MAX).await.unwrap();
        assert_eq!(purged.expired, 3);
        assert_fingerprints(&*store).await;
        // The sweep: a tombstone a concurrent writer's deletion left.
        let note = EventBuilder::text_note("raced")
            .custom_created_at(Timestamp::from(1_700_000_003))
            .sign_with_keys(&keys)
            .unwrap();
        store
            .insert_events(std::slice::from_ref(&note))
            .await
            .unwrap();
        sql(
            &db,
            &format!(
                "INSERT INTO deleted_events (id, pubkey, seen) VALUES ('{}', '{}', TRUE)",
                note.id, note.pubkey
            ),
        );
        assert_eq!(store.purge(0, u64::MAX).await.unwrap().deleted, 1);
        assert_fingerprints(&*store).await;
        // Drift, found and repaired.
        sql(
            &db,
            "UPDATE fingerprints SET l3 = l3 + 1 WHERE second = 1700000001",
        );
        sql(
            &db,
            "INSERT INTO fingerprints (second, kind, n, l0, l1, l2, l3, l4, l5, l6, l7) \
             VALUES (5, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1)",
        );
        assert_eq!(store.check_fingerprints(false).await.unwrap().1, 2);
        assert_eq!(
            store.check_fingerprints(false).await.unwrap().1,
            2,
            "a check alone repairs nothing"
        );
        assert_eq!(store.check_fingerprints(true).await.unwrap().1, 2);
        assert_fingerprints(&*store).await;
    });
}

/// Two relays in the registry (`ws://a.example`, `ws://b.example`): their ids in
/// provenance.
async fn two_relays(store: &dyn EventStore) -> (i32, i32) {
    use nostr_sync::storage::registry::NewRelay;
    let reg = store.registry();
    for url in ["ws://a.example", "ws://b.example"] {
        let relay = NewRelay {
            url: url.into(),
            source: "cli",
            settings: String::new(),
        };
        reg.add_relay(&relay, 1).await.unwrap();
    }
    let round = reg.lease_round("me", 1, 30).await.unwrap();
    (round.held[0].id, round.held[1].id)
}

/// Provenance: each delivery of a stored event is one row, the first time kept; a
/// delivery of an event not stored records nothing; a removed event's rows go with it.
fn provenance_is_written_with_its_events_and_goes_with_them(db: TestDb) {
    use nostr_sync::storage::Sighting;
    run(async {
        let store = storage::open(&db.url, 2).await.unwrap();
        let (a, b) = two_relays(&*store).await;
        let keys = Keys::generate();
        let note = |text: &str| EventBuilder::text_note(text).sign_with_keys(&keys).unwrap();
        let (one, two, never) = (note("one"), note("two"), note("never stored"));
        let seen = |id: EventId, relay: i32, at: i64| Sighting {
            id,
            relay,
            at,
            seq: 0,
            created_at: 0,
            kind: 0,
        };
        store
            .write_batch(
                &[one.clone(), two.clone()],
                &[
                    seen(one.id, a, 100),
                    seen(two.id, a, 100),
                    seen(one.id, b, 101),
                ],
            )
            .await
            .unwrap();
        // Copies delivered later: b again (its first time stays), b for two, and a
        // delivery of an event that is not stored.
        store
            .write_batch(
                &[],
                &[
                    seen(one.id, b, 200),
                    seen(two.id, b, 201),
                    seen(never.id, a, 202),
                ],
            )
            .await
            .unwrap();
        let sources = |id: EventId| {
            let store = store.clone();
            async move {
                store
                    .sources(&id.to_hex())
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| (s.relay, s.first_seen))
                    .collect::<Vec<_>>()
            }
        };
        let both = |first_b| {
            vec![
                ("ws://a.example".to_string(), 100),
                ("ws://b.example".to_string(), first_b),
            ]
        };
        assert_eq!(sources(one.id).await, both(101));
        assert_eq!(sources(two.id).await, both(201));
        assert!(sources(never.id).await.is_empty());
        assert_eq!(store.footprint().await.unwrap().provenance_rows, 4);
        // The author deletes `one` (NIP-09): its provenance goes with it.
        let deletion = EventBuilder::delete(EventDeletionRequest::new().id(one.id))
            .sign_with_keys(&keys)
            .unwrap();
        store.insert_events(&[deletion]).await.unwrap();
        assert!(sources(one.id).await.is_empty());
        assert_eq!(store.footprint().await.unwrap().provenance_rows, 2);
    });
}

/// Each relay's fingerprints are those of the stored events it delivered: checked
/// against the deliveries the test made and the events the oracle keeps, through
/// versions and deletions, copies that arrive later, and a copy of a row removed since.
fn relay_fingerprints_follow_provenance(db: TestDb) {
    use std::collections::HashSet;

    use nostr_sync::storage::Sighting;
    run(async {
        let store = storage::open(&db.url, 2).await.unwrap();
        let (a, b) = two_relays(&*store).await;
        let all = events();
        // `a` delivers everything; `b` every other event, a batch later (a copy of
        // what is stored by then).
        let by_b: HashSet<EventId> = all.iter().step_by(2).map(|e| e.id).collect();
        let mut late: Vec<Sighting> = Vec::new();
        for batch in all.chunks(7) {
            let mut sightings: Vec<Sighting> =
                batch.iter().map(|e| Sighting::of(e, a, 100, 0)).collect();
            sightings.append(&mut late);
            late = batch
                .iter()
                .filter(|e| by_b.contains(&e.id))
                .map(|e| Sighting::of(e, b, 101, 0))
                .collect();
            store.write_batch(batch, &sightings).await.unwrap();
        }
        store.write_batch(&[], &late).await.unwrap();
        // A copy whose remembered row was removed since: no row is left for it.
        let (last, _) = store
            .events_after(0, 1_000_000)
            .await
            .unwrap()
            .pop()
            .unwrap();
        let stale = Sighting::of(&all[0], b, 102, last + 1_000);
        store.write_batch(&[], &[stale]).await.unwrap();

        let kept = kept(&all, u64::MAX / 2);
        for (relay, delivered) in [(a, None), (b, Some(&by_b))] {
            let want: Vec<&Event> = kept
                .iter()
                .filter(|e| delivered.is_none_or(|d| d.contains(&e.id)))
                .collect();
            let sums = store
                .fingerprint_sums(relay, &[], &[(0, i64::MAX)])
                .await
                .unwrap();
            assert_eq!(sums[0].count, want.len() as i64, "relay {relay}");
            assert_eq!(sums[0].fingerprint(), reference(&want), "relay {relay}");
        }
        assert_eq!(
            store.footprint().await.unwrap().provenance_rows as usize,
            kept.len() + kept.iter().filter(|e| by_b.contains(&e.id)).count()
        );
        let (recounted, differing) = store.check_fingerprints(false).await.unwrap();
        assert_eq!(differing, 0, "of {recounted} rows recounted");
    });
}

both_backends!(
    relay_fingerprints_follow_provenance,
    provenance_is_written_with_its_events_and_goes_with_them,
    fingerprints_follow_every_write,
    arrival_order_changes_nothing,
    writing_again_changes_nothing,
    rows_follow_the_batch,
    queries_read_what_was_written,
    tombstones_are_swept_incrementally_and_bounded,
);

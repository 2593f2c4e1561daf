//! The `EventStore` contract, the same cases on PostgreSQL and SQLite: what a store
//! keeps of a set of events and what it counts for them follow the NIPs (the oracle in
//! `common::oracle`) whatever order and batches the events arrive in; writing again
//! changes nothing; cursors and window outcomes read back as written.

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
        // Cursors.
        assert_eq!(store.cursor("wss://a", "f").await.unwrap(), None);
        store.save_cursor("wss://a", "f", 42).await.unwrap();
        store.save_cursor("wss://a", "f", 43).await.unwrap();
        assert_eq!(store.cursor("wss://a", "f").await.unwrap(), Some(43));
        store.delete_cursor("wss://a", "f").await.unwrap();
        assert_eq!(store.cursor("wss://a", "f").await.unwrap(), None);
        // Window outcomes: failures count up, a success resets them, the error stays.
        store
            .record_window("wss://a", "f", Some("refused"))
            .await
            .unwrap();
        store
            .record_window("wss://a", "f", Some("refused"))
            .await
            .unwrap();
        let overview = store.overview().await.unwrap();
        let state = overview
            .states
            .iter()
            .find(|s| s.relay == "wss://a")
            .unwrap();
        assert_eq!(state.consecutive_failures, 2);
        assert_eq!(state.last_error.as_deref(), Some("refused"));
        assert!(state.last_success.is_none());
        store.record_window("wss://a", "f", None).await.unwrap();
        let overview = store.overview().await.unwrap();
        let state = overview
            .states
            .iter()
            .find(|s| s.relay == "wss://a")
            .unwrap();
        assert_eq!(state.consecutive_failures, 0);
        assert!(state.last_success.is_some());
        assert_eq!(overview.events, want.len() as i64);
    });
}

both_backends!(
    arrival_order_changes_nothing,
    writing_again_changes_nothing,
    rows_follow_the_batch,
    queries_read_what_was_written,
);

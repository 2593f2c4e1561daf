//! Outbox discovery and provenance against real relays on loopback, on both backends.
//! A seed relay holds the authors' NIP-65 relay lists; the relays they name are found,
//! synced for their own authors only, blocked when down and replaced; published
//! relay lists cannot add inward or malformed URLs or grow past the budget. Every
//! stored event lists the relays that delivered it, and a relay that only repeats what
//! others delivered scores below one that delivers novel events.
//!
//! Expected relays and authors are worked out here from the lists the test wrote
//! (NIP-65: `r` tags without a marker or with `write`), not read from the code.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::hostile::HostileRelay;
use common::{run, settings, stored_ids, TestDb};
use nostr_sdk::prelude::*;
use nostr_sync::app::App;
use nostr_sync::config::{FilterSettings, Settings};
use nostr_sync::fleet::normalise;
use nostr_sync::storage::registry::NewRelay;
use nostr_sync::storage::{self, EventStore};

both_backends!(
    outbox_relays_are_found_and_asked_only_for_their_authors,
    published_relay_lists_add_nothing_inward_or_past_the_budget,
    a_discovered_relay_that_is_down_is_blocked_and_replaced,
    provenance_lists_every_relay_and_scores_rank_novelty,
);

const WAIT: Duration = Duration::from_secs(90);

fn note(keys: &Keys, text: &str, at: u64) -> Event {
    EventBuilder::text_note(text)
        .custom_created_at(Timestamp::from(at))
        .sign_with_keys(keys)
        .unwrap()
}

/// A NIP-65 relay list: `(url, marker)` (marker "" for none).
fn relay_list(keys: &Keys, relays: &[(&str, &str)], at: u64) -> Event {
    let tags = relays.iter().map(|(url, marker)| {
        let mut t = vec!["r".to_string(), url.to_string()];
        if !marker.is_empty() {
            t.push(marker.to_string());
        }
        Tag::parse(t).unwrap()
    });
    EventBuilder::new(Kind::RelayList, "")
        .tags(tags)
        .custom_created_at(Timestamp::from(at))
        .sign_with_keys(keys)
        .unwrap()
}

fn now() -> u64 {
    Timestamp::now().as_secs()
}

/// Settings with discovery on, loopback allowed, timers short.
fn discovering(db: &TestDb, seed: &str, authors: &[Keys]) -> Settings {
    let mut s = settings(db, vec![seed.to_owned()]);
    s.filters = vec![FilterSettings {
        kinds: vec![1],
        authors: authors.iter().map(|k| k.public_key().to_hex()).collect(),
        ..Default::default()
    }];
    let d = &mut s.discovery;
    d.enabled = true;
    d.allow_private = true;
    d.refresh_secs = 1;
    s.fleet.poll_secs = 1;
    s.sync.backoff_min_ms = 100;
    s.sync.backoff_max_ms = 500;
    s
}

/// Waits until `check` holds, polling every 200 ms; false at `WAIT`.
async fn until<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let began = Instant::now();
    while began.elapsed() < WAIT {
        if check().await {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn discovered(store: &dyn EventStore) -> BTreeSet<String> {
    store
        .registry()
        .relays()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.source == "discovered" && r.enabled)
        .map(|r| r.url)
        .collect()
}

fn outbox_relays_are_found_and_asked_only_for_their_authors(db: TestDb) {
    run(async {
        let authors: Vec<Keys> = (0..20).map(|_| Keys::generate()).collect();
        let t = now() - 600;
        // Five relays; author i writes to relay i % 5 and holds its notes there only.
        let mut notes: Vec<Vec<Event>> = vec![Vec::new(); 5];
        for (i, k) in authors.iter().enumerate() {
            for n in 0..3 {
                notes[i % 5].push(note(k, &format!("{i}/{n}"), t + n));
            }
        }
        // Relay 1 also holds a note of author 0, who does not list it yet.
        let moved = note(&authors[0], "after the move", t + 10);
        notes[1].push(moved.clone());
        let mut outboxes = Vec::new();
        for held in &notes {
            outboxes.push(HostileRelay::paged(held.clone(), 500).await);
        }
        // Each list names its outbox for writing, and another relay only for reading.
        let lists: Vec<Event> = authors
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let read_only = &outboxes[(i + 1) % 5].url;
                relay_list(
                    k,
                    &[(&outboxes[i % 5].url, "write"), (read_only, "read")],
                    t,
                )
            })
            .collect();
        let seed = HostileRelay::paged(lists.clone(), 500).await;
        let app = App::start(discovering(&db, &seed.url, &authors))
            .await
            .unwrap();
        let store = storage::open(&db.url, 2).await.unwrap();
        let want: BTreeSet<EventId> = notes
            .iter()
            .flatten()
            .chain(&lists)
            .map(|e| e.id)
            .filter(|id| *id != moved.id)
            .collect();
        let all_stored = until(|| {
            let store = store.clone();
            let want = want.clone();
            async move {
                let ids: BTreeSet<EventId> = stored_ids(&*store).await.into_iter().collect();
                ids == want
            }
        })
        .await;
        assert!(all_stored, "not every note and list was stored");
        let expected: BTreeSet<String> = outboxes
            .iter()
            .map(|r| normalise(&r.url).unwrap())
            .collect();
        assert_eq!(discovered(&*store).await, expected);
        // Each relay was asked for notes of its own authors only, never for everyone.
        for (r, relay) in outboxes.iter().enumerate() {
            let own: BTreeSet<String> = authors
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 5 == r)
                .map(|(_, k)| k.public_key().to_hex())
                .collect();
            let filters = relay.filters();
            assert!(!filters.is_empty(), "relay {r} was never asked");
            for f in filters {
                let asked: BTreeSet<String> = f["authors"]
                    .as_array()
                    .unwrap_or_else(|| panic!("relay {r} was asked for every author: {f}"))
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect();
                assert!(
                    asked.is_subset(&own),
                    "relay {r} was asked for others' notes: {f}"
                );
            }
        }
        // Author 0 moves to relay 1: a newer list, on a second seed relay added while
        // the service runs. Relay 1 is then asked for author 0 too, and relay 0 no
        // longer.
        let newer = relay_list(&authors[0], &[(&outboxes[1].url, "")], t + 60);
        let seed2 = HostileRelay::paged(vec![newer.clone()], 500).await;
        store
            .registry()
            .add_relay(
                &NewRelay {
                    url: normalise(&seed2.url).unwrap(),
                    source: "cli",
                    settings: String::new(),
                },
                storage::now_secs(),
            )
            .await
            .unwrap();
        let followed = until(|| {
            let store = store.clone();
            async move {
                let ids: BTreeSet<EventId> = stored_ids(&*store).await.into_iter().collect();
                ids.contains(&moved.id)
            }
        })
        .await;
        assert!(
            followed,
            "the moved author's note on its new relay was not stored"
        );
        let a0 = authors[0].public_key().to_hex();
        let rows = store.registry().relays().await.unwrap();
        let settings_of = |r: usize| {
            let url = normalise(&outboxes[r].url).unwrap();
            rows.iter()
                .find(|row| row.url == url)
                .unwrap()
                .settings
                .clone()
        };
        assert!(settings_of(1).contains(&a0));
        assert!(!settings_of(0).contains(&a0));
        assert!(app.shutdown(Duration::from_secs(30)).await);
        let ids = stored_ids(&*store).await;
        // The newer list replaced the older one.
        assert_eq!(ids.len(), want.len() + 1, "an event is stored twice");
    });
}

fn published_relay_lists_add_nothing_inward_or_past_the_budget(db: TestDb) {
    run(async {
        let t = now() - 600;
        let hostile = Keys::generate();
        let long = format!("wss://relay.example/{}", "a".repeat(2_000));
        let bad = [
            "ws://10.0.0.1",
            "ws://169.254.169.254",
            "ws://user:pw@relay.example",
            "http://relay.example",
            "ws://localhost:7000",
            long.as_str(),
        ];
        let mut lists = vec![relay_list(
            &hostile,
            &bad.iter().map(|u| (*u, "")).collect::<Vec<_>>(),
            t,
        )];
        // 10,000 distinct public relays over 50 authors.
        let many: Vec<Keys> = (0..50).map(|_| Keys::generate()).collect();
        for (a, k) in many.iter().enumerate() {
            let urls: Vec<String> = (0..200).map(|i| format!("ws://1.2.{a}.{i}")).collect();
            let pairs: Vec<(&str, &str)> = urls.iter().map(|u| (u.as_str(), "")).collect();
            lists.push(relay_list(k, &pairs, t));
        }
        let seed = HostileRelay::paged(lists.clone(), 500).await;
        let mut authors = many.clone();
        authors.push(hostile);
        let mut s = discovering(&db, &seed.url, &authors);
        s.discovery.allow_private = false;
        s.discovery.max_relays = 5;
        let app = App::start(s).await.unwrap();
        let store = storage::open(&db.url, 2).await.unwrap();
        let found = until(|| {
            let store = store.clone();
            async move { discovered(&*store).await.len() == 5 }
        })
        .await;
        assert!(found, "discovery did not fill its budget of five");
        // A few refreshes more change nothing.
        actix_rt::time::sleep(Duration::from_secs(3)).await;
        let rows = store.registry().relays().await.unwrap();
        let from_lists: Vec<&String> = rows
            .iter()
            .filter(|r| r.source == "discovered")
            .map(|r| &r.url)
            .collect();
        assert_eq!(from_lists.len(), 5, "{from_lists:?}");
        for url in from_lists {
            assert!(url.starts_with("ws://1.2."), "{url} was added");
        }
        assert!(app.shutdown(Duration::from_secs(30)).await);
    });
}

fn a_discovered_relay_that_is_down_is_blocked_and_replaced(db: TestDb) {
    run(async {
        let t = now() - 600;
        let (a, b) = (Keys::generate(), Keys::generate());
        let notes: Vec<Event> = (0..5).map(|n| note(&a, &format!("a{n}"), t + n)).collect();
        let live = HostileRelay::paged(notes.clone(), 500).await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("ws://{}", l.local_addr().unwrap())
        };
        // The dead relay is named by both authors, so each takes it first.
        let lists = vec![
            relay_list(&a, &[(&dead, ""), (&live.url, "")], t),
            relay_list(&b, &[(&dead, "")], t),
        ];
        let seed = HostileRelay::paged(lists, 500).await;
        let mut s = discovering(&db, &seed.url, &[a.clone(), b.clone()]);
        s.discovery.per_author = 1;
        s.discovery.block_after_failures = 2;
        s.discovery.block_secs = 3_600;
        let app = App::start(s).await.unwrap();
        let store = storage::open(&db.url, 2).await.unwrap();
        let dead_url = normalise(&dead).unwrap();
        let live_url = normalise(&live.url).unwrap();
        let replaced = until(|| {
            let store = store.clone();
            let want: BTreeSet<String> = [live_url.clone()].into();
            async move { discovered(&*store).await == want }
        })
        .await;
        assert!(replaced, "the dead relay was not replaced by the live one");
        let scores = store.registry().scores().await.unwrap();
        let dead_row = scores
            .iter()
            .find(|s| s.url == dead_url)
            .expect("no score row");
        assert!(dead_row.blocked_until > now() as i64, "{dead_row:?}");
        let stored = until(|| {
            let store = store.clone();
            let want: BTreeSet<EventId> = notes.iter().map(|e| e.id).collect();
            async move {
                let ids: BTreeSet<EventId> = stored_ids(&*store).await.into_iter().collect();
                want.is_subset(&ids)
            }
        })
        .await;
        assert!(stored, "the replacement's notes were not stored");
        assert!(app.shutdown(Duration::from_secs(30)).await);
    });
}

fn provenance_lists_every_relay_and_scores_rank_novelty(db: TestDb) {
    run(async {
        let t = now() - 600;
        let author = Keys::generate();
        let published: Vec<Event> = (0..10)
            .map(|n| note(&author, &format!("p{n}"), t + n))
            .collect();
        let unique: Vec<Event> = (0..30)
            .map(|n| note(&author, &format!("u{n}"), t + 100 + n))
            .collect();
        let mut three = Vec::new();
        for _ in 0..3 {
            three.push(HostileRelay::paged(published.clone(), 500).await);
        }
        let novel = HostileRelay::paged(unique.clone(), 500).await;
        let mut urls: Vec<String> = three.iter().map(|r| r.url.clone()).collect();
        urls.push(novel.url.clone());
        let mut s = settings(&db, urls);
        s.fleet.poll_secs = 1;
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, WAIT).await);
        let store = storage::open(&db.url, 2).await.unwrap();
        let name = |url: &str| normalise(url).unwrap();
        let sources = |id: EventId| {
            let store = store.clone();
            async move {
                let s = store.sources(&id.to_hex()).await.unwrap();
                s.into_iter().map(|s| s.relay).collect::<BTreeSet<String>>()
            }
        };
        // Whether every event of `events` lists exactly the relays `want`.
        let all_from = |events: &[Event], want: &BTreeSet<String>| {
            let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
            let (want, sources) = (want.clone(), &sources);
            async move {
                for id in ids {
                    if sources(id).await != want {
                        return false;
                    }
                }
                true
            }
        };
        let three_urls: BTreeSet<String> = three.iter().map(|r| name(&r.url)).collect();
        // Copies of one event arrive from three relays at once: each is recorded.
        let complete = until(|| all_from(&published, &three_urls)).await;
        assert!(
            complete,
            "an event published to three relays lacks one of them"
        );
        let only_novel: BTreeSet<String> = [name(&novel.url)].into();
        for e in &unique {
            assert_eq!(sources(e.id).await, only_novel);
        }
        // A relay added later serves copies of what the novel relay delivered.
        let copies = HostileRelay::paged(unique.clone(), 500).await;
        let copies_url = name(&copies.url);
        store
            .registry()
            .add_relay(
                &NewRelay {
                    url: copies_url.clone(),
                    source: "cli",
                    settings: String::new(),
                },
                storage::now_secs(),
            )
            .await
            .unwrap();
        let both: BTreeSet<String> = [name(&novel.url), copies_url.clone()].into();
        let recorded = until(|| all_from(&unique, &both)).await;
        assert!(
            recorded,
            "the duplicate copies' relay is not in the provenance"
        );
        let counters = app.counters.clone();
        let ranked = until(|| {
            let counters = counters.clone();
            let (n, c) = (name(&novel.url), copies_url.clone());
            async move {
                let score = |u: &str| counters.relay(u).score();
                matches!((score(&n), score(&c)), (Some(n), Some(c)) if n > c)
            }
        })
        .await;
        let score = |u: &str| counters.relay(u).score();
        assert!(
            ranked,
            "novel {:?}, copies {:?}",
            score(&name(&novel.url)),
            score(&copies_url)
        );
        let copies_score = score(&copies_url).unwrap();
        assert!(copies_score < 0.1, "copies scored {copies_score}");
        assert!(app.shutdown(Duration::from_secs(30)).await);
        let ids = stored_ids(&*store).await;
        assert_eq!(ids.len(), 40);
    });
}

//! A complete copy from relays this project did not tune: relays that clamp `limit`
//! (with and without saying so in NIP-11), a second crowded with events of many kinds,
//! restarts in the middle of ingest, backfills longer than the watchdog, and relays
//! that refuse a filter.

mod common;

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::hostile::{Act, HostileRelay};
use common::proxy::TcpProxy;
use common::{
    assert_exact, lock_writes, run, settings, stored_ids, sync_once, TestDb, SYNC_TIMEOUT,
};
use nostr_sdk::prelude::*;
use nostr_sync::app::App;
use nostr_sync::config::Negentropy;
use nostr_sync::metrics::Counters;
use nostr_sync::storage;
use nostr_sync_tools::dataset::{Dataset, HostedRelay};

both_backends!(
    clamped_relays_lose_nothing,
    a_clamp_advertised_in_nip11_is_used,
    a_crowded_second_of_mixed_kinds_is_read_whole,
    a_crowded_second_is_reconciled,
    backdated_events_are_found_by_the_repair_pass,
    backdated_events_are_found_by_repaging,
    a_restart_during_a_database_stall_loses_nothing,
    a_backfill_longer_than_the_watchdog_is_never_restarted,
    a_filter_refused_for_auth_leaves_the_others,
    auth_required_relays_are_synced_with_a_key,
    a_relay_refusing_negentropy_is_paged_and_remembered,
);

/// 9,000 events over a day, on three relays, none shared: signed once per run.
fn data() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| Dataset::generate(9_000, 3, 0.0, 80))
}

/// A relay clamped at 100 and one clamped at 1, both silently, next to an unclamped
/// one: each holds events no other relay has, and all of them are stored.
fn clamped_relays_lose_nothing(db: TestDb) {
    run(async {
        let data = data();
        let (_relays, urls) = common::host(data, &[100, 1, 1_000_000]).await;
        let mut s = settings(&db, urls.clone());
        s.sync.negentropy = Negentropy::Off;
        let counters = sync_once(s).await;
        assert_exact(&db, &data.events).await;
        for url in &urls {
            let c = counters.relay(url);
            assert_eq!(Counters::get(&c.windows_failed), 0, "{url}");
        }
    });
}

/// The relay says `max_limit = 100` in NIP-11: pages are asked for at that size.
fn a_clamp_advertised_in_nip11_is_used(db: TestDb) {
    run(async {
        let data = data();
        let relay = HostedRelay::start(data.relay_events(0), 100).await.unwrap();
        let url = relay.url().await;
        let target = url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .to_owned();
        let doc = r#"{"name":"clamped","supported_nips":[1,11],"limitation":{"max_limit":100}}"#;
        let proxy = TcpProxy::serving(target.clone(), Some(doc.to_owned())).await;
        let routed = proxy.route(&url, &target);
        let mut s = settings(&db, vec![routed.clone()]);
        s.sync.negentropy = Negentropy::Off;
        let counters = sync_once(s).await;
        let want: Vec<Event> = data.relay_events(0).cloned().collect();
        assert_exact(&db, &want).await;
        assert_eq!(Counters::get(&counters.relay(&routed).page_limit), 100);
    });
}

/// 2,000 events of many kinds (most in no list of common kinds) within one second an
/// hour ago, on a relay clamped at 500, next to quieter seconds.
fn crowded(seed: u64) -> Vec<Event> {
    let second = Timestamp::from(Timestamp::now().as_secs() - 3_600);
    let authors: Vec<Keys> = (0..10).map(|_| Keys::generate()).collect();
    let kinds = [1u16, 7, 1111, 1984, 4242, 7777, 9734, 30023];
    let mut events: Vec<Event> = (0..2_000)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            EventBuilder::new(Kind::from(kind), format!("crowded {seed} {i}"))
                .tag(Tag::identifier(format!("d{i}")))
                .custom_created_at(second)
                .sign_with_keys(&authors[i % authors.len()])
                .unwrap()
        })
        .collect();
    events.extend(data().relay_events(0).take(600).cloned());
    events
}

/// Read by paging alone: split by the kinds and authors seen in the second.
fn a_crowded_second_of_mixed_kinds_is_read_whole(db: TestDb) {
    run(async {
        let events = crowded(1);
        let relay = HostedRelay::start(&events, 500).await.unwrap();
        let mut s = settings(&db, vec![relay.url().await]);
        s.sync.negentropy = Negentropy::Off;
        let counters = sync_once(s).await;
        assert_exact(&db, &events).await;
        let c = counters.relay(&relay.url().await);
        assert_eq!(Counters::get(&c.windows_failed), 0);
    });
}

/// Read by reconciling that second (NIP-77) while paging a recent window.
fn a_crowded_second_is_reconciled(db: TestDb) {
    run(async {
        let events = crowded(2);
        let relay = HostedRelay::start(&events, 500).await.unwrap();
        let url = relay.url().await;
        let mut s = settings(&db, vec![url.clone()]);
        // A recent window, so it is paged rather than reconciled as a whole.
        s.filters[0].since = Timestamp::now().as_secs() - 2 * 3_600;
        s.sync.overlap_secs = 2 * 3_600;
        let counters = sync_once(s).await;
        let want: Vec<Event> = events
            .iter()
            .filter(|e| e.created_at.as_secs() >= Timestamp::now().as_secs() - 2 * 3_600 - 60)
            .cloned()
            .collect();
        assert!(want.len() >= 2_000);
        let c = counters.relay(&url);
        assert_eq!(
            Counters::get(&c.reconciliations),
            1,
            "the crowded second was not reconciled"
        );
        assert_eq!(Counters::get(&c.shortfalls), 0);
        let store = storage::open(&db.url, 2).await.unwrap();
        let ids: HashSet<EventId> = stored_ids(&*store).await.into_iter().collect();
        assert!(
            want.iter().all(|e| ids.contains(&e.id)),
            "events of the window are missing"
        );
    });
}

/// The database stalls for longer than the watchdog: the relay actor is restarted with
/// events in flight, and once the database is back every event is stored once.
fn a_restart_during_a_database_stall_loses_nothing(db: TestDb) {
    run(async {
        let data = data();
        let relay = HostedRelay::start(data.relay_events(0), 500).await.unwrap();
        let url = relay.url().await;
        let mut s = settings(&db, vec![url.clone()]);
        s.interval.watchdog_secs = 1;
        common::take_leases(&mut s).await;
        let release = lock_writes(&db).await;
        let app = App::start(s).await.unwrap();
        let relay_counters = app.counters.relay(&url);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Counters::get(&relay_counters.restarts) < 2 {
            assert!(
                Instant::now() < deadline,
                "the watchdog did not restart the stalled relay"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        release();
        let want = data.placement[0].len() as u64;
        let deadline = Instant::now() + SYNC_TIMEOUT;
        while Counters::get(&app.counters.stored) < want {
            assert!(
                Instant::now() < deadline,
                "stalled at {} of {want} events after the restarts",
                Counters::get(&app.counters.stored)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        assert!(app.shutdown(Duration::from_secs(30)).await);
        let want: Vec<Event> = data.relay_events(0).cloned().collect();
        assert_exact(&db, &want).await;
    });
}

/// A backfill that runs for several watchdog periods, making progress all along, is
/// never restarted; and one REQ whose answer streams for longer than the EOSE timeout
/// is not cut off while frames keep coming.
fn a_backfill_longer_than_the_watchdog_is_never_restarted(db: TestDb) {
    run(async {
        let data = data();
        let relay = HostedRelay::start(data.relay_events(1), 1_000_000)
            .await
            .unwrap();
        let direct = relay.url().await;
        let target = direct
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .to_owned();
        // About 2 MB to send at 400 kB/s: five seconds, five watchdog periods.
        let proxy = TcpProxy::throttled(target.clone(), 400_000).await;
        let url = proxy.route(&direct, &target);
        let mut s = settings(&db, vec![url.clone()]);
        s.interval.watchdog_secs = 1;
        // One REQ answers everything, for about five seconds.
        s.sync.page_limit = 10_000;
        s.sync.eose_timeout_secs = 2;
        s.sync.negentropy = Negentropy::Off;
        let started = Instant::now();
        let counters = sync_once(s).await;
        let took = started.elapsed();
        assert!(
            took > Duration::from_secs(2),
            "the backfill took only {took:?}: it proves nothing"
        );
        let c = counters.relay(&url);
        assert_eq!(Counters::get(&c.restarts), 0);
        assert_eq!(Counters::get(&c.cycles_failed), 0, "a REQ was cut off");
        let want: Vec<Event> = data.relay_events(1).cloned().collect();
        assert_exact(&db, &want).await;
    });
}

/// `auth-required:` on the first filter, without a key: that filter is refused on this
/// relay (counted, not retried each cycle) and the second filter still syncs.
fn a_filter_refused_for_auth_leaves_the_others(db: TestDb) {
    run(async {
        let events: Vec<Event> = data().relay_events(2).take(50).cloned().collect();
        let hostile = HostileRelay::start(
            events.clone(),
            vec![Act::Closed("auth-required: members only".into())],
            0,
        )
        .await;
        let mut s = settings(&db, vec![hostile.url.clone()]);
        s.filters = vec![
            nostr_sync::config::FilterSettings {
                kinds: vec![1],
                ..Default::default()
            },
            nostr_sync::config::FilterSettings {
                kinds: vec![7],
                ..Default::default()
            },
        ];
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(2, SYNC_TIMEOUT).await);
        let c = app.counters.relay(&hostile.url);
        assert_eq!(Counters::get(&c.filters_refused), 1);
        assert!(Counters::get(&c.windows_ok) >= 2);
        assert_eq!(Counters::get(&c.windows_failed), 0);
        assert!(app.shutdown(Duration::from_secs(30)).await);
        // The scripted relay answers every REQ with all it holds: the second filter's
        // REQ brought everything.
        assert_exact(&db, &events).await;
    });
}

/// A relay that requires NIP-42 for every read: with a key configured, the sync
/// authenticates and completes; without one, every filter is refused and counted.
fn auth_required_relays_are_synced_with_a_key(db: TestDb) {
    run(async {
        let events: Vec<Event> = data().relay_events(2).take(300).cloned().collect();
        let relay = HostedRelay::start_with_auth(&events, 500).await.unwrap();
        let url = relay.url().await;

        let s = settings(&db, vec![url.clone()]);
        let app = App::start(s).await.unwrap();
        let c = app.counters.relay(&url);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Counters::get(&c.filters_refused) < 1 {
            assert!(Instant::now() < deadline, "the refusal was not counted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stored = Counters::get(&app.counters.stored);
        assert!(app.shutdown(Duration::from_secs(30)).await);
        assert_eq!(stored, 0);

        let key = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(key.path(), Keys::generate().secret_key().to_secret_hex()).unwrap();
        let mut s = settings(&db, vec![url.clone()]);
        s.auth.secret_key_file = key.path().display().to_string();
        let counters = sync_once(s).await;
        assert_eq!(Counters::get(&counters.relay(&url).filters_refused), 0);
        assert_exact(&db, &events).await;
    });
}

/// After a complete sync, 500 events dated three days back appear on the relay (a
/// re-broadcast, a relay that was offline): no regular cycle reaches back that far, the
/// repair pass finds all of them.
async fn backdated(db: &TestDb, negentropy: Negentropy) {
    let data = data();
    let relay = HostedRelay::start(data.relay_events(2), 500).await.unwrap();
    let url = relay.url().await;
    let mut s = settings(db, vec![url.clone()]);
    s.sync.negentropy = negentropy;
    s.sync.repair_interval_secs = 1;
    s.sync.repair_paging_interval_secs = 1;
    let app = App::start(s).await.unwrap();
    assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
    let keys = Keys::generate();
    let old = Timestamp::now().as_secs() - 3 * 86_400;
    let late: Vec<Event> = (0..500)
        .map(|i| {
            EventBuilder::text_note(format!("late {i}"))
                .custom_created_at(Timestamp::from(old + i))
                .sign_with_keys(&keys)
                .unwrap()
        })
        .collect();
    for e in &late {
        relay.publish(e).await.unwrap();
    }
    let before = Counters::get(&app.counters.stored);
    let c = app.counters.relay(&url);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Counters::get(&c.repair_found) < 500 {
        assert!(
            Instant::now() < deadline,
            "the repair pass found {} of 500 backdated events",
            Counters::get(&c.repair_found)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(Counters::get(&app.counters.stored), before + 500);
    assert!(app.shutdown(Duration::from_secs(30)).await);
    let mut want: Vec<Event> = data.relay_events(2).cloned().collect();
    want.extend(late);
    assert_exact(db, &want).await;
}

fn backdated_events_are_found_by_the_repair_pass(db: TestDb) {
    run(backdated(&db, Negentropy::Auto));
}

/// The same on a relay without NIP-77: the repair pass re-pages the range.
fn backdated_events_are_found_by_repaging(db: TestDb) {
    run(backdated(&db, Negentropy::Off));
}

/// Relays that do not do NIP-77 answer NEG-OPEN (here, the repair pass's) with a
/// NOTICE, a CLOSED, or nothing: each still syncs and repairs completely by paging,
/// and the refusal is remembered (one NEG-OPEN over several cycles and repairs).
fn a_relay_refusing_negentropy_is_paged_and_remembered(db: TestDb) {
    let answers = [
        vec![r#"["NOTICE","ERROR: bad msg: unknown cmd NEG-OPEN"]"#.to_owned()],
        vec![r#"["CLOSED","{sub}","error: unknown message"]"#.to_owned()],
        vec![],
    ];
    for (n, answer) in answers.into_iter().enumerate() {
        // A fresh database of the same backend for each answer after the first.
        let fresh;
        let db = if n == 0 {
            &db
        } else {
            fresh = TestDb::new(db.backend).unwrap();
            &fresh
        };
        run(async {
            let events: Vec<Event> = data().relay_events(2).take(200).cloned().collect();
            let hostile = HostileRelay::start(events.clone(), vec![], 0).await;
            hostile.answer_negentropy_with(answer.clone());
            let mut s = settings(db, vec![hostile.url.clone()]);
            s.sync.eose_timeout_secs = 2;
            s.sync.repair_interval_secs = 1;
            s.sync.repair_paging_interval_secs = 1;
            let app = App::start(s).await.unwrap();
            assert!(app.wait_for_cycles(4, SYNC_TIMEOUT).await, "{answer:?}");
            let repairs = Counters::get(&app.counters.relay(&hostile.url).repairs);
            assert!(app.shutdown(Duration::from_secs(30)).await);
            assert_eq!(hostile.negentropy_opens(), 1, "{answer:?}");
            assert!(repairs >= 2, "{repairs} repair passes");
            assert_exact(db, &events).await;
        });
    }
}

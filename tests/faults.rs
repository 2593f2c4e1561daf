//! Faults against the in-process service: a hostile relay (bad input, dropped
//! connections, no EOSE, CLOSED, refused connections, silence) and a PostgreSQL outage
//! through a TCP proxy. Each ends with every valid event stored once and aggregates
//! equal to a recount.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::hostile::{Act, HostileRelay};
use common::proxy::TcpProxy;
use common::{
    run, settings, stored_ids, sync_once, wait_for_status, Backend, TestDb, SYNC_TIMEOUT,
};
use nostr_sdk::prelude::*;
use nostr_sync::app::App;
use nostr_sync::metrics::{Counters, Reject};
use nostr_sync::storage;
use nostr_sync_tools::dataset::{Dataset, HostedRelay};

both_backends!(
    hostile_input_is_counted_and_never_stored,
    relay_faults_are_retried_without_gaps,
    a_silent_relay_is_restarted_by_the_watchdog,
    an_event_the_database_refuses_does_not_stall_the_rest,
    a_live_subscription_comes_back_after_the_connection_drops,
    live_subscriptions_are_not_read_again,
    a_relay_that_does_not_deliver_live_loses_nothing,
);

#[test]
fn postgres_outage_loses_nothing() {
    if let Some(db) = TestDb::new(Backend::Postgres) {
        postgres_outage(db);
    }
}

fn frame(sub: &str, event: &Event) -> String {
    format!(r#"["EVENT","{sub}",{}]"#, event.as_json())
}

/// `event` as JSON with one field replaced, signature and id kept.
fn tampered(event: &Event, field: &str, value: serde_json::Value) -> String {
    let mut json: serde_json::Value = serde_json::from_str(&event.as_json()).unwrap();
    json[field] = value;
    format!(r#"["EVENT","{{sub}}",{json}]"#)
}

fn hostile_input_is_counted_and_never_stored(db: TestDb) {
    run(async {
        let data = Dataset::generate(200, 1, 0.0, 21);
        let keys = Keys::generate();
        let sign = |b: EventBuilder| b.sign_with_keys(&keys).unwrap();
        let sql = sign(
            EventBuilder::text_note("'); DROP TABLE events; -- \" \\ ü")
                .tag(Tag::hashtag("' OR '1'='1")),
        );
        // Valid, but too long for a PostgreSQL index entry.
        let incompressible: String = (0..4_000)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let long_tag = sign(EventBuilder::text_note("long tag").tag(Tag::hashtag(incompressible)));
        let mut valid = data.events.clone();
        valid.extend([sql.clone(), long_tag]);
        // Validly signed zap receipts anyone can publish: a bolt11 with a multi-byte
        // character where the amount ends (it once panicked the aggregator and halted
        // storage), and 21 million BTC claimed five times by invoices that are not
        // invoices. They are stored (valid events) and count nothing.
        let zapped = data.events[0].id;
        let zap = |bolt11: &str, n: usize| {
            sign(
                EventBuilder::new(Kind::ZapReceipt, format!("zap {n}"))
                    .tag(Tag::event(zapped))
                    .tag(Tag::parse(["bolt11", bolt11]).unwrap()),
            )
        };
        valid.push(zap("lnbc5\u{e9}1pvjluezpp5", 0));
        valid.extend((1..=5).map(|i| zap("lnbc210000001pvjluez", i)));

        let other = sign(EventBuilder::text_note("someone else"));
        let note = |i: usize| sign(EventBuilder::text_note(format!("forged {i}")));
        let bad = vec![
            "not json".to_owned(),
            r#"["EVENT","{sub}",{"id":"#.to_owned(),
            r#"["EVENT","{sub}",{"id":"00","kind":"one"}]"#.to_owned(),
            "[]".to_owned(),
            // Orphan forgeries: no relay holds these genuinely.
            tampered(&note(1), "content", "changed".into()),
            tampered(&note(2), "content", "changed too".into()),
            tampered(&note(3), "sig", other.sig.to_string().into()),
            tampered(&note(4), "sig", other.sig.to_string().into()),
            frame("{sub}", &sign(EventBuilder::text_note("x".repeat(70_000)))),
            frame(
                "{sub}",
                &sign(
                    EventBuilder::text_note("tags")
                        .tags((0..150).map(|i| Tag::hashtag(format!("t{i}")))),
                ),
            ),
            frame(
                "{sub}",
                &sign(
                    EventBuilder::text_note("from the future")
                        .custom_created_at(Timestamp::now() + Duration::from_secs(3_600)),
                ),
            ),
            frame("never-opened", &note(5)),
            frame("{sub}", &sign(EventBuilder::text_note("nul \0 inside"))),
            r#"["EOSE","never-opened"]"#.to_owned(),
            r#"["OK","00","true",""]"#.to_owned(),
        ];
        let notices = (0..1_000).map(|i| format!(r#"["NOTICE","flood {i}"]"#));
        let prefix = bad.into_iter().chain(notices).collect();
        let relay = HostileRelay::start(valid.clone(), vec![Act::Prefix(prefix)], 0).await;

        let mut s = settings(&db, vec![relay.url.clone()]);
        s.limits.max_event_bytes = 64 * 1024;
        s.limits.max_tags = 100;
        s.limits.max_future_secs = 900;
        let counters = sync_once(s).await;

        let expected = [
            (Reject::InvalidJson, 5),
            (Reject::BadId, 2),
            (Reject::BadSignature, 2),
            (Reject::TooLarge, 1),
            (Reject::TooManyTags, 1),
            (Reject::FutureTimestamp, 1),
            (Reject::UnknownSubscription, 1),
            (Reject::NulCharacter, 1),
        ];
        for (reason, n) in expected {
            assert_eq!(counters.rejected_by(reason), n, "{reason:?}");
        }
        let relay_counters = counters.relay(&relay.url);
        assert!(Counters::get(&relay_counters.notices) >= 1_000);
        assert_eq!(Counters::get(&relay_counters.cycles_failed), 0);

        let store = storage::open(&db.url, 2).await.unwrap();
        let ids: HashSet<EventId> = stored_ids(&*store).await.into_iter().collect();
        let want: HashSet<EventId> = valid.iter().map(|e| e.id).collect();
        assert_eq!(ids, want);
        let stored_sql = store
            .events_after(0, 1_000)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .find(|e| e.id == sql.id)
            .unwrap();
        assert_eq!(
            stored_sql.content, sql.content,
            "content not stored verbatim"
        );
        assert_eq!(stored_sql.tags, sql.tags);
        let stats = store.stats().await.unwrap();
        let zapped = stats.get(&zapped.to_hex()).copied().unwrap_or_default();
        assert!(
            zapped.zap_msats < 21_000_000 * 100_000_000_000,
            "forged receipts were counted: {zapped:?}"
        );
        assert!(
            counters.zaps_rejected() >= 6,
            "forged receipts were not counted as such"
        );
        assert_eq!(stats, common::oracle::expected_stats(&valid));
    });
}

fn relay_faults_are_retried_without_gaps(db: TestDb) {
    run(async {
        let data = Dataset::generate(300, 1, 0.0, 22);
        let script = vec![
            Act::DropAfter(100),
            Act::NoEose,
            Act::Closed("rate-limited: slow down".into()),
            Act::Silent,
        ];
        // Two refused connections first, then the script, one act per REQ.
        let relay = HostileRelay::start(data.events.clone(), script, 2).await;
        let mut s = settings(&db, vec![relay.url.clone()]);
        s.sync.eose_timeout_secs = 2;
        s.sync.connect_timeout_secs = 2;
        s.sync.backoff_min_ms = 100;
        s.sync.backoff_max_ms = 1_000;
        let counters = sync_once(s).await;

        let failed = Counters::get(&counters.relay(&relay.url).cycles_failed);
        eprintln!(
            "relay faults ({:?}): {failed} failed cycles, {} connections, {} REQs",
            db.backend,
            relay.connections(),
            relay.reqs()
        );
        // Refused twice, dropped, no EOSE, CLOSED, silent.
        assert!(failed >= 6, "only {failed} failed cycles");
        assert!(
            relay.connections() >= 4,
            "{} connections",
            relay.connections()
        );
        assert!(relay.reqs() >= 5);
        let store = storage::open(&db.url, 2).await.unwrap();
        let ids = stored_ids(&*store).await;
        assert_eq!(ids.len(), 300);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 300);
        assert_eq!(
            store.stats().await.unwrap(),
            common::oracle::expected_stats(&data.events)
        );
    });
}

fn a_silent_relay_is_restarted_by_the_watchdog(db: TestDb) {
    run(async {
        let data = Dataset::generate(100, 1, 0.0, 23);
        let relay = HostileRelay::start(data.events.clone(), vec![Act::Silent], 0).await;
        let mut s = settings(&db, vec![relay.url.clone()]);
        // The EOSE timeout alone would not end the first cycle within the test.
        s.sync.eose_timeout_secs = 3_600;
        s.interval.watchdog_secs = 2;
        let counters = sync_once(s).await;

        assert!(Counters::get(&counters.relay(&relay.url).restarts) >= 1);
        let store = storage::open(&db.url, 2).await.unwrap();
        assert_eq!(store.count_events().await.unwrap(), 100);
    });
}

fn an_event_the_database_refuses_does_not_stall_the_rest(db: TestDb) {
    // A rule of this database that the service knows nothing about.
    db.execute(match db.backend {
        Backend::Sqlite => {
            "CREATE TRIGGER no_poison BEFORE INSERT ON events WHEN NEW.content = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poison refused'); END;"
        }
        Backend::Postgres => {
            "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (content <> 'poison')"
        }
    });
    run(async {
        let data = Dataset::generate(1_000, 1, 0.0, 25);
        let poison = EventBuilder::text_note("poison")
            .sign_with_keys(&Keys::generate())
            .unwrap();
        let events: Vec<Event> = data.events.iter().cloned().chain([poison]).collect();
        let relay = HostedRelay::start(&events, 5_000).await.unwrap();
        let counters = sync_once(settings(&db, vec![relay.url().await])).await;

        assert!(Counters::get(&counters.unstorable) >= 1);
        let store = storage::open(&db.url, 2).await.unwrap();
        assert_eq!(store.count_events().await.unwrap(), 1_000);
        assert_eq!(
            store.stats().await.unwrap(),
            common::oracle::expected_stats(&data.events)
        );
    });
}

/// While a live subscription stays open, polling cycles do not read again what it
/// brought: a note published late (dated before the subscription opened) is still
/// found by the next cycle, and the live notes are received about once, not once per
/// cycle.
fn live_subscriptions_are_not_read_again(db: TestDb) {
    run(async {
        let relay = HostedRelay::start(std::iter::empty(), 500).await.unwrap();
        let mut s = settings(&db, vec![relay.url().await]);
        s.sync.live = true;
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        let keys = Keys::generate();
        for i in 0..50 {
            let note = EventBuilder::text_note(format!("live {i}"))
                .sign_with_keys(&keys)
                .unwrap();
            relay.publish(&note).await.unwrap();
        }
        let late = EventBuilder::text_note("late")
            .custom_created_at(Timestamp::from(Timestamp::now().as_secs() - 120))
            .sign_with_keys(&keys)
            .unwrap();
        relay.publish(&late).await.unwrap();
        let stored = wait_stored(&app, 51, Duration::from_secs(15)).await;
        assert_eq!(stored, 51, "the late note was not found");
        let before = app
            .counters
            .relay(&relay.url().await)
            .cycles_ok
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(app.wait_for_cycles(before + 5, SYNC_TIMEOUT).await);
        let received = app.counters.received();
        assert!(app.shutdown(Duration::from_secs(30)).await);
        // Each cycle reads the late note again (it is dated below the opening); the
        // 50 live notes came once. Read again, they would be 50 more per cycle.
        assert!(received < 51 + 2 * (before + 5) + 20, "received {received}");
    });
}

/// A relay that stores events without sending them to live subscribers: the check of
/// the window (once per `sync.overlap_secs`) finds them, and from then on its windows
/// are read whole.
fn a_relay_that_does_not_deliver_live_loses_nothing(db: TestDb) {
    run(async {
        let relay = HostedRelay::start(std::iter::empty(), 500).await.unwrap();
        let mut s = settings(&db, vec![relay.url().await]);
        s.sync.live = true;
        s.sync.overlap_secs = 12;
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        let keys = Keys::generate();
        // Once the subscription has been open for longer than the overlap.
        tokio::time::sleep(Duration::from_secs(13)).await;
        for i in 0..5 {
            let note = EventBuilder::text_note(format!("silent {i}"))
                .sign_with_keys(&keys)
                .unwrap();
            relay.store_silently(&note).await.unwrap();
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let stored = wait_stored(&app, 5, Duration::from_secs(40)).await;
        assert!(app.shutdown(Duration::from_secs(30)).await);
        assert_eq!(stored, 5, "events the relay did not send live were missed");
    });
}

async fn wait_stored(app: &App, n: u64, within: Duration) -> u64 {
    let deadline = std::time::Instant::now() + within;
    while Counters::get(&app.counters.stored) < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Counters::get(&app.counters.stored)
}

/// The connection to a live relay is cut between polls: the relay actor notices within
/// a second, reconnects, and what was published meanwhile and after arrives long
/// before the next poll (30 s away).
fn a_live_subscription_comes_back_after_the_connection_drops(db: TestDb) {
    run(async {
        let relay = HostedRelay::start(std::iter::empty(), 500).await.unwrap();
        let url = relay.url().await;
        let target = url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .to_owned();
        let proxy = TcpProxy::start(target.clone()).await;
        let routed = proxy.route(&url, &target);
        let mut s = settings(&db, vec![routed.clone()]);
        s.sync.live = true;
        s.interval.idle_secs = 30;
        s.interval.normal_secs = 30;
        s.interval.busy_secs = 30;
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        let keys = Keys::generate();
        let note = |text: &str| EventBuilder::text_note(text).sign_with_keys(&keys).unwrap();
        let stored = |n: u64| {
            let counters = app.counters.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while Counters::get(&counters.stored) < n && std::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Counters::get(&counters.stored)
            }
        };

        relay.publish(&note("before the cut")).await.unwrap();
        assert_eq!(stored(1).await, 1, "the live event did not arrive");
        proxy.cut();
        relay.publish(&note("during the cut")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        proxy.restore();
        relay.publish(&note("after the cut")).await.unwrap();
        assert_eq!(stored(3).await, 3, "events were missing 10 s after the cut");

        // The reconnecting cycle stores the events before it ends.
        let reconnected = app.wait_for_cycles(2, Duration::from_secs(10)).await;
        assert!(app.shutdown(Duration::from_secs(30)).await);
        assert!(reconnected, "no cycle ran to reconnect");
    });
}

/// PostgreSQL disappears twice mid-sync (every connection cut, new ones refused) and
/// comes back: everything is committed once, cursors did not run ahead, and memory
/// stayed within the configured bound.
fn postgres_outage(db: TestDb) {
    run(async {
        let data = Dataset::generate(20_000, 3, 0.5, 24);
        let (_relays, urls) = common::host(&data, &[500]).await;
        let proxy = TcpProxy::start("127.0.0.1:5432".into()).await;
        let mut s = settings(&db, urls);
        s.database.url = proxy.route(&db.url, "127.0.0.1:5432");
        s.database.retry_min_ms = 50;
        s.database.retry_max_ms = 500;
        s.http.listen = "127.0.0.1:0".into();
        s.validate().unwrap();
        let bound = s.max_held_events() as i64;

        let app = App::start(s).await.unwrap();
        let http = app.http_addr().unwrap();
        for _ in 0..2 {
            let before = Counters::get(&app.counters.stored);
            while Counters::get(&app.counters.stored) < before + 2_000 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(wait_for_status(http, "/readyz", 200, Duration::from_secs(10)).await);
            proxy.cut();
            let cut = std::time::Instant::now();
            assert!(
                wait_for_status(http, "/readyz", 503, Duration::from_secs(10)).await,
                "/readyz stayed 200 while the database was unreachable"
            );
            tokio::time::sleep(Duration::from_secs(3).saturating_sub(cut.elapsed())).await;
            proxy.restore();
            assert!(
                wait_for_status(http, "/readyz", 200, Duration::from_secs(20)).await,
                "/readyz did not come back after the outage"
            );
        }
        // Actors answered throughout.
        assert_eq!(common::http_get(http, "/livez").await.0, 200);
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        let counters = app.counters.clone();
        assert!(app.shutdown(Duration::from_secs(30)).await);

        eprintln!(
            "outage: {} failed writes, {} events held at most (bound {bound})",
            Counters::get(&counters.db_errors),
            counters.held.peak()
        );
        assert!(Counters::get(&counters.db_errors) > 0, "no outage was seen");
        assert!(
            counters.held.peak() <= bound,
            "held {} > {bound}",
            counters.held.peak()
        );
        let store = storage::open(&db.url, 2).await.unwrap();
        let ids = stored_ids(&*store).await;
        assert_eq!(ids.len(), 20_000);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 20_000);
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

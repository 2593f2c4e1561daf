//! The relay endpoint (`[serve]`) read by real clients over real websockets: a
//! nostr-sdk `Client` and a raw websocket, against what an independent SQL query and
//! the NIPs' oracle say the database holds.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{oracle, run, settings, Backend, TestDb, SYNC_TIMEOUT};
use diesel::connection::Connection;
use diesel::RunQueryDsl;
use futures::{SinkExt, StreamExt};
use nostr_sdk::prelude::*;
use nostr_sync::app::App;
use nostr_sync::metrics::Counters;
use nostr_sync::nostr::aggregate::StatsDelta;
use nostr_sync::storage::{self, EventStore};
use nostr_sync_tools::dataset::{self, HostedRelay};
use tokio_tungstenite::tungstenite::Message;

both_backends!(
    reads_answer_what_the_database_holds,
    an_idle_endpoint_pushes_what_commits_after_a_subscription_opens,
    hostile_clients_are_cut_off_while_the_sync_keeps_storing
);

/// Events (and their authors' keys), signed once for every test here.
fn data() -> &'static (Vec<Event>, Vec<Keys>) {
    static DATA: OnceLock<(Vec<Event>, Vec<Keys>)> = OnceLock::new();
    DATA.get_or_init(|| {
        let (events, keys, _) = dataset::sign_events_by(1_500, 251);
        (events, keys)
    })
}

/// 1,000 events dated within the last minute (as a relay receives them live), signed
/// once.
fn recent() -> &'static [Event] {
    static RECENT: OnceLock<Vec<Event>> = OnceLock::new();
    RECENT.get_or_init(|| {
        let mut maker = dataset::EventMaker::new(50, 252);
        let start = Timestamp::now().as_secs() - 60;
        (0..1_000u64)
            .map(|i| maker.next(Timestamp::from(start + i * 60 / 1_000)))
            .collect()
    })
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// The ids `SELECT id FROM events WHERE {condition} ORDER BY created_at DESC, id
/// LIMIT {limit}` returns: NIP-01's order, written in SQL apart from the endpoint.
fn sql_ids(db: &TestDb, condition: &str, limit: usize) -> Vec<String> {
    let sql = format!(
        "SELECT id FROM events WHERE {condition} ORDER BY created_at DESC, id LIMIT {limit}"
    );
    let (backend, url) = (db.backend, db.url.clone());
    // A connection of its own, on a thread of its own (the wrapper blocks on a runtime).
    let rows: Vec<IdRow> = std::thread::spawn(move || match backend {
        Backend::Sqlite => {
            let mut c = diesel::SqliteConnection::establish(storage::sqlite_path(&url)).unwrap();
            diesel::sql_query(sql).load(&mut c).unwrap()
        }
        Backend::Postgres => {
            use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
            let mut c =
                AsyncConnectionWrapper::<diesel_async::AsyncPgConnection>::establish(&url).unwrap();
            diesel::sql_query(sql).load(&mut c).unwrap()
        }
    })
    .join()
    .unwrap();
    rows.into_iter().map(|r| r.id).collect()
}

/// `event_seq IN` the events tagged `name` = `value`.
fn tagged(name: &str, value: &str) -> String {
    format!("seq IN (SELECT event_seq FROM event_tags WHERE name = '{name}' AND value = '{value}')")
}

/// A raw websocket to the endpoint.
async fn raw(addr: std::net::SocketAddr) -> Raw {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}"))
        .await
        .unwrap();
    ws
}

type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message, parsed (`None`: the connection ended, or nothing came in 10 s).
async fn next(ws: &mut Raw) -> Option<serde_json::Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The ids a REQ returns over a raw websocket, in the order they came, up to EOSE.
async fn raw_req(ws: &mut Raw, filter: &str) -> Vec<String> {
    ws.send(Message::text(format!(r#"["REQ","raw",{filter}]"#)))
        .await
        .unwrap();
    let mut ids = Vec::new();
    loop {
        let m = next(ws).await.expect("an answer");
        match m[0].as_str().unwrap() {
            "EVENT" => ids.push(m[2]["id"].as_str().unwrap().to_owned()),
            "EOSE" => return ids,
            other => panic!("{other}: {m}"),
        }
    }
}

type Stats = HashMap<String, StatsDelta>;

/// Waits until the aggregates equal `want` as `seen` sees them (flushes run on a
/// timer), rows that count nothing aside.
async fn settle(store: &dyn EventStore, want: &Stats, seen: fn(&StatsDelta) -> StatsDelta) {
    let view = |stats: &Stats| -> Stats {
        stats
            .iter()
            .map(|(t, s)| (t.clone(), seen(s)))
            .filter(|(_, s)| *s != Default::default())
            .collect()
    };
    let want = view(want);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = view(&store.stats().await.unwrap());
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "the aggregates never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every counter.
fn all(s: &StatsDelta) -> StatsDelta {
    *s
}

/// Every counter but zaps (a zap counted stays counted when its target is deleted,
/// which the oracle of `kept` events cannot tell).
fn not_zaps(s: &StatsDelta) -> StatsDelta {
    StatsDelta {
        zaps: 0,
        zap_msats: 0,
        ..*s
    }
}

fn reads_answer_what_the_database_holds(db: TestDb) {
    run(async {
        let (events, keys) = data();
        let upstream = HostedRelay::start(events.iter(), 500).await.unwrap();
        let mut s = settings(&db, vec![upstream.url().await]);
        s.sync.live = true;
        s.serve.listen = "127.0.0.1:0".into();
        // Exactly what the relay holds: a sync of everything fits, one more does not.
        s.serve.max_sync_events = events.len();
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        let store = storage::open(&db.url, 2).await.unwrap();
        settle(&*store, &oracle::expected_stats(events), all).await;
        let addr = app.serve_addr().unwrap();
        let url = format!("ws://{addr}");
        let client = Client::default();
        client.add_relay(&url).await.unwrap();
        client.connect().await;

        // Every filter shape returns what SQL returns: the same ids, newest first, as
        // many as the limit (lowered to serve.max_limit, 500).
        let author = events[0].pubkey;
        let reacted = events
            .iter()
            .find(|e| e.kind == Kind::Reaction)
            .and_then(|e| e.tags.event_ids().next().copied())
            .unwrap();
        let some: Vec<EventId> = events.iter().step_by(300).map(|e| e.id).collect();
        let (from, to) = (events[200].created_at, events[700].created_at);
        let hex = |ids: &[EventId]| {
            ids.iter()
                .map(|i| format!("'{}'", i.to_hex()))
                .collect::<Vec<_>>()
                .join(",")
        };
        let shapes: Vec<(Filter, String, usize)> = vec![
            (
                Filter::new().kind(Kind::TextNote).limit(100),
                "kind = 1".into(),
                100,
            ),
            (
                Filter::new().author(author),
                format!("pubkey = '{}'", author.to_hex()),
                500,
            ),
            (
                Filter::new()
                    .kinds([Kind::Reaction, Kind::Repost])
                    .event(reacted),
                format!("kind IN (6, 7) AND {}", tagged("e", &reacted.to_hex())),
                500,
            ),
            (
                Filter::new().pubkey(author).limit(20),
                tagged("p", &author.to_hex()),
                20,
            ),
            (
                Filter::new().ids(some.clone()),
                format!("id IN ({})", hex(&some)),
                500,
            ),
            (
                Filter::new().since(from).until(to).limit(50),
                format!("created_at BETWEEN {} AND {}", from.as_secs(), to.as_secs()),
                50,
            ),
            (Filter::new().limit(10_000), "1 = 1".into(), 500),
        ];
        for (filter, condition, limit) in shapes {
            let got: Vec<String> = client
                .fetch_events(filter.clone(), Duration::from_secs(10))
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id.to_hex())
                .collect();
            let want = sql_ids(&db, &condition, limit);
            assert!(!want.is_empty(), "{condition}: the oracle selects nothing");
            assert_eq!(got, want, "{condition}");
        }
        // SQLite's planner knows the tables (or it walks a kind's index for a filter a
        // tag selects): the feed refreshed its statistics as the table grew.
        if db.backend == Backend::Sqlite {
            let c = diesel::SqliteConnection::establish(storage::sqlite_path(&db.url));
            let rows: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'events')",
            ))
            .get_result(&mut c.unwrap())
            .unwrap();
            assert!(rows > 0, "no statistics for the events table");
        }
        // A query past its time is stopped, on SQLite by the clock it checks per row.
        if db.backend == Backend::Sqlite {
            let hurried = storage::open_reader(&db.url, 1, Duration::ZERO).unwrap();
            let all = storage::Query {
                limit: 10,
                ..Default::default()
            };
            let error = hurried.select(&all, 0).await.unwrap_err();
            assert!(error.to_string().contains("timeout"), "{error}");
        }
        // As sent (the client above sorts what it gets): newest first.
        let mut ws = raw(addr).await;
        assert_eq!(
            raw_req(&mut ws, r#"{"kinds":[1],"limit":40}"#).await,
            sql_ids(&db, "kind = 1", 40)
        );
        ws.send(Message::text(r#"["CLOSE","raw"]"#)).await.unwrap();

        // EVENT is refused: the endpoint is read-only.
        let note = EventBuilder::text_note("hello")
            .sign_with_keys(&keys[0])
            .unwrap();
        ws.send(Message::text(ClientMessage::event(note.clone()).as_json()))
            .await
            .unwrap();
        let ok = next(&mut ws).await.unwrap();
        assert_eq!(
            ok,
            serde_json::json!(["OK", note.id.to_hex(), false, "blocked: read-only"])
        );

        // NIP-77: nostr-sdk syncs everything into an empty database and ends with the
        // ids of the events table.
        let local = MemoryDatabase::with_opts(MemoryDatabaseOptions {
            events: true,
            max_events: None,
        });
        let syncer = Client::builder().database(local.clone()).build();
        syncer.add_relay(&url).await.unwrap();
        syncer.connect().await;
        let synced = syncer
            .sync(Filter::new(), &SyncOptions::default())
            .await
            .unwrap();
        assert!(synced.failed.is_empty(), "{:?}", synced.failed);
        let mut got: Vec<String> = local
            .query(Filter::new())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id.to_hex())
            .collect();
        let mut want = sql_ids(&db, "1 = 1", 100_000);
        got.sort();
        want.sort();
        assert_eq!(want.len(), events.len());
        assert_eq!(got, want);
        // A subscription gets, within a second of its commit, what the sync stores
        // after it opened.
        let mut live = raw(addr).await;
        live.send(Message::text(r#"["REQ","live",{"kinds":[1],"limit":0}]"#))
            .await
            .unwrap();
        assert_eq!(
            next(&mut live).await.unwrap(),
            serde_json::json!(["EOSE", "live"])
        );
        let fresh = EventBuilder::text_note("fresh")
            .sign_with_keys(&keys[1])
            .unwrap();
        upstream.publish(&fresh).await.unwrap();
        let waiting = actix_rt::spawn(async move {
            let m = next(&mut live).await;
            (m, Instant::now())
        });
        let stored_at = loop {
            if !store
                .stored_among(&[fresh.id.to_hex()])
                .await
                .unwrap()
                .is_empty()
            {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let (pushed, at) = waiting.await.unwrap();
        assert_eq!(pushed.unwrap()[2]["id"], fresh.id.to_hex());
        let after = at.saturating_duration_since(stored_at);
        assert!(
            after <= Duration::from_secs(1),
            "pushed {after:?} after its commit"
        );

        // One event more than serve.max_sync_events: the session is refused.
        let mut empty = negentropy::NegentropyStorageVector::new();
        empty.seal().unwrap();
        let first = negentropy::Negentropy::owned(empty, 0)
            .unwrap()
            .initiate()
            .unwrap();
        let hex_first: String = first.iter().map(|b| format!("{b:02x}")).collect();
        ws.send(Message::text(format!(
            r#"["NEG-OPEN","n",{{}},"{hex_first}"]"#
        )))
        .await
        .unwrap();
        assert_eq!(
            next(&mut ws).await.unwrap(),
            serde_json::json!(["NEG-ERR", "n", "blocked: too many results"])
        );

        // COUNT of reactions, replies, reposts and zaps of 50 notes: what event_stats
        // holds, before and after deletions are synced.
        let mut stored: Vec<Event> = events.clone();
        stored.push(fresh.clone());
        let before = oracle::expected_stats(&stored);
        let targets = most_counted(&before, 50);
        let relay = client.relay(&url).await.unwrap();
        assert_counts(&relay, &*store, &targets).await;
        let deletions = dataset::deletions(events, keys, 7);
        for d in &deletions {
            upstream.publish(d).await.unwrap();
        }
        stored.extend(deletions);
        let kept = oracle::kept(&stored, Timestamp::now().as_secs());
        let after_deletions = oracle::expected_stats(&kept);
        settle(&*store, &after_deletions, not_zaps).await;
        let changed = targets
            .iter()
            .filter(|t| after_deletions.get(*t) != before.get(*t))
            .count();
        assert!(
            changed > 0,
            "the deletions changed none of the 50 notes' counts"
        );
        assert_counts(&relay, &*store, &targets).await;

        // A COUNT no aggregate answers is counted in SQL.
        let n = relay
            .count_events(Filter::new().kind(Kind::TextNote), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(n, sql_ids(&db, "kind = 1", 100_000).len());
        let served = &app.counters.serve;
        assert!(Counters::get(&served.counts_from_aggregates) >= 400);
        assert_eq!(served.requests("event", "blocked"), 1);
        assert_eq!(served.requests("neg", "blocked"), 1);

        client.disconnect().await;
        syncer.disconnect().await;
        assert!(app.shutdown(Duration::from_secs(30)).await);
    });
}

/// The `n` targets with the most counted, ids of events only.
fn most_counted(stats: &HashMap<String, StatsDelta>, n: usize) -> Vec<String> {
    let mut targets: Vec<(&String, i64)> = stats
        .iter()
        .filter(|(t, _)| t.len() == 64)
        .map(|(t, s)| (t, s.reactions + s.replies + s.reposts + s.zaps))
        .collect();
    targets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    targets
        .into_iter()
        .take(n)
        .map(|(t, _)| t.clone())
        .collect()
}

/// COUNT of each target's reactions, replies, reposts and zaps equals `event_stats`.
async fn assert_counts(relay: &Relay, store: &dyn EventStore, targets: &[String]) {
    for target in targets {
        let id = EventId::from_hex(target).unwrap();
        let stats = store.stats_of(target).await.unwrap().unwrap_or_default();
        for (kinds, want) in [
            (vec![Kind::Reaction], stats.reactions),
            (vec![Kind::TextNote], stats.replies),
            (vec![Kind::Repost, Kind::GenericRepost], stats.reposts),
            (vec![Kind::ZapReceipt], stats.zaps),
        ] {
            let filter = Filter::new().kinds(kinds.clone()).event(id);
            let got = relay
                .count_events(filter, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(got as i64, want, "{kinds:?} of {target}");
        }
    }
}

/// The feed only counts rows while no client listens; one that connects and
/// subscribes still gets every event committed after its REQ, at once.
fn an_idle_endpoint_pushes_what_commits_after_a_subscription_opens(db: TestDb) {
    run(async {
        let mut s = settings(&db, Vec::new());
        s.serve.listen = "127.0.0.1:0".into();
        let app = App::start(s).await.unwrap();
        let addr = app.serve_addr().unwrap();
        let store = storage::open(&db.url, 2).await.unwrap();
        let (events, _) = data();
        let (before, after) = events[..200].split_at(100);
        store.insert_events(before).await.unwrap();
        // Idle: no client for longer than its slow look.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let mut ws = raw(addr).await;
        ws.send(Message::text(r#"["REQ","new",{"limit":0}]"#))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws).await.unwrap(),
            serde_json::json!(["EOSE", "new"])
        );
        store.insert_events(after).await.unwrap();
        let committed = Instant::now();
        let mut got = Vec::new();
        while got.len() < after.len() {
            let m = next(&mut ws).await.expect("a push");
            assert_eq!(m[0], "EVENT", "{m}");
            got.push(m[2]["id"].as_str().unwrap().to_owned());
        }
        assert!(
            committed.elapsed() < Duration::from_secs(1),
            "{:?}",
            committed.elapsed()
        );
        let mut want: Vec<String> = after.iter().map(|e| e.id.to_hex()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "exactly what committed after the REQ");
        assert!(app.shutdown(Duration::from_secs(30)).await);
    });
}

fn hostile_clients_are_cut_off_while_the_sync_keeps_storing(db: TestDb) {
    run(async {
        let first = &data().0[..500];
        let later = recent();
        let events: Vec<Event> = first.iter().chain(later).cloned().collect();
        let upstream = HostedRelay::start(first.iter(), 500).await.unwrap();
        let mut s = settings(&db, vec![upstream.url().await]);
        s.sync.live = true;
        s.serve.listen = "127.0.0.1:0".into();
        s.serve.max_connections = 6;
        s.serve.max_outbound_bytes = 256 << 10;
        s.serve.messages_burst = 50;
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        let addr = app.serve_addr().unwrap();
        let store = storage::open(&db.url, 2).await.unwrap();
        let served = &app.counters.serve;

        // The sync goes on meanwhile: the rest of the events arrive, 200 a second.
        let upstream = Arc::new(upstream);
        let publisher = {
            let upstream = upstream.clone();
            let later = later.to_vec();
            actix_rt::spawn(async move {
                for chunk in later.chunks(20) {
                    for e in chunk {
                        upstream.publish(e).await.unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let started = Instant::now();

        // 10,000 subscriptions: 20 are opened, the rest refused, then the client is
        // cut off for keeping on past its rate limit.
        let mut greedy = raw(addr).await;
        for n in 0..10_000 {
            // A kind nothing publishes: no live push competes with the answers.
            let req = format!(r#"["REQ","s{n}",{{"kinds":[30000],"limit":1}}]"#);
            if greedy.send(Message::text(req)).await.is_err() {
                break;
            }
        }
        let mut eose = 0;
        let mut refused = 0;
        while let Some(m) = next(&mut greedy).await {
            match m[0].as_str().unwrap() {
                "EOSE" => eose += 1,
                "CLOSED" => refused += 1,
                _ => {}
            }
        }
        assert_eq!(eose, 20, "serve.max_subscriptions");
        assert!(refused > 0);

        // A 10 MB message ends its connection.
        let mut big = raw(addr).await;
        let huge = format!(r#"["REQ","big",{{"search":"{}"}}]"#, "x".repeat(10 << 20));
        let _ = big.send(Message::text(huge)).await;
        assert!(
            next(&mut big).await.is_none(),
            "still connected after 10 MB"
        );
        assert!(Counters::get(&served.abusive_clients) >= 2);

        // A client that asks and never reads is cut off at its byte budget.
        let mut sleeper = raw(addr).await;
        for n in 0..40 {
            let req = format!(r#"["REQ","r{n}",{{"limit":500}}]"#);
            if sleeper.send(Message::text(req)).await.is_err() {
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Counters::get(&served.slow_consumers) == 0 {
            assert!(
                Instant::now() < deadline,
                "the client that does not read is still served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Past serve.max_connections, upgrades are refused.
        let mut open = Vec::new();
        for _ in 0..6 {
            open.push(raw(addr).await);
        }
        assert!(tokio_tungstenite::connect_async(format!("ws://{addr}"))
            .await
            .is_err());
        assert!(Counters::get(&served.connections_refused) >= 1);
        drop(open);

        // And the sync stored everything, as fast as usual.
        publisher.await.unwrap();
        let deadline = Instant::now() + SYNC_TIMEOUT;
        while store.count_events().await.unwrap() < events.len() as i64 {
            assert!(Instant::now() < deadline, "the sync stopped storing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        let latency = &app.counters.latency;
        let (p50, p99) = (latency.quantile_ms(0.5), latency.quantile_ms(0.99));
        eprintln!(
            "{} events stored in {took:?} under abuse; receipt-to-commit p50 {p50:.1} ms, p99 {p99:.1} ms",
            later.len()
        );
        // 1,000 events published over 5 s: the abuse did not hold the writers back.
        assert!(took < Duration::from_secs(30), "{took:?}");
        assert!(p99 < 5_000.0, "receipt-to-commit p99 {p99} ms");
        settle(&*store, &oracle::expected_stats(&events), all).await;
        common::assert_exact(&db, &events).await;
        assert!(app.shutdown(Duration::from_secs(30)).await);
    });
}

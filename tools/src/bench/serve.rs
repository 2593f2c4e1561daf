//! `bench --serve`: the relay endpoint over the database the backfill filled, read by
//! raw websocket clients in this process (the endpoint runs on its own Arbiter).
//!
//! - paging: one client reads the whole history at `limit` 500, newest first, each
//!   REQ's `until` the oldest time of the page before;
//! - COUNT: the reactions of 10,000 random notes, one at a time, round-trip times;
//! - fan-out: 1,000 subscriptions (50 clients, 20 each, one author each) while events
//!   of those authors are committed at `--rate` per second: from each commit's return
//!   to the event's arrival at its subscriber.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::{SinkExt, StreamExt};
use nostr_sdk::{EventBuilder, Keys, Timestamp};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use nostr_sync::actors::serve::Endpoint;
use nostr_sync::config::ServeSettings;
use nostr_sync::metrics::Counters;
use nostr_sync::storage::{self, EventStore, Query};

const COUNTS: usize = 10_000;
const CLIENTS: usize = 50;
const SUBSCRIPTIONS_EACH: usize = 20;
/// Seconds of committing during the fan-out.
const FANOUT_SECS: u64 = 10;

#[derive(Debug, Clone, Serialize)]
pub struct ServeReport {
    pub paged_events: u64,
    pub paged_per_s: f64,
    pub counts: usize,
    pub count_p50_ms: f64,
    pub count_p99_ms: f64,
    pub subscriptions: usize,
    pub fanout_rate: u64,
    pub fanout_events: usize,
    pub fanout_delivered: usize,
    pub fanout_p50_ms: f64,
    pub fanout_p99_ms: f64,
    pub fanout_max_ms: f64,
}

impl ServeReport {
    pub fn print(&self) {
        println!(
            "serve: paged {} events at {:.0}/s; COUNT p50 {:.2} ms, p99 {:.2} ms ({} notes); \
             fan-out to {} subscriptions at {}/s: {} of {} delivered, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.paged_events,
            self.paged_per_s,
            self.count_p50_ms,
            self.count_p99_ms,
            self.counts,
            self.subscriptions,
            self.fanout_rate,
            self.fanout_delivered,
            self.fanout_events,
            self.fanout_p50_ms,
            self.fanout_p99_ms,
            self.fanout_max_ms
        );
    }
}

/// Measures the endpoint over the database at `url`, which holds `events` events.
pub fn measure(url: &str, events: u64, rate: u64) -> anyhow::Result<ServeReport> {
    actix_rt::System::new().block_on(async {
        let store = storage::open(url, 4).await?;
        let limits = ServeSettings {
            listen: "127.0.0.1:0".into(),
            // One client does the work of many here.
            messages_per_sec: 1_000_000,
            messages_burst: 1_000_000,
            ..Default::default()
        };
        let reader = storage::open_reader(
            url,
            limits.database_connections,
            Duration::from_millis(limits.query_timeout_ms),
        )?;
        let counters = Arc::new(Counters::default());
        let endpoint = Endpoint::start(&limits, reader, counters.clone())?;
        let addr = endpoint.addr;
        let (paged_events, paged_per_s) = page_all(addr).await?;
        ensure!(
            paged_events == events,
            "paged {paged_events} events of {events}"
        );
        let (count_p50_ms, count_p99_ms) = counts(addr, url, &*store).await?;
        let fanout = fan_out(addr, &*store, rate).await?;
        endpoint.stop().await;
        let c = &counters.serve;
        ensure!(
            Counters::get(&c.slow_consumers) + Counters::get(&c.abusive_clients) == 0,
            "the endpoint cut off a bench client"
        );
        Ok(ServeReport {
            paged_events,
            paged_per_s,
            counts: COUNTS,
            count_p50_ms,
            count_p99_ms,
            subscriptions: CLIENTS * SUBSCRIPTIONS_EACH,
            fanout_rate: rate,
            fanout_events: fanout.events,
            fanout_delivered: fanout.delivered,
            fanout_p50_ms: fanout.p50_ms,
            fanout_p99_ms: fanout.p99_ms,
            fanout_max_ms: fanout.max_ms,
        })
    })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Ws> {
    Ok(tokio_tungstenite::connect_async(format!("ws://{addr}"))
        .await?
        .0)
}

/// What the clients read of a relay message.
#[derive(Deserialize)]
struct Frame<'a>(
    &'a str,
    #[serde(default)] serde::de::IgnoredAny,
    #[serde(default, borrow)] Option<Brief<'a>>,
);

#[derive(Deserialize)]
struct Brief<'a> {
    #[serde(default)]
    id: &'a str,
    #[serde(default)]
    created_at: i64,
    #[serde(default)]
    count: i64,
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(_))) => continue,
            other => anyhow::bail!("the endpoint stopped answering: {other:?}"),
        }
    }
}

/// Pages through every stored event; returns how many and their rate.
async fn page_all(addr: SocketAddr) -> anyhow::Result<(u64, f64)> {
    let mut ws = connect(addr).await?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut until: Option<i64> = None;
    let started = Instant::now();
    loop {
        let filter = match until {
            Some(u) => format!(r#"{{"limit":500,"until":{u}}}"#),
            None => r#"{"limit":500}"#.to_owned(),
        };
        ws.send(Message::text(format!(r#"["REQ","page",{filter}]"#)))
            .await?;
        let (mut page, mut fresh, mut oldest) = (0, 0, i64::MAX);
        loop {
            let text = next_text(&mut ws).await?;
            let Frame(kind, _, event) = serde_json::from_str(&text)?;
            match (kind, event) {
                ("EVENT", Some(e)) => {
                    page += 1;
                    oldest = oldest.min(e.created_at);
                    if seen.insert(e.id.to_owned()) {
                        fresh += 1;
                    }
                }
                ("EOSE", _) => break,
                _ => anyhow::bail!("unexpected answer while paging: {text}"),
            }
        }
        if page == 0 {
            break;
        }
        // A page of one second's events only: past that second.
        until = Some(if fresh == 0 { oldest - 1 } else { oldest });
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((seen.len() as u64, seen.len() as f64 / secs))
}

/// COUNT of the reactions of random notes, one at a time: the p50 and p99 round trip,
/// each answer checked against `event_stats`.
async fn counts(addr: SocketAddr, url: &str, store: &dyn EventStore) -> anyhow::Result<(f64, f64)> {
    let reader = storage::open_reader(url, 1, Duration::from_secs(60))?;
    let notes = reader
        .items_of(
            &Query {
                kinds: vec![1],
                ..Default::default()
            },
            storage::now_secs(),
            1_000_000,
        )
        .await?;
    ensure!(!notes.is_empty(), "no notes to count");
    let mut rng = rand_state(notes.len());
    let mut ws = connect(addr).await?;
    let mut times = Vec::with_capacity(COUNTS);
    for i in 0..COUNTS {
        let (id, _) = &notes[rng() % notes.len()];
        let started = Instant::now();
        ws.send(Message::text(format!(
            r##"["COUNT","c",{{"kinds":[7],"#e":["{id}"]}}]"##
        )))
        .await?;
        let text = next_text(&mut ws).await?;
        times.push(started.elapsed());
        let Frame(kind, _, answer) = serde_json::from_str(&text)?;
        ensure!(kind == "COUNT", "unexpected answer to COUNT: {text}");
        if i % 100 == 0 {
            let want = store.stats_of(id).await?.map_or(0, |s| s.reactions);
            let got = answer.map_or(-1, |a| a.count);
            ensure!(
                got == want,
                "COUNT of {id}'s reactions: {got}, event_stats: {want}"
            );
        }
    }
    Ok((quantile(&mut times, 0.5), quantile(&mut times, 0.99)))
}

fn rand_state(seed: usize) -> impl FnMut() -> usize {
    let mut x = seed as u64 | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as usize
    }
}

fn quantile(times: &mut [Duration], q: f64) -> f64 {
    times.sort_unstable();
    let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
    times[i].as_secs_f64() * 1e3
}

/// 1,000 subscriptions, one author each, while that many authors' new events are
/// committed at `rate` per second.
/// What the fan-out measured: events committed, delivered, and their times.
struct FanOut {
    events: usize,
    delivered: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

async fn fan_out(addr: SocketAddr, store: &dyn EventStore, rate: u64) -> anyhow::Result<FanOut> {
    let authors: Vec<Keys> = (0..CLIENTS * SUBSCRIPTIONS_EACH)
        .map(|_| Keys::generate())
        .collect();
    let total = (rate * FANOUT_SECS) as usize;
    let now = Timestamp::now().as_secs();
    let events: Vec<nostr_sdk::Event> = (0..total)
        .map(|i| {
            EventBuilder::text_note(format!("fan-out {i}"))
                .custom_created_at(Timestamp::from(now + (i as u64) / rate))
                .sign_with_keys(&authors[i % authors.len()])
        })
        .collect::<Result<_, _>>()?;
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut readers = Vec::new();
    for client in 0..CLIENTS {
        let mut ws = connect(addr).await?;
        for s in 0..SUBSCRIPTIONS_EACH {
            let author = authors[client * SUBSCRIPTIONS_EACH + s]
                .public_key()
                .to_hex();
            ws.send(Message::text(format!(
                r#"["REQ","s{s}",{{"authors":["{author}"],"limit":0}}]"#
            )))
            .await?;
            let text = next_text(&mut ws).await?;
            ensure!(text.starts_with(r#"["EOSE""#), "unexpected answer: {text}");
        }
        let arrived = arrived.clone();
        readers.push(actix_rt::spawn(async move {
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                if let Ok(Frame("EVENT", _, Some(e))) = serde_json::from_str(text.as_str()) {
                    let mut arrived = arrived.lock().unwrap_or_else(|e| e.into_inner());
                    arrived.insert(e.id.to_owned(), Instant::now());
                }
            }
        }));
    }
    // Commit in batches every 10 ms, at `rate` on average.
    let per_batch = (rate as usize / 100).max(1);
    let mut committed: HashMap<String, Instant> = HashMap::with_capacity(total);
    let started = Instant::now();
    for (n, batch) in events.chunks(per_batch).enumerate() {
        let due = started + Duration::from_millis(10 * n as u64);
        tokio::time::sleep_until(due.into()).await;
        store.insert_events(batch).await?;
        let at = Instant::now();
        for e in batch {
            committed.insert(e.id.to_hex(), at);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for r in &readers {
        r.abort();
    }
    let arrived = arrived.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut times: Vec<Duration> = committed
        .iter()
        .filter_map(|(id, at)| Some(arrived.get(id)?.saturating_duration_since(*at)))
        .collect();
    ensure!(
        times.len() == total,
        "{} of {total} events reached their subscriber",
        times.len()
    );
    let max = times.iter().max().copied().unwrap_or_default();
    Ok(FanOut {
        events: total,
        delivered: times.len(),
        p50_ms: quantile(&mut times, 0.5),
        p99_ms: quantile(&mut times, 0.99),
        max_ms: max.as_secs_f64() * 1e3,
    })
}

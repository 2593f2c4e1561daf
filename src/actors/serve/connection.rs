//! One client: reads its messages, answers them through the reader, and pushes the
//! feed's events to its subscriptions. Replies go through a writer task that holds at
//! most `serve.max_outbound_bytes` the client has not read; past that, or when the
//! client falls behind the feed, it is cut off.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use nostr_sdk::filter::MatchEventOptions;
use nostr_sdk::Filter;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::{Batch, Shared};
use crate::serve::rate::{Bucket, Verdict};
use crate::serve::{self, reply, Refusal, Request, Session, BLOCKED, ERROR, RATE_LIMITED};
use crate::storage::now_secs;

/// How long a subscription remembers the stored events it sent, so that the feed's
/// batches read before its query ended do not send them twice.
const RECENT: Duration = Duration::from_secs(2);
/// Longest a closing client's pending replies are written for.
const DRAIN: Duration = Duration::from_secs(2);

struct Subscription {
    filters: Vec<Filter>,
    /// The feed's position when it opened: rows at or below it are in its query's
    /// answer, unless they were committed late.
    horizon: i64,
    /// Ids sent from the database, until `recent_until`.
    sent: HashSet<String>,
    recent_until: Instant,
}

/// Replies waiting for the client, and how many bytes they hold.
struct Outbox {
    tx: mpsc::UnboundedSender<String>,
    queued: Arc<AtomicUsize>,
    budget: usize,
}

impl Outbox {
    /// Queues `text`; false once the client holds more than its budget unread.
    fn send(&self, text: String) -> bool {
        let queued = self.queued.fetch_add(text.len(), Ordering::Relaxed) + text.len();
        let _ = self.tx.send(text);
        queued <= self.budget
    }
}

struct Connection {
    shared: Arc<Shared>,
    out: Outbox,
    subs: HashMap<String, Subscription>,
    negs: HashMap<String, Session>,
    bucket: Bucket,
}

/// Why a connection ended, for the counters.
enum End {
    Done,
    Slow,
    Abusive,
}

pub(super) async fn serve(upgraded: Upgraded, shared: Arc<Shared>) {
    let limits = &shared.limits;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes));
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (mut sink, mut stream) = ws.split();
    let counters = shared.counters.clone();
    counters.serve.connections.add(1);
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let queued = Arc::new(AtomicUsize::new(0));
    let written = queued.clone();
    let mut writer = actix_rt::spawn(async move {
        while let Some(text) = rx.recv().await {
            let len = text.len();
            if sink.feed(Message::text(text)).await.is_err() {
                break;
            }
            written.fetch_sub(len, Ordering::Relaxed);
            if rx.is_empty() && sink.flush().await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut live = shared.feed.subscribe();
    shared.connected.notify_one();
    let mut stop = shared.stop.clone();
    let mut conn = Connection {
        out: Outbox {
            tx,
            queued,
            budget: limits.max_outbound_bytes,
        },
        subs: HashMap::new(),
        negs: HashMap::new(),
        bucket: Bucket::new(
            limits.messages_per_sec,
            limits.messages_burst,
            Instant::now(),
        ),
        shared: shared.clone(),
    };
    let end = loop {
        let step = tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => conn.handle(text.as_str()).await,
                Some(Ok(Message::Binary(_))) => conn.notice("invalid: messages are JSON text"),
                Some(Ok(Message::Close(_))) | None => ControlFlow::Break(End::Done),
                Some(Ok(_)) => ControlFlow::Continue(()),
                Some(Err(WsError::Capacity(_))) => ControlFlow::Break(End::Abusive),
                Some(Err(_)) => ControlFlow::Break(End::Done),
            },
            batch = live.recv() => match batch {
                Ok(batch) => conn.push(&batch),
                Err(broadcast::error::RecvError::Lagged(_)) => ControlFlow::Break(End::Slow),
                Err(broadcast::error::RecvError::Closed) => ControlFlow::Break(End::Done),
            },
            _ = stop.changed() => ControlFlow::Break(End::Done),
        };
        if let ControlFlow::Break(end) = step {
            break end;
        }
    };
    let serve_counters = &counters.serve;
    match end {
        End::Done => {}
        End::Slow => {
            serve_counters
                .slow_consumers
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!("relay endpoint: a client that does not read was cut off");
        }
        End::Abusive => {
            serve_counters
                .abusive_clients
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!("relay endpoint: a client was cut off for its messages");
        }
    }
    serve_counters.subscriptions.add(-(conn.subs.len() as i64));
    serve_counters.connections.add(-1);
    let slow = matches!(end, End::Slow);
    drop(conn);
    if slow || tokio::time::timeout(DRAIN, &mut writer).await.is_err() {
        writer.abort();
    }
}

impl Connection {
    fn send(&self, text: String) -> ControlFlow<End> {
        if self.out.send(text) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(End::Slow)
        }
    }

    fn notice(&self, why: &str) -> ControlFlow<End> {
        self.send(reply::notice(why))
    }

    async fn handle(&mut self, text: &str) -> ControlFlow<End> {
        let shared = self.shared.clone();
        let request = match serve::parse(text, &shared.limits) {
            Ok(request) => request,
            Err(Refusal::Notice(why)) => return self.notice(&why),
            Err(Refusal::Sub { sub, neg, why }) => {
                let kind = if neg { "neg" } else { "req" };
                shared.counters.serve.request(kind, outcome_of(&why));
                return self.send(if neg {
                    reply::neg_err(&sub, &why)
                } else {
                    reply::closed(&sub, &why)
                });
            }
        };
        let kind = match &request {
            Request::Req { .. } => "req",
            Request::Count { .. } => "count",
            Request::NegOpen { .. } | Request::NegMsg { .. } => "neg",
            Request::Event { .. } => "event",
            Request::Close { .. } | Request::NegClose { .. } | Request::Auth => "",
        };
        if !kind.is_empty() {
            match self.bucket.take(Instant::now()) {
                Verdict::Serve => {}
                Verdict::Refuse => {
                    shared.counters.serve.request(kind, "rate_limited");
                    let why = format!("{RATE_LIMITED}: slow down");
                    return match &request {
                        Request::NegOpen { sub, .. } | Request::NegMsg { sub, .. } => {
                            self.send(reply::neg_err(sub, &why))
                        }
                        Request::Req { sub, .. } | Request::Count { sub, .. } => {
                            self.send(reply::closed(sub, &why))
                        }
                        _ => self.notice(&why),
                    };
                }
                Verdict::Disconnect => return ControlFlow::Break(End::Abusive),
            }
        }
        match request {
            Request::Req { sub, filters } => self.req(sub, filters).await,
            Request::Count { sub, filters } => self.count(sub, filters).await,
            Request::Close { sub } => {
                if self.subs.remove(&sub).is_some() {
                    shared.counters.serve.subscriptions.add(-1);
                }
                ControlFlow::Continue(())
            }
            Request::Event { id } => {
                shared.counters.serve.request("event", "blocked");
                self.send(reply::ok(&id, false, &format!("{BLOCKED}: read-only")))
            }
            Request::NegOpen {
                sub,
                filter,
                message,
            } => self.neg_open(sub, filter, message).await,
            Request::NegMsg { sub, message } => {
                let answer = match self.negs.get_mut(&sub) {
                    Some(session) => session
                        .reconcile(&message)
                        .map_err(|e| format!("{}: {e}", serve::INVALID)),
                    None => Err("closed: no such reconciliation".to_owned()),
                };
                self.neg_answer(sub, answer)
            }
            Request::NegClose { sub } => {
                self.negs.remove(&sub);
                ControlFlow::Continue(())
            }
            Request::Auth => self.notice("auth is not required here"),
        }
    }

    async fn req(&mut self, sub: String, filters: Vec<Filter>) -> ControlFlow<End> {
        let shared = self.shared.clone();
        let counters = &shared.counters.serve;
        let queries = match filters
            .iter()
            .map(|f| serve::query(f, &shared.limits))
            .collect::<Result<Vec<_>, String>>()
        {
            Ok(queries) => queries,
            Err(why) => {
                counters.request("req", outcome_of(&why));
                return self.send(reply::closed(&sub, &why));
            }
        };
        if !self.subs.contains_key(&sub) {
            if self.subs.len() >= shared.limits.max_subscriptions {
                counters.request("req", "blocked");
                let why = format!(
                    "{BLOCKED}: more than {} subscriptions",
                    shared.limits.max_subscriptions
                );
                return self.send(reply::closed(&sub, &why));
            }
            counters.subscriptions.add(1);
        }
        // Registered before the queries run: what commits meanwhile reaches it live.
        let mut sent = HashSet::new();
        self.subs.insert(
            sub.clone(),
            Subscription {
                filters,
                horizon: shared.published.load(Ordering::Relaxed),
                sent: HashSet::new(),
                recent_until: Instant::now() + RECENT,
            },
        );
        let now = now_secs();
        for q in queries.into_iter().flatten() {
            match shared.reader.select(&q, now).await {
                Ok(rows) => {
                    for row in rows {
                        if sent.insert(row.id) {
                            counters.events_sent.fetch_add(1, Ordering::Relaxed);
                            self.send(reply::event(&sub, &row.json))?;
                        }
                    }
                }
                Err(error) => {
                    counters.request("req", "error");
                    if self.subs.remove(&sub).is_some() {
                        counters.subscriptions.add(-1);
                    }
                    return self.send(reply::closed(&sub, &format!("{ERROR}: {error}")));
                }
            }
        }
        counters.request("req", "ok");
        if let Some(s) = self.subs.get_mut(&sub) {
            s.sent = sent;
            s.recent_until = Instant::now() + RECENT;
        }
        self.send(reply::eose(&sub))
    }

    async fn count(&mut self, sub: String, filters: Vec<Filter>) -> ControlFlow<End> {
        let shared = self.shared.clone();
        let counters = &shared.counters.serve;
        let counted = if let Some((counter, target)) = serve::counter(&filters) {
            counters
                .counts_from_aggregates
                .fetch_add(1, Ordering::Relaxed);
            shared
                .reader
                .stats_of(&target)
                .await
                .map(|stats| counter.of(stats.as_ref()))
                .map_err(|e| format!("{ERROR}: {e}"))
        } else {
            self.count_in_sql(&filters).await
        };
        match counted {
            Ok(n) => {
                counters.request("count", "ok");
                self.send(reply::count(&sub, n))
            }
            Err(why) => {
                counters.request("count", outcome_of(&why));
                self.send(reply::closed(&sub, &why))
            }
        }
    }

    /// The events of any of `filters` (their limits aside), counted in SQL: one
    /// filter with `COUNT`; several by the union of their ids, up to
    /// `serve.max_sync_events`.
    async fn count_in_sql(&self, filters: &[Filter]) -> Result<i64, String> {
        let shared = &self.shared;
        let most = shared.limits.max_sync_events;
        let mut queries = Vec::new();
        for f in filters {
            let f = Filter {
                limit: None,
                ..f.clone()
            };
            queries.extend(serve::query(&f, &shared.limits)?);
        }
        let now = now_secs();
        if let [q] = &queries[..] {
            return shared
                .reader
                .count(q, now)
                .await
                .map_err(|e| format!("{ERROR}: {e}"));
        }
        let mut ids = HashSet::new();
        for q in &queries {
            let items = shared
                .reader
                .items_of(q, now, most as i64 + 1)
                .await
                .map_err(|e| format!("{ERROR}: {e}"))?;
            ids.extend(items.into_iter().map(|(id, _)| id));
            if ids.len() > most {
                return Err(format!("{BLOCKED}: more than {most} events to count"));
            }
        }
        Ok(ids.len() as i64)
    }

    async fn neg_open(&mut self, sub: String, filter: Filter, first: Vec<u8>) -> ControlFlow<End> {
        let shared = self.shared.clone();
        let most = shared.limits.max_sync_events;
        self.negs.remove(&sub);
        if self.negs.len() >= shared.limits.max_subscriptions {
            let why = format!("{BLOCKED}: too many reconciliations");
            return self.neg_answer(sub, Err(why));
        }
        let filter = Filter {
            limit: None,
            ..filter
        };
        let opened = match serve::query(&filter, &shared.limits) {
            Err(why) => Err(why),
            Ok(None) => Ok(Vec::new()),
            Ok(Some(q)) => shared
                .reader
                .items_of(&q, now_secs(), most as i64 + 1)
                .await
                .map_err(|e| format!("{ERROR}: {e}")),
        }
        .and_then(|items| {
            if items.len() > most {
                return Err(format!("{BLOCKED}: too many results"));
            }
            serve::open_session(&items, &first)
        });
        match opened {
            Ok((session, answer)) => {
                self.negs.insert(sub.clone(), session);
                self.neg_answer(sub, Ok(answer))
            }
            Err(why) => self.neg_answer(sub, Err(why)),
        }
    }

    fn neg_answer(&mut self, sub: String, answer: Result<Vec<u8>, String>) -> ControlFlow<End> {
        let counters = &self.shared.counters.serve;
        match answer {
            Ok(message) => {
                counters.request("neg", "ok");
                self.send(reply::neg_msg(&sub, &message))
            }
            Err(why) => {
                counters.request("neg", outcome_of(&why));
                self.negs.remove(&sub);
                self.send(reply::neg_err(&sub, &why))
            }
        }
    }

    /// Sends each event of `batch` to the subscriptions it matches.
    fn push(&mut self, batch: &Batch) -> ControlFlow<End> {
        if self.subs.is_empty() {
            return ControlFlow::Continue(());
        }
        let now = Instant::now();
        let unix = now_secs().max(0) as u64;
        let counters = self.shared.counters.clone();
        let mut out = Vec::new();
        for (name, sub) in self.subs.iter_mut() {
            if !sub.sent.is_empty() && now > sub.recent_until {
                sub.sent = HashSet::new();
            }
            for live in &batch.events {
                if (live.seq <= sub.horizon && !live.late)
                    || live.expires.is_some_and(|at| at <= unix)
                    || !sub
                        .filters
                        .iter()
                        .any(|f| f.match_event(&live.event, MatchEventOptions::new()))
                    || (!sub.sent.is_empty() && sub.sent.contains(&live.event.id.to_hex()))
                {
                    continue;
                }
                out.push(reply::event(name, &live.json));
            }
        }
        counters
            .serve
            .events_sent
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        for text in out {
            self.send(text)?;
        }
        ControlFlow::Continue(())
    }
}

/// The `outcome` label of a refusal, from its NIP-01 prefix.
fn outcome_of(why: &str) -> &'static str {
    match why.split(':').next().unwrap_or_default() {
        serve::INVALID => "invalid",
        BLOCKED => "blocked",
        RATE_LIMITED => "rate_limited",
        _ => "error",
    }
}

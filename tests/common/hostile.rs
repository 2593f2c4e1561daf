//! A scripted relay on loopback (tokio-tungstenite) that misbehaves on demand: bad
//! frames, dropped connections, no EOSE, CLOSED, refused connections, silence.
//!
//! Each REQ takes the next `Act` of the script (then `Act::Serve` once it is used up),
//! and answers with every event it holds, whatever the filter: tests keep the events
//! under one page, so no paging is involved. A relay started with `paged` answers as
//! NIP-01 says instead: the events its filter (`since`, `until`, `kinds`, `authors`)
//! selects, newest first, at most `limit` and its cap, whatever it thinks of them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use nostr_sdk::{Event, JsonUtil};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
pub enum Act {
    /// The events, then EOSE.
    Serve,
    /// These frames (`{sub}` stands for the REQ's id), then the events and EOSE.
    Prefix(Vec<String>),
    /// This many events, then the TCP connection closes.
    DropAfter(usize),
    /// The events and no EOSE.
    NoEose,
    /// `["CLOSED", sub, message]` instead of events.
    Closed(String),
    /// Nothing at all; the connection stays open.
    Silent,
    /// The events over and over, never an EOSE, until the REQ is closed.
    Endless,
    /// This many binary frames, then the events and EOSE.
    Binary(usize),
}

#[derive(Default)]
struct Script {
    acts: Mutex<VecDeque<Act>>,
    /// Connections still to refuse (closed before the websocket handshake).
    refuse: AtomicUsize,
    reqs: AtomicUsize,
    connections: AtomicUsize,
    /// Frames sent in answer to a NEG-OPEN (NIP-77), `{sub}` for its id; none: silence.
    neg_answer: Mutex<Vec<String>>,
    negs: AtomicUsize,
    /// Filter and page at this size (see the module docs); 0: serve everything.
    cap: usize,
    /// Send a NOTICE every 100 ms on every connection, whatever else happens.
    chatty: std::sync::atomic::AtomicBool,
    /// The filter of every REQ received.
    filters: Mutex<Vec<serde_json::Value>>,
}

pub struct HostileRelay {
    pub url: String,
    script: Arc<Script>,
}

impl HostileRelay {
    pub async fn start(events: Vec<Event>, acts: Vec<Act>, refuse: usize) -> HostileRelay {
        Self::with_script(
            events,
            Script {
                acts: Mutex::new(acts.into()),
                refuse: AtomicUsize::new(refuse),
                ..Default::default()
            },
        )
        .await
    }

    /// A relay that pages as NIP-01 says, clamping every `limit` at `cap`, and keeps
    /// whatever it is given (future dates, NUL characters, any size).
    pub async fn paged(events: Vec<Event>, cap: usize) -> HostileRelay {
        Self::with_script(
            events,
            Script {
                cap,
                ..Default::default()
            },
        )
        .await
    }

    async fn with_script(mut events: Vec<Event>, script: Script) -> HostileRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let script = Arc::new(script);
        // Newest first, ties by id: the order a paged answer takes.
        if script.cap > 0 {
            events.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        }
        let events: Arc<Vec<Held>> = Arc::new(
            events
                .iter()
                .map(|e| Held {
                    created_at: e.created_at.as_secs(),
                    kind: e.kind.as_u16(),
                    author: e.pubkey.to_hex(),
                    json: e.as_json(),
                })
                .collect(),
        );
        let s = script.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                let refused = s
                    .refuse
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refused {
                    drop(tcp);
                    continue;
                }
                tokio::spawn(serve(tcp, s.clone(), events.clone()));
            }
        });
        HostileRelay { url, script }
    }

    /// Answers every NEG-OPEN with `frames` (by default it stays silent).
    pub fn answer_negentropy_with(&self, frames: Vec<String>) {
        *self.script.neg_answer.lock().unwrap() = frames;
    }

    /// From now on, a NOTICE every 100 ms on every connection: a connection that
    /// looks alive whatever it answers.
    pub fn chatter(&self) {
        self.script.chatty.store(true, Ordering::SeqCst);
    }

    /// NEG-OPEN messages received.
    pub fn negentropy_opens(&self) -> usize {
        self.script.negs.load(Ordering::SeqCst)
    }

    /// The filters of the REQs received so far.
    pub fn filters(&self) -> Vec<serde_json::Value> {
        self.script.filters.lock().unwrap().clone()
    }

    pub fn reqs(&self) -> usize {
        self.script.reqs.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.script.connections.load(Ordering::SeqCst)
    }
}

/// An event as the relay holds it.
struct Held {
    created_at: u64,
    kind: u16,
    author: String,
    json: String,
}

/// Whether `filter` (NIP-01) selects `e`, as far as sync asks: time, kinds, authors.
fn selects(filter: &serde_json::Value, e: &Held) -> bool {
    let num = |k: &str| filter.get(k).and_then(|v| v.as_u64());
    let list = |k: &str| filter.get(k).and_then(|v| v.as_array());
    num("since").is_none_or(|s| e.created_at >= s)
        && num("until").is_none_or(|u| e.created_at <= u)
        && list("kinds").is_none_or(|ks| ks.iter().any(|k| k.as_u64() == Some(e.kind.into())))
        && list("authors").is_none_or(|a| a.iter().any(|a| a.as_str() == Some(&e.author)))
}

async fn serve(tcp: tokio::net::TcpStream, script: Arc<Script>, events: Arc<Vec<Held>>) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        let msg = tokio::select! {
            msg = rx.next() => msg,
            _ = tick.tick(), if script.chatty.load(Ordering::SeqCst) => {
                let notice = Message::text(r#"["NOTICE","still here"]"#);
                if tx.send(notice).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some(Ok(msg)) = msg else { return };
        let Message::Text(text) = msg else { continue };
        let Ok(serde_json::Value::Array(parts)) = serde_json::from_str(text.as_str()) else {
            continue;
        };
        let sub = parts
            .get(1)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        if parts.first().and_then(|v| v.as_str()) == Some("NEG-OPEN") {
            script.negs.fetch_add(1, Ordering::SeqCst);
            let answer: Vec<Message> = script
                .neg_answer
                .lock()
                .unwrap()
                .iter()
                .map(|f| Message::text(f.replace("{sub}", &sub)))
                .collect();
            if send_all(&mut tx, answer.into_iter()).await.is_err() {
                return;
            }
            continue;
        }
        if parts.first().and_then(|v| v.as_str()) != Some("REQ") {
            continue;
        }
        script.reqs.fetch_add(1, Ordering::SeqCst);
        script
            .filters
            .lock()
            .unwrap()
            .extend(parts.iter().skip(2).cloned());
        let act = script
            .acts
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Act::Serve);
        let event = |e: &Held| Message::text(format!(r#"["EVENT","{sub}",{}]"#, e.json));
        let eose = Message::text(format!(r#"["EOSE","{sub}"]"#));
        let answer: Vec<&Held> = match parts.get(2) {
            Some(filter) if script.cap > 0 => {
                let limit = filter
                    .get("limit")
                    .and_then(|l| l.as_u64())
                    .map_or(script.cap, |l| (l as usize).min(script.cap));
                events
                    .iter()
                    .filter(|e| selects(filter, e))
                    .take(limit)
                    .collect()
            }
            _ => events.iter().collect(),
        };
        let events = answer.into_iter();
        let sent = match act {
            Act::Serve => send_all(&mut tx, events.map(event).chain([eose])).await,
            Act::Prefix(frames) => {
                let prefix = frames
                    .iter()
                    .map(|f| Message::text(f.replace("{sub}", &sub)));
                send_all(&mut tx, prefix.chain(events.map(event)).chain([eose])).await
            }
            Act::DropAfter(n) => {
                let _ = send_all(&mut tx, events.take(n).map(event)).await;
                return;
            }
            Act::NoEose => send_all(&mut tx, events.map(event)).await,
            Act::Closed(message) => {
                let closed = serde_json::json!(["CLOSED", sub, message]).to_string();
                send_all(&mut tx, [Message::text(closed)].into_iter()).await
            }
            Act::Silent => Ok(()),
            Act::Binary(n) => {
                let junk = (0..n).map(|i| Message::binary(vec![0xff, i as u8, 0xfe]));
                send_all(&mut tx, junk.chain(events.map(event)).chain([eose])).await
            }
            Act::Endless => {
                let all: Vec<&Held> = events.collect();
                loop {
                    if send_all(&mut tx, all.iter().map(|e| event(e)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    // Until a CLOSE (or anything else) arrives for it.
                    if let Some(next) = futures::FutureExt::now_or_never(rx.next()) {
                        match next {
                            Some(Ok(Message::Text(t))) if t.contains("CLOSE") => break Ok(()),
                            Some(Ok(_)) => {}
                            _ => return,
                        }
                    }
                }
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

async fn send_all<S>(tx: &mut S, msgs: impl Iterator<Item = Message>) -> Result<(), S::Error>
where
    S: futures::Sink<Message> + Unpin,
{
    for m in msgs {
        tx.feed(m).await?;
    }
    tx.flush().await
}

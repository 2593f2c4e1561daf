//! The live feed: reads what was committed to the events table since it last looked
//! (by this instance or any other sharing the database) every `serve.poll_ms`, and
//! broadcasts it to every connection, which matches it against its subscriptions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nostr_sdk::{Event, JsonUtil};

use super::Shared;
use crate::serve::feed::Tail;

/// Batches the broadcast holds for a connection that has not taken them yet; one
/// that falls further behind is cut off as a slow consumer.
pub const BATCHES: usize = 1_024;
/// Rows read per look.
const ROWS: i64 = 1_000;
/// How long a skipped row number is looked for again (a write transaction that
/// commits later than this is not pushed live; REQs still find its events), at most
/// how many, and every how many looks.
const HOLE_WAIT: Duration = Duration::from_secs(10);
const MAX_HOLES: usize = 2_000;
const HOLES_EVERY: u32 = 5;
/// Rows after which the planner's statistics are first refreshed (then each time the
/// table doubled).
const ANALYZE_FROM: i64 = 1_000;
/// How often the feed looks while no client is connected, and how many rows' numbers
/// it reads then.
const IDLE_POLL: Duration = Duration::from_secs(1);
const IDLE_ROWS: i64 = 1_000_000;

/// Events committed since the last batch.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Live>,
}

#[derive(Debug)]
pub struct Live {
    pub seq: i64,
    /// Found behind rows read before it (a transaction that committed late).
    pub late: bool,
    pub event: Event,
    /// Its NIP-01 JSON, written once for every client.
    pub json: String,
    /// Its NIP-40 expiration, if any.
    pub expires: Option<u64>,
}

/// Reads the numbers of the rows committed since `tail`, and moves it past them. A
/// client that connected meanwhile may have subscribed before the read: those rows
/// are sent to it.
async fn keep_place(shared: &Shared, tail: &mut Tail) {
    let now = Instant::now();
    let holes = tail.holes(now);
    let Ok(seqs) = shared
        .reader
        .committed_seqs(tail.last(), &holes, IDLE_ROWS)
        .await
    else {
        return;
    };
    let passed = tail.saw(&seqs, now);
    if shared.feed.receiver_count() > 0 {
        for chunk in passed.chunks(ROWS as usize) {
            match shared.reader.committed(i64::MAX, chunk, 0).await {
                Ok(rows) => broadcast(shared, rows, i64::MIN),
                Err(error) => {
                    tracing::warn!(%error, "the relay endpoint's feed cannot read the events table")
                }
            }
        }
    }
    shared.published.store(tail.last(), Ordering::Relaxed);
}

/// Sends `rows` to every connection; those at or below `before` were committed late.
fn broadcast(shared: &Shared, rows: Vec<(i64, Event)>, before: i64) {
    let events: Vec<Live> = rows
        .into_iter()
        .map(|(seq, event)| Live {
            seq,
            late: seq <= before,
            json: event.as_json(),
            expires: crate::nostr::expiration(&event),
            event,
        })
        .collect();
    if !events.is_empty() {
        let _ = shared.feed.send(Arc::new(Batch { events }));
    }
}

pub(super) async fn run(shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    let poll = Duration::from_millis(shared.limits.poll_ms);
    let last = loop {
        match shared.reader.last_seq().await {
            Ok(last) => break last,
            Err(error) => {
                tracing::warn!(%error, "the relay endpoint's feed cannot read the events table");
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    let mut tail = Tail::new(last, HOLE_WAIT, MAX_HOLES);
    shared.published.store(last, Ordering::Relaxed);
    let mut looks: u32 = 0;
    let mut full = false;
    let mut analyzed_at = 0;
    loop {
        // The planner's statistics, whenever the table doubled.
        if tail.last() >= 2 * analyzed_at + ANALYZE_FROM {
            analyzed_at = tail.last();
            if let Err(error) = shared.reader.refresh_statistics().await {
                tracing::warn!(%error, "cannot refresh the query planner's statistics");
            }
        }
        if shared.feed.receiver_count() == 0 {
            // No one to send to: keep the place (numbers only), less often. Skipping
            // to the end instead would lose what commits behind it for a client that
            // subscribes meanwhile.
            tokio::select! {
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shared.connected.notified() => {}
                _ = stop.changed() => return,
            }
            if shared.feed.receiver_count() == 0 {
                keep_place(&shared, &mut tail).await;
            }
            continue;
        }
        if !full {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => return,
            }
        }
        looks = looks.wrapping_add(1);
        let now = Instant::now();
        let holes = if looks.is_multiple_of(HOLES_EVERY) {
            tail.holes(now)
        } else {
            Vec::new()
        };
        let rows = match shared.reader.committed(tail.last(), &holes, ROWS).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "the relay endpoint's feed cannot read the events table");
                full = false;
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        full = rows.iter().filter(|(seq, _)| *seq > tail.last()).count() as i64 >= ROWS;
        shared
            .counters
            .serve
            .feed_rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
        let before = tail.last();
        let new: std::collections::HashSet<i64> = tail.saw(&seqs, now).into_iter().collect();
        let rows = rows
            .into_iter()
            .filter(|(seq, _)| new.contains(seq))
            .collect();
        broadcast(&shared, rows, before);
        shared.published.store(tail.last(), Ordering::Relaxed);
    }
}

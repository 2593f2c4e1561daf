//! The ingest loop of one relay connection: raw frames from the tap are classified
//! (`frames`), counted against their subscriptions (`subs`), and the events to keep
//! are handed on through dedup, verification and storage (`Pipeline::run`), with
//! `send().await` all the way, so a slow database slows the socket reads.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::SinkExt;
use nostr_sdk::Timestamp;
use tokio::sync::mpsc;

use super::frames::{classify, Frame, Limits};
use super::subs::SubTable;
use super::transport::RawFrame;
use crate::actors::item::Item;
use crate::actors::pipeline::Pipeline;
use crate::metrics::{Reject, RelayCounters};

/// Batches of one relay in verification at once.
const VERIFY_DEPTH: usize = 2;

/// How a relay actor batches its frames: at most `max` events a batch, and how long a
/// short batch of events waits for more.
#[derive(Debug, Clone, Copy)]
pub(super) struct Batching {
    pub max: usize,
    pub linger: std::time::Duration,
}

/// Reads raw frames until the connection's channel closes and hands events on.
pub(super) async fn ingest(
    mut rx: mpsc::Receiver<RawFrame>,
    subs: Arc<SubTable>,
    pipeline: Pipeline,
    counters: Arc<RelayCounters>,
    limits: Limits,
    batching: Batching,
    source: i32,
) {
    let Batching {
        max: max_batch,
        linger,
    } = batching;
    let (mut batches, batch_rx) = futures::channel::mpsc::channel::<Vec<Item>>(0);
    let read = async {
        // Grown on first use: a relay that never sends holds nothing (500 frames' worth
        // preallocated was 28 kB per relay).
        let mut frames = Vec::new();
        while rx.recv_many(&mut frames, max_batch).await > 0 {
            gather(&mut rx, &mut frames, max_batch, linger).await;
            let began = std::time::Instant::now();
            let items = classify_frames(frames.drain(..), &subs, &counters, &limits, source);
            pipeline
                .counters
                .timings
                .parse_seconds
                .observe(began.elapsed().as_secs_f64());
            if !items.is_empty() && batches.send(items).await.is_err() {
                break;
            }
        }
        batches.close_channel();
    };
    futures::join!(read, pipeline.run(batch_rx, &counters, VERIFY_DEPTH));
}

/// Waits up to `linger` for more event frames to join a short batch: at live rates
/// frames come one at a time, and every batch wakes each stage after it (dedup,
/// verification, storage) on threads of their own. A batch holding anything but
/// events (an EOSE ends a page) goes at once.
async fn gather(
    rx: &mut mpsc::Receiver<RawFrame>,
    frames: &mut Vec<RawFrame>,
    max_batch: usize,
    linger: std::time::Duration,
) {
    if linger.is_zero() {
        return;
    }
    let is_event = |f: &RawFrame| f.text.starts_with(r#"["EVENT""#);
    let deadline = tokio::time::Instant::now() + linger;
    let mut checked = 0;
    while frames.len() < max_batch && frames[checked..].iter().all(is_event) {
        checked = frames.len();
        let more = rx.recv_many(frames, max_batch - frames.len());
        match tokio::time::timeout_at(deadline, more).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Turns raw frames into items to keep, updating subscriptions and counters.
fn classify_frames(
    frames: impl Iterator<Item = RawFrame>,
    subs: &SubTable,
    counters: &RelayCounters,
    limits: &Limits,
    source: i32,
) -> Vec<Item> {
    let now = Timestamp::now().as_secs();
    let received = std::time::Instant::now();
    let mut items = Vec::new();
    for raw in frames {
        match classify(&raw.text, limits, now) {
            Frame::Event { sub, event } => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                match subs.on_event(&sub, &event, true) {
                    Some(Some(ack)) => items.push(Item {
                        event: *event,
                        ack,
                        received,
                        source,
                        in_flight: None,
                    }),
                    _ => counters.reject(Reject::UnknownSubscription),
                }
            }
            Frame::Skipped { sub, event, reason } => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                counters.reject(reason);
                subs.on_event(&sub, &event, false);
            }
            Frame::Rejected { sub, reason, place } => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                counters.reject(reason);
                if let Some(sub) = sub {
                    subs.on_refused(&sub, place.as_ref());
                }
            }
            Frame::Eose(sub) => subs.on_eose(&sub),
            Frame::Closed { sub, message } => subs.on_closed(&sub, message),
            Frame::Notice(message) => {
                counters.notices.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%message, "relay notice");
            }
            Frame::Negentropy { sub, reply } => subs.on_negentropy(&sub, reply),
            Frame::Other => {}
        }
    }
    items
}

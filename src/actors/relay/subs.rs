//! The open subscriptions of one relay connection, shared by the cycle that opens them
//! and the ingest loop that reads their frames.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use nostr_sdk::{Event, EventId};
use tokio::sync::{mpsc, oneshot};

use super::frames::Place;
use crate::actors::ack::{AckWatch, Pending};
use crate::sync::live::Live;
use crate::sync::plan::PageSummary;

/// How one REQ ended.
#[derive(Debug, Default)]
pub struct PageEnd {
    /// What its EVENT frames were, for the paging planner.
    pub summary: PageSummary,
    /// The relay's CLOSED message, if it closed the REQ instead of sending EOSE.
    pub closed: Option<String>,
    /// The ids of its events, when asked for.
    pub ids: Vec<EventId>,
    /// It brought more frames than a REQ may, and was cut off there.
    pub overflow: bool,
}

struct Sub {
    ack: Pending,
    end: PageEnd,
    /// When the relay last sent a frame for it (or it was opened).
    last_frame: Instant,
    /// `None` for the live subscription, which outlives its EOSE.
    done: Option<oneshot::Sender<PageEnd>>,
    collect_ids: bool,
    /// Most EVENT frames it may bring.
    max_frames: usize,
}

impl Sub {
    /// A REQ (not the live subscription) that brought more frames than it may.
    fn over_cap(&self) -> bool {
        self.done.is_some() && self.end.summary.count > self.max_frames
    }
}

/// Where a reconciliation of ours hears the relay: NEG-MSG in hex, or NEG-ERR's reason.
type NegReplies = mpsc::UnboundedSender<Result<String, String>>;

/// Open subscriptions by id, hashed with foldhash (looked up for every frame).
type Subs = HashMap<String, Sub, foldhash::fast::RandomState>;

pub struct SubTable {
    subs: Mutex<Subs>,
    /// When the relay last answered a reconciliation (or one was opened).
    last_negentropy: Mutex<Instant>,
    /// Our own reconciliations (not the SDK's), by subscription id: where the relay's
    /// answers go.
    negentropy: Mutex<HashMap<String, NegReplies>>,
    /// Most EVENT frames a REQ may bring, at least (twice its `limit` when that is more;
    /// the live subscription has no end).
    max_frames: usize,
}

impl SubTable {
    pub fn new(max_frames: usize) -> Self {
        Self {
            subs: Mutex::default(),
            last_negentropy: Mutex::new(Instant::now()),
            negentropy: Mutex::default(),
            max_frames,
        }
    }
}

impl SubTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Subs> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a REQ whose events are claimed from `ack`; `done` hears how it ended
    /// (with the ids of its events if `collect_ids`).
    pub fn open(
        &self,
        id: &str,
        ack: Pending,
        done: Option<oneshot::Sender<PageEnd>>,
        collect_ids: bool,
        limit: Option<usize>,
    ) {
        let sub = Sub {
            ack,
            end: PageEnd::default(),
            last_frame: Instant::now(),
            done,
            collect_ids,
            max_frames: self.max_frames.max(limit.unwrap_or(0).saturating_mul(2)),
        };
        self.lock().insert(id.to_owned(), sub);
    }

    /// The relay answered a reconciliation (or one starts).
    pub fn touch_negentropy(&self) {
        *self
            .last_negentropy
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Opens one of our reconciliations: the relay's answers to `id` come out of the
    /// receiver until [`Self::close_negentropy`].
    pub fn open_negentropy(&self, id: &str) -> mpsc::UnboundedReceiver<Result<String, String>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.negentropy_lock().insert(id.to_owned(), tx);
        self.touch_negentropy();
        rx
    }

    pub fn close_negentropy(&self, id: &str) {
        self.negentropy_lock().remove(id);
    }

    /// A NEG-MSG or NEG-ERR: handed to our reconciliation of `id` if it is one (else
    /// the SDK's own reads it).
    pub fn on_negentropy(&self, id: &str, reply: Result<String, String>) {
        self.touch_negentropy();
        if let Some(tx) = self.negentropy_lock().get(id) {
            let _ = tx.send(reply);
        }
    }

    fn negentropy_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NegReplies>> {
        self.negentropy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long since the relay answered a reconciliation: live events and notices on
    /// the same connection say nothing of it.
    pub fn negentropy_idle_for(&self) -> std::time::Duration {
        self.last_negentropy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// Counts an EVENT frame for `id` whose event was read; a claim for the event if
    /// it is to be kept. `None` if we never opened `id`.
    pub fn on_event(&self, id: &str, e: &Event, keep: bool) -> Option<Option<Pending>> {
        let mut subs = self.lock();
        let sub = subs.get_mut(id)?;
        sub.last_frame = Instant::now();
        sub.end
            .summary
            .add_with(e.created_at.as_secs(), e.kind.as_u16(), || {
                crate::nostr::hex(e.pubkey.as_bytes())
            });
        if sub.collect_ids {
            sub.end.ids.push(e.id);
        }
        let claim = keep.then(|| sub.ack.claim());
        if sub.over_cap() {
            Self::cut_off(&mut subs, id);
        }
        Some(claim)
    }

    /// Counts an EVENT frame for `id` whose event is refused: it takes its `place` in
    /// the page (when that could be read) like any other.
    pub fn on_refused(&self, id: &str, place: Option<&Place>) {
        let mut subs = self.lock();
        let Some(sub) = subs.get_mut(id) else {
            return;
        };
        sub.last_frame = Instant::now();
        match place {
            Some(p) => sub.end.summary.add(p.created_at, p.kind, &p.author),
            None => sub.end.summary.add_unreadable(),
        }
        if sub.over_cap() {
            Self::cut_off(&mut subs, id);
        }
    }

    /// Ends REQ `id` as overflowed: it brought more frames than a REQ may.
    fn cut_off(subs: &mut Subs, id: &str) {
        if let Some(sub) = subs.get_mut(id) {
            sub.end.overflow = true;
        }
        Self::end(subs, id, None);
    }

    pub fn on_eose(&self, id: &str) {
        self.finish(id, None);
    }

    pub fn on_closed(&self, id: &str, message: String) {
        self.finish(id, Some(message));
    }

    /// When the relay last sent a frame for `id`; `None` once it ended.
    pub fn last_frame(&self, id: &str) -> Option<Instant> {
        self.lock().get(id).map(|s| s.last_frame)
    }

    /// Forgets `id` without reporting (a timed-out REQ).
    pub fn forget(&self, id: &str) {
        if let Some(sub) = self.lock().remove(id) {
            sub.ack.resolve(false);
        }
    }

    fn finish(&self, id: &str, closed: Option<String>) {
        let mut subs = self.lock();
        let live = matches!(subs.get(id), Some(s) if s.done.is_none());
        if live && closed.is_none() {
            return;
        }
        Self::end(&mut subs, id, closed);
    }

    fn end(subs: &mut Subs, id: &str, closed: Option<String>) {
        if let Some(mut sub) = subs.remove(id) {
            sub.end.closed = closed;
            if let Some(done) = sub.done.take() {
                let _ = done.send(std::mem::take(&mut sub.end));
            }
            sub.ack.resolve(false);
        }
    }
}

/// The live subscriptions open on the current connection, by filter (`live.rs` opens
/// and closes them; cycles read what they covered, see `sync::live`).
#[derive(Default)]
pub(super) struct LiveSubs(Mutex<HashMap<usize, LiveSub>>);

pub(super) struct LiveSub {
    pub(super) opened: u64,
    /// Whether an event it brought was dropped before its commit.
    pub(super) watch: AckWatch,
    pub(super) whole_at: u64,
}

impl LiveSubs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, LiveSub>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn insert(&self, i: usize, sub: LiveSub) {
        self.lock().insert(i, sub);
    }

    pub(super) fn remove(&self, i: usize) {
        self.lock().remove(&i);
    }

    /// Filter `i`'s subscription as a cycle sees it.
    pub(super) fn state(&self, i: usize) -> Option<Live> {
        self.lock().get(&i).map(|sub| Live {
            opened: sub.opened,
            lost: sub.watch.failed(),
            whole_at: sub.whole_at,
        })
    }

    /// A cycle starting at `started` read filter `i`'s window whole.
    pub(super) fn read_whole(&self, i: usize, started: u64) {
        if let Some(sub) = self.lock().get_mut(&i) {
            sub.whole_at = started;
        }
    }
}

//! The open subscriptions of one relay connection, shared by the cycle that opens them
//! and the ingest loop that reads their frames.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::actors::ack::Pending;

/// How one REQ ended.
#[derive(Debug, Default)]
pub struct PageEnd {
    /// EVENT frames received for it, valid or not.
    pub count: usize,
    /// Oldest `created_at` among them.
    pub oldest: Option<u64>,
    /// The relay's CLOSED message, if it closed the REQ instead of sending EOSE.
    pub closed: Option<String>,
}

struct Sub {
    ack: Pending,
    end: PageEnd,
    /// `None` for the live subscription, which outlives its EOSE.
    done: Option<oneshot::Sender<PageEnd>>,
}

#[derive(Default)]
pub struct SubTable {
    subs: Mutex<HashMap<String, Sub>>,
}

impl SubTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sub>> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a REQ whose events are claimed from `ack`; `done` hears how it ended.
    pub fn open(&self, id: &str, ack: Pending, done: Option<oneshot::Sender<PageEnd>>) {
        let sub = Sub {
            ack,
            end: PageEnd::default(),
            done,
        };
        self.lock().insert(id.to_owned(), sub);
    }

    /// Counts an EVENT frame for `id`; a claim for its event if it is to be kept.
    /// `None` if we never opened `id`.
    pub fn on_event(
        &self,
        id: &str,
        created_at: Option<u64>,
        keep: bool,
    ) -> Option<Option<Pending>> {
        let mut subs = self.lock();
        let sub = subs.get_mut(id)?;
        sub.end.count += 1;
        if let Some(t) = created_at {
            sub.end.oldest = Some(sub.end.oldest.map_or(t, |o| o.min(t)));
        }
        Some(keep.then(|| sub.ack.claim()))
    }

    pub fn on_eose(&self, id: &str) {
        self.finish(id, None);
    }

    pub fn on_closed(&self, id: &str, message: String) {
        self.finish(id, Some(message));
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
        if let Some(mut sub) = subs.remove(id) {
            sub.end.closed = closed;
            if let Some(done) = sub.done.take() {
                let _ = done.send(std::mem::take(&mut sub.end));
            }
            sub.ack.resolve(false);
        }
    }
}

//! Commit tracking. Every event a relay actor hands on carries a [`Pending`] guard of
//! the REQ it answered; the guard is resolved once the event is committed (or found
//! already stored, or rejected as invalid). When every guard of a REQ is gone, the
//! relay actor learns whether all were resolved, and only then may it move its cursor.
//! A guard dropped unresolved (a crash path, a stopped actor) marks the whole REQ
//! failed, so a lost event can never let a cursor pass it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::metrics::Gauge;

/// What the guards of one REQ ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckOutcome {
    /// Every guard was resolved.
    pub complete: bool,
    /// Events that were new rows.
    pub new_rows: u64,
}

struct AckInner {
    done: Mutex<Option<oneshot::Sender<AckOutcome>>>,
    failed: AtomicBool,
    new_rows: AtomicU64,
    held: Arc<Gauge>,
}

impl Drop for AckInner {
    fn drop(&mut self) {
        let outcome = AckOutcome {
            complete: !self.failed.load(Ordering::Acquire) && !std::thread::panicking(),
            new_rows: self.new_rows.load(Ordering::Relaxed),
        };
        if let Some(tx) = self.done.lock().ok().and_then(|mut d| d.take()) {
            let _ = tx.send(outcome);
        }
    }
}

/// One unresolved claim on a REQ's completion.
pub struct Pending {
    inner: Arc<AckInner>,
    resolved: bool,
    /// Claims count toward `held`; the root does not.
    counted: bool,
}

impl Pending {
    /// A root guard and the receiver that reports once it and all its clones are gone.
    /// `held` counts live guards: the number of events the pipeline holds.
    pub fn root(held: Arc<Gauge>) -> (Pending, oneshot::Receiver<AckOutcome>) {
        let (tx, rx) = oneshot::channel();
        let inner = Arc::new(AckInner {
            done: Mutex::new(Some(tx)),
            failed: AtomicBool::new(false),
            new_rows: AtomicU64::new(0),
            held,
        });
        (
            Pending {
                inner,
                resolved: false,
                counted: false,
            },
            rx,
        )
    }

    /// A guard for one event handed on.
    pub fn claim(&self) -> Pending {
        self.inner.held.add(1);
        Pending {
            inner: self.inner.clone(),
            resolved: false,
            counted: true,
        }
    }

    /// The event is durable (`new_row` if this commit created it) or was rightly dropped.
    pub fn resolve(mut self, new_row: bool) {
        if new_row {
            self.inner.new_rows.fetch_add(1, Ordering::Relaxed);
        }
        self.resolved = true;
    }

    /// Whether both guards belong to the same REQ.
    /// An uncounted claim: held by bookkeeping, not by an event.
    pub fn share(&self) -> Pending {
        Pending {
            inner: self.inner.clone(),
            resolved: false,
            counted: false,
        }
    }

    pub fn same_req(&self, other: &Pending) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A watch on this REQ's guards that holds none.
    pub fn watch(&self) -> AckWatch {
        AckWatch(self.inner.clone())
    }
}

/// Whether any guard of a REQ was dropped unresolved so far (a live subscription's,
/// which never completes).
pub struct AckWatch(Arc<AckInner>);

impl AckWatch {
    pub fn failed(&self) -> bool {
        self.0.failed.load(Ordering::Acquire)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.resolved {
            self.inner.failed.store(true, Ordering::Release);
        }
        if self.counted {
            self.inner.held.add(-1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_guards_complete_and_dropped_ones_fail() {
        let held = Arc::new(Gauge::default());
        let (root, rx) = Pending::root(held.clone());
        let a = root.claim();
        let b = root.claim();
        root.resolve(false);
        a.resolve(true);
        b.resolve(false);
        let out = rx.blocking_recv().unwrap();
        assert_eq!(
            out,
            AckOutcome {
                complete: true,
                new_rows: 1
            }
        );

        let (root, rx) = Pending::root(held);
        let a = root.claim();
        root.resolve(false);
        drop(a);
        assert!(!rx.blocking_recv().unwrap().complete);
    }
}

//! IntervalSupervisor: retunes each relay's polling interval from its cycle results
//! (the pure `next_interval`), and restarts relay actors that stop making progress.
//!
//! In: `CycleDone` from relay actors (answered with the next interval), `Watch` and
//! `Unwatch` as the registry actor starts and stops them. Out: `Restart` to a relay
//! actor that has shown no sign of life for `interval.watchdog_secs` (beyond its
//! polling interval); its actix `Supervisor` restarts it. A sign of life is a finished cycle, a batch of new valid events handed
//! to storage, or a page read or committed (`RelayCounters::progress`), so a backfill
//! that keeps moving is never restarted, however long it runs, while a relay that only
//! sends frames (junk, refused or duplicate events, notices) is.

pub mod messages;
pub mod policy;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, WeakRecipient};

use self::messages::{CycleDone, Restart, Unwatch, Watch};
use self::policy::{jitter, next_interval, Bounds, CycleStats};
use crate::metrics::RelayCounters;

struct Watched {
    addr: WeakRecipient<Restart>,
    counters: Arc<RelayCounters>,
    /// `counters.progress` when last looked at.
    progress: u64,
    /// When the relay should next show progress, at the latest.
    deadline: Instant,
}

pub struct IntervalSupervisor {
    bounds: Bounds,
    watchdog: Duration,
    relays: HashMap<String, Watched>,
}

impl IntervalSupervisor {
    pub fn new(bounds: Bounds, watchdog: Duration) -> Self {
        Self {
            bounds,
            watchdog,
            relays: HashMap::new(),
        }
    }
}

impl Actor for IntervalSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let tick = (self.watchdog / 4).max(Duration::from_millis(100));
        ctx.run_interval(tick, |act, _| {
            let now = Instant::now();
            let watchdog = act.watchdog;
            for (url, w) in act.relays.iter_mut() {
                let progress = w.counters.progress.load(Ordering::Relaxed);
                if progress != w.progress {
                    w.progress = progress;
                    w.deadline = w.deadline.max(now + watchdog);
                }
                if w.deadline < now {
                    tracing::warn!(relay = %url, silent_for = ?watchdog, "relay made no progress, restarting it");
                    w.counters.restarts.fetch_add(1, Ordering::Relaxed);
                    if let Some(addr) = w.addr.upgrade() {
                        addr.do_send(Restart);
                    }
                    w.deadline = now + watchdog;
                }
            }
        });
    }
}

impl Handler<Watch> for IntervalSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Watch, _: &mut Self::Context) {
        let deadline = Instant::now() + self.watchdog;
        self.relays.insert(
            msg.relay,
            Watched {
                progress: msg.counters.progress.load(Ordering::Relaxed),
                addr: msg.addr,
                counters: msg.counters,
                deadline,
            },
        );
    }
}

impl Handler<Unwatch> for IntervalSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Unwatch, _: &mut Self::Context) {
        self.relays.remove(&msg.relay);
    }
}

impl Handler<CycleDone> for IntervalSupervisor {
    type Result = actix::MessageResult<CycleDone>;

    fn handle(&mut self, msg: CycleDone, _: &mut Self::Context) -> Self::Result {
        let mut next = next_interval(msg.stats, &self.bounds);
        if matches!(msg.stats, CycleStats::Failed { .. }) {
            next = jitter(next);
        }
        if let Some(w) = self.relays.get_mut(&msg.relay) {
            w.deadline = Instant::now() + next + self.watchdog;
        }
        tracing::debug!(relay = %msg.relay, stats = ?msg.stats, next = ?next, "cycle done");
        actix::MessageResult(next)
    }
}

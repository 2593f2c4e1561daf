//! AggregatorActor: accumulates the contributions of newly stored events and commits
//! them every `aggregates.flush_interval_ms`, in one transaction that also marks their
//! source events as aggregated, so storing an event never waits for its aggregates and
//! each event is counted once even across crashes (start-up applies what a crash left).
//!
//! In: `Contribute` from storage actors (mailbox `mailbox.aggregator`), `FlushNow` at
//! shutdown. Out: upserts `n = n + delta` into `event_stats`. While a flush runs the
//! mailbox stays shut, so a slow database slows storage rather than growing memory.

pub mod deltas;
pub mod messages;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, WrapFuture};

use self::deltas::Sourced;
use self::messages::{Contribute, FlushNow};
use crate::metrics::Counters;
use crate::storage::EventStore;

pub struct AggregatorActor {
    store: Arc<dyn EventStore>,
    counters: Arc<Counters>,
    interval: Duration,
    mailbox: usize,
    pending: Vec<Sourced>,
    flushing: bool,
}

impl AggregatorActor {
    pub fn new(
        store: Arc<dyn EventStore>,
        counters: Arc<Counters>,
        interval: Duration,
        mailbox: usize,
    ) -> Self {
        Self {
            store,
            counters,
            interval,
            mailbox,
            pending: Vec::new(),
            flushing: false,
        }
    }

    /// A future that commits what is pending and puts it back if the commit fails.
    fn flush(&mut self) -> impl actix::ActorFuture<Self, Output = usize> + 'static {
        let batch = std::mem::take(&mut self.pending);
        self.flushing = true;
        let store = self.store.clone();
        let began = std::time::Instant::now();
        async move {
            let result = if batch.is_empty() {
                Ok(0)
            } else {
                store.apply_contributions(&batch).await
            };
            (batch, result)
        }
        .into_actor(self)
        .map(move |(batch, result), act, _| {
            act.flushing = false;
            act.counters
                .timings
                .flush_seconds
                .observe(began.elapsed().as_secs_f64());
            match result {
                Ok(applied) => {
                    act.counters
                        .aggregated
                        .fetch_add(applied as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(pending = batch.len(), %error, "aggregate flush failed, will retry");
                    act.pending.splice(0..0, batch);
                }
            }
            act.counters
                .pending_deltas
                .store(act.pending.len() as u64, Ordering::Relaxed);
            act.pending.len()
        })
    }
}

impl Actor for AggregatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
        ctx.run_interval(self.interval, |act, ctx| {
            if !act.pending.is_empty() && !act.flushing {
                let flush = act.flush().map(|_, _, _| ());
                ctx.wait(flush);
            }
        });
    }
}

impl Handler<Contribute> for AggregatorActor {
    type Result = ();

    fn handle(&mut self, Contribute(items): Contribute, _: &mut Self::Context) {
        self.pending.extend(items);
        self.counters
            .pending_deltas
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }
}

impl Handler<FlushNow> for AggregatorActor {
    type Result = AtomicResponse<Self, usize>;

    fn handle(&mut self, _: FlushNow, _: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(Box::pin(self.flush()))
    }
}

/// Applies the contributions of committed events that no flush claimed (a crash
/// between a commit and its flush). Runs at start-up, before the pipeline.
pub async fn apply_backlog(store: &dyn EventStore) -> Result<u64, crate::storage::StoreError> {
    let mut applied = 0;
    loop {
        let events = store.unaggregated(5_000).await?;
        if events.is_empty() {
            return Ok(applied);
        }
        let items: Vec<Sourced> = events
            .iter()
            .filter_map(|(seq, e)| {
                deltas::contribution(e).map(|contribution| Sourced {
                    seq: *seq,
                    contribution,
                })
            })
            .collect();
        applied += store.apply_contributions(&items).await? as u64;
        if items.len() < events.len() {
            // Cannot happen for rows this version wrote; guards against a loop on rows
            // whose contribution rules changed.
            tracing::warn!(
                rows = events.len() - items.len(),
                "unaggregated events without a contribution"
            );
            return Ok(applied);
        }
    }
}

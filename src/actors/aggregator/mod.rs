//! AggregatorActor: accumulates the contributions of newly stored events and commits
//! them every `aggregates.flush_interval_ms`, in one transaction that also marks their
//! source events as aggregated, so storing an event never waits for its aggregates and
//! each event is counted once even across crashes (start-up applies what a crash left).
//!
//! Removals go the same way: a write that removes counted events (deletions, replaced
//! versions) queues their negated contributions in `retractions` in its own
//! transaction, and the flush claims and subtracts them in one transaction of its own.
//! Every `retention.expiry_check_secs` it also purges expired events (NIP-40), which
//! queues their retractions the same way.
//!
//! In: `Contribute` from storage actors (mailbox `mailbox.aggregator`), `Retracted`,
//! `FlushNow` at shutdown. Out: upserts `n = n + delta` into `event_stats`. While a
//! flush runs the mailbox stays shut, so a slow database slows storage rather than
//! growing memory.

pub mod messages;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, WrapFuture};

use self::messages::{Contribute, FlushNow, Retracted};
use crate::metrics::Counters;
use crate::nostr::aggregate::Sourced;
use crate::storage::EventStore;

pub struct AggregatorActor {
    store: Arc<dyn EventStore>,
    counters: Arc<Counters>,
    interval: Duration,
    mailbox: usize,
    /// How often expired events are purged (zero: never).
    expiry_check: Duration,
    /// Most tombstones for ids never seen kept (`retention.max_unseen_tombstones`).
    max_unseen_tombstones: u64,
    pending: Vec<Sourced>,
    /// Retractions may be queued in the database.
    retracting: bool,
    flushing: bool,
    purging: bool,
}

/// Retractions claimed per transaction.
const RETRACTIONS_PER_FLUSH: i64 = 5_000;

impl AggregatorActor {
    pub fn new(
        store: Arc<dyn EventStore>,
        counters: Arc<Counters>,
        interval: Duration,
        mailbox: usize,
        expiry_check: Duration,
        max_unseen_tombstones: u64,
    ) -> Self {
        Self {
            store,
            counters,
            interval,
            mailbox,
            expiry_check,
            max_unseen_tombstones,
            pending: Vec::new(),
            retracting: false,
            flushing: false,
            purging: false,
        }
    }

    /// Removes expired events (with `expiry`) and any event a tombstone names; what
    /// they counted is retracted at the next flush, as are retractions another
    /// instance left queued.
    fn purge(&mut self, ctx: &mut Context<Self>, expiry: bool) {
        if self.purging {
            return;
        }
        self.purging = true;
        self.retracting = true;
        let store = self.store.clone();
        let max_unseen = self.max_unseen_tombstones;
        // `expires_at <= 0` holds for no event: the tombstone sweep alone.
        let now = if expiry {
            crate::storage::now_secs()
        } else {
            0
        };
        ctx.spawn(
            async move { store.purge(now, max_unseen).await }
                .into_actor(self)
                .map(|result, act, _| {
                    act.purging = false;
                    match result {
                        Ok(p) => {
                            let c = &act.counters;
                            c.expired_purged.fetch_add(p.expired, Ordering::Relaxed);
                            c.deleted.fetch_add(p.deleted, Ordering::Relaxed);
                            c.retractions_queued
                                .fetch_add(p.retractions, Ordering::Relaxed);
                            c.tombstones_evicted.fetch_add(p.evicted, Ordering::Relaxed);
                            c.tombstones_unseen.store(p.unseen, Ordering::Relaxed);
                            if p.evicted > 0 {
                                tracing::warn!(
                                    evicted = p.evicted,
                                    kept = p.unseen,
                                    "removed the oldest tombstones for ids never seen: \
                                     past retention.max_unseen_tombstones, those events \
                                     would be stored if they came"
                                );
                            }
                            if p.expired + p.deleted > 0 {
                                tracing::info!(expired = p.expired, deleted = p.deleted, "purged");
                            }
                            act.retracting |= p.retractions > 0;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "purge of expired events failed, will retry")
                        }
                    }
                }),
        );
    }

    /// A future that commits what is pending and puts it back if the commit fails.
    fn flush(&mut self) -> impl actix::ActorFuture<Self, Output = usize> + 'static {
        let batch = std::mem::take(&mut self.pending);
        self.flushing = true;
        let retracting = std::mem::take(&mut self.retracting);
        let store = self.store.clone();
        let counters = self.counters.clone();
        let began = std::time::Instant::now();
        async move {
            let result = if batch.is_empty() {
                Ok(0)
            } else {
                apply_isolating(store.as_ref(), &batch, &counters).await
            };
            let retracted = if retracting {
                retract_all(store.as_ref()).await
            } else {
                Ok(0)
            };
            (batch, result, retracted)
        }
        .into_actor(self)
        .map(move |(batch, result, retracted), act, _| {
            act.flushing = false;
            match retracted {
                Ok(n) => {
                    act.counters.retracted.fetch_add(n, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(%error, "retraction flush failed, will retry");
                    act.retracting = true;
                }
            }
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
            if (!act.pending.is_empty() || act.retracting) && !act.flushing {
                let flush = act.flush().map(|_, _, _| ());
                ctx.wait(flush);
            }
        });
        // At once: events that expired while the service was down, and targets of
        // tombstones a migration or a concurrent instance left.
        let expiry = !self.expiry_check.is_zero();
        self.purge(ctx, expiry);
        if expiry {
            ctx.run_interval(self.expiry_check, |act, ctx| act.purge(ctx, true));
        }
    }
}

impl Handler<Retracted> for AggregatorActor {
    type Result = ();

    fn handle(&mut self, _: Retracted, _: &mut Self::Context) {
        self.retracting = true;
    }
}

/// Applies queued retractions until none is left; returns how many.
async fn retract_all(store: &dyn EventStore) -> Result<u64, crate::storage::StoreError> {
    let mut applied = 0;
    loop {
        let n = store.apply_retractions(RETRACTIONS_PER_FLUSH).await?;
        applied += n as u64;
        if (n as i64) < RETRACTIONS_PER_FLUSH {
            return Ok(applied);
        }
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
        self.retracting = true;
        AtomicResponse::new(Box::pin(self.flush()))
    }
}

/// What a crash left between a commit and its flush, applied at start-up before the
/// pipeline runs: the contributions of committed events that no flush claimed are
/// added, then queued retractions subtracted. Returns how many it applied. (Expired
/// events are purged by the aggregator as soon as it starts: a purge writes, and
/// start-up must not wait for a database that takes no writes yet.)
pub async fn apply_backlog(
    store: &dyn EventStore,
    counters: &Counters,
) -> Result<u64, crate::storage::StoreError> {
    let applied = apply_unaggregated(store, counters).await?;
    Ok(applied + retract_all(store).await?)
}

/// Applies `items`. A batch the database refuses for what it holds (see
/// `StoreError::is_about_data`) is halved until the rows it refuses are found; each
/// of those is claimed counting nothing (counted, logged), so one row a publisher
/// made unstorable never holds up every other count, nor start-up. Any other error
/// ends it: claims are idempotent, the caller retries the whole batch.
async fn apply_isolating(
    store: &dyn EventStore,
    items: &[Sourced],
    counters: &Counters,
) -> Result<usize, crate::storage::StoreError> {
    let mut applied = 0;
    // Ranges of `items` still to apply, the next one last.
    let mut todo: Vec<std::ops::Range<usize>> = Vec::new();
    todo.push(0..items.len());
    while let Some(range) = todo.pop() {
        let batch = &items[range.clone()];
        match store.apply_contributions(batch).await {
            Ok(n) => applied += n,
            Err(e) if !e.is_about_data() => return Err(e),
            Err(_) if batch.len() > 1 => {
                let middle = range.start + batch.len() / 2;
                todo.push(middle..range.end);
                todo.push(range.start..middle);
            }
            Err(error) => {
                let item = &batch[0];
                tracing::warn!(seq = item.seq, target = %item.contribution.target.chars().take(80).collect::<String>(), %error, "the database refuses this aggregate row; its event counts nothing");
                counters.aggregates_isolated.fetch_add(1, Ordering::Relaxed);
                let nothing = Sourced {
                    seq: item.seq,
                    contribution: Default::default(),
                };
                applied += store.apply_contributions(&[nothing]).await?;
            }
        }
    }
    Ok(applied)
}

async fn apply_unaggregated(
    store: &dyn EventStore,
    counters: &Counters,
) -> Result<u64, crate::storage::StoreError> {
    let mut applied = 0;
    let mut after = 0;
    loop {
        let events = store.unaggregated(after, 5_000).await?;
        let Some((last, _)) = events.last() else {
            return Ok(applied);
        };
        after = *last;
        // Zap receipts are the zap actor's to judge. Any other row whose contribution
        // the rules no longer give is claimed with nothing to add, so that it leaves
        // the backlog.
        let items: Vec<Sourced> = events
            .iter()
            .filter(|(_, e)| e.kind != nostr_sdk::Kind::ZapReceipt)
            .map(|(seq, e)| Sourced {
                seq: *seq,
                contribution: crate::nostr::aggregate::contribution(e).unwrap_or_default(),
            })
            .collect();
        applied += apply_isolating(store, &items, counters).await? as u64;
    }
}

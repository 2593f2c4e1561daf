//! StorageActor: one of `storage.workers`, sharing one connection pool.
//!
//! In: `StoreBatch` (mailbox `mailbox.storage`), from relay actors via the router.
//! Out: `Contribute` to the aggregator for rows that were new, `Committed` to the dedup
//! actor, and each event's commit guard resolved.
//!
//! Batching: a batch is queued, then a flush is scheduled behind whatever else is already
//! in the mailbox, so everything that arrived while the previous transaction was in
//! flight goes into the next one; with `batch_size > 1` the flush also waits up to
//! `batch_timeout_ms` for that many rows. The write runs under `ctx.wait`, so the mailbox
//! fills and senders block while the database is slow: memory stays bounded. A failed
//! write is retried with backoff and never dropped.

pub mod messages;
pub mod router;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, WrapFuture};
use nostr_sdk::Event;

use self::messages::{IsIdle, StoreBatch};
use crate::actors::ack::Pending;
use crate::actors::aggregator::deltas::contribution;
use crate::actors::aggregator::messages::Contribute;
use crate::actors::aggregator::AggregatorActor;
use crate::actors::dedup::messages::Committed;
use crate::actors::dedup::DedupActor;
use crate::actors::Item;
use crate::metrics::Counters;
use crate::storage::{EventStore, StoreError};

/// How a storage actor batches its writes.
#[derive(Debug, Clone)]
pub struct WritePolicy {
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub max_batch_rows: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

pub struct StorageActor {
    id: usize,
    store: Arc<dyn EventStore>,
    dedup: Addr<DedupActor>,
    aggregator: Addr<AggregatorActor>,
    counters: Arc<Counters>,
    policy: WritePolicy,
    mailbox: usize,
    pending: Vec<Item>,
    oldest_pending: Option<Instant>,
    flush_scheduled: bool,
    writing: bool,
    retry: Duration,
}

impl StorageActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        store: Arc<dyn EventStore>,
        dedup: Addr<DedupActor>,
        aggregator: Addr<AggregatorActor>,
        counters: Arc<Counters>,
        policy: WritePolicy,
        mailbox: usize,
    ) -> Self {
        let retry = policy.retry_min;
        Self {
            id,
            store,
            dedup,
            aggregator,
            counters,
            policy,
            mailbox,
            pending: Vec::new(),
            oldest_pending: None,
            flush_scheduled: false,
            writing: false,
            retry,
        }
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>, after: Duration) {
        if self.flush_scheduled {
            return;
        }
        self.flush_scheduled = true;
        if after.is_zero() {
            // Runs after the messages already in the mailbox, which join this batch.
            ctx.spawn(async {}.into_actor(self).map(|_, act, ctx| act.flush(ctx)));
        } else {
            ctx.run_later(after, |act, ctx| act.flush(ctx));
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        if self.writing || self.pending.is_empty() {
            return;
        }
        let waited = self.oldest_pending.map_or(Duration::ZERO, |t| t.elapsed());
        if self.pending.len() < self.policy.batch_size && waited < self.policy.batch_timeout {
            self.schedule_flush(ctx, self.policy.batch_timeout - waited);
            return;
        }
        // Everything pending goes now, in transactions of at most `max_batch_rows`:
        // leaving a remainder behind would let it grow under sustained load.
        let mut batches = Vec::new();
        let mut rest = std::mem::take(&mut self.pending);
        while rest.len() > self.policy.max_batch_rows {
            let tail = rest.split_off(self.policy.max_batch_rows);
            batches.push(rest);
            rest = tail;
        }
        batches.push(rest);
        self.oldest_pending = None;
        self.writing = true;
        let (store, dedup, aggregator, counters) = (
            self.store.clone(),
            self.dedup.clone(),
            self.aggregator.clone(),
            self.counters.clone(),
        );
        let write = async move {
            let mut batches = batches.into_iter();
            while let Some(batch) = batches.next() {
                let result = write_batch(
                    store.clone(),
                    batch,
                    dedup.clone(),
                    aggregator.clone(),
                    counters.clone(),
                )
                .await;
                if let Err((mut failed, error)) = result {
                    failed.extend(batches.flatten());
                    return Err((failed, error));
                }
            }
            Ok(())
        };
        ctx.wait(write.into_actor(self).map(|result, act, ctx| {
            act.writing = false;
            match result {
                Ok(()) => {
                    act.retry = act.policy.retry_min;
                    if !act.pending.is_empty() {
                        act.schedule_flush(ctx, Duration::ZERO);
                    }
                }
                Err((batch, error)) => {
                    act.counters.db_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(worker = act.id, rows = batch.len(), retry_in = ?act.retry, %error, "write failed, will retry");
                    act.pending.splice(0..0, batch);
                    let delay = act.retry;
                    act.retry = (act.retry * 2).min(act.policy.retry_max);
                    // Hold the mailbox shut while backing off: senders wait, nothing grows.
                    ctx.wait(
                        tokio::time::sleep(delay)
                            .into_actor(act)
                            .map(|_, act, ctx| act.schedule_flush(ctx, Duration::ZERO)),
                    );
                }
            }
        }));
    }
}

/// Commits `batch` in one transaction and hands on what it learned. On failure the
/// batch comes back untouched.
async fn write_batch(
    store: Arc<dyn EventStore>,
    batch: Vec<Item>,
    dedup: Addr<DedupActor>,
    aggregator: Addr<AggregatorActor>,
    counters: Arc<Counters>,
) -> Result<(), (Vec<Item>, StoreError)> {
    let (events, acks): (Vec<Event>, Vec<Pending>) =
        batch.into_iter().map(|i| (i.event, i.ack)).unzip();
    let new = match store.insert_events(&events).await {
        Ok(new) => new,
        Err(e) => {
            let batch = events
                .into_iter()
                .zip(acks)
                .map(|(event, ack)| Item { event, ack })
                .collect();
            return Err((batch, e));
        }
    };
    let fresh = new.iter().filter(|n| **n).count() as u64;
    counters.db_commits.fetch_add(1, Ordering::Relaxed);
    counters.stored.fetch_add(fresh, Ordering::Relaxed);
    counters
        .conflicts
        .fetch_add(events.len() as u64 - fresh, Ordering::Relaxed);
    let contributions: Vec<_> = events
        .iter()
        .zip(&new)
        .filter(|(_, n)| **n)
        .filter_map(|(e, _)| contribution(e))
        .collect();
    if !contributions.is_empty() {
        // The aggregation watermark in the database keeps these safe if this fails.
        if let Err(e) = aggregator.send(Contribute(contributions)).await {
            tracing::warn!(error = %e, "aggregator unavailable; deltas wait for the next start");
        }
    }
    dedup.do_send(Committed(events.iter().map(|e| e.id).collect()));
    for (ack, new) in acks.into_iter().zip(new) {
        ack.resolve(new);
    }
    Ok(())
}

impl Actor for StorageActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl Handler<StoreBatch> for StorageActor {
    type Result = ();

    fn handle(&mut self, StoreBatch(items): StoreBatch, ctx: &mut Self::Context) {
        if items.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            self.oldest_pending = Some(Instant::now());
        }
        self.pending.extend(items);
        if self.pending.len() >= self.policy.max_batch_rows {
            // A full transaction's worth: write now, with the mailbox held shut, so
            // what this actor holds never exceeds one transaction plus its mailbox.
            self.flush(ctx);
        } else if !self.writing {
            self.schedule_flush(ctx, Duration::ZERO);
        }
    }
}

impl Handler<IsIdle> for StorageActor {
    type Result = bool;

    fn handle(&mut self, _: IsIdle, ctx: &mut Self::Context) -> bool {
        let idle = self.pending.is_empty() && !self.writing;
        if !idle {
            self.schedule_flush(ctx, Duration::ZERO);
        }
        idle
    }
}

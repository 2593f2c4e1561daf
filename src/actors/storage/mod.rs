//! StorageActor: one of `storage.workers`, sharing one connection pool.
//!
//! In: `StoreBatch` from relay actors, routed by author (`router`), each carrying the
//! admission permits of its events.
//! Out: `Contribute` to the aggregator for rows that were new, `Stored` to the zap
//! actor (new receipts to judge, new ids that waiting receipts may name), `Committed`
//! to the dedup actor, and each event's commit guard resolved.
//!
//! Batching: a batch is queued, then a flush is scheduled behind whatever else is already
//! in the mailbox. While a transaction is in flight the mailbox stays open and the next
//! batch gathers, so it holds everything that arrived meanwhile; with `batch_size > 1`
//! a flush also waits up to `batch_timeout_ms` for that many rows.
//!
//! Backpressure: a sender first takes one permit per event from the worker's semaphore
//! (`mailbox.storage` permits, taken in `Pipeline::settle`); the permits travel with the batch
//! and are released when its transaction commits. A slow database therefore blocks the
//! relay actors, and a worker never holds more than `mailbox.storage` events. A failed
//! write is retried with backoff and never dropped while the database is unreachable.
//!
//! Poison: if a batch fails for a reason about the data (`StoreError::is_about_data`: a
//! constraint, an encoding, a size, a trigger's refusal) while the database takes other
//! writes (`EventStore::probe_write`), something in the batch cannot be stored. The
//! batch is written in halves until the failing event is alone; it is tried three times
//! on its own and then refused (`unstorable`, logged with the error), so one event never
//! stalls the rest. Timeouts, a full disk or a busy server refuse nothing: the batch
//! waits and is retried, and `/readyz` says why.

pub mod messages;
pub mod router;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Recipient, WrapFuture};
use tokio::sync::OwnedSemaphorePermit;

use self::messages::{IsIdle, StoreBatch};
use crate::actors::ack::Pending;
use crate::actors::aggregator::messages::{Contribute, Retracted};
use crate::actors::aggregator::AggregatorActor;
use crate::actors::dedup::messages::{Committed, Release};
use crate::actors::dedup::DedupActor;
use crate::actors::item::InFlight;
use crate::actors::item::Item;
use crate::actors::sightings::Sightings;
use crate::actors::zaps::messages::Stored;
use crate::metrics::Counters;
use crate::nostr::aggregate::{contribution, Sourced};
use crate::storage::{EventStore, Sighting, StoreError};

/// How a storage actor batches its writes.
#[derive(Debug, Clone)]
pub struct WritePolicy {
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub max_batch_rows: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub min_commit_interval: Duration,
}

pub struct StorageActor {
    id: usize,
    /// Messages its mailbox holds (events are bounded by the admission semaphore).
    mailbox: usize,
    store: Arc<dyn EventStore>,
    /// Judges new zap receipts.
    judge: Recipient<Stored>,
    dedup: Addr<DedupActor>,
    aggregator: Addr<AggregatorActor>,
    counters: Arc<Counters>,
    policy: WritePolicy,
    pending: Vec<Item>,
    oldest_pending: Option<Instant>,
    last_commit: Option<Instant>,
    flush_scheduled: bool,
    /// A write (or its retry backoff) is in flight.
    writing: bool,
    /// Admission for the events in `pending`: released once they are committed.
    permits: Vec<OwnedSemaphorePermit>,
    retry: Duration,
    /// Deliveries of duplicate copies, written with the next batch (or alone).
    sightings: Arc<Sightings>,
}

impl StorageActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        store: Arc<dyn EventStore>,
        judge: Recipient<Stored>,
        dedup: Addr<DedupActor>,
        aggregator: Addr<AggregatorActor>,
        counters: Arc<Counters>,
        policy: WritePolicy,
        mailbox: usize,
        sightings: Arc<Sightings>,
    ) -> Self {
        let retry = policy.retry_min;
        Self {
            id,
            mailbox,
            store,
            judge,
            dedup,
            aggregator,
            counters,
            policy,
            pending: Vec::new(),
            oldest_pending: None,
            last_commit: None,
            flush_scheduled: false,
            writing: false,
            permits: Vec::new(),
            retry,
            sightings,
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
        if self.writing || (self.pending.is_empty() && self.sightings.is_empty()) {
            return;
        }
        let waited = self.oldest_pending.map_or(Duration::ZERO, |t| t.elapsed());
        if !self.pending.is_empty()
            && self.pending.len() < self.policy.batch_size
            && waited < self.policy.batch_timeout
        {
            self.schedule_flush(ctx, self.policy.batch_timeout - waited);
            return;
        }
        let since_commit = self.last_commit.map_or(Duration::MAX, |t| t.elapsed());
        if since_commit < self.policy.min_commit_interval
            && self.pending.len() < self.policy.max_batch_rows
            && !self.pending.is_empty()
        {
            self.schedule_flush(ctx, self.policy.min_commit_interval - since_commit);
            return;
        }
        self.last_commit = Some(Instant::now());
        // Everything pending goes now, in transactions of at most `max_batch_rows`:
        // leaving a remainder behind would let it grow under sustained load.
        // Each batch gets an allocation of its own size: `split_off` would leave every
        // batch holding the capacity of everything after it (quadratic memory: one-row
        // batches reached gigabytes).
        let max_rows = self.policy.max_batch_rows.max(1);
        let mut items = std::mem::take(&mut self.pending).into_iter();
        let mut batches = Vec::new();
        loop {
            let batch: Vec<Item> = items.by_ref().take(max_rows).collect();
            if batch.is_empty() {
                break;
            }
            batches.push(batch);
        }
        if batches.is_empty() {
            // Only deliveries of duplicate copies to record.
            batches.push(Vec::new());
        }
        let permits = std::mem::take(&mut self.permits);
        self.oldest_pending = None;
        self.writing = true;
        let writer = Writer {
            store: self.store.clone(),
            judge: self.judge.clone(),
            dedup: self.dedup.clone(),
            aggregator: self.aggregator.clone(),
            counters: self.counters.clone(),
            sightings: self.sightings.clone(),
            // Copies outnumber events when relays overlap, and their rows are small.
            max_sightings: 4 * max_rows,
        };
        let write = async move {
            let mut batches = batches.into_iter();
            while let Some(batch) = batches.next() {
                let result = match writer.write(batch, true).await {
                    Err((failed, e))
                        if !failed.is_empty()
                            && e.is_about_data()
                            && writer.store.probe_write().await.is_ok() =>
                    {
                        writer.isolate(failed).await
                    }
                    other => other,
                };
                if let Err((mut failed, error)) = result {
                    failed.extend(batches.flatten());
                    return Err((failed, error));
                }
            }
            Ok(())
        };
        // The mailbox stays open while the write runs, so the next batch gathers
        // meanwhile; `StoreBatch` holds it shut only once that batch is full.
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| match result {
            Ok(()) => {
                drop(permits);
                act.counters.set_write_error(None);
                act.retry = act.policy.retry_min;
                act.write_done(ctx);
            }
            Err((batch, error)) => {
                act.permits.extend(permits);
                act.counters.db_errors.fetch_add(1, Ordering::Relaxed);
                act.counters.set_write_error(Some(error.to_string()));
                tracing::warn!(worker = act.id, rows = batch.len(), retry_in = ?act.retry, %error, "write failed, will retry");
                act.pending.splice(0..0, batch);
                let delay = act.retry;
                act.retry = (act.retry * 2).min(act.policy.retry_max);
                // Still `writing` while backing off: nothing new starts, senders block
                // once the pending batch is full.
                ctx.spawn(
                    tokio::time::sleep(delay)
                        .into_actor(act)
                        .map(|_, act, ctx| act.write_done(ctx)),
                );
            }
        }));
    }

    fn write_done(&mut self, ctx: &mut Context<Self>) {
        self.writing = false;
        if !self.pending.is_empty() {
            self.schedule_flush(ctx, Duration::ZERO);
        }
    }
}

/// What a write needs, detached from the actor so the write can run as a future.
struct Writer {
    store: Arc<dyn EventStore>,
    judge: Recipient<Stored>,
    dedup: Addr<DedupActor>,
    aggregator: Addr<AggregatorActor>,
    counters: Arc<Counters>,
    sightings: Arc<Sightings>,
    /// Duplicate deliveries a write takes at most.
    max_sightings: usize,
}

/// How often a storage worker without events looks for duplicate deliveries to record.
const SIGHTINGS_EVERY: Duration = Duration::from_millis(200);

/// Attempts at a lone event that fails while the database answers, before refusing it.
const POISON_ATTEMPTS: usize = 3;

/// The environment variable of the test hook below.
#[cfg(feature = "failpoints")]
pub const FAILPOINT_ENV: &str = "NOSTR_SYNC_FAILPOINT";

/// Test hook, compiled only with the `failpoints` feature (test builds): with
/// `NOSTR_SYNC_FAILPOINT=storage-panic-after:N`, a storage worker panics on its first
/// write once N events are stored: the process test that shows a panicking actor never
/// leaves the service up with nothing stored. Off unless set.
#[cfg(feature = "failpoints")]
fn failpoint(stored: u64) {
    static AFTER: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let after = AFTER.get_or_init(|| {
        std::env::var(FAILPOINT_ENV)
            .ok()?
            .strip_prefix("storage-panic-after:")?
            .parse()
            .ok()
    });
    if after.is_some_and(|n| stored >= n) {
        panic!("{FAILPOINT_ENV}: storage worker panics after {stored} events");
    }
}

/// What an event carries besides itself while it is written.
type Guards = (Pending, Instant, Option<InFlight>);

impl Writer {
    /// Commits `batch` in one transaction and hands on what it learned; with
    /// `provenance`, the relays of its events and the duplicate deliveries waiting,
    /// too. On failure the batch comes back untouched.
    async fn write(
        &self,
        batch: Vec<Item>,
        provenance: bool,
    ) -> Result<(), (Vec<Item>, StoreError)> {
        #[cfg(feature = "failpoints")]
        failpoint(self.counters.stored.load(Ordering::Relaxed));
        let mut events = Vec::with_capacity(batch.len());
        let mut guards: Vec<Guards> = Vec::with_capacity(batch.len());
        let mut sources = Vec::with_capacity(batch.len());
        for item in batch {
            sources.push(item.source);
            events.push(item.event);
            guards.push((item.ack, item.received, item.in_flight));
        }
        let duplicates = match provenance {
            true => self.sightings.take(self.max_sightings),
            false => Vec::new(),
        };
        if events.is_empty() && duplicates.is_empty() {
            return Ok(());
        }
        let now = crate::storage::now_secs();
        let sightings: Vec<Sighting> = events
            .iter()
            .zip(&sources)
            .filter(|(_, relay)| provenance && **relay > 0)
            .map(|(e, relay)| Sighting::of(e, *relay, now, 0))
            .chain(duplicates.iter().copied())
            .collect();
        let began = Instant::now();
        let (new, removals) = match self.store.write_batch(&events, &sightings).await {
            Ok(written) => (written.rows, written.removals),
            Err(e) => {
                self.sightings.restore(duplicates);
                let batch = events
                    .into_iter()
                    .zip(guards)
                    .zip(sources)
                    .map(|((event, (ack, received, in_flight)), source)| Item {
                        event,
                        ack,
                        received,
                        source,
                        in_flight,
                    })
                    .collect();
                return Err((batch, e));
            }
        };
        if events.is_empty() {
            return Ok(());
        }
        if !provenance {
            let unrecorded = sources.iter().filter(|r| **r > 0).count() as u64;
            self.counters
                .provenance_dropped
                .fetch_add(unrecorded, Ordering::Relaxed);
        }
        let counters = &self.counters;
        let timings = &counters.timings;
        timings
            .commit_seconds
            .observe(began.elapsed().as_secs_f64());
        timings.batch_events.observe(events.len() as f64);
        let fresh = new.iter().filter(|n| n.is_some()).count() as u64;
        counters.db_commits.fetch_add(1, Ordering::Relaxed);
        counters.stored.fetch_add(fresh, Ordering::Relaxed);
        counters.conflicts.fetch_add(
            (events.len() as u64).saturating_sub(fresh + removals.kept_out),
            Ordering::Relaxed,
        );
        counters
            .superseded
            .fetch_add(removals.superseded, Ordering::Relaxed);
        counters
            .deleted
            .fetch_add(removals.deleted, Ordering::Relaxed);
        if removals.tombstones_dropped > 0 {
            let before = counters
                .tombstones_dropped
                .fetch_add(removals.tombstones_dropped, Ordering::Relaxed);
            let total = before + removals.tombstones_dropped;
            // One line per doubling: anyone can publish such deletions, as fast as the
            // relays take them.
            if before.checked_ilog2() != total.checked_ilog2() {
                tracing::warn!(
                    total,
                    "deletions named more ids never stored than are recorded per deletion: \
                     those events would be stored if they came (tombstones_dropped_total)"
                );
            }
        }
        if removals.retractions > 0 {
            counters
                .retractions_queued
                .fetch_add(removals.retractions, Ordering::Relaxed);
            self.aggregator.do_send(Retracted);
        }
        let contributions: Vec<Sourced> = events
            .iter()
            .zip(&new)
            .filter_map(|(e, seq)| {
                let seq = (*seq)?;
                contribution(e).map(|contribution| Sourced { seq, contribution })
            })
            .collect();
        let mut stored = Stored {
            receipts: Vec::new(),
            targets: Vec::with_capacity(fresh as usize),
            profiles: Vec::new(),
        };
        for (e, seq) in events.iter().zip(&new) {
            let Some(seq) = seq else { continue };
            if e.kind == nostr_sdk::Kind::Metadata {
                stored.profiles.push(e.pubkey);
            }
            if e.kind == nostr_sdk::Kind::ZapReceipt {
                match crate::nostr::zap::verdict(e) {
                    Ok(_) => stored.receipts.push(*seq),
                    Err(why) => {
                        tracing::debug!(id = %e.id, reason = why.label(), "zap receipt counts nothing");
                        counters.zap_rejects[why as usize].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            stored.targets.push(e.id);
        }
        // The database holds all of it: the zap actor only needs telling, and a
        // notice it drops is found again by its search of the database.
        if !stored.targets.is_empty() {
            self.judge.do_send(stored);
        }
        if !contributions.is_empty() {
            // The aggregation watermark in the database keeps these safe if this fails.
            if let Err(e) = self.aggregator.send(Contribute(contributions)).await {
                tracing::warn!(error = %e, "aggregator unavailable; deltas wait for the next start");
            }
        }
        self.dedup.do_send(Committed(
            events
                .iter()
                .zip(sources)
                .zip(&new)
                .map(|((e, relay), seq)| (e.id, relay, seq.unwrap_or(0)))
                .collect(),
        ));
        for ((ack, received, in_flight), new) in guards.into_iter().zip(new) {
            let new = new.is_some();
            if new {
                counters.latency.record(received.elapsed());
            }
            if let Some(token) = in_flight {
                token.settle();
            }
            ack.resolve(new);
        }
        Ok(())
    }

    /// `batch` failed while the database takes other writes: writes it in halves until
    /// what fails is one event, and refuses that event if it keeps failing. Returns what
    /// is left if the database stops taking writes meanwhile.
    async fn isolate(&self, batch: Vec<Item>) -> Result<(), (Vec<Item>, StoreError)> {
        let mut todo = halves(batch);
        while let Some(batch) = todo.pop() {
            let lone = batch.len() == 1;
            // Without provenance: a delivery's row must never be why an event is
            // refused (those not recorded are counted).
            let mut result = self.write(batch, false).await;
            for _ in 1..if lone { POISON_ATTEMPTS } else { 1 } {
                let Err((failed, _)) = result else { break };
                tokio::time::sleep(Duration::from_millis(100)).await;
                result = self.write(failed, false).await;
            }
            let Err((failed, error)) = result else {
                continue;
            };
            if !error.is_about_data() {
                // Aborted by a concurrent transaction, or out of a resource: nothing
                // here is the event's fault, the whole rest is retried.
                let mut rest = failed;
                rest.extend(todo.into_iter().flatten());
                return Err((rest, error));
            }
            if !lone {
                todo.extend(halves(failed));
            } else if self.store.probe_write().await.is_err() {
                let mut rest = failed;
                rest.extend(todo.into_iter().flatten());
                return Err((rest, error));
            } else {
                for item in failed {
                    self.refuse(item, &error).await;
                }
            }
        }
        Ok(())
    }

    /// Gives up on an event the database will not take, with the copies parked behind it.
    async fn refuse(&self, item: Item, error: &StoreError) {
        tracing::error!(id = %item.event.id, %error, "the database refuses this event; it is not stored");
        let parked = self
            .dedup
            .send(Release(vec![item.event.id]))
            .await
            .unwrap_or_default();
        for item in std::iter::once(item).chain(parked) {
            self.counters.unstorable.fetch_add(1, Ordering::Relaxed);
            item.settle();
        }
    }
}

/// `batch` as two halves, the first to be popped first; one event stays whole.
fn halves(mut batch: Vec<Item>) -> Vec<Vec<Item>> {
    if batch.len() < 2 {
        return vec![batch];
    }
    let second: Vec<Item> = batch.drain(batch.len() / 2..).collect();
    vec![second, batch]
}

impl Actor for StorageActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
        // Deliveries of duplicate copies wait at most this long when no events come.
        ctx.run_interval(
            self.policy.batch_timeout.max(SIGHTINGS_EVERY),
            |act, ctx| {
                if !act.writing && act.pending.is_empty() && !act.sightings.is_empty() {
                    act.schedule_flush(ctx, Duration::ZERO);
                }
            },
        );
    }
}

impl Handler<StoreBatch> for StorageActor {
    type Result = ();

    fn handle(&mut self, batch: StoreBatch, ctx: &mut Self::Context) {
        if self.pending.is_empty() {
            self.oldest_pending = Some(Instant::now());
        }
        self.pending.extend(batch.items);
        self.permits.push(batch.permit);
        if self.pending.len() >= self.policy.max_batch_rows {
            self.flush(ctx);
        } else if !self.writing {
            self.schedule_flush(ctx, Duration::ZERO);
        }
    }
}

impl Handler<IsIdle> for StorageActor {
    type Result = bool;

    fn handle(&mut self, _: IsIdle, ctx: &mut Self::Context) -> bool {
        let idle = self.pending.is_empty() && !self.writing && self.sightings.is_empty();
        if !idle {
            self.schedule_flush(ctx, Duration::ZERO);
        }
        idle
    }
}

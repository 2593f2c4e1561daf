//! ZapActor: judges zap receipts against the database (`nostr::zap`, [`judge`]) on an
//! Arbiter of its own, so that however many receipts wait, ingest never waits for them.
//!
//! In: `Stored` from the storage workers (new receipts, and new events that waiting
//! receipts may name, new profiles whose server lookups may now succeed), `Learnt`
//! from the LNURL actor (a recipient's server answered).
//! Each is only queued (bounded: past `MAX_QUEUED` the queue is dropped and the
//! database searched instead, by the backlog passes below), and every
//! `aggregates.flush_interval_ms` one step judges what is queued: new receipts, the
//! receipts waiting for the new targets (by index), the waiting receipts of one
//! learnt recipient (by index, a page at a time). At start, and after a dropped
//! queue or a failed step, it also judges receipts never judged and receipts whose
//! target is stored meanwhile, a page per step. Out: counts, in the same
//! transaction that marks each receipt aggregated (`ZapStore::settle_zaps`).

pub mod judge;
pub mod messages;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};

use self::judge::{judge, Judged, PAGE};
use self::messages::{Learnt, Stored};
use crate::metrics::Counters;
use crate::nostr::zap::ZapPolicy;
use crate::storage::{StoreResult, ZapStore};

/// Receipt sequence numbers or target keys held before the queue is dropped for a
/// search of the database (about 100 bytes each).
const MAX_QUEUED: usize = 100_000;
/// Receipts each search of the database adds to a step (a learnt recipient's waiting
/// receipts, the backlog passes): counting one rewrites its row, and a step a timer
/// tick. 100 per tick (500 a second at the default flush interval) judge a backlog
/// without crowding out the commits of live events: 500 doubled their p99 while
/// 50,000 receipts of one recipient were judged (`bench --mode live --pending-zaps`).
const BACKLOG_PAGE: i64 = 100;
/// Longest pause after failed steps (a database that is down).
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// Learnt recipients held; beyond, the oldest is dropped (its receipts are judged at
/// its server's next answer, or by a backlog pass).
const MAX_LEARNT: usize = 10_000;

pub struct ZapActor {
    store: Arc<dyn ZapStore>,
    policy: ZapPolicy,
    counters: Arc<Counters>,
    every: Duration,
    recheck_secs: i64,
    receipts: Vec<i64>,
    targets: Vec<nostr_sdk::EventId>,
    profiles: Vec<nostr_sdk::PublicKey>,
    /// Learnt recipients, with the last waiting receipt already judged.
    learnt: VecDeque<(String, i64)>,
    /// Where the passes over the database stand (`None`: not needed).
    unjudged: Option<i64>,
    stored_targets: Option<i64>,
    busy: bool,
    /// After a failed step, no step starts before this (doubling up to `MAX_PAUSE`).
    paused: Option<(std::time::Instant, Duration)>,
    /// Quiesced: no new step starts.
    stopped: bool,
    /// Shutdown began: one last search of the database is under way.
    draining: bool,
}

/// One step's work.
#[derive(Default)]
struct Step {
    receipts: Vec<i64>,
    targets: Vec<nostr_sdk::EventId>,
    profiles: Vec<nostr_sdk::PublicKey>,
    learnt: Option<(String, i64)>,
    unjudged: Option<i64>,
    stored_targets: Option<i64>,
}

/// What a step leaves to the next.
struct Done {
    judged: Judged,
    learnt: Option<(String, i64)>,
    unjudged: Option<i64>,
    stored_targets: Option<i64>,
}

impl ZapActor {
    pub fn new(
        store: Arc<dyn ZapStore>,
        policy: ZapPolicy,
        counters: Arc<Counters>,
        every: Duration,
        recheck_secs: i64,
    ) -> Self {
        Self {
            store,
            policy,
            counters,
            every,
            recheck_secs,
            receipts: Vec::new(),
            targets: Vec::new(),
            profiles: Vec::new(),
            learnt: VecDeque::new(),
            unjudged: Some(0),
            stored_targets: Some(0),
            busy: false,
            paused: None,
            stopped: false,
            draining: false,
        }
    }

    fn step(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.stopped {
            return;
        }
        if self
            .paused
            .is_some_and(|(until, _)| std::time::Instant::now() < until)
        {
            return;
        }
        let take = (PAGE as usize).min(self.receipts.len());
        let step = Step {
            receipts: self.receipts.drain(..take).collect(),
            targets: std::mem::take(&mut self.targets),
            profiles: std::mem::take(&mut self.profiles),
            learnt: self.learnt.pop_front(),
            unjudged: self.unjudged.take(),
            stored_targets: self.stored_targets.take(),
        };
        if step.receipts.is_empty()
            && step.targets.is_empty()
            && step.profiles.is_empty()
            && step.learnt.is_none()
            && step.unjudged.is_none()
            && step.stored_targets.is_none()
        {
            return;
        }
        self.busy = true;
        let (store, policy, recheck) = (self.store.clone(), self.policy.clone(), self.recheck_secs);
        let learnt = step.learnt.clone();
        ctx.spawn(
            async move { run(&*store, &policy, step, recheck).await }
                .into_actor(self)
                .map(move |result, act, _| {
                    act.busy = false;
                    match result {
                        Ok(done) => {
                            act.paused = None;
                            let c = &act.counters;
                            c.aggregated
                                .fetch_add(done.judged.counted as u64, Ordering::Relaxed);
                            c.aggregates_isolated
                                .fetch_add(done.judged.isolated, Ordering::Relaxed);
                            for (slot, n) in c.zap_rejects.iter().zip(done.judged.rejects) {
                                slot.fetch_add(n, Ordering::Relaxed);
                            }
                            if let Some(more) = done.learnt {
                                act.learnt.push_front(more);
                            }
                            // A search asked for meanwhile (a dropped queue) starts over.
                            act.unjudged = act.unjudged.or(done.unjudged);
                            act.stored_targets = act.stored_targets.or(done.stored_targets);
                        }
                        Err(error) => {
                            let pause = act.paused.map_or(act.every, |(_, p)| (p * 2).min(MAX_PAUSE));
                            act.paused = Some((std::time::Instant::now() + pause, pause));
                            tracing::warn!(%error, retry_in = ?pause, "judging zap receipts failed, will search the database again");
                            // Its new receipts and targets are found by the searches; a
                            // learnt recipient's waiting receipts only through it.
                            act.learnt.extend(learnt);
                            act.unjudged = Some(0);
                            act.stored_targets = Some(0);
                        }
                    }
                }),
        );
    }
}

/// One step: every source of receipts to judge, then one judgement of them all.
async fn run(
    store: &dyn ZapStore,
    policy: &ZapPolicy,
    step: Step,
    recheck_secs: i64,
) -> StoreResult<Done> {
    let now = crate::storage::now_secs();
    if !step.profiles.is_empty() {
        let profiles: Vec<String> = step.profiles.iter().map(|k| k.to_hex()).collect();
        store.zap_profiles_stored(&profiles, now).await?;
    }
    let mut seqs = step.receipts;
    if !step.targets.is_empty() {
        let targets: Vec<String> = step.targets.iter().map(|id| id.to_hex()).collect();
        seqs.extend(store.zaps_awaiting(&targets).await?);
    }
    let learnt = match step.learnt {
        Some((recipient, after)) => {
            let page = store.zaps_of(&recipient, after, BACKLOG_PAGE).await?;
            let full = page.len() as i64 == BACKLOG_PAGE;
            next_page(&mut seqs, page)
                .filter(|_| full)
                .map(|last| (recipient, last))
        }
        None => None,
    };
    let unjudged = match step.unjudged {
        Some(after) => next_page(&mut seqs, store.unjudged_zaps(after, BACKLOG_PAGE).await?),
        None => None,
    };
    let stored_targets = match step.stored_targets {
        Some(after) => next_page(
            &mut seqs,
            store.zaps_with_stored_targets(after, BACKLOG_PAGE).await?,
        ),
        None => None,
    };
    seqs.sort_unstable();
    seqs.dedup();
    let judged = judge(store, policy, &seqs, now, recheck_secs).await?;
    Ok(Done {
        judged,
        learnt,
        unjudged,
        stored_targets,
    })
}

/// Adds a page of receipts to `seqs`; returns where the next page starts (`None`:
/// the search is done).
fn next_page(seqs: &mut Vec<i64>, page: Vec<i64>) -> Option<i64> {
    let next = page.last().copied();
    seqs.extend(page);
    next
}

impl Actor for ZapActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.step(ctx);
        ctx.run_interval(self.every, |act, ctx| act.step(ctx));
    }
}

impl Handler<Stored> for ZapActor {
    type Result = ();

    fn handle(&mut self, msg: Stored, _: &mut Self::Context) {
        if self.receipts.len() + msg.receipts.len() > MAX_QUEUED {
            self.receipts.clear();
            self.unjudged.get_or_insert(0);
        } else {
            self.receipts.extend(msg.receipts);
        }
        if self.targets.len() + msg.targets.len() > MAX_QUEUED {
            self.targets.clear();
            self.stored_targets.get_or_insert(0);
        } else {
            self.targets.extend(msg.targets);
        }
        // Beyond the bound a profile only waits for its lookup's backoff.
        if self.profiles.len() + msg.profiles.len() <= MAX_QUEUED {
            self.profiles.extend(msg.profiles);
        }
    }
}

impl Handler<Learnt> for ZapActor {
    type Result = ();

    fn handle(&mut self, Learnt(recipient): Learnt, _: &mut Self::Context) {
        if self.learnt.len() >= MAX_LEARNT {
            self.learnt.pop_front();
        }
        self.learnt.push_back((recipient, 0));
    }
}

/// At shutdown, after the storage workers drained: judges what is queued, a step at a
/// time without waiting for the timer, and answers `true` until nothing is left.
impl actix::Handler<crate::actors::Quiesce> for ZapActor {
    type Result = bool;

    fn handle(&mut self, _: crate::actors::Quiesce, ctx: &mut Self::Context) -> bool {
        // A write whose commit the worker could not confirm (an outage) is retried and
        // then reports its receipts as not new: one last search finds them.
        if !self.draining {
            self.draining = true;
            self.unjudged.get_or_insert(0);
            self.stored_targets.get_or_insert(0);
        }
        self.step(ctx);
        let queued = !self.receipts.is_empty()
            || !self.targets.is_empty()
            || !self.learnt.is_empty()
            || self.unjudged.is_some()
            || self.stored_targets.is_some();
        self.stopped = !queued && !self.busy;
        self.busy || queued
    }
}

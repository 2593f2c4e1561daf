//! RelayActor: one per configured relay, on one of a few Arbiters the relays share
//! (about one per core; the SDK's tasks live on the runtime where the connection was
//! made, so these Arbiters live as long as the service).
//!
//! It owns its nostr-sdk connection and a tap on its websocket (see `transport`). The
//! SDK does not reconnect: a cycle that finds the connection down reconnects, a failed
//! cycle backs off through the `IntervalSupervisor`, and in live mode a dropped
//! connection is noticed within a second. Frames come in through a channel of
//! `mailbox.relay_frames` frames and `mailbox.relay_frame_bytes` bytes; the ingest loop
//! classifies them and hands events on with `send().await` through the dedup actor,
//! the verifiers and the storage router, so a slow database slows the socket reads
//! instead of growing memory.
//!
//! A sync cycle sends one REQ per filter with `since` = stored cursor minus
//! `sync.overlap_secs`, reads until EOSE, pages back with `until` while pages come back
//! full, then waits until every event it received is committed before saving the
//! cursor. Page by page, as pages commit in order, it records how far down the cycle is
//! complete (`Backfill`), so an interrupted cycle resumes there. With `sync.live` a
//! subscription stays open for new events. Cycle results go to the
//! `IntervalSupervisor`, which answers when to run the next; it also restarts this
//! actor (`Restart`, then actix's `Supervisor`) when it stops reporting.
//!
//! Here: the actor's lifecycle and messages. `cycle` is the sync algorithm it runs,
//! `progress` what a window's committed pages record, `reconcile` NIP-77 and the
//! repair pass, `ingest` the frame loop, `transport` the websocket tap, `clients` what
//! relay actors share, `frames` and `subs` the pure frame and subscription bookkeeping.

mod backfill;
pub mod clients;
mod cycle;
mod detached;
pub mod frames;
mod ingest;
pub mod known;
mod live;
pub mod messages;
pub mod nip11;
mod progress;
mod reconcile;
pub mod state;
pub mod subs;
pub mod transport;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Recipient, Supervised, WrapFuture,
};
use nostr_sdk::prelude::*;
use tokio::sync::{mpsc, Semaphore};

use self::cycle::Cycle;
use self::frames::Limits;
use self::known::Known;
use self::messages::{Leave, RunCycle};
use self::subs::SubTable;
use self::transport::{FrameBudget, TapTransport};
use crate::actors::interval::messages::{CycleDone, Restart};
use crate::actors::interval::policy::CycleStats;
use crate::actors::pipeline::Pipeline;
use crate::config::{FilterSettings, RelayConfig, Settings};
use crate::metrics::RelayCounters;
use crate::storage::EventStore;

/// Longest a relay actor that leaves waits for its running cycle to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// How often a live relay's connection is checked between cycles.
const CONNECTION_CHECK: Duration = Duration::from_secs(1);

/// Slots of each relay's SDK notification channel: the few control messages it needs
/// (see `transport::is_sdk_frame`). Every slot is allocated up front, some 400 bytes.
const SDK_NOTIFICATIONS: usize = 32;

pub struct RelayActor {
    url: String,
    known: Arc<Known>,
    settings: Arc<Settings>,
    /// This relay's filters (`RelayConfig::filters`).
    filters: Arc<Vec<FilterSettings>>,
    pipeline: Pipeline,
    store: Arc<dyn EventStore>,
    /// Its cursors and window outcomes, written under its lease.
    state: state::SyncState,
    /// Where cycle results go (the `IntervalSupervisor`), answered with the next interval.
    supervisor: Recipient<CycleDone>,
    counters: Arc<RelayCounters>,
    /// The SDK clients relays share, and this relay's (`None` while stopped).
    clients: Arc<clients::Clients>,
    client: Option<Client>,
    subs: Arc<SubTable>,
    live: Arc<subs::LiveSubs>,
    cycle_running: bool,
    failures: u32,
    /// NIP-42 key, if configured.
    auth: Option<Keys>,
    /// Its id in the provenance of what it delivers (`RelayConfig::source`).
    source: i32,
    /// The registry took the relay away (`Leave`): stop, and do not start again.
    left: bool,
    /// Answers `Leave` once stopped.
    on_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RelayActor {
    pub fn new(
        relay: RelayConfig,
        settings: Arc<Settings>,
        pipeline: Pipeline,
        store: Arc<dyn EventStore>,
        state: state::SyncState,
        supervisor: Recipient<CycleDone>,
        clients: Arc<clients::Clients>,
    ) -> Self {
        let RelayConfig {
            url,
            filters,
            page_limit,
            auth,
            source,
        } = relay;
        let counters = pipeline.counters.relay(&url);
        counters.failures_in_row.store(0, Ordering::Relaxed);
        // Calls a restart may interrupt must not be cancelled (see `detached`).
        let store: Arc<dyn EventStore> = Arc::new(detached::Detached(store));
        let known = Known::with_limit(page_limit);
        let subs = Arc::new(SubTable::new(settings.limits.max_frames_per_req));
        Self {
            known: Arc::new(known),
            filters: Arc::new(filters),
            url,
            settings,
            pipeline,
            store,
            state,
            supervisor,
            counters,
            clients,
            client: None,
            subs,
            live: Arc::default(),
            cycle_running: false,
            failures: 0,
            auth,
            source,
            left: false,
            on_stop: None,
        }
    }

    fn limits(&self) -> Limits {
        let l = &self.settings.limits;
        Limits {
            max_event_bytes: l.max_event_bytes,
            max_tags: l.max_tags,
            max_future_secs: l.max_future_secs,
        }
    }
}

impl Actor for RelayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.left {
            // Restarted by its `Supervisor` while something still held its address (a
            // health probe's ask, for up to two seconds): it stays an idle shell, which
            // actix stops once the last address is gone. Stopping it here would only
            // restart it again, in a loop.
            return;
        }
        let (tx, rx) = mpsc::channel(self.settings.mailbox.relay_frames);
        self.clients.route(
            &self.url,
            TapTransport::new(
                tx,
                FrameBudget {
                    relay: Arc::new(Semaphore::new(self.settings.mailbox.relay_frame_bytes)),
                    relay_bytes: self.settings.mailbox.relay_frame_bytes,
                    total: self.pipeline.frame_bytes.clone(),
                    total_bytes: self.settings.mailbox.frame_bytes_total,
                },
                max_message(&self.settings.limits),
                self.counters.clone(),
            ),
        );
        let client = self.clients.client(self.auth.as_ref());
        self.client = Some(client.clone());
        self.subs = Arc::new(SubTable::new(self.settings.limits.max_frames_per_req));
        self.live = Arc::default();
        // Reconnection is ours: a cycle that finds the connection down reconnects, and a
        // failed one backs off through `next_interval` (exponential, capped, jittered).
        let opts = RelayOptions::new()
            // Backpressure can hold the socket read for a long time; a missed pong
            // must not count as a dead connection then.
            .ping(false)
            .reconnect(false)
            .notification_channel_size(SDK_NOTIFICATIONS);
        let url = self.url.clone();
        ctx.wait(
            async move {
                // A restarted actor's relay starts afresh (the client is shared).
                let _ = client.force_remove_relay(url.as_str()).await;
                if let Err(e) = client.pool().add_relay(url.as_str(), opts).await {
                    tracing::error!(relay = %url, error = %e, "cannot add relay");
                }
            }
            .into_actor(self),
        );
        let ingest = ingest::ingest(
            rx,
            self.subs.clone(),
            self.pipeline.clone(),
            self.counters.clone(),
            self.limits(),
            ingest::Batching {
                max: self.settings.mailbox.max_batch_events,
                linger: std::time::Duration::from_millis(self.settings.sync.performance.linger_ms),
            },
            self.source,
        );
        ctx.spawn(ingest.into_actor(self));
        if self.settings.sync.live {
            // A live subscription should not wait for the next poll to come back.
            ctx.run_interval(CONNECTION_CHECK, |act, ctx| act.reconnect_if_lost(ctx));
        }
        ctx.notify(RunCycle);
        tracing::info!(relay = %self.url, "relay actor started");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.drop_connection();
        if let Some(done) = self.on_stop.take() {
            let _ = done.send(());
        }
    }
}

impl RelayActor {
    /// Disconnects this relay (its client is shared with other relays).
    fn drop_connection(&mut self) {
        self.disconnect();
        self.client = None;
    }

    /// Closes this relay's connection, if any; the next cycle connects again.
    fn disconnect(&self) {
        if let Some(client) = self.client.clone() {
            let url = self.url.clone();
            actix::spawn(async move {
                if let Ok(relay) = client.relay(url.as_str()).await {
                    relay.disconnect();
                }
            });
        }
    }

    /// Starts a cycle (which reconnects) when the connection dropped after a cycle
    /// that succeeded; after failures, the backoff decides when to try again.
    fn reconnect_if_lost(&mut self, ctx: &mut Context<Self>) {
        if self.cycle_running || self.failures > 0 {
            return;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        let url = self.url.clone();
        let connected = async move {
            client
                .relay(url.as_str())
                .await
                .is_ok_and(|r| r.is_connected())
        };
        ctx.spawn(connected.into_actor(self).map(|connected, act, ctx| {
            act.counters
                .connected
                .store(u64::from(connected), Ordering::Relaxed);
            if !connected && !act.cycle_running {
                tracing::warn!(relay = %act.url, "connection lost, reconnecting");
                ctx.notify(RunCycle);
            }
        }));
    }
}

impl Supervised for RelayActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        if self.left {
            return;
        }
        tracing::info!(relay = %self.url, "relay actor restarting");
        self.drop_connection();
        self.cycle_running = false;
    }
}

impl Handler<Restart> for RelayActor {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Self::Context) {
        use actix::ActorContext;
        ctx.stop();
    }
}

impl Handler<Leave> for RelayActor {
    type Result = actix::ResponseFuture<()>;

    fn handle(&mut self, msg: Leave, ctx: &mut Self::Context) -> Self::Result {
        use actix::ActorContext;
        self.left = true;
        let (done, stopped) = tokio::sync::oneshot::channel();
        self.on_stop = Some(done);
        if msg.drain && self.cycle_running {
            // The cycle's end stops the actor (see `RunCycle`); this bounds the wait.
            ctx.run_later(DRAIN, |_, ctx| ctx.stop());
        } else {
            ctx.stop();
        }
        Box::pin(async move {
            let _ = stopped.await;
        })
    }
}

impl Handler<RunCycle> for RelayActor {
    type Result = ();

    fn handle(&mut self, _: RunCycle, ctx: &mut Self::Context) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if self.cycle_running || self.left {
            return;
        }
        self.cycle_running = true;
        let cycle = Cycle {
            url: self.url.clone(),
            settings: self.settings.clone(),
            filters: self.filters.clone(),
            client,
            subs: self.subs.clone(),
            live: self.live.clone(),
            store: self.store.clone(),
            state: self.state.clone(),
            held: self.pipeline.counters.held.clone(),
            known: self.known.clone(),
            shared: self.clients.clone(),
            counters: self.counters.clone(),
            auth: self.auth.is_some(),
            source: self.source,
        };
        let supervisor = self.supervisor.clone();
        let url = self.url.clone();
        let counters = self.counters.clone();
        let cycle_started = Timestamp::now().as_secs();
        let fut = async move { cycle.run().await }
            .into_actor(self)
            .then(move |result, act, _| {
                act.cycle_running = false;
                let stats = match result {
                    Ok(new_events) => {
                        // Every filter is synced up to the cycle's start.
                        counters.cursor.store(cycle_started, Ordering::Relaxed);
                        act.failures = 0;
                        counters.failures_in_row.store(0, Ordering::Relaxed);
                        counters.cycles_ok.fetch_add(1, Ordering::Relaxed);
                        counters.new_events.fetch_add(new_events, Ordering::Relaxed);
                        tracing::info!(relay = %url, new_events, "cycle done");
                        CycleStats::Done { new_events }
                    }
                    Err(error) => {
                        if error.is_connection() {
                            counters.connected.store(0, Ordering::Relaxed);
                        }
                        // Not kept connected through the backoff: a relay that sends
                        // junk, or never answers, costs nothing while it waits.
                        act.disconnect();
                        act.failures += 1;
                        counters
                            .failures_in_row
                            .store(act.failures.into(), Ordering::Relaxed);
                        counters.cycles_failed.fetch_add(1, Ordering::Relaxed);
                        // At the 1st, 2nd, 4th, 8th… failure in a row: a relay that is
                        // down for good costs a line per doubling, not per backoff step.
                        if act.failures.is_power_of_two() {
                            tracing::warn!(relay = %url, %error, failures = act.failures, "cycle failed");
                        } else {
                            tracing::debug!(relay = %url, %error, failures = act.failures, "cycle failed");
                        }
                        CycleStats::Failed {
                            consecutive: act.failures,
                        }
                    }
                };
                async move { supervisor.send(CycleDone { relay: url, stats }).await }
                    .into_actor(act)
            })
            .map(|next, act, ctx| {
                if act.left {
                    use actix::ActorContext;
                    ctx.stop();
                    return;
                }
                let next = next.unwrap_or(Duration::from_secs(30));
                act.counters
                    .interval_ms
                    .store(next.as_millis() as u64, Ordering::Relaxed);
                ctx.run_later(next, |_, ctx| ctx.notify(RunCycle));
            });
        ctx.spawn(fut);
    }
}

/// The largest websocket message a relay may send: an event over the limit still
/// arrives (up to twice the limit), is refused and takes its place in its page; a
/// larger message ends the connection.
fn max_message(limits: &crate::config::LimitSettings) -> usize {
    limits
        .max_event_bytes
        .saturating_mul(2)
        .saturating_add(frames::ENVELOPE_BYTES)
}

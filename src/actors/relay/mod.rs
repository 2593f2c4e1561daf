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

pub mod clients;
mod detached;
pub mod frames;
pub mod messages;
pub mod nip11;
mod reconcile;
pub mod subs;
pub mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Recipient, Supervised, WrapFuture,
};
use futures::SinkExt;
use nostr_sdk::prelude::*;
use tokio::sync::{mpsc, oneshot, Semaphore};

use self::frames::{classify, Frame, Limits};
use self::messages::RunCycle;
use self::subs::{PageEnd, SubTable};
use self::transport::{FrameBudget, RawFrame, TapTransport};
use crate::actors::ack::{AckOutcome, Pending};
use crate::actors::interval::messages::{CycleDone, Restart};
use crate::actors::interval::policy::CycleStats;
use crate::actors::{Item, Pipeline};
use crate::config::{FilterSettings, Settings};
use crate::metrics::{Reject, RelayCounters};
use crate::storage::EventStore;
use crate::sync::closed::Closed;
use crate::sync::filter::{filter_key, narrowed, to_filter};
use crate::sync::plan::{self, Failure, Planner, Shortfall, Step};

static SUB_SEQ: AtomicU64 = AtomicU64::new(0);

/// How often a live relay's connection is checked between cycles.
const CONNECTION_CHECK: Duration = Duration::from_secs(1);

/// Slots of each relay's SDK notification channel: the few control messages it needs
/// (see `transport::is_sdk_frame`). Every slot is allocated up front, some 400 bytes.
const SDK_NOTIFICATIONS: usize = 32;

fn next_sub_id(prefix: &str) -> String {
    format!("{prefix}-{}", SUB_SEQ.fetch_add(1, Ordering::Relaxed))
}

/// What a relay has shown of itself, kept across cycles and restarts.
#[derive(Debug, Default)]
pub struct Known {
    /// `limitation.max_limit` of its NIP-11 document (0: none).
    pub max_limit: AtomicUsize,
    /// Configured `limit` for this relay (0: none), over NIP-11 and `sync.page_limit`.
    pub configured_limit: usize,
    /// The largest page it answered with.
    pub largest: AtomicUsize,
    /// Whether it reconciles (NIP-77): 0 not known yet, `reconcile::{WORKS, REFUSED,
    /// TRYING}`.
    pub negentropy: AtomicU8,
    /// Filters it refused: filter key → when to ask again.
    refused: Mutex<HashMap<String, Instant>>,
}

impl Known {
    /// The `limit` to send.
    pub fn page_limit(&self, default: usize) -> usize {
        if self.configured_limit > 0 {
            return self.configured_limit;
        }
        match self.max_limit.load(Ordering::Relaxed) {
            0 => default,
            max => default.min(max),
        }
    }

    fn refused_until(&self, key: &str) -> Option<Instant> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.get(key).copied().filter(|t| *t > Instant::now())
    }

    fn refuse(&self, key: &str, until: Instant) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.insert(key.to_owned(), until);
    }
}

pub struct RelayActor {
    url: String,
    known: Arc<Known>,
    settings: Arc<Settings>,
    /// This relay's filters (`Settings::filters_for`).
    filters: Arc<Vec<FilterSettings>>,
    pipeline: Pipeline,
    store: Arc<dyn EventStore>,
    /// Where cycle results go (the `IntervalSupervisor`), answered with the next interval.
    supervisor: Recipient<CycleDone>,
    counters: Arc<RelayCounters>,
    /// The SDK clients relays share, and this relay's (`None` while stopped).
    clients: Arc<clients::Clients>,
    client: Option<Client>,
    subs: Arc<SubTable>,
    cycle_running: bool,
    failures: u32,
    /// NIP-42 key, if configured.
    auth: Option<Keys>,
}

impl RelayActor {
    pub fn new(
        url: String,
        settings: Arc<Settings>,
        pipeline: Pipeline,
        store: Arc<dyn EventStore>,
        supervisor: Recipient<CycleDone>,
        auth: Option<Keys>,
        clients: Arc<clients::Clients>,
    ) -> Self {
        let counters = pipeline.counters.relay(&url);
        // Calls a restart may interrupt must not be cancelled (see `detached`).
        let store: Arc<dyn EventStore> = Arc::new(detached::Detached(store));
        let known = Known {
            configured_limit: settings.page_limit_for(&url),
            ..Default::default()
        };
        let subs = Arc::new(SubTable::new(settings.limits.max_frames_per_req));
        Self {
            known: Arc::new(known),
            filters: Arc::new(settings.filters_for(&url)),
            url,
            settings,
            pipeline,
            store,
            supervisor,
            counters,
            clients,
            client: None,
            subs,
            cycle_running: false,
            failures: 0,
            auth,
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
        let ingest = ingest(
            rx,
            self.subs.clone(),
            self.pipeline.clone(),
            self.counters.clone(),
            self.limits(),
            self.settings.mailbox.max_batch_events,
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
    }
}

impl RelayActor {
    /// Disconnects this relay (its client is shared with other relays).
    fn drop_connection(&mut self) {
        if let Some(client) = self.client.take() {
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

impl Handler<RunCycle> for RelayActor {
    type Result = ();

    fn handle(&mut self, _: RunCycle, ctx: &mut Self::Context) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if self.cycle_running {
            return;
        }
        self.cycle_running = true;
        let cycle = Cycle {
            url: self.url.clone(),
            settings: self.settings.clone(),
            filters: self.filters.clone(),
            client,
            subs: self.subs.clone(),
            store: self.store.clone(),
            held: self.pipeline.counters.held.clone(),
            known: self.known.clone(),
            shared: self.clients.clone(),
            counters: self.counters.clone(),
            auth: self.auth.is_some(),
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
                        // junk, or never answers, costs nothing while it waits. The
                        // next cycle connects again.
                        if let Some(client) = act.client.clone() {
                            let url = url.clone();
                            actix::spawn(async move {
                                if let Ok(relay) = client.relay(url.as_str()).await {
                                    relay.disconnect();
                                }
                            });
                        }
                        act.failures += 1;
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
                let next = next.unwrap_or(Duration::from_secs(30));
                act.counters
                    .interval_ms
                    .store(next.as_millis() as u64, Ordering::Relaxed);
                ctx.run_later(next, |_, ctx| ctx.notify(RunCycle));
            });
        ctx.spawn(fut);
    }
}

/// The progress of an interrupted cycle, kept next to the cursor: every event from
/// `floor` to `top` (the cycle's start) is committed. The next cycle reads what is
/// newer than `top`, then carries on down from `floor`.
#[derive(Debug, Clone, Copy)]
struct Backfill {
    top: u64,
    floor: u64,
}

/// The cursor-table keys a filter's `Backfill` is kept under.
struct BackfillKeys {
    top: String,
    floor: String,
}

impl Backfill {
    fn keys(filter_key: &str) -> BackfillKeys {
        BackfillKeys {
            top: format!("{filter_key}#backfill-top"),
            floor: format!("{filter_key}#backfill-floor"),
        }
    }

    async fn load(
        store: &dyn EventStore,
        relay: &str,
        keys: &BackfillKeys,
    ) -> Result<Option<Backfill>, CycleError> {
        let top = store.cursor(relay, &keys.top).await?;
        let floor = store.cursor(relay, &keys.floor).await?;
        Ok(match (top, floor) {
            (Some(top), Some(floor)) if floor <= top => Some(Backfill {
                top: top as u64,
                floor: floor as u64,
            }),
            _ => None,
        })
    }
}

/// One page of a cycle, for `keep_progress`.
struct PageDone {
    /// Resolves once every event of the page is committed or rejected.
    done: Option<oneshot::Receiver<AckOutcome>>,
    /// Once this and all earlier pages are committed, everything from this second up to
    /// the cycle's start is.
    floor: Option<u64>,
}

/// One sync cycle of one relay, detached from the actor so it can be awaited.
struct Cycle {
    url: String,
    settings: Arc<Settings>,
    filters: Arc<Vec<FilterSettings>>,
    client: Client,
    subs: Arc<SubTable>,
    store: Arc<dyn EventStore>,
    held: Arc<crate::metrics::Gauge>,
    known: Arc<Known>,
    /// What relay actors share (the catch-up check's answers among it).
    shared: Arc<clients::Clients>,
    counters: Arc<RelayCounters>,
    /// Whether the client authenticates when asked (NIP-42).
    auth: bool,
}

/// How often a long window logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Events of a window we must already hold for a catch-up to reconcile rather than page.
const CATCH_UP_MIN_HELD: i64 = 20_000;

/// Tries of a filter that a relay answers `auth-required:` while we authenticate.
const AUTH_TRIES: u32 = 3;

#[derive(Debug, thiserror::Error)]
enum CycleError {
    #[error("not connected")]
    NotConnected,
    #[error("connection lost during a REQ")]
    ConnectionLost,
    #[error("relay error: {0}")]
    Relay(#[from] nostr_sdk::pool::relay::Error),
    #[error("sdk error: {0}")]
    Client(#[from] nostr_sdk::client::Error),
    #[error("no frame for {0:?} before EOSE")]
    EoseTimeout(Duration),
    #[error("window cannot be paged: {0}")]
    Unpageable(Failure),
    #[error("relay asks us to slow down: {0}")]
    RateLimited(String),
    #[error("reconciliation failed: {0}")]
    Negentropy(String),
    #[error("relay closed the subscription: {0}")]
    Closed(String),
    #[error("a REQ brought more than {0} frames (limits.max_frames_per_req)")]
    TooManyFrames(usize),
    #[error("events of the cycle were not all committed")]
    Incomplete,
    #[error("storage: {0}")]
    Store(#[from] crate::storage::StoreError),
}

impl CycleError {
    /// The connection failed, not one filter's window.
    fn is_connection(&self) -> bool {
        matches!(
            self,
            CycleError::NotConnected
                | CycleError::ConnectionLost
                | CycleError::Relay(_)
                | CycleError::Client(_)
        )
    }
}

impl Cycle {
    /// Syncs every filter and returns how many events were new rows; what happened is
    /// kept in `relay_state` for `status`.
    async fn run(self) -> Result<u64, CycleError> {
        match self.connect().await {
            Ok(relay) => self.sync_filters(&relay).await,
            Err(e) => {
                // No window was tried: each filter's state says why.
                self.record_all(self.filters.iter(), &e).await;
                Err(e)
            }
        }
    }

    /// Records `error` for each of `filters` (a lost connection ends them all).
    async fn record_all(&self, filters: impl Iterator<Item = &FilterSettings>, error: &CycleError) {
        if error.is_connection() {
            for f in filters {
                self.record(&filter_key(f), Some(error)).await;
            }
        }
    }

    /// Records how a window ended (best effort: `status` is not worth a failed cycle).
    async fn record(&self, key: &str, error: Option<&CycleError>) {
        let error = error.map(|e| e.to_string());
        if let Err(e) = self
            .store
            .record_window(&self.url, key, error.as_deref())
            .await
        {
            tracing::debug!(relay = %self.url, error = %e, "cannot record the window's outcome");
        }
    }

    /// The relay, connected, with its NIP-11 limits read and live subscriptions open.
    async fn connect(&self) -> Result<Relay, CycleError> {
        let sync = &self.settings.sync;
        let relay = self.client.relay(self.url.as_str()).await?;
        if !relay.is_connected() {
            self.drop_live(&relay).await;
            let timeout = Duration::from_secs(sync.connect_timeout_secs);
            relay.try_connect(timeout).await?;
            self.read_information(timeout).await;
        }
        let connected = relay.is_connected();
        self.counters
            .connected
            .store(u64::from(connected), Ordering::Relaxed);
        if !connected {
            return Err(CycleError::NotConnected);
        }
        self.counters.page_limit.store(
            self.known.page_limit(sync.page_limit) as u64,
            Ordering::Relaxed,
        );
        if sync.live {
            self.ensure_live(&relay).await?;
        }
        Ok(relay)
    }

    async fn sync_filters(&self, relay: &Relay) -> Result<u64, CycleError> {
        let mut new = 0;
        let mut failed = None;
        for (i, filter) in self.filters.iter().enumerate() {
            let key = filter_key(filter);
            if self.known.refused_until(&key).is_some() {
                continue;
            }
            let mut tries = 0;
            let error = loop {
                tries += 1;
                let synced = match self.sync_filter(relay, filter).await {
                    Ok((n, top)) => self.repair_if_due(relay, filter, top).await.map(|()| n),
                    Err(e) => Err(e),
                };
                match synced {
                    Ok(n) => {
                        new += n;
                        break None;
                    }
                    Err(CycleError::Closed(m))
                        if self.auth
                            && tries < AUTH_TRIES
                            && Closed::of(&m) == Closed::AuthRequired =>
                    {
                        // The SDK answers the challenge that came with the CLOSED;
                        // ask again once it has had time to.
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(tries))).await;
                    }
                    Err(e) => break Some(e),
                }
            };
            let Some(error) = error else {
                self.counters.windows_ok.fetch_add(1, Ordering::Relaxed);
                self.record(&key, None).await;
                continue;
            };
            if !error.is_connection() {
                self.record(&key, Some(&error)).await;
            }
            // One filter's failure never stops the others; a lost connection does.
            match &error {
                CycleError::Closed(message) => match Closed::of(message) {
                    Closed::RateLimited => return Err(CycleError::RateLimited(message.clone())),
                    Closed::AuthRequired | Closed::Refused => {
                        let retry = Duration::from_secs(self.settings.sync.refused_retry_secs);
                        tracing::warn!(relay = %self.url, filter = %key, %message, retry_in = ?retry, "relay refuses this filter; it is not synced from this relay");
                        self.counters
                            .filters_refused
                            .fetch_add(1, Ordering::Relaxed);
                        self.known.refuse(&key, Instant::now() + retry);
                        continue;
                    }
                    Closed::Failed => {}
                },
                e if e.is_connection() => {
                    // This filter and those not reached; the ones before keep their
                    // outcome of this cycle.
                    self.record_all(self.filters[i..].iter(), &error).await;
                    return Err(error);
                }
                _ => {}
            }
            tracing::warn!(relay = %self.url, filter = %key, %error, "window failed; the next cycle reads it again");
            self.counters.windows_failed.fetch_add(1, Ordering::Relaxed);
            failed.get_or_insert(error);
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(new),
        }
    }

    /// Reads the relay's NIP-11 document (at every connection: limits change).
    async fn read_information(&self, timeout: Duration) {
        match nip11::fetch(&self.url, timeout).await {
            Ok(info) => {
                let max = info.max_limit.unwrap_or(0);
                let before = self.known.max_limit.swap(max, Ordering::Relaxed);
                if before != max {
                    tracing::info!(
                        relay = %self.url,
                        max_limit = ?info.max_limit,
                        page_limit = self.known.page_limit(self.settings.sync.page_limit),
                        auth_required = info.auth_required,
                        nips = ?info.nips,
                        "relay information (NIP-11)"
                    );
                }
            }
            Err(error) => {
                tracing::debug!(relay = %self.url, %error, "no relay information document (NIP-11)")
            }
        }
    }

    /// Opens each live subscription that is not open: on a new connection, and after
    /// the relay CLOSED one (say `auth-required:` before we authenticated). Each asks
    /// for what is newer than now; the polling cycles fill whatever a gap held.
    async fn ensure_live(&self, relay: &Relay) -> Result<(), CycleError> {
        // A filter with an end follows nothing new.
        for (i, f) in self
            .filters
            .iter()
            .enumerate()
            .filter(|(_, f)| f.until == 0)
        {
            let id = SubscriptionId::new(format!("live-{i}"));
            if relay.subscription(&id).await.is_some() {
                continue;
            }
            // No one waits on a live subscription's completion: its receiver is dropped.
            let (root, _) = Pending::root(self.held.clone());
            self.subs.open(id.as_str(), root, None, false, None);
            let filter = to_filter(f).since(Timestamp::now());
            relay
                .subscribe_with_id(id, filter, SubscribeOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Forgets the live subscriptions of a lost connection, so that the SDK does not
    /// send them again on reconnecting with the `since` they were opened with (which
    /// would replay everything since then); `ensure_live` opens them anew.
    async fn drop_live(&self, relay: &Relay) {
        for i in 0..self.filters.len() {
            let id = SubscriptionId::new(format!("live-{i}"));
            if relay.subscription(&id).await.is_some() {
                // Not connected: the CLOSE cannot be sent, the SDK forgets it anyway.
                let _ = relay.unsubscribe(&id).await;
            }
            self.subs.forget(id.as_str());
        }
    }

    /// Syncs one filter: everything from the cursor (less the overlap) to now, newest
    /// first. Progress is recorded page by page (see `Backfill`), so an interrupted
    /// cycle is not read again from the top.
    /// Returns the new rows and the cursor saved (the window's top).
    async fn sync_filter(
        &self,
        relay: &Relay,
        f: &FilterSettings,
    ) -> Result<(u64, u64), CycleError> {
        let sync = &self.settings.sync;
        let key = filter_key(f);
        let cursor = self.store.cursor(&self.url, &key).await?;
        let since = cursor
            .map(|c| (c as u64).saturating_sub(sync.overlap_secs))
            .unwrap_or(0)
            .max(f.since);
        let now = Timestamp::now().as_secs();
        // A filter with an end is read up to it, and is done once synced that far.
        if f.until > 0 && cursor.is_some_and(|c| c as u64 >= f.until) {
            return Ok((0, f.until));
        }
        let started = if f.until > 0 { now.min(f.until) } else { now };
        let upper = (f.until > 0).then_some(started);
        let keys = Backfill::keys(&key);
        let resume = Backfill::load(&*self.store, &self.url, &keys)
            .await?
            .filter(|b| b.floor > since);
        let (pages_tx, pages_rx) = mpsc::unbounded_channel();
        let read = async {
            let pages = pages_tx;
            match resume {
                Some(b) => {
                    // Newer than the interrupted cycle first. Until that is committed the
                    // covered range has a gap above `b.top`, so nothing is recorded.
                    let newer = b.top.saturating_sub(sync.overlap_secs).max(since);
                    let mut shortfalls = self
                        .read_range(relay, f, newer, upper, &pages, false)
                        .await?;
                    let _ = pages.send(PageDone {
                        done: None,
                        floor: Some(b.floor),
                    });
                    tracing::info!(relay = %self.url, floor = b.floor, "resuming an interrupted sync");
                    shortfalls.extend(
                        self.read_range(relay, f, since, Some(b.floor), &pages, true)
                            .await?,
                    );
                    Ok(shortfalls)
                }
                None => {
                    // Catch-up after downtime, or a relay new to us while others already
                    // gave us much of the window: reconciling sends only what we lack.
                    // Holding little of it (a first start), paging costs no more and
                    // holds less memory (measured with `bench --held`).
                    let catch_up = since + 2 * sync.overlap_secs < started;
                    if catch_up
                        && self.negentropy_usable()
                        && self.hold_many(f, since, started).await?
                    {
                        if let Some(shortfalls) = self
                            .reconcile(relay, f, since, started, &pages, true)
                            .await?
                        {
                            return Ok(shortfalls);
                        }
                    }
                    self.read_range(relay, f, since, upper, &pages, true).await
                }
            }
        };
        let outcome = self
            .settle(read, pages_rx, (since, started), &keys, &key)
            .await?;
        // Progress first: a crash in between re-reads, it never skips.
        self.store.delete_cursor(&self.url, &keys.floor).await?;
        self.store.delete_cursor(&self.url, &keys.top).await?;
        self.store
            .save_cursor(&self.url, &key, started as i64)
            .await?;
        Ok((outcome.new_rows, started))
    }

    /// Reads `[since, until]` (`until` `None`: up to now) as the paging planner says,
    /// handing each REQ's commit receiver to `pages`; with `record`, a REQ also names
    /// the second down to which the window is read. Returns what could not be read.
    async fn read_range(
        &self,
        relay: &Relay,
        f: &FilterSettings,
        since: u64,
        until: Option<u64>,
        pages: &mpsc::UnboundedSender<PageDone>,
        record: bool,
    ) -> Result<Vec<Shortfall>, CycleError> {
        let sync = &self.settings.sync;
        let mut planner = Planner::new(
            since,
            until,
            plan::Relay {
                limit: self.known.page_limit(sync.page_limit),
                largest: self.known.largest.load(Ordering::Relaxed),
                negentropy: self.negentropy_usable(),
                max_reqs: sync.max_reqs_per_window,
                kinds: f.kinds.clone(),
            },
        );
        let mut shortfalls = Vec::new();
        let mut step = planner.start();
        loop {
            step = match step {
                Step::Fetch(query) => {
                    let (root, done) = Pending::root(self.held.clone());
                    let end = self.request(relay, narrowed(f, &query), &root, false).await;
                    root.resolve(false);
                    let covered = planner.covered();
                    let next = planner.on_page(&end?.summary);
                    self.known
                        .largest
                        .fetch_max(planner.largest(), Ordering::Relaxed);
                    let floor = planner.covered().filter(|c| record && Some(*c) != covered);
                    let _ = pages.send(PageDone {
                        done: Some(done),
                        floor,
                    });
                    next
                }
                Step::Reconcile { second } => {
                    let reconciled = if self.negentropy_usable() {
                        self.reconcile(relay, f, second, second, pages, false)
                            .await?
                    } else {
                        None
                    };
                    let ok = reconciled.is_some();
                    shortfalls.extend(reconciled.into_iter().flatten());
                    planner.on_reconciled(ok)
                }
                Step::Done => {
                    shortfalls.extend_from_slice(planner.shortfalls());
                    return Ok(shortfalls);
                }
                Step::Fail(failure) => return Err(CycleError::Unpageable(failure)),
            };
        }
    }

    /// The repair pass, when due: reads the filter's whole synced range again (by
    /// reconciliation, else by paging) to find events that arrived with old
    /// timestamps. The time of the last pass is kept next to the cursor.
    /// `top` is the filter's cursor, just saved.
    async fn repair_if_due(
        &self,
        relay: &Relay,
        f: &FilterSettings,
        top: u64,
    ) -> Result<(), CycleError> {
        let sync = &self.settings.sync;
        let key = filter_key(f);
        let interval = if self.negentropy_usable() {
            sync.repair_interval_secs
        } else {
            sync.repair_paging_interval_secs
        };
        let repair_key = format!("{key}#repair");
        let now = Timestamp::now().as_secs();
        match self.store.cursor(&self.url, &repair_key).await? {
            _ if interval == 0 => return Ok(()),
            // The first sync read everything: the clock starts now.
            None => {
                self.store
                    .save_cursor(&self.url, &repair_key, now as i64)
                    .await?;
                return Ok(());
            }
            Some(last) if now < (last as u64).saturating_add(interval) => return Ok(()),
            Some(_) => {}
        }
        tracing::info!(relay = %self.url, filter = %key, "repair pass");
        let (pages_tx, pages_rx) = mpsc::unbounded_channel();
        let read = async {
            let pages = pages_tx;
            if self.negentropy_usable() {
                if let Some(s) = self
                    .reconcile(relay, f, f.since, top, &pages, false)
                    .await?
                {
                    return Ok(s);
                }
            }
            self.read_range(relay, f, f.since, Some(top), &pages, false)
                .await
        };
        // Nothing is recorded (no page names a floor): this only awaits the commits.
        let keys = Backfill::keys(&repair_key);
        let outcome = self
            .settle(read, pages_rx, (f.since, now), &keys, &key)
            .await?;
        self.counters.repairs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .repair_found
            .fetch_add(outcome.new_rows, Ordering::Relaxed);
        if outcome.new_rows > 0 {
            tracing::warn!(relay = %self.url, filter = %key, found = outcome.new_rows, "repair pass found events the regular sync had missed (backdated or late)");
        } else {
            tracing::info!(relay = %self.url, filter = %key, "repair pass found nothing missing");
        }
        self.store
            .save_cursor(&self.url, &repair_key, now as i64)
            .await?;
        Ok(())
    }

    /// Whether the database holds at least [`CATCH_UP_MIN_HELD`] events of `f` within
    /// `[since, until]`.
    async fn hold_many(
        &self,
        f: &FilterSettings,
        since: u64,
        until: u64,
    ) -> Result<bool, CycleError> {
        let key = filter_key(f);
        let _one_at_a_time = self.shared.checking.lock().await;
        if let Some(held) = self.shared.held_recently(&key, since) {
            return Ok(held);
        }
        let query = crate::storage::ItemQuery {
            kinds: f.kinds.iter().map(|k| i32::from(*k)).collect(),
            authors: f.authors.clone(),
            since: since as i64,
            until: until as i64,
            limit: CATCH_UP_MIN_HELD,
        };
        let held = self.store.items(&query).await?.len() as i64 >= CATCH_UP_MIN_HELD;
        self.shared.remember_held(key, since, held);
        Ok(held)
    }

    /// Runs a window's `read` while awaiting its pages' commits in order (recording
    /// progress where pages name a floor), then reports its shortfalls. Fails unless
    /// every event read was committed.
    async fn settle(
        &self,
        read: impl std::future::Future<Output = Result<Vec<Shortfall>, CycleError>>,
        pages: mpsc::UnboundedReceiver<PageDone>,
        window: (u64, u64),
        keys: &BackfillKeys,
        key: &str,
    ) -> Result<AckOutcome, CycleError> {
        let keep = self.keep_progress(pages, window, keys);
        let (read, kept) = futures::join!(read, keep);
        let shortfalls = read?;
        let outcome = kept?;
        if !outcome.complete {
            return Err(CycleError::Incomplete);
        }
        self.report(key, &shortfalls);
        Ok(outcome)
    }

    /// Counts and logs what a window could not read.
    fn report(&self, key: &str, shortfalls: &[Shortfall]) {
        if shortfalls.is_empty() {
            return;
        }
        self.counters
            .shortfalls
            .fetch_add(shortfalls.len() as u64, Ordering::Relaxed);
        let mut by_reason: std::collections::BTreeMap<&str, usize> = Default::default();
        for s in shortfalls {
            *by_reason.entry(s.reason()).or_default() += 1;
        }
        tracing::warn!(relay = %self.url, filter = %key, ?by_reason, first = ?shortfalls[0], "some events of this window may be missing: the relay could not be paged completely");
    }

    /// Awaits each page's commit in order and records how far down the cycle is
    /// committed. Returns the cycle's outcome once `pages` closes.
    async fn keep_progress(
        &self,
        mut pages: mpsc::UnboundedReceiver<PageDone>,
        (since, started): (u64, u64),
        keys: &BackfillKeys,
    ) -> Result<AckOutcome, CycleError> {
        let mut outcome = AckOutcome {
            complete: true,
            new_rows: 0,
        };
        let mut top_saved = false;
        let began = Instant::now();
        let mut logged = began;
        while let Some(page) = pages.recv().await {
            if let Some(done) = page.done {
                match done.await {
                    Ok(o) => {
                        outcome.complete &= o.complete;
                        outcome.new_rows += o.new_rows;
                    }
                    Err(_) => outcome.complete = false,
                }
            }
            let Some(floor) = page.floor.filter(|_| outcome.complete) else {
                continue;
            };
            if !top_saved {
                self.store
                    .save_cursor(&self.url, &keys.top, started as i64)
                    .await?;
                top_saved = true;
            }
            self.store
                .save_cursor(&self.url, &keys.floor, floor as i64)
                .await?;
            self.counters.progress.fetch_add(1, Ordering::Relaxed);
            if logged.elapsed() >= PROGRESS_EVERY {
                logged = Instant::now();
                self.log_progress(since, floor, started, outcome.new_rows, began.elapsed());
            }
        }
        Ok(outcome)
    }

    /// A long window's progress line: what it covers, how fast, and how long to go.
    /// A window that starts at the beginning of time (`since` 0) ends at the relay's
    /// oldest event, which nobody knows: it gets no estimate (it used to say decades).
    fn log_progress(&self, since: u64, floor: u64, top: u64, stored: u64, took: Duration) {
        let secs = took.as_secs_f64().max(0.001);
        let covered = top.saturating_sub(floor) as f64;
        let eta = (covered > 0.0 && since > 0)
            .then(|| floor.saturating_sub(since) as f64 * secs / covered)
            .map(|s| Duration::from_secs(s as u64));
        tracing::info!(
            relay = %self.url,
            from = %crate::status::time(Some(floor as i64)),
            to = %crate::status::time(Some(top as i64)),
            stored,
            per_sec = (stored as f64 / secs).round(),
            eta = ?eta,
            "backfill progress"
        );
    }

    /// One REQ, read until EOSE; its events are claimed from `root`, and their ids
    /// are reported with `collect_ids`.
    async fn request(
        &self,
        relay: &Relay,
        filter: Filter,
        root: &Pending,
        collect_ids: bool,
    ) -> Result<PageEnd, CycleError> {
        let sync = &self.settings.sync;
        let id = next_sub_id("sync");
        let (tx, rx) = oneshot::channel();
        self.subs
            .open(&id, root.share(), Some(tx), collect_ids, filter.limit);
        let sub = SubscriptionId::new(&id);
        relay.send_msg(ClientMessage::req(sub.clone(), filter))?;
        // The deadline runs from the last frame of this REQ, so a relay that streams a
        // large answer slowly is never cut off while it is sending.
        let timeout = Duration::from_secs(sync.eose_timeout_secs);
        // One watcher, a few wake-ups a second: a relay that never answers costs little.
        let watch = async {
            let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
            loop {
                tokio::time::sleep(tick).await;
                if !relay.is_connected() {
                    return CycleError::ConnectionLost;
                }
                match self.subs.last_frame(&id) {
                    Some(last) if last.elapsed() < timeout => {}
                    _ => return CycleError::EoseTimeout(timeout),
                }
            }
        };
        let end = tokio::select! {
            biased;
            end = rx => end.map_err(|_| CycleError::Incomplete),
            error = watch => Err(error),
        };
        let _ = relay.send_msg(ClientMessage::close(sub));
        match end {
            Ok(PageEnd {
                closed: Some(message),
                ..
            }) => Err(CycleError::Closed(message)),
            Ok(PageEnd { overflow: true, .. }) => Err(CycleError::TooManyFrames(
                self.settings.limits.max_frames_per_req,
            )),
            Ok(end) => {
                // A page read to its end is progress, whatever its frames were.
                self.counters.progress.fetch_add(1, Ordering::Relaxed);
                Ok(end)
            }
            Err(e) => {
                self.subs.forget(&id);
                Err(e)
            }
        }
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

/// Batches of one relay in verification at once.
const VERIFY_DEPTH: usize = 2;

/// Reads raw frames until the connection's channel closes and hands events on.
async fn ingest(
    mut rx: mpsc::Receiver<RawFrame>,
    subs: Arc<SubTable>,
    pipeline: Pipeline,
    counters: Arc<RelayCounters>,
    limits: Limits,
    max_batch: usize,
) {
    let (mut batches, batch_rx) = futures::channel::mpsc::channel::<Vec<Item>>(0);
    let read = async {
        // Grown on first use: a relay that never sends holds nothing (500 frames' worth
        // preallocated was 28 kB per relay).
        let mut frames = Vec::new();
        while rx.recv_many(&mut frames, max_batch).await > 0 {
            let began = std::time::Instant::now();
            let items = classify_frames(frames.drain(..), &subs, &counters, &limits);
            pipeline
                .counters
                .timings
                .parse_seconds
                .observe(began.elapsed().as_secs_f64());
            if !items.is_empty() && batches.send(items).await.is_err() {
                break;
            }
        }
        batches.close_channel();
    };
    futures::join!(read, pipeline.run(batch_rx, &counters, VERIFY_DEPTH));
}

/// Turns raw frames into items to keep, updating subscriptions and counters.
fn classify_frames(
    frames: impl Iterator<Item = RawFrame>,
    subs: &SubTable,
    counters: &RelayCounters,
    limits: &Limits,
) -> Vec<Item> {
    let now = Timestamp::now().as_secs();
    let received = std::time::Instant::now();
    let mut items = Vec::new();
    for raw in frames {
        match classify(&raw.text, limits, now) {
            Frame::Event { sub, event } => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                match subs.on_event(&sub, &event, true) {
                    Some(Some(ack)) => items.push(Item {
                        event: *event,
                        ack,
                        received,
                        in_flight: None,
                    }),
                    _ => counters.reject(Reject::UnknownSubscription),
                }
            }
            Frame::Skipped { sub, event, reason } => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                counters.reject(reason);
                subs.on_event(&sub, &event, false);
            }
            Frame::Rejected { sub, reason, place } => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                counters.reject(reason);
                if let Some(sub) = sub {
                    subs.on_refused(&sub, place.as_ref());
                }
            }
            Frame::Eose(sub) => subs.on_eose(&sub),
            Frame::Closed { sub, message } => subs.on_closed(&sub, message),
            Frame::Notice(message) => {
                counters.notices.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%message, "relay notice");
            }
            Frame::Negentropy => subs.touch_negentropy(),
            Frame::Other => {}
        }
    }
    items
}

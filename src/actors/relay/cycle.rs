//! One sync cycle of one relay, detached from the actor so that it can be awaited: it
//! connects, reads every filter's window as the paging planner says (`sync::plan`),
//! records progress page by page as pages commit (`Backfill`), runs the repair pass
//! when due, and saves cursors only once everything it read is committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use tokio::sync::{mpsc, oneshot};

use super::backfill::Backfill;
use super::known::Known;
use super::subs::{PageEnd, SubTable};
use super::{clients, nip11};
use crate::actors::ack::{AckOutcome, Pending};
use crate::config::{FilterSettings, Settings};
use crate::metrics::RelayCounters;
use crate::storage::EventStore;
use crate::sync::closed::Closed;
use crate::sync::cursor::{CursorKey, Part};
use crate::sync::filter::{filter_key, narrowed};
use crate::sync::live::{self, LiveRead};
use crate::sync::plan::{self, Failure, Planner, Shortfall, Step};

static SUB_SEQ: AtomicU64 = AtomicU64::new(0);

fn next_sub_id(prefix: &str) -> String {
    format!("{prefix}-{}", SUB_SEQ.fetch_add(1, Ordering::Relaxed))
}

/// One page of a cycle, for `keep_progress`.
pub(super) struct PageDone {
    /// Resolves once every event of the page is committed or rejected.
    pub(super) done: Option<oneshot::Receiver<AckOutcome>>,
    /// Once this and all earlier pages are committed, everything from this second up to
    /// the cycle's start is.
    pub(super) floor: Option<u64>,
}

/// One sync cycle of one relay, detached from the actor so it can be awaited.
pub(super) struct Cycle {
    pub(super) url: String,
    pub(super) settings: Arc<Settings>,
    pub(super) filters: Arc<Vec<FilterSettings>>,
    pub(super) client: Client,
    pub(super) subs: Arc<SubTable>,
    /// This connection's live subscriptions (`live`).
    pub(super) live: Arc<super::subs::LiveSubs>,
    pub(super) store: Arc<dyn EventStore>,
    /// Its cursors and window outcomes, written under its lease.
    pub(super) state: super::state::SyncState,
    pub(super) held: Arc<crate::metrics::Gauge>,
    pub(super) known: Arc<Known>,
    /// What relay actors share (the catch-up check's answers among it).
    pub(super) shared: Arc<clients::Clients>,
    pub(super) counters: Arc<RelayCounters>,
    /// Whether the client authenticates when asked (NIP-42).
    pub(super) auth: bool,
    /// The relay's id in provenance (0: not recorded).
    pub(super) source: i32,
}

/// Events of a window we must already hold for a catch-up to reconcile rather than page.
const CATCH_UP_MIN_HELD: i64 = 20_000;

/// Tries of a filter that a relay answers `auth-required:` while we authenticate.
const AUTH_TRIES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub(super) enum CycleError {
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
    pub(super) fn is_connection(&self) -> bool {
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
    pub(super) async fn run(self) -> Result<u64, CycleError> {
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
        if let Err(e) = self.state.record_window(key, error).await {
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
                let synced = match self.sync_filter(relay, i, filter).await {
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

    /// Syncs one filter: everything from the cursor (less the overlap) to now, newest
    /// first. Progress is recorded page by page (see `Backfill`), so an interrupted
    /// cycle is not read again from the top.
    /// Returns the new rows and the cursor saved (the window's top).
    async fn sync_filter(
        &self,
        relay: &Relay,
        i: usize,
        f: &FilterSettings,
    ) -> Result<(u64, u64), CycleError> {
        let sync = &self.settings.sync;
        let key = filter_key(f);
        let cursor = self
            .state
            .cursor(&CursorKey::new(&key, Part::Synced))
            .await?;
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
        let resume = Backfill::load(&self.state, &keys)
            .await?
            .filter(|b| b.floor > since);
        // What a live subscription of this filter brought is not read again.
        let live = self.live_state(relay, i).await;
        let lossy = self.known.live_lossy.load(Ordering::Relaxed);
        let live_read = live::read(live, lossy, since, started, sync.overlap_secs);
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
                    match live_read {
                        LiveRead::Whole => {
                            self.read_range(relay, f, since, upper, &pages, true).await
                        }
                        LiveRead::Below(top) | LiveRead::Check(top) => {
                            self.read_range(relay, f, since, Some(top), &pages, true)
                                .await
                        }
                        LiveRead::Nothing => Ok(Vec::new()),
                    }
                }
            }
        };
        let outcome = self
            .settle(read, pages_rx, (since, started), Some(&keys), &key)
            .await?;
        if matches!(live_read, LiveRead::Check(_)) {
            if live::shows_loss(live, since, outcome.new_rows) {
                self.known.live_lossy.store(true, Ordering::Relaxed);
                tracing::warn!(
                    relay = %self.url,
                    filter = %key,
                    missed = outcome.new_rows,
                    "the relay stored events our live subscription did not bring: its windows are read whole from now on"
                );
            }
            self.live.read_whole(i, started);
        }
        if live.is_some_and(|l| l.lost) {
            // Lost on our side: opened anew, the next cycle reads below the new one.
            self.reopen_live(relay, i).await?;
        }
        // Progress first: a crash in between re-reads, it never skips.
        self.state.delete_cursor(&keys.floor).await?;
        self.state.delete_cursor(&keys.top).await?;
        self.state
            .save_cursor(&CursorKey::new(&key, Part::Synced), started as i64)
            .await?;
        Ok((outcome.new_rows, started))
    }

    /// Reads `[since, until]` (`until` `None`: up to now) as the paging planner says,
    /// handing each REQ's commit receiver to `pages`; with `record`, a REQ also names
    /// the second down to which the window is read. Returns what could not be read.
    pub(super) async fn read_range(
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

    /// One REQ, read until EOSE; its events are claimed from `root`, and their ids
    /// are reported with `collect_ids`.
    pub(super) async fn request(
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

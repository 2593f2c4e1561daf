//! NIP-77 (negentropy) for a cycle, and the repair pass that uses it: our side comes
//! from the per-second fingerprints of what the relay delivered (our own initiator,
//! `crate::sync::negentropy`), or, on the items path, as `(id, created_at)` items from
//! the database for the filter and window, which the SDK reconciles with the relay in
//! dry-run mode (`sync.reconcile_from`); the ids we lack are fetched
//! through our own REQs (the websocket tap), so nothing travels through the SDK's
//! lossy channel. The repair pass reads a filter's whole synced range again (by
//! reconciliation where the relay serves it, else by paging) every
//! `sync.repair_interval_secs`, to find events that arrived with old timestamps.
//!
//! Windows holding more than [`SLICE_ITEMS`] of our events are reconciled in time
//! slices, newest first; a relay that answers `blocked:` (too many records for it) gets
//! the slice halved. A relay that refuses NIP-77 (NEG-ERR, NOTICE, CLOSED or silence
//! before its first answer) is remembered as refusing, and the caller pages instead.
//! Every reconciliation is guarded by an idle timeout (nostr-sdk 0.44 has none): no
//! NIP-77 frame from the relay for `sync.eose_timeout_secs` ends it (live events on
//! the same connection do not keep it alive), and by a deadline of its own,
//! `sync.reconcile_timeout_secs`. A range in which the relay holds more than
//! [`MAX_NEED`] ids we lack is halved, so what one answer makes us hold stays bounded.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bitcoin::hex::FromHex;
use nostr_sdk::prelude::*;
use tokio::sync::mpsc;

use super::cycle::{Cycle, CycleError, PageDone};
use super::known::Nip77;
use crate::actors::ack::Pending;
use crate::config::FilterSettings;
use crate::nostr::fingerprint::IdSum;
use crate::storage::{EventStore, ItemQuery, Sighting, StoreError};
use crate::sync::cursor::{CursorKey, Part};
use crate::sync::filter::{filter_key, to_filter};
use crate::sync::negentropy::{self, Id, Initiator, Source};
use crate::sync::plan::{Failure, Shortfall};

/// Longest wait for a relay's first answer to NEG-OPEN (relays that do not know NIP-77
/// often say nothing at all).
const FIRST_ANSWER: Duration = Duration::from_secs(10);

/// Most of our items in one reconciliation.
const SLICE_ITEMS: i64 = 50_000;

/// Most ids we lack taken from one reconciliation; a range with more is halved.
pub const MAX_NEED: usize = 100_000;

/// How one reconciliation failed.
enum NegError {
    /// The relay does not do NIP-77 (or not for us).
    Refused(String),
    /// Too many records for the relay in this range.
    Blocked(String),
    /// The connection or the relay broke off mid-way.
    Broken(CycleError),
}

impl NegError {
    /// The relay's NEG-ERR (or error message): too many records (`blocked:`), or a
    /// refusal.
    fn of_relay(message: String) -> Self {
        if message.trim_start().starts_with("blocked:") {
            NegError::Blocked(message)
        } else {
            NegError::Refused(message)
        }
    }
}

impl Cycle {
    /// A first attempt is under way, unless the relay is known already.
    fn mark_trying(&self) {
        self.known.negentropy.first_attempt();
    }

    /// Whether reconciliation is to be tried with this relay.
    pub(super) fn negentropy_usable(&self) -> bool {
        self.settings.sync.negentropy.is_on()
            && matches!(self.known.negentropy.get(), Nip77::Unknown | Nip77::Works)
    }

    /// Reconciles `[since, until]` of `f` and fetches what we lack. `None` if the relay
    /// refuses NIP-77 (the caller pages instead); else what could not be fetched.
    /// With `record`, each finished slice names the second down to which it covers.
    pub(super) async fn reconcile(
        &self,
        relay: &Relay,
        f: &FilterSettings,
        since: u64,
        until: u64,
        pages: &mpsc::UnboundedSender<PageDone>,
        record: bool,
    ) -> Result<Option<Vec<Shortfall>>, CycleError> {
        let mut ranges = vec![(since, until)];
        let mut shortfalls = Vec::new();
        let by_sums = self.settings.sync.reconcile_from.by_sums(self.source) && summed(f);
        while let Some((lo, hi)) = ranges.pop() {
            let split = |ranges: &mut Vec<(u64, u64)>| {
                let mid = lo + (hi - lo) / 2;
                // Popped newest first.
                ranges.push((lo, mid));
                ranges.push((mid + 1, hi));
            };
            let need = if by_sums {
                self.negentropy_by_sums(relay, f, lo, hi).await
            } else {
                let query = ItemQuery {
                    kinds: f.kinds.iter().map(|k| i32::from(*k)).collect(),
                    authors: f.authors.clone(),
                    since: lo as i64,
                    until: hi as i64,
                    limit: SLICE_ITEMS + 1,
                };
                let items = self.store.items(&query).await?;
                if items.len() as i64 > SLICE_ITEMS && lo < hi {
                    split(&mut ranges);
                    continue;
                }
                let items: Vec<(EventId, Timestamp)> = items
                    .into_iter()
                    .filter_map(|(id, at)| {
                        Some((EventId::from_hex(&id).ok()?, Timestamp::from(at as u64)))
                    })
                    .collect();
                let filter = to_filter(f)
                    .since(Timestamp::from(lo))
                    .until(Timestamp::from(hi));
                self.negentropy(relay, filter, items).await
            };
            let need = match need {
                Ok(need) if need.len() > MAX_NEED && lo < hi => {
                    tracing::debug!(relay = %self.url, lo, hi, missing = need.len(), "too many ids to fetch at once; halving the range");
                    split(&mut ranges);
                    continue;
                }
                Ok(mut need) => {
                    if need.len() > MAX_NEED {
                        shortfalls.push(Shortfall::NotServed {
                            ids: need.len() - MAX_NEED,
                        });
                        need.truncate(MAX_NEED);
                    }
                    need
                }
                Err(NegError::Blocked(message)) if lo < hi => {
                    tracing::debug!(relay = %self.url, lo, hi, %message, "reconciliation blocked; halving the range");
                    split(&mut ranges);
                    continue;
                }
                Err(NegError::Blocked(message)) => {
                    // One second too large for the relay to reconcile: page it.
                    tracing::debug!(relay = %self.url, second = lo, %message, "reconciliation blocked for one second");
                    return Ok(None);
                }
                Err(NegError::Refused(reason)) => {
                    if self.known.negentropy.get() == Nip77::Works {
                        return Err(CycleError::Negentropy(reason));
                    }
                    self.known.negentropy.set(Nip77::Refused);
                    tracing::info!(relay = %self.url, %reason, "relay does not reconcile (NIP-77); paging instead, from now on");
                    return Ok(None);
                }
                Err(NegError::Broken(e)) => return Err(e),
            };
            self.known.negentropy.set(Nip77::Works);
            self.counters
                .reconciliations
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(relay = %self.url, lo, hi, by_sums, missing = need.len(), "reconciled");
            shortfalls.extend(self.fetch_ids(relay, need, pages).await?);
            let _ = pages.send(PageDone {
                done: None,
                floor: record.then_some(lo),
            });
        }
        Ok(Some(shortfalls))
    }

    /// Reconciles `items` with the relay's events of `filter`: the ids it holds and we
    /// do not.
    async fn negentropy(
        &self,
        relay: &Relay,
        filter: Filter,
        items: Vec<(EventId, Timestamp)>,
    ) -> Result<Vec<EventId>, NegError> {
        let timeout = Duration::from_secs(self.settings.sync.eose_timeout_secs);
        let opts = SyncOptions::new()
            .dry_run()
            .direction(SyncDirection::Down)
            .initial_timeout(timeout.min(FIRST_ANSWER));
        self.mark_trying();
        let subs = self.subs.clone();
        subs.touch_negentropy();
        let idle = async {
            let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
            loop {
                tokio::time::sleep(tick).await;
                if subs.negentropy_idle_for() >= timeout {
                    break;
                }
            }
        };
        let deadline = Duration::from_secs(self.settings.sync.reconcile_timeout_secs);
        let result = tokio::select! {
            r = relay.sync_with_items(filter, items, &opts) => r,
            _ = idle => return Err(NegError::Refused(format!("no answer for {timeout:?}"))),
            _ = tokio::time::sleep(deadline) => {
                return Err(NegError::Refused(format!("not done within {deadline:?}")))
            }
        };
        use nostr_sdk::pool::relay::Error as E;
        match result {
            Ok(rec) => Ok(rec.remote.into_iter().collect()),
            Err(E::RelayMessage(m)) => Err(NegError::of_relay(m)),
            Err(E::NotConnected) | Err(E::ReceivedShutdown) => {
                Err(NegError::Broken(CycleError::ConnectionLost))
            }
            Err(e) => Err(NegError::Refused(e.to_string())),
        }
    }

    /// Reconciles our events of `f` dated within `[since, until]` with the relay's,
    /// taking our side from the maintained fingerprints (`crate::sync::negentropy`):
    /// the ids it holds that we lack.
    async fn negentropy_by_sums(
        &self,
        relay: &Relay,
        f: &FilterSettings,
        since: u64,
        until: u64,
    ) -> Result<Vec<EventId>, NegError> {
        self.mark_trying();
        let mut src = Stored {
            store: &*self.store,
            kinds: f.kinds.iter().map(|k| i32::from(*k)).collect(),
            relay: self.source,
            learned: Vec::new(),
        };
        let mut us = Initiator::new(since, until);
        let mut first = us.open(&mut src).await.map_err(store_error)?;
        if src.relay > 0 && us.holds_none() {
            // A relay that delivered none of the window (new to us, or recorded since
            // provenance was turned on) is compared with every stored event: if it
            // holds what we hold, that matches at once; its own sums would have it
            // list all.
            src.relay = 0;
            us = Initiator::new(since, until);
            first = us.open(&mut src).await.map_err(store_error)?;
        }
        let id = SubscriptionId::generate();
        let mut replies = self.subs.open_negentropy(id.as_str());
        let filter = to_filter(f)
            .since(Timestamp::from(since))
            .until(Timestamp::from(until));
        let exchange = async {
            let mut next = ClientMessage::NegOpen {
                subscription_id: Cow::Borrowed(&id),
                filter: Cow::Owned(filter),
                id_size: None,
                initial_message: Cow::Owned(crate::nostr::hex(&first)),
            };
            let idle = Duration::from_secs(self.settings.sync.eose_timeout_secs);
            let mut wait = idle.min(FIRST_ANSWER);
            loop {
                relay
                    .send_msg(next)
                    .map_err(|_| NegError::Broken(CycleError::ConnectionLost))?;
                let reply = match tokio::time::timeout(wait, replies.recv()).await {
                    Ok(Some(reply)) => reply,
                    _ if !relay.is_connected() => {
                        return Err(NegError::Broken(CycleError::ConnectionLost))
                    }
                    _ => return Err(NegError::Refused(format!("no answer for {wait:?}"))),
                };
                wait = idle;
                let msg = reply.map_err(NegError::of_relay)?;
                let bytes = Vec::<u8>::from_hex(&msg)
                    .map_err(|_| NegError::Refused("NEG-MSG is not hex".into()))?;
                // Each round is progress: the watchdog restarts a relay without any.
                self.counters.progress.fetch_add(1, Ordering::Relaxed);
                let answer = us.answer(&mut src, &bytes).await.map_err(store_error)?;
                src.record_learned()
                    .await
                    .map_err(|e| NegError::Broken(e.into()))?;
                match answer {
                    Some(answer) => {
                        next = ClientMessage::NegMsg {
                            subscription_id: Cow::Borrowed(&id),
                            message: Cow::Owned(crate::nostr::hex(&answer)),
                        }
                    }
                    None => return Ok(()),
                }
                if us.needed() > MAX_NEED {
                    return Ok(());
                }
            }
        };
        let deadline = Duration::from_secs(self.settings.sync.reconcile_timeout_secs);
        let outcome = tokio::time::timeout(deadline, exchange)
            .await
            .unwrap_or_else(|_| Err(NegError::Refused(format!("not done within {deadline:?}"))));
        self.subs.close_negentropy(id.as_str());
        let _ = relay.send_msg(ClientMessage::NegClose {
            subscription_id: Cow::Borrowed(&id),
        });
        self.counters
            .fingerprint_rows_read
            .fetch_add(us.rows_read, Ordering::Relaxed);
        outcome?;
        Ok(us
            .take_need()
            .into_iter()
            .map(EventId::from_byte_array)
            .collect())
    }

    /// Fetches `ids` through our own REQs, in pages the relay will serve whole; ids it
    /// does not serve are asked for again while rounds bring any.
    pub(super) async fn fetch_ids(
        &self,
        relay: &Relay,
        ids: Vec<EventId>,
        pages: &mpsc::UnboundedSender<PageDone>,
    ) -> Result<Vec<Shortfall>, CycleError> {
        let sync = &self.settings.sync;
        let mut missing = ids;
        let mut reqs = 0;
        while !missing.is_empty() {
            let limit = self.known.page_limit(sync.page_limit);
            let mut got: HashSet<EventId> = HashSet::new();
            for chunk in missing.chunks(limit) {
                reqs += 1;
                if reqs > sync.max_reqs_per_window {
                    return Err(CycleError::Unpageable(Failure::TooManyRequests(
                        sync.max_reqs_per_window,
                    )));
                }
                let (root, done) = Pending::root(self.held.clone());
                let filter = Filter::new().ids(chunk.iter().copied()).limit(chunk.len());
                let end = self.request(relay, filter, &root, true).await;
                root.resolve(false);
                got.extend(end?.ids);
                let _ = pages.send(PageDone {
                    done: Some(done),
                    floor: None,
                });
            }
            let before = missing.len();
            missing.retain(|id| !got.contains(id));
            self.counters
                .fetched_by_id
                .fetch_add((before - missing.len()) as u64, Ordering::Relaxed);
            if missing.len() == before {
                return Ok(vec![Shortfall::NotServed { ids: missing.len() }]);
            }
        }
        Ok(Vec::new())
    }
}

/// Whether the maintained fingerprints answer `f`: they are kept per second and kind,
/// so filters naming authors or tags take the items path.
fn summed(f: &FilterSettings) -> bool {
    f.authors.is_empty() && f.tags().is_empty()
}

/// A reconciliation's failure to read our side.
fn store_error(e: negentropy::Error<StoreError>) -> NegError {
    match e {
        negentropy::Error::Malformed(m) => NegError::Refused(m.to_string()),
        negentropy::Error::Source(e) => NegError::Broken(CycleError::Store(e)),
    }
}

/// Our events of one filter, as the initiator reads them: those the relay delivered
/// (`relay`, its id in provenance), or, without provenance (0), every stored one.
struct Stored<'a> {
    store: &'a dyn EventStore,
    kinds: Vec<i32>,
    relay: i32,
    /// Stored events the relay listed that its provenance did not name yet.
    learned: Vec<Id>,
}

impl Stored<'_> {
    /// Records the relay as holding what it listed and we hold (from another relay,
    /// or before provenance): its fingerprints then match them next time.
    async fn record_learned(&mut self) -> Result<(), StoreError> {
        if self.learned.is_empty() {
            return Ok(());
        }
        let at = crate::storage::now_secs();
        let sightings: Vec<Sighting> = self
            .learned
            .drain(..)
            .map(|id| Sighting {
                id: EventId::from_byte_array(id),
                relay: self.relay,
                at,
                // Looked up by id, with its date and kind.
                seq: 0,
                created_at: 0,
                kind: 0,
            })
            .collect();
        self.store.write_batch(&[], &sightings).await.map(drop)
    }
}

impl Source for Stored<'_> {
    type Error = StoreError;

    async fn sums(&mut self, spans: &[(u64, u64)]) -> Result<Vec<IdSum>, StoreError> {
        let spans: Vec<(i64, i64)> = spans.iter().map(|&(a, b)| (secs(a), secs(b))).collect();
        self.store
            .fingerprint_sums(self.relay, &self.kinds, &spans)
            .await
    }

    async fn ids(&mut self, spans: &[(u64, u64)]) -> Result<Vec<(u64, Id)>, StoreError> {
        let spans: Vec<(i64, i64)> = spans.iter().map(|&(a, b)| (secs(a), secs(b))).collect();
        let items = self
            .store
            .ids_in_spans(self.relay, &self.kinds, &spans)
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|(at, id)| Some((at as u64, Id::from_hex(&id).ok()?)))
            .collect())
    }

    async fn seconds(
        &mut self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Option<Vec<(u64, IdSum)>>, StoreError> {
        let rows = self
            .store
            .fingerprint_seconds(
                self.relay,
                &self.kinds,
                secs(from),
                secs(to),
                limit as i64 + 1,
            )
            .await?;
        Ok((rows.len() <= limit).then(|| rows.into_iter().map(|(at, s)| (at as u64, s)).collect()))
    }

    async fn held(&mut self, ids: &[Id]) -> Result<HashSet<Id>, StoreError> {
        let hex: Vec<String> = ids.iter().map(|id| crate::nostr::hex(id)).collect();
        let found = self.store.stored_among(&hex).await?;
        let held: HashSet<Id> = found
            .iter()
            .filter_map(|id| Id::from_hex(id).ok())
            .collect();
        if self.relay > 0 {
            self.learned.extend(held.iter().copied());
        }
        Ok(held)
    }
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

impl Cycle {
    /// The repair pass, when due: reads the filter's whole synced range again (by
    /// reconciliation, else by paging) to find events that arrived with old
    /// timestamps. The time of the last pass is kept next to the cursor.
    /// `top` is the filter's cursor, just saved.
    pub(super) async fn repair_if_due(
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
        let repair_key = CursorKey::new(&key, Part::Repaired);
        let now = Timestamp::now().as_secs();
        match self.state.cursor(&repair_key).await? {
            _ if interval == 0 => return Ok(()),
            // The first sync read everything: the clock starts now.
            None => {
                self.state.save_cursor(&repair_key, now as i64).await?;
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
        let outcome = self
            .settle(read, pages_rx, (f.since, now), None, &key)
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
        self.state.save_cursor(&repair_key, now as i64).await?;
        Ok(())
    }
}

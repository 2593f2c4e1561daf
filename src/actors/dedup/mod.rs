//! DedupActor: owns the LRU of committed ids and the set of ids in flight.
//!
//! In: `Check` batches from relay actors (`send().await`, mailbox `mailbox.dedup`),
//! `Committed` from storage actors, `Release` after failed verification.
//! Out: the fresh items, returned to the caller. A duplicate costs one hash lookup and
//! no signature check. An id counts as stored only once `Committed` arrives, so a
//! failed write never makes an event look stored; copies arriving while it is in
//! flight are held until then (and handed back if the in-flight copy was forged).
//!
//! Beyond the LRU, a Bloom filter of every committed id (`crate::dedup_filter`, loaded
//! from the database at start by `load_filter`, then fed by `Committed`) marks the
//! fresh ids that may be stored already: the pipeline looks those up in the database
//! before verifying them.
//!
//! The copy let through carries an [`InFlight`] token. Committed or released, it is
//! settled; dropped on any other path (a relay actor restarted mid-ingest, a stopped
//! storage worker), it sends `Abandon`: the id is forgotten and the copies parked
//! behind it are dropped, which fails their REQs, so the next cycle fetches them
//! again. No path can leave copies parked behind an id that nothing will commit.

pub mod cache;
pub mod messages;

use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use bitcoin::hex::FromHex;

use self::cache::{Seen, SeenCache};
use self::messages::{Check, Committed, Fresh, Release};
use crate::actors::item::{Abandon, InFlight, Item};
use crate::actors::sightings::Sightings;
use crate::dedup_filter::{key, IdFilter, KEY_BYTES};
use crate::metrics::Counters;
use crate::storage::EventStore;

/// The committed-id filter, once `load_filter` has sized it.
pub type FilterSlot = Arc<std::sync::OnceLock<IdFilter>>;

pub struct DedupActor {
    cache: SeenCache<Item>,
    filter: FilterSlot,
    /// Where dropped `InFlight` tokens report; set once started.
    me: Option<Arc<Recipient<Abandon>>>,
    mailbox: usize,
    counters: Arc<Counters>,
    /// Where deliveries of duplicate copies from new relays go, for provenance.
    sightings: Arc<Sightings>,
}

impl DedupActor {
    pub fn new(
        capacity: NonZeroUsize,
        filter: FilterSlot,
        mailbox: usize,
        counters: Arc<Counters>,
        sightings: Arc<Sightings>,
    ) -> Self {
        Self {
            cache: SeenCache::new(capacity),
            filter,
            me: None,
            mailbox,
            counters,
            sightings,
        }
    }

    /// Sorts `items` into fresh, duplicate and parked.
    fn classify(&mut self, items: Vec<Item>) -> Fresh {
        let mut fresh = Fresh {
            items: Vec::with_capacity(items.len()),
            maybe_stored: Vec::new(),
        };
        for item in items {
            let id = item.event.id;
            match self.cache.check(id, item.source) {
                Seen::Fresh => {
                    let mut item = item;
                    item.in_flight = Some(InFlight {
                        id,
                        dedup: self.me.clone(),
                    });
                    if self
                        .filter
                        .get()
                        .is_none_or(|f| f.may_hold(&key(id.as_bytes())))
                    {
                        fresh.maybe_stored.push(id);
                    }
                    fresh.items.push(item)
                }
                Seen::Committed { new_relay, seq } => {
                    if new_relay {
                        self.sightings.add(&item.event, item.source, seq);
                    }
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    item.ack.resolve(false);
                }
                Seen::InFlight => {
                    // Held until the in-flight copy commits; a second copy for the same
                    // REQ adds nothing and is a duplicate at once.
                    let same = |a: &Item, b: &Item| a.ack.same_req(&b.ack);
                    if let Err(extra) = self.cache.park(id, item, same) {
                        self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        extra.ack.resolve(false);
                    }
                }
            }
        }
        fresh
    }
}

impl Actor for DedupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
        self.me = Some(Arc::new(ctx.address().recipient()));
    }
}

impl Handler<Check> for DedupActor {
    type Result = actix::MessageResult<Check>;

    fn handle(&mut self, Check(items): Check, _: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.classify(items))
    }
}

impl Handler<Committed> for DedupActor {
    type Result = ();

    fn handle(&mut self, Committed(ids): Committed, _: &mut Self::Context) {
        let filter = self.filter.get();
        for (id, relay, seq) in ids {
            if let Some(f) = filter {
                f.insert(&key(id.as_bytes()));
            }
            for parked in self.cache.committed(id, relay, seq) {
                if self.cache.delivered(id, parked.source) {
                    self.sightings.add(&parked.event, parked.source, seq);
                }
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                parked.ack.resolve(false);
            }
        }
    }
}

impl Handler<Abandon> for DedupActor {
    type Result = ();

    fn handle(&mut self, Abandon(id): Abandon, _: &mut Self::Context) {
        let parked = self.cache.released(id);
        self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%id, parked = parked.len(), "an in-flight event was dropped before its commit; its REQs are read again");
        // Dropped unresolved: their REQs fail, so no cursor passes them.
        drop(parked);
    }
}

impl Handler<Release> for DedupActor {
    type Result = Vec<Item>;

    fn handle(&mut self, Release(ids): Release, _: &mut Self::Context) -> Vec<Item> {
        ids.into_iter()
            .flat_map(|id| self.cache.released(id))
            .collect()
    }
}

/// Ids read per query while loading the filter.
const LOAD_PAGE: i64 = 50_000;

/// Sizes the committed-id filter for twice what the database holds (a million at
/// least), shares it (commits feed it from then on), then inserts every stored id and
/// marks it loaded. Runs in the background at start; until it is done every fresh id
/// is looked up. A failure leaves it unloaded (looked up, as before) and is logged.
pub async fn load_filter(store: Arc<dyn EventStore>, slot: FilterSlot, counters: Arc<Counters>) {
    let began = std::time::Instant::now();
    let held = match store.count_events().await {
        Ok(n) => n.max(0) as u64,
        Err(error) => {
            tracing::warn!(%error, "cannot size the committed-id filter: every fresh id is looked up");
            return;
        }
    };
    let filter = slot.get_or_init(|| IdFilter::with_capacity((2 * held).max(1_000_000)));
    counters
        .dedup_filter_bytes
        .store(filter.bytes(), Ordering::Relaxed);
    let mut after = 0;
    loop {
        let page = match store.id_heads_after(after, LOAD_PAGE).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "loading the committed-id filter failed: every fresh id is looked up");
                return;
            }
        };
        let Some((last, _)) = page.last() else { break };
        after = *last;
        for (_, head) in &page {
            if let Ok(key) = <[u8; KEY_BYTES]>::from_hex(head) {
                filter.insert(&key);
            }
        }
    }
    filter.set_loaded();
    tracing::info!(
        ids = filter.inserted(),
        capacity = filter.capacity(),
        bytes = filter.bytes(),
        seconds = began.elapsed().as_secs_f64(),
        "committed-id filter loaded"
    );
}

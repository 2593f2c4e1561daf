//! DedupActor: owns the LRU of committed ids and the set of ids in flight.
//!
//! In: `Check` batches from relay actors (`send().await`, mailbox `mailbox.dedup`),
//! `Committed` from storage actors, `Release` after failed verification.
//! Out: the fresh items, returned to the caller. A duplicate costs one hash lookup and
//! no signature check. An id counts as stored only once `Committed` arrives, so a
//! failed write never makes an event look stored; copies arriving while it is in
//! flight are held until then (and handed back if the in-flight copy was forged).
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

use self::cache::{Seen, SeenCache};
use self::messages::{Check, Committed, Release};
use crate::actors::item::{Abandon, InFlight, Item};
use crate::metrics::Counters;

pub struct DedupActor {
    cache: SeenCache<Item>,
    /// Where dropped `InFlight` tokens report; set once started.
    me: Option<Arc<Recipient<Abandon>>>,
    mailbox: usize,
    counters: Arc<Counters>,
}

impl DedupActor {
    pub fn new(capacity: NonZeroUsize, mailbox: usize, counters: Arc<Counters>) -> Self {
        Self {
            cache: SeenCache::new(capacity),
            me: None,
            mailbox,
            counters,
        }
    }

    /// Sorts `items` into fresh, duplicate and parked.
    fn classify(&mut self, items: Vec<Item>) -> Vec<Item> {
        let mut fresh = Vec::with_capacity(items.len());
        for item in items {
            let id = item.event.id;
            match self.cache.check(id) {
                Seen::Fresh => {
                    let mut item = item;
                    item.in_flight = Some(InFlight {
                        id,
                        dedup: self.me.clone(),
                    });
                    fresh.push(item)
                }
                Seen::Committed => {
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
    type Result = Vec<Item>;

    fn handle(&mut self, Check(items): Check, _: &mut Self::Context) -> Vec<Item> {
        self.classify(items)
    }
}

impl Handler<Committed> for DedupActor {
    type Result = ();

    fn handle(&mut self, Committed(ids): Committed, _: &mut Self::Context) {
        for id in ids {
            for parked in self.cache.committed(id) {
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

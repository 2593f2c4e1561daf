//! The dedup cache, without actix: an LRU of committed ids, and the ids in flight
//! (handed to storage, not yet committed) with the copies that arrived meanwhile.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use lru::LruCache;
use nostr_sdk::EventId;

/// What the cache says of an arriving event.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Committed already: drop it.
    Committed,
    /// Another copy is in flight: the caller's copy waits for that one.
    InFlight,
    /// First sight: the caller takes it through verification and storage.
    Fresh,
}

pub struct SeenCache<W> {
    committed: LruCache<EventId, ()>,
    /// foldhash, as the LRU's map: SipHash cost more than the rest of a lookup.
    in_flight: HashMap<EventId, Vec<W>, foldhash::fast::RandomState>,
}

impl<W> SeenCache<W> {
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            committed: LruCache::new(capacity),
            in_flight: HashMap::default(),
        }
    }

    /// Classifies `id`; a fresh id becomes in flight.
    pub fn check(&mut self, id: EventId) -> Seen {
        if self.committed.get(&id).is_some() {
            return Seen::Committed;
        }
        if self.in_flight.contains_key(&id) {
            return Seen::InFlight;
        }
        self.in_flight.insert(id, Vec::new());
        Seen::Fresh
    }

    /// Parks `waiter` behind the in-flight copy of `id`; gives it back when `same` finds
    /// an equal waiter parked already (or `id` is not in flight).
    pub fn park(&mut self, id: EventId, waiter: W, same: impl Fn(&W, &W) -> bool) -> Result<(), W> {
        match self.in_flight.get_mut(&id) {
            Some(waiters) if !waiters.iter().any(|w| same(w, &waiter)) => {
                waiters.push(waiter);
                Ok(())
            }
            _ => Err(waiter),
        }
    }

    /// `id` is committed: remember it and hand back its waiters (now duplicates).
    pub fn committed(&mut self, id: EventId) -> Vec<W> {
        self.committed.put(id, ());
        self.in_flight.remove(&id).unwrap_or_default()
    }

    /// The in-flight copy of `id` was invalid: forget it and hand back the waiters,
    /// which must be checked afresh (one of them may be the genuine event).
    pub fn released(&mut self, id: EventId) -> Vec<W> {
        self.in_flight.remove(&id).unwrap_or_default()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn waiting(&self) -> usize {
        self.in_flight.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> EventId {
        EventId::from_byte_array([n; 32])
    }

    #[test]
    fn fresh_then_in_flight_then_committed() {
        let mut c: SeenCache<u32> = SeenCache::new(NonZeroUsize::new(2).unwrap());
        let eq = |a: &u32, b: &u32| a == b;
        assert_eq!(c.check(id(1)), Seen::Fresh);
        assert_eq!(c.check(id(1)), Seen::InFlight);
        assert_eq!(c.park(id(1), 11, eq), Ok(()));
        assert_eq!(c.park(id(1), 11, eq), Err(11));
        assert_eq!(c.park(id(2), 11, eq), Err(11));
        assert_eq!(c.waiting(), 1);
        assert_eq!(c.committed(id(1)), vec![11]);
        assert_eq!(c.check(id(1)), Seen::Committed);
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn a_released_id_is_fresh_again_and_hands_back_waiters() {
        let mut c: SeenCache<u32> = SeenCache::new(NonZeroUsize::new(2).unwrap());
        let eq = |a: &u32, b: &u32| a == b;
        c.check(id(1));
        c.park(id(1), 2, eq).unwrap();
        assert_eq!(c.released(id(1)), vec![2]);
        assert_eq!(c.check(id(1)), Seen::Fresh);
    }

    #[test]
    fn lru_forgets_the_oldest() {
        let mut c: SeenCache<u32> = SeenCache::new(NonZeroUsize::new(2).unwrap());
        for n in 1..=3 {
            c.check(id(n));
            c.committed(id(n));
        }
        assert_eq!(c.check(id(1)), Seen::Fresh);
        assert_eq!(c.check(id(3)), Seen::Committed);
    }
}

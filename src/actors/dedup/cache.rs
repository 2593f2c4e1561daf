//! The dedup cache, without actix: an LRU of committed ids, each with the last few
//! relays whose delivery of it provenance records, and the ids in flight (handed to
//! storage, not yet committed) with the copies that arrived meanwhile.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use lru::LruCache;
use nostr_sdk::EventId;

/// What the cache says of an arriving event.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Committed already, at row `seq` (0: not known): drop it; `new_relay` if its
    /// relay is not among those known to have delivered it (its delivery is to be
    /// recorded).
    Committed { new_relay: bool, seq: i64 },
    /// Another copy is in flight: the caller's copy waits for that one.
    InFlight,
    /// First sight: the caller takes it through verification and storage.
    Fresh,
}

/// Relays a committed id is known to have come from: the last [`RELAYS`] (ids of
/// `relay_ids`; 0 is a free slot). A relay that fell out is recorded again, which the
/// database's key makes harmless.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Relays([i32; RELAYS]);

pub const RELAYS: usize = 4;

impl Relays {
    /// Adds `relay`; whether it was not there (relays below 1 are never added).
    pub fn insert(&mut self, relay: i32) -> bool {
        if relay <= 0 || self.0.contains(&relay) {
            return false;
        }
        match self.0.iter_mut().find(|r| **r == 0) {
            Some(free) => *free = relay,
            None => {
                self.0.rotate_left(1);
                self.0[RELAYS - 1] = relay;
            }
        }
        true
    }
}

/// What the cache keeps of a committed id: its row (0: not known) and its relays.
#[derive(Debug, Default, Clone, Copy)]
struct Committed {
    seq: i64,
    relays: Relays,
}

pub struct SeenCache<W> {
    committed: LruCache<EventId, Committed>,
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

    /// Classifies `id`, delivered by `relay`; a fresh id becomes in flight.
    pub fn check(&mut self, id: EventId, relay: i32) -> Seen {
        if let Some(c) = self.committed.get_mut(&id) {
            return Seen::Committed {
                new_relay: c.relays.insert(relay),
                seq: c.seq,
            };
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

    /// `id` is committed at row `seq` (0: not known), delivered by `relay`: remember
    /// it and hand back its waiters (now duplicates).
    pub fn committed(&mut self, id: EventId, relay: i32, seq: i64) -> Vec<W> {
        let mut relays = Relays::default();
        relays.insert(relay);
        self.committed.put(id, Committed { seq, relays });
        self.in_flight.remove(&id).unwrap_or_default()
    }

    /// `relay` delivered the committed `id` too; whether that is news.
    pub fn delivered(&mut self, id: EventId, relay: i32) -> bool {
        self.committed
            .peek_mut(&id)
            .is_some_and(|c| c.relays.insert(relay))
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
        assert_eq!(c.check(id(1), 1), Seen::Fresh);
        assert_eq!(c.check(id(1), 2), Seen::InFlight);
        assert_eq!(c.park(id(1), 11, eq), Ok(()));
        assert_eq!(c.park(id(1), 11, eq), Err(11));
        assert_eq!(c.park(id(2), 11, eq), Err(11));
        assert_eq!(c.waiting(), 1);
        assert_eq!(c.committed(id(1), 1, 7), vec![11]);
        assert!(c.delivered(id(1), 2));
        assert!(!c.delivered(id(1), 2));
        assert_eq!(
            c.check(id(1), 1),
            Seen::Committed {
                new_relay: false,
                seq: 7
            }
        );
        assert_eq!(
            c.check(id(1), 3),
            Seen::Committed {
                new_relay: true,
                seq: 7
            }
        );
        assert_eq!(
            c.check(id(1), 3),
            Seen::Committed {
                new_relay: false,
                seq: 7
            }
        );
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn relays_keep_the_last_four_and_never_zero() {
        let mut r = Relays::default();
        assert!(!r.insert(0));
        for n in 1..=4 {
            assert!(r.insert(n));
        }
        assert!(!r.insert(4));
        assert!(r.insert(5), "a fifth relay pushes out the first");
        assert!(r.insert(1), "the first is news again");
        assert!(!r.insert(5));
    }

    #[test]
    fn a_released_id_is_fresh_again_and_hands_back_waiters() {
        let mut c: SeenCache<u32> = SeenCache::new(NonZeroUsize::new(2).unwrap());
        let eq = |a: &u32, b: &u32| a == b;
        c.check(id(1), 1);
        c.park(id(1), 2, eq).unwrap();
        assert_eq!(c.released(id(1)), vec![2]);
        assert_eq!(c.check(id(1), 1), Seen::Fresh);
    }

    #[test]
    fn lru_forgets_the_oldest() {
        let mut c: SeenCache<u32> = SeenCache::new(NonZeroUsize::new(2).unwrap());
        for n in 1..=3 {
            c.check(id(n), 1);
            c.committed(id(n), 1, 0);
        }
        assert_eq!(c.check(id(1), 1), Seen::Fresh);
        assert_eq!(
            c.check(id(3), 1),
            Seen::Committed {
                new_relay: false,
                seq: 0
            }
        );
    }
}

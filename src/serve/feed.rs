//! The live feed's view of the events table. A row is numbered (`seq`) when it is
//! inserted but seen when its transaction commits, so on PostgreSQL a row may appear
//! after rows numbered above it (two storage workers, or two instances). The tail
//! remembers the numbers it skipped over and looks for them again for a while;
//! numbers never filled (a rolled-back write, an insert that found its row there)
//! expire.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Tail {
    last: i64,
    /// Numbers skipped over, and when.
    holes: BTreeMap<i64, Instant>,
    wait: Duration,
    max_holes: usize,
}

impl Tail {
    /// A tail past row `last`, looking for a skipped number for `wait`, and for at most
    /// `max_holes` of them (the highest).
    pub fn new(last: i64, wait: Duration, max_holes: usize) -> Self {
        Self {
            last,
            holes: BTreeMap::new(),
            wait,
            max_holes,
        }
    }

    /// The highest row seen.
    pub fn last(&self) -> i64 {
        self.last
    }

    /// The skipped numbers still worth looking for at `now`.
    pub fn holes(&mut self, now: Instant) -> Vec<i64> {
        let wait = self.wait;
        self.holes
            .retain(|_, at| now.saturating_duration_since(*at) < wait);
        self.holes.keys().copied().collect()
    }

    /// Records the rows read at `now`; returns those not seen before, in order.
    pub fn saw(&mut self, seqs: &[i64], now: Instant) -> Vec<i64> {
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        let mut new = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if seq > self.last {
                let from = (self.last + 1).max(seq - self.max_holes as i64);
                for hole in from..seq {
                    self.holes.insert(hole, now);
                }
                self.last = seq;
                new.push(seq);
            } else if self.holes.remove(&seq).is_some() {
                new.push(seq);
            }
        }
        while self.holes.len() > self.max_holes {
            self.holes.pop_first();
        }
        new
    }
}

//! A Bloom filter over the ids of committed events: what the dedup LRU has forgotten
//! is recognised here before a signature is checked again. It answers "maybe held"
//! or "surely not"; a "maybe" is resolved by the database, never by dropping the event.
//! Ids are SHA-256 digests, uniform already: their bytes are the hashes.
//!
//! Shared between threads: bits are set with atomic OR, so commits and the start-up
//! load insert concurrently without a lock. Until the load has finished, every id is
//! "maybe held".

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bits per id it is sized for: with [`HASHES`] probes, about 1% false positives
/// while it holds at most its capacity.
pub const BITS_PER_ID: u64 = 10;
/// Probes per id.
pub const HASHES: u64 = 7;

pub struct IdFilter {
    words: Vec<AtomicU64>,
    bits: u64,
    capacity: u64,
    inserted: AtomicU64,
    loaded: AtomicBool,
}

impl IdFilter {
    /// A filter for `capacity` ids (at least one), not loaded yet.
    pub fn with_capacity(capacity: u64) -> Self {
        let capacity = capacity.max(1);
        let bits = capacity.saturating_mul(BITS_PER_ID);
        let words = bits.div_ceil(64);
        Self {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            bits: words * 64,
            capacity,
            inserted: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
        }
    }

    /// The bit positions of `id`: double hashing over two 64-bit words of the digest,
    /// mapped onto the bit range by multiply-shift.
    fn probes(&self, id: &[u8; 32]) -> impl Iterator<Item = u64> + '_ {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&id[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let (h1, h2) = (word(0), word(8) | 1);
        (0..HASHES).map(move |i| {
            let h = h1.wrapping_add(i.wrapping_mul(h2));
            ((u128::from(h) * u128::from(self.bits)) >> 64) as u64
        })
    }

    pub fn insert(&self, id: &[u8; 32]) {
        for bit in self.probes(id) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
        self.inserted.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `id` may have been inserted: always true until [`IdFilter::set_loaded`].
    pub fn may_hold(&self, id: &[u8; 32]) -> bool {
        !self.loaded.load(Ordering::Acquire)
            || self.probes(id).all(|bit| {
                self.words[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
            })
    }

    /// Every id stored before it was shared has been inserted: "surely not" answers
    /// may be given from now on.
    pub fn set_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Insertions so far (an id inserted twice counts twice); past the capacity the
    /// false positives grow, and only cost database lookups.
    pub fn inserted(&self) -> u64 {
        self.inserted.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of its bit array.
    pub fn bytes(&self) -> u64 {
        self.bits / 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids as digests are: uniform bytes (here SHA-256 of a counter).
    fn id(i: u64) -> [u8; 32] {
        use nostr_sdk::hashes::{sha256, Hash};
        sha256::Hash::hash(&i.to_le_bytes()).to_byte_array()
    }

    #[test]
    fn answers_maybe_until_loaded_then_never_forgets() {
        let f = IdFilter::with_capacity(1_000);
        assert!(f.may_hold(&id(1)), "not loaded: everything may be held");
        (0..1_000).for_each(|i| f.insert(&id(i)));
        f.set_loaded();
        assert!((0..1_000).all(|i| f.may_hold(&id(i))), "no false negatives");
        assert_eq!(f.inserted(), 1_000);
    }

    /// False positives per load factor: about 1% at capacity (10 bits, 7 probes:
    /// (1 - e^(-7/10))^7 = 0.82%), fewer below, more past it.
    #[test]
    fn false_positives_follow_the_load() {
        // (capacity, inserted, most false positives per 100,000 absent ids)
        let cases = [
            (100_000u64, 10_000u64, 10u64),
            (100_000, 50_000, 150),
            (100_000, 100_000, 1_100),
            (100_000, 200_000, 20_000),
        ];
        for (capacity, inserted, most) in cases {
            let f = IdFilter::with_capacity(capacity);
            (0..inserted).for_each(|i| f.insert(&id(i)));
            f.set_loaded();
            let false_positives = (1_000_000..1_100_000)
                .filter(|i| f.may_hold(&id(*i)))
                .count() as u64;
            assert!(
                false_positives <= most,
                "{inserted} in {capacity}: {false_positives} false positives"
            );
        }
        assert_eq!(IdFilter::with_capacity(1_000_000).bytes(), 1_250_000);
    }
}

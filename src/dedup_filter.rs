//! A Bloom filter over the ids of committed events: what the dedup LRU has forgotten
//! is recognised here before a signature is checked again. It answers "maybe held"
//! or "surely not"; a "maybe" is resolved by the database, never by dropping the event.
//! Ids are SHA-256 digests, uniform already: their first [`KEY_BYTES`] bytes are the
//! hashes, so the start-up load reads only those.
//!
//! Blocked: an id's probes all fall in one 512-bit block (one cache line), so an insert
//! or a lookup costs one cache miss, not one per probe. At its capacity that gives
//! about 0.95% false positives, against 0.82% for probes spread over the whole array.
//!
//! Shared between threads: bits are set with atomic OR, so commits and the start-up
//! load insert concurrently without a lock. Until the load has finished, every id is
//! "maybe held".

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bits per id it is sized for.
pub const BITS_PER_ID: u64 = 10;
/// Probes per id.
pub const HASHES: u32 = 7;
/// The bytes of an id the filter reads: one word picks the block, the other the bits.
pub const KEY_BYTES: usize = 16;

/// Bits of a block, a cache line.
const BLOCK_BITS: u64 = 512;

/// One cache line of bits.
#[repr(align(64))]
struct Block([AtomicU64; 8]);

pub struct IdFilter {
    blocks: Vec<Block>,
    capacity: u64,
    inserted: AtomicU64,
    loaded: AtomicBool,
}

impl IdFilter {
    /// A filter for `capacity` ids (at least one), not loaded yet.
    pub fn with_capacity(capacity: u64) -> Self {
        let capacity = capacity.max(1);
        let blocks = capacity.saturating_mul(BITS_PER_ID).div_ceil(BLOCK_BITS);
        Self {
            blocks: (0..blocks)
                .map(|_| Block(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            capacity,
            inserted: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
        }
    }

    /// The block of `key` (multiply-shift of its first word onto the blocks) and its
    /// probes there: (word, bit mask), nine bits of the second word each.
    fn probes(&self, key: &[u8; KEY_BYTES]) -> (&Block, impl Iterator<Item = (usize, u64)>) {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&key[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let (h1, h2) = (word(0), word(8));
        let block = ((u128::from(h1) * self.blocks.len() as u128) >> 64) as usize;
        let bits = (0..HASHES).map(move |i| {
            let bit = (h2 >> (9 * i)) & (BLOCK_BITS - 1);
            ((bit / 64) as usize, 1u64 << (bit % 64))
        });
        (&self.blocks[block], bits)
    }

    pub fn insert(&self, key: &[u8; KEY_BYTES]) {
        let (block, bits) = self.probes(key);
        for (word, mask) in bits {
            block.0[word].fetch_or(mask, Ordering::Relaxed);
        }
        self.inserted.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `key` may have been inserted: always true until [`IdFilter::set_loaded`].
    pub fn may_hold(&self, key: &[u8; KEY_BYTES]) -> bool {
        if !self.loaded.load(Ordering::Acquire) {
            return true;
        }
        let (block, mut bits) = self.probes(key);
        bits.all(|(word, mask)| block.0[word].load(Ordering::Relaxed) & mask != 0)
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
        self.blocks.len() as u64 * BLOCK_BITS / 8
    }
}

/// The key of an id: its first [`KEY_BYTES`] bytes.
pub fn key(id: &[u8; 32]) -> [u8; KEY_BYTES] {
    std::array::from_fn(|i| id[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of ids as digests are: uniform bytes (here SHA-256 of a counter).
    fn id(i: u64) -> [u8; KEY_BYTES] {
        use nostr_sdk::hashes::{sha256, Hash};
        key(&sha256::Hash::hash(&i.to_le_bytes()).to_byte_array())
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

    /// False positives per load factor: about 1% at capacity (10 bits, 7 probes in
    /// blocks of 512 bits, whose loads vary around 51.2 ids: 0.95%), fewer below,
    /// more past it.
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
        assert_eq!(IdFilter::with_capacity(1_000_000).bytes(), 1_250_048);
    }
}

//! NIP-77's fingerprint of a set of events: the sum of their ids, each read as a
//! little-endian 256-bit number, modulo 2^256, and their count, hashed
//! (`sha256(sum ‖ varint(count))`, first 16 bytes).
//!
//! [`IdSum`] keeps the sum as eight 32-bit limbs in `i64`s whose carries are left
//! pending: sums add and subtract limb by limb, which is what a database can do to a
//! row in one `UPDATE … SET l0 = l0 + $1, …`, in any order, for inserts and removals
//! alike. The carries are resolved only when the fingerprint is taken. A limb holds
//! the sum of 2^31 ids before it could overflow.

use bitcoin::hashes::{sha256, Hash};

/// Limbs of 32 bits in a 256-bit id.
pub const LIMBS: usize = 8;

/// Bytes of a fingerprint.
pub const FINGERPRINT_BYTES: usize = 16;

/// The count and id sum of a set of events, with carries pending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdSum {
    pub count: i64,
    pub limbs: [i64; LIMBS],
}

impl IdSum {
    /// The sum of one id.
    pub fn of(id: &[u8; 32]) -> Self {
        let mut limbs = [0; LIMBS];
        for (limb, bytes) in limbs.iter_mut().zip(id.chunks_exact(4)) {
            *limb = i64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        }
        IdSum { count: 1, limbs }
    }

    pub fn add(&mut self, other: &IdSum) {
        self.count += other.count;
        for (a, b) in self.limbs.iter_mut().zip(other.limbs) {
            *a += b;
        }
    }

    pub fn sub(&mut self, other: &IdSum) {
        self.count -= other.count;
        for (a, b) in self.limbs.iter_mut().zip(other.limbs) {
            *a -= b;
        }
    }

    /// Whether it adds nothing (an insert and a removal of the same events).
    pub fn is_zero(&self) -> bool {
        self.count == 0 && self.limbs == [0; LIMBS]
    }

    /// The sum modulo 2^256, as little-endian bytes.
    pub fn sum(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut carry: i128 = 0;
        for (limb, bytes) in self.limbs.iter().zip(out.chunks_exact_mut(4)) {
            let v = i128::from(*limb) + carry;
            let low = v.rem_euclid(1 << 32);
            carry = v.div_euclid(1 << 32);
            bytes.copy_from_slice(&(low as u32).to_le_bytes());
        }
        out
    }

    /// NIP-77's fingerprint of the set.
    pub fn fingerprint(&self) -> [u8; FINGERPRINT_BYTES] {
        let mut input = self.sum().to_vec();
        input.extend(varint(self.count.max(0) as u64));
        let hash = sha256::Hash::hash(&input).to_byte_array();
        let mut out = [0u8; FINGERPRINT_BYTES];
        out.copy_from_slice(&hash[..FINGERPRINT_BYTES]);
        out
    }
}

/// Negentropy's variable-length integer: base 128, most significant group first, the
/// high bit set on every byte but the last.
pub fn varint(mut n: u64) -> Vec<u8> {
    let mut out = vec![(n & 0x7f) as u8];
    n >>= 7;
    while n > 0 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(fill: impl Fn(usize) -> u8) -> [u8; 32] {
        std::array::from_fn(fill)
    }

    /// The reference: the negentropy crate's own storage, over the same ids.
    fn reference(ids: &[[u8; 32]]) -> [u8; 16] {
        use negentropy::{Id, NegentropyStorageBase, NegentropyStorageVector};
        let mut storage = NegentropyStorageVector::new();
        for (i, id) in ids.iter().enumerate() {
            storage.insert(i as u64, Id::from_byte_array(*id)).unwrap();
        }
        storage.seal().unwrap();
        storage.fingerprint(0, ids.len()).unwrap().to_bytes()
    }

    #[test]
    fn fingerprints_match_the_protocols_reference() {
        let cases: Vec<Vec<[u8; 32]>> = vec![
            vec![],
            vec![id(|_| 0)],
            vec![id(|_| 0xff), id(|i| (i == 0) as u8)], // wraps to 0 mod 2^256
            vec![
                id(|i| i as u8),
                id(|i| 255 - i as u8),
                id(|i| (i * 37) as u8),
            ],
            (0..300)
                .map(|n| id(|i| (n * 7 + i * 13) as u8 ^ 0xa5))
                .collect(),
            // Carries through every limb.
            vec![id(|_| 0xff); 200],
        ];
        for ids in cases {
            let mut sum = IdSum::default();
            ids.iter().for_each(|id| sum.add(&IdSum::of(id)));
            assert_eq!(sum.fingerprint(), reference(&ids), "{} ids", ids.len());
        }
    }

    #[test]
    fn removals_undo_additions_in_any_order() {
        let ids: Vec<[u8; 32]> = (0..50).map(|n| id(|i| (n * 31 + i * 5) as u8)).collect();
        let mut sum = IdSum::default();
        ids.iter().for_each(|id| sum.add(&IdSum::of(id)));
        // Take away the odd ones, most recent first, and the result is the even ones'.
        ids.iter()
            .skip(1)
            .step_by(2)
            .rev()
            .for_each(|id| sum.sub(&IdSum::of(id)));
        let even: Vec<[u8; 32]> = ids.iter().step_by(2).copied().collect();
        assert_eq!(sum.fingerprint(), reference(&even));
        assert_eq!(sum.count, 25);
        ids.iter().step_by(2).for_each(|id| sum.sub(&IdSum::of(id)));
        assert!(sum.is_zero());
    }

    #[test]
    fn varints_are_negentropys() {
        for (n, bytes) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![0x7f]),
            (128, vec![0x81, 0x00]),
            (300, vec![0x82, 0x2c]),
            (16_384, vec![0x81, 0x80, 0x00]),
        ] {
            assert_eq!(varint(n), bytes, "{n}");
        }
    }
}

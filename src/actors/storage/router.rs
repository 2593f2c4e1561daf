//! Routes events to storage actors by author, so one author's events are written in
//! the order they arrived.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use nostr_sdk::PublicKey;

/// The storage worker, out of `workers`, that writes `author`'s events.
pub fn worker_for(author: &PublicKey, workers: usize) -> usize {
    let mut h = DefaultHasher::new();
    author.hash(&mut h);
    (h.finish() % workers.max(1) as u64) as usize
}

/// Splits `items` into one batch per worker, keeping arrival order within each.
pub fn route<T>(items: Vec<T>, workers: usize, author: impl Fn(&T) -> &PublicKey) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..workers).map(|_| Vec::new()).collect();
    for item in items {
        let w = worker_for(author(&item), workers);
        out[w].push(item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::Keys;

    #[test]
    fn one_author_always_lands_on_one_worker_in_order() {
        let keys: Vec<PublicKey> = (0..20).map(|_| Keys::generate().public_key()).collect();
        let items: Vec<(PublicKey, usize)> = (0..200).map(|i| (keys[i % 20], i)).collect();
        let routed = route(items, 4, |(pk, _)| pk);
        assert_eq!(routed.iter().map(Vec::len).sum::<usize>(), 200);
        for batch in &routed {
            for pk in &keys {
                let seq: Vec<usize> = batch
                    .iter()
                    .filter(|(p, _)| p == pk)
                    .map(|(_, i)| *i)
                    .collect();
                assert!(seq.windows(2).all(|w| w[0] < w[1]));
                if !seq.is_empty() {
                    assert!(
                        routed
                            .iter()
                            .filter(|b| b.iter().any(|(p, _)| p == pk))
                            .count()
                            == 1
                    );
                }
            }
        }
    }
}

//! What a batch of verified events does to the database under the Nostr rules of
//! `crate::nostr` (versions, deletions, expiry), decided without the database:
//! [`super::write`] runs these steps for both backends with these helpers, in one
//! transaction per batch.
//!
//! 1. Each deletion request in the batch records its tombstones (`deleted_events`,
//!    `deleted_addresses`) and removes the stored events they name.
//! 2. Events that a tombstone names are not stored ([`Prepared::blocked`]).
//! 3. Of the versions of one address, the newest in the batch ([`newest_per_address`])
//!    is offered to `replaceable_heads` with a conditional upsert; only a version that
//!    becomes the head is stored (unless a tombstone names it), and the older version
//!    it replaces is removed. A deleted version is offered too, so that an older one
//!    arriving later does not come back: what is kept never depends on arrival order.
//! 4. The rest is inserted (`ON CONFLICT DO NOTHING` on the id).
//! 5. What removed events had counted is queued in `retractions` ([`retractions`]),
//!    for the aggregator's flush to subtract.
//! 6. The inserted and removed events' ids are added to and taken from the
//!    `fingerprints` of their second and kind ([`Deltas`]), and so are those of the
//!    provenance rows written and removed, under their relay; last, so that the rows
//!    two writers share stay locked only until the commit.

use std::collections::{BTreeMap, HashMap, HashSet};

use bitcoin::hex::FromHex;
use nostr_sdk::Event;

use super::models::{EventRow, FingerprintRow, NewEvent, NewEventRelay, NewHead, NewRetraction};
use super::Sighting;

use crate::nostr::fingerprint::IdSum;
use crate::nostr::{self, aggregate, Deletion};

/// A batch, ready for the steps above.
pub(crate) struct Prepared {
    /// One row per event of the batch, in its order.
    pub rows: Vec<NewEvent>,
    /// `(author, what it deletes)` of each deletion request in the batch.
    pub deletions: Vec<(String, Deletion)>,
}

/// What a batch did besides storing its new rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removals {
    /// Versions not stored, or removed, because a newer version of their address is kept.
    pub superseded: u64,
    /// Events not stored, or removed, because their author deleted them.
    pub deleted: u64,
    /// Removed events whose aggregate contributions now wait in `retractions`.
    pub retractions: u64,
    /// Events of the batch the rules kept out (counted in `superseded` or `deleted`
    /// too): with the new rows, the rest of the batch was stored already.
    pub kept_out: u64,
    /// Ids deletions named beyond [`UNSEEN_TOMBSTONES_PER_DELETION`]: not recorded.
    pub tombstones_dropped: u64,
}

/// Most tombstones one deletion request records for ids whose event is not stored
/// when it arrives (the ones it removed are always recorded). A deletion may name
/// `limits.max_tags` ids, any of them made up; the rest are counted, not recorded.
pub const UNSEEN_TOMBSTONES_PER_DELETION: usize = 1_000;

/// The tombstones a deletion naming `ids` records once it removed the events of
/// `removed` (ids): `(id, seen)` for each removed id, and for the first
/// [`UNSEEN_TOMBSTONES_PER_DELETION`] others (`seen` false); and how many it drops.
pub(crate) fn tombstones<'a>(
    ids: &'a [String],
    removed: &HashSet<&str>,
) -> (Vec<(&'a str, bool)>, u64) {
    let mut unseen = 0;
    let mut dropped = 0;
    let mut kept = Vec::with_capacity(ids.len());
    for id in ids {
        let seen = removed.contains(id.as_str());
        if !seen {
            if unseen == UNSEEN_TOMBSTONES_PER_DELETION {
                dropped += 1;
                continue;
            }
            unseen += 1;
        }
        kept.push((id.as_str(), seen));
    }
    (kept, dropped)
}

/// The `event_relays` rows of `sightings`, each with its event's row if stored: one
/// per event and relay, at the earliest time the sightings give, in row order.
pub(crate) fn sources<'a>(
    sightings: impl Iterator<Item = (&'a Sighting, Option<i64>)>,
) -> Vec<NewEventRelay> {
    let mut first: BTreeMap<(i64, i32), i64> = BTreeMap::new();
    for (s, seq) in sightings {
        let Some(seq) = seq else { continue };
        if s.relay <= 0 {
            continue;
        }
        first
            .entry((seq, s.relay))
            .and_modify(|at| *at = (*at).min(s.at))
            .or_insert(s.at);
    }
    first
        .into_iter()
        .map(|((event_seq, relay_id), first_seen)| NewEventRelay {
            event_seq,
            relay_id,
            first_seen,
        })
        .collect()
}

impl Prepared {
    pub fn new(batch: &[Event], first_seen: i64) -> Self {
        Self {
            rows: batch
                .iter()
                .map(|e| NewEvent::from_event(e, first_seen))
                .collect(),
            deletions: batch
                .iter()
                .filter_map(|e| nostr::deletion(e).map(|d| (nostr::hex(e.pubkey.as_bytes()), d)))
                .collect(),
        }
    }

    /// Ids of the batch, for the tombstone lookup.
    pub fn ids(&self) -> Vec<String> {
        self.rows.iter().map(|r| r.id.clone()).collect()
    }

    /// Addresses of the batch, for the tombstone lookup.
    pub fn addresses(&self) -> Vec<String> {
        let set: HashSet<&String> = self
            .rows
            .iter()
            .filter_map(|r| r.address.as_ref())
            .collect();
        set.into_iter().cloned().collect()
    }

    /// Step 2: per row, whether it is still to be stored once the tombstones found
    /// (`(id, author)` of `deleted_events`, `(address, until)` of `deleted_addresses`)
    /// keep theirs out; those count as deleted.
    pub fn keep(
        &self,
        ids: &[(String, String)],
        addresses: &[(String, i64)],
        removals: &mut Removals,
    ) -> Vec<bool> {
        let keep: Vec<bool> = self.blocked(ids, addresses).iter().map(|b| !b).collect();
        let blocked = keep.iter().filter(|k| !**k).count() as u64;
        removals.deleted += blocked;
        removals.kept_out += blocked;
        keep
    }

    /// Step 3, before the database: the rows offered to `replaceable_heads`, the
    /// batch's newest version of each address in address order (a deleted version is
    /// offered too: it still replaces older ones). A kept row that loses within the
    /// batch is superseded.
    pub fn offers(&self, keep: &mut [bool], removals: &mut Removals) -> Vec<usize> {
        let offered: Vec<usize> = newest_per_address(&self.rows).into_values().collect();
        let mut best = vec![false; self.rows.len()];
        offered.iter().for_each(|i| best[*i] = true);
        for (i, row) in self.rows.iter().enumerate() {
            if keep[i] && row.address.is_some() && !best[i] {
                keep[i] = false;
                removals.superseded += 1;
                removals.kept_out += 1;
            }
        }
        offered
    }

    /// The head rows of `offered`.
    pub fn heads(&self, offered: &[usize]) -> Vec<NewHead<'_>> {
        offered
            .iter()
            .map(|i| {
                let row = &self.rows[*i];
                NewHead {
                    address: row.address.as_deref().unwrap_or_default(),
                    created_at: row.created_at,
                    id: &row.id,
                }
            })
            .collect()
    }

    /// Step 3, after the upsert: `(address, id)` of the offers that became heads (their
    /// older versions are to be removed); an offer that lost is superseded.
    pub fn winners(
        &self,
        offered: &[usize],
        won: &HashSet<String>,
        keep: &mut [bool],
        removals: &mut Removals,
    ) -> Vec<(&str, &str)> {
        let mut winners = Vec::new();
        for &i in offered {
            let row = &self.rows[i];
            let address = row.address.as_deref().unwrap_or_default();
            if won.contains(address) {
                winners.push((address, row.id.as_str()));
            } else if keep[i] {
                keep[i] = false;
                removals.superseded += 1;
                removals.kept_out += 1;
            }
        }
        winners
    }

    /// Step 4: the rows to insert, moved out (nothing needs them afterwards).
    pub fn take_kept(&mut self, keep: &[bool]) -> Vec<NewEvent> {
        std::mem::take(&mut self.rows)
            .into_iter()
            .zip(keep)
            .filter_map(|(r, k)| k.then_some(r))
            .collect()
    }

    /// Which rows the tombstones found keep out. A deletion request is never deleted
    /// (NIP-09: deleting one has no effect).
    fn blocked(&self, ids: &[(String, String)], addresses: &[(String, i64)]) -> Vec<bool> {
        let ids: HashSet<(&str, &str)> =
            ids.iter().map(|(i, p)| (i.as_str(), p.as_str())).collect();
        let addresses: HashMap<&str, i64> =
            addresses.iter().map(|(a, u)| (a.as_str(), *u)).collect();
        self.rows
            .iter()
            .map(|r| {
                r.kind != 5
                    && (ids.contains(&(r.id.as_str(), r.pubkey.as_str()))
                        || r.address
                            .as_deref()
                            .and_then(|a| addresses.get(a))
                            .is_some_and(|until| r.created_at <= *until))
            })
            .collect()
    }
}

/// The index of the version that wins each address within the batch (NIP-01:
/// newest, then lowest id), ordered by address so that concurrent transactions take
/// the heads' row locks in one order.
fn newest_per_address(rows: &[NewEvent]) -> BTreeMap<String, usize> {
    let mut best: BTreeMap<String, usize> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let Some(address) = &row.address else {
            continue;
        };
        best.entry(address.clone())
            .and_modify(|b| {
                let held = &rows[*b];
                if nostr::replaces((row.created_at, &row.id), (held.created_at, &held.id)) {
                    *b = i;
                }
            })
            .or_insert(i);
    }
    best
}

/// The changes a write makes to `fingerprints`: per relay (0: every stored event; a
/// relay's id: the stored events it delivered), second and kind, the count and id sum
/// of what came less what went.
#[derive(Debug, Default)]
pub(crate) struct Deltas(BTreeMap<(i32, i64, i32), IdSum>);

impl Deltas {
    /// Counts the event `(created_at, kind, id)` in (`add`) or out of `relay`'s rows.
    pub(crate) fn count(&mut self, relay: i32, (at, kind, id): (i64, i32, &[u8; 32]), add: bool) {
        let sum = self.0.entry((relay, at, kind)).or_default();
        if add {
            sum.add(&IdSum::of(id));
        } else {
            sum.sub(&IdSum::of(id));
        }
    }

    /// As [`Deltas::count`], the id as stored (hex).
    pub(crate) fn count_hex(&mut self, relay: i32, (at, kind, id): (i64, i32, &str), add: bool) {
        match <[u8; 32]>::from_hex(id) {
            Ok(bytes) => self.count(relay, (at, kind, &bytes), add),
            // Stored ids are hex of 32 bytes; another would be in no fingerprint.
            Err(_) => tracing::error!(%id, "stored event id is not 32 bytes of hex"),
        }
    }

    /// One row per relay, second and kind, in key order (two writers lock shared rows
    /// in the same order), none that changes nothing.
    pub(crate) fn rows(self) -> Vec<FingerprintRow> {
        self.0
            .into_iter()
            .filter(|(_, sum)| !sum.is_zero())
            .map(|((relay, at, kind), sum)| FingerprintRow::new(relay, at, kind, &sum))
            .collect()
    }
}

/// What removed rows had counted, to be subtracted: rows whose contribution was
/// applied (`aggregated`) and counts toward something. A row not yet aggregated needs
/// nothing: its pending contribution can no longer be claimed. A zap receipt counted
/// only if it is among `counted_zaps` (the ids `zap_counted` held): one judged to
/// count nothing retracts nothing.
pub(crate) fn retractions(
    removed: Vec<(bool, EventRow)>,
    counted_zaps: &HashSet<String>,
) -> Vec<NewRetraction> {
    let mut out = Vec::new();
    for (aggregated, row) in removed {
        if !aggregated {
            continue;
        }
        let id = row.id.clone();
        let zapped = counted_zaps.contains(&id);
        match row.into_event() {
            Ok(event) => out.extend(
                if zapped {
                    crate::nostr::zap::verdict(&event)
                        .ok()
                        .map(|z| aggregate::zap_contribution(&z))
                } else {
                    aggregate::contribution(&event)
                }
                .map(|c| NewRetraction::new(c.target, &c.delta.negated())),
            ),
            // Rows are written from verified events, so this cannot happen; were it to,
            // failing the batch would only fail it again forever.
            Err(e) => {
                tracing::error!(%id, error = %e, "removed row does not parse; what it counted stays")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::{EventBuilder, Keys, Kind, Tag, Timestamp};

    fn version(keys: &Keys, kind: u16, d: &str, at: u64) -> Event {
        EventBuilder::new(Kind::from(kind), format!("{at}"))
            .tag(Tag::parse(["d", d]).unwrap())
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(keys)
            .unwrap()
    }

    #[test]
    fn the_newest_version_of_each_address_wins_in_a_batch() {
        let (a, b) = (Keys::generate(), Keys::generate());
        let batch = vec![
            version(&a, 0, "", 10),
            version(&a, 0, "", 30),
            version(&a, 0, "", 20),
            version(&b, 0, "", 5),
            version(&a, 30_023, "x", 7),
            version(&a, 30_023, "y", 8),
            version(&a, 1, "", 99),
        ];
        let p = Prepared::new(&batch, 0);
        let best = newest_per_address(&p.rows);
        let mut winners: Vec<usize> = best.values().copied().collect();
        winners.sort();
        assert_eq!(winners, vec![1, 3, 4, 5]);
        // On equal `created_at`, the lower id.
        let tie = vec![version(&a, 0, "", 10), version(&a, 0, "x", 10)];
        let p = Prepared::new(&tie, 0);
        let lower = usize::from(p.rows[1].id < p.rows[0].id);
        assert_eq!(
            newest_per_address(&p.rows)
                .values()
                .copied()
                .collect::<Vec<_>>(),
            vec![lower]
        );
    }

    #[test]
    fn tombstones_block_their_authors_events_only() {
        let (a, b) = (Keys::generate(), Keys::generate());
        let note = EventBuilder::text_note("n").sign_with_keys(&a).unwrap();
        let deletion = EventBuilder::new(Kind::EventDeletion, "")
            .tag(Tag::parse(["e", &note.id.to_hex()]).unwrap())
            .sign_with_keys(&a)
            .unwrap();
        let batch = vec![
            note.clone(),
            version(&a, 30_023, "x", 7),
            version(&a, 30_023, "x", 9),
            deletion.clone(),
        ];
        let p = Prepared::new(&batch, 0);
        assert_eq!(p.deletions.len(), 1);
        let address = p.rows[1].address.clone().unwrap();
        let by_author = vec![(note.id.to_hex(), a.public_key().to_hex())];
        let by_other = vec![(note.id.to_hex(), b.public_key().to_hex())];
        let up_to_8 = vec![(address, 8)];
        assert_eq!(
            p.blocked(&by_author, &up_to_8),
            vec![true, true, false, false]
        );
        assert_eq!(p.blocked(&by_other, &[]), vec![false; 4]);
        // A deletion request is never blocked, even when a tombstone names it.
        let self_named = vec![(deletion.id.to_hex(), a.public_key().to_hex())];
        assert_eq!(p.blocked(&self_named, &[]), vec![false; 4]);
    }

    /// What a deletion records: every id whose event it removed, and the first
    /// `UNSEEN_TOMBSTONES_PER_DELETION` of the others, in the order of `ids` (sorted by
    /// `nostr::deletion`: the lowest ids, however the tags were ordered).
    #[test]
    fn tombstones_for_unseen_ids_are_bounded_per_deletion() {
        let cap = UNSEEN_TOMBSTONES_PER_DELETION;
        let ids = |n: usize| (0..n).map(|i| format!("{i:064x}")).collect::<Vec<_>>();
        // (ids named, of which removed, tombstones recorded, unseen among them, dropped)
        let cases: Vec<(usize, Vec<usize>, usize, usize, u64)> = vec![
            (0, vec![], 0, 0, 0),
            (3, vec![1], 3, 2, 0),
            (cap, vec![], cap, cap, 0),
            (cap + 1, vec![], cap, cap, 1),
            (2_000, vec![], cap, cap, (2_000 - cap) as u64),
            // Removed ids are recorded however many come before them.
            (
                2_000,
                vec![0, 1_999],
                cap + 2,
                cap,
                (2_000 - cap - 2) as u64,
            ),
        ];
        for (n, removed, recorded, unseen, dropped) in cases {
            let named = ids(n);
            let gone: HashSet<&str> = removed.iter().map(|i| named[*i].as_str()).collect();
            let (kept, lost) = tombstones(&named, &gone);
            assert_eq!(kept.len(), recorded, "{n} named, {removed:?} removed");
            assert_eq!(kept.iter().filter(|(_, seen)| !seen).count(), unseen);
            assert_eq!(lost, dropped);
            for i in &removed {
                assert!(kept.contains(&(named[*i].as_str(), true)));
            }
            // The unseen kept are the first ones named.
            let first: Vec<&str> = named
                .iter()
                .map(String::as_str)
                .filter(|id| !gone.contains(id))
                .take(unseen)
                .collect();
            let kept_unseen: Vec<&str> =
                kept.iter().filter(|(_, s)| !s).map(|(id, _)| *id).collect();
            assert_eq!(kept_unseen, first);
        }
    }
}

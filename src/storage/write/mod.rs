//! The write of one batch, step by step, for both backends: [`write`] runs the steps
//! of `batch` (module docs there) inside the caller's transaction, and each backend
//! says only how a step is asked of its database ([`Steps`]: `postgres.rs`,
//! `sqlite.rs` here).

use std::collections::{HashMap, HashSet};

use diesel::QueryResult;

pub(crate) mod postgres;
pub(crate) mod sqlite;

use super::batch::{retractions, sources, tombstones, Deltas, Prepared, Removals};
use super::models::{
    EventRow, FingerprintRow, NewEvent, NewEventRelay, NewHead, NewRetraction, NewTag,
};
use super::Purged;
use super::Sighting;
use crate::nostr::Deletion;

/// A stored event a step removed: whether its contributions were applied, its row
/// (`seq`) and what it was.
pub(crate) type Removed = (bool, i64, EventRow);

/// The queries of the steps, as one backend asks them, on a connection inside a
/// transaction. Each takes at most [`Steps::ROWS`] rows.
#[allow(async_fn_in_trait)] // Used with concrete backends only, never as `dyn`.
pub(crate) trait Steps {
    /// Rows per statement: what the backend's parameter limit and buffers allow.
    const ROWS: usize;

    /// Removes the stored events `author`'s `deletion` names (ids of the author's,
    /// versions of the addresses up to `until`) and records its address tombstones.
    async fn delete(&mut self, author: &str, deletion: &Deletion) -> QueryResult<Vec<Removed>>;

    /// Records `author`'s tombstones of `(id, seen)`: whether the id's event was stored.
    async fn tombstone_ids(&mut self, author: &str, ids: &[(&str, bool)]) -> QueryResult<()>;

    /// `(id, author)` of the tombstones naming any of `ids`.
    async fn tombstoned_ids(&mut self, ids: &[String]) -> QueryResult<Vec<(String, String)>>;

    /// `(address, until)` of the tombstones naming any of `addresses`.
    async fn tombstoned_addresses(
        &mut self,
        addresses: &[String],
    ) -> QueryResult<Vec<(String, i64)>>;

    /// Offers each version as the head of its address; returns the addresses whose
    /// head it became (newer, or as new with the lower id).
    async fn offer_heads(&mut self, offers: &[NewHead<'_>]) -> QueryResult<HashSet<String>>;

    /// Removes the stored versions of each `(address, id)` other than `id`.
    async fn remove_superseded(&mut self, heads: &[(&str, &str)]) -> QueryResult<Vec<Removed>>;

    /// Inserts the rows whose id is not stored yet; returns `(seq, id)` of those.
    async fn insert_events(&mut self, rows: &[NewEvent]) -> QueryResult<Vec<(i64, String)>>;

    async fn insert_tags(&mut self, tags: &[NewTag]) -> QueryResult<()>;

    async fn queue_retractions(&mut self, rows: &[NewRetraction]) -> QueryResult<()>;

    /// Takes the `zap_counted` rows of `ids`; returns the ids it took.
    async fn uncount_zaps(&mut self, ids: &[String]) -> QueryResult<Vec<String>>;

    /// Removes the events expired at `now`.
    async fn expire(&mut self, now: i64) -> QueryResult<Vec<Removed>>;

    /// Locks the sweep's row; returns its `(swept_to, unseen)` and the database's time.
    async fn claim_sweep(&mut self) -> QueryResult<(i64, i64, i64)>;

    /// Removes the events named by the tombstones added since `from`.
    async fn tombstoned_since(&mut self, from: i64) -> QueryResult<Vec<Removed>>;

    /// How many tombstones for unseen ids were added in `[from, to)`.
    async fn count_unseen(&mut self, from: i64, to: i64) -> QueryResult<i64>;

    /// Removes the `n` oldest tombstones for unseen ids added before `before`.
    async fn evict_unseen(&mut self, before: i64, n: i64) -> QueryResult<u64>;

    async fn save_sweep(&mut self, swept_to: i64, unseen: i64) -> QueryResult<()>;

    /// Adds each row's count and limbs to those of its relay, second and kind.
    async fn add_fingerprints(&mut self, rows: &[FingerprintRow]) -> QueryResult<()>;

    /// `(id, seq, created_at, kind)` of those of `ids` that are stored.
    async fn seqs_of(&mut self, ids: &[String]) -> QueryResult<Vec<(String, i64, i64, i32)>>;

    /// Records deliveries (provenance); one already recorded keeps its first time.
    /// Returns `(event_seq, relay_id)` of the rows it added.
    async fn insert_sources(&mut self, rows: &[NewEventRelay]) -> QueryResult<Vec<(i64, i32)>>;

    /// Those of the rows `seqs` that are stored.
    async fn stored_seqs(&mut self, seqs: &[i64]) -> QueryResult<Vec<i64>>;

    /// Removes the provenance of the removed rows `seqs`; returns `(event_seq,
    /// relay_id)` of the rows it removed.
    async fn forget_sources(&mut self, seqs: &[i64]) -> QueryResult<Vec<(i64, i32)>>;
}

/// Implements [`Steps`] for a backend's `$steps` (a connection in a transaction): the
/// queries are written once, and run awaited on an async connection (`run: [await]`)
/// or at once on a sync one (`run: []`); `now` is the backend's SQL for the database's
/// clock in unix seconds (the tombstones' `added_at` default). Only `offer_heads` and
/// `add_fingerprints` are the backend's own (PostgreSQL upserts many rows per
/// statement, SQLite one).
macro_rules! impl_steps {
    ($steps:ident, rows: $rows:expr, now: $now:expr, run: [$($aw:tt)?], $($offer:tt)*) => {
        impl Steps for $steps<'_> {
            const ROWS: usize = $rows;

            async fn delete(&mut self, author: &str, d: &Deletion) -> QueryResult<Vec<Removed>> {
                let conn = &mut *self.0;
                let mut gone: Vec<Removed> = diesel::delete(
                    events::table
                        .filter(events::id.eq_any(&d.ids))
                        .filter(events::pubkey.eq(author))
                        .filter(events::kind.ne(5)),
                )
                .returning((events::aggregated, events::seq, EventRow::as_select()))
                .get_results(&mut *conn)$(.$aw)??;
                for address in &d.addresses {
                    let upsert = diesel::insert_into(deleted_addresses::table)
                        .values((
                            deleted_addresses::address.eq(address),
                            deleted_addresses::until.eq(d.until),
                        ))
                        .on_conflict(deleted_addresses::address)
                        .do_update()
                        .set((
                            deleted_addresses::until.eq(excluded(deleted_addresses::until)),
                            deleted_addresses::added_at.eq(excluded(deleted_addresses::added_at)),
                        ));
                    diesel::query_dsl::methods::FilterDsl::filter(
                        upsert,
                        deleted_addresses::until.lt(excluded(deleted_addresses::until)),
                    )
                    .execute(&mut *conn)$(.$aw)??;
                    gone.extend(
                        diesel::delete(
                            events::table
                                .filter(events::address.eq(address))
                                .filter(events::created_at.le(d.until)),
                        )
                        .returning((events::aggregated, events::seq, EventRow::as_select()))
                        .get_results::<Removed>(&mut *conn)$(.$aw)??,
                    );
                }
                Ok(gone)
            }

            async fn tombstone_ids(&mut self, author: &str, ids: &[(&str, bool)]) -> QueryResult<()> {
                let rows: Vec<_> = ids
                    .iter()
                    .map(|(id, seen)| {
                        (
                            deleted_events::id.eq(*id),
                            deleted_events::pubkey.eq(author),
                            deleted_events::seen.eq(*seen),
                        )
                    })
                    .collect();
                diesel::insert_into(deleted_events::table)
                    .values(&rows)
                    .on_conflict_do_nothing()
                    .execute(self.0)$(.$aw)?
                    .map(drop)
            }

            async fn tombstoned_ids(&mut self, ids: &[String]) -> QueryResult<Vec<(String, String)>> {
                deleted_events::table
                    .filter(deleted_events::id.eq_any(ids))
                    .select((deleted_events::id, deleted_events::pubkey))
                    .load(self.0)$(.$aw)?
            }

            async fn tombstoned_addresses(
                &mut self,
                addresses: &[String],
            ) -> QueryResult<Vec<(String, i64)>> {
                deleted_addresses::table
                    .filter(deleted_addresses::address.eq_any(addresses))
                    .select((deleted_addresses::address, deleted_addresses::until))
                    .load(self.0)$(.$aw)?
            }

            $($offer)*

            async fn remove_superseded(&mut self, heads: &[(&str, &str)]) -> QueryResult<Vec<Removed>> {
                let (addresses, ids): (Vec<&str>, Vec<&str>) = heads.iter().copied().unzip();
                diesel::delete(
                    events::table
                        .filter(events::address.eq_any(addresses))
                        .filter(events::id.ne_all(ids)),
                )
                .returning((events::aggregated, events::seq, EventRow::as_select()))
                .get_results(self.0)$(.$aw)?
            }

            async fn insert_events(&mut self, rows: &[NewEvent]) -> QueryResult<Vec<(i64, String)>> {
                diesel::insert_into(events::table)
                    .values(rows)
                    .on_conflict(events::id)
                    .do_nothing()
                    .returning((events::seq, events::id))
                    .get_results(self.0)$(.$aw)?
            }

            async fn seqs_of(&mut self, ids: &[String]) -> QueryResult<Vec<(String, i64, i64, i32)>> {
                events::table
                    .filter(events::id.eq_any(ids))
                    .select((events::id, events::seq, events::created_at, events::kind))
                    .load(self.0)$(.$aw)?
            }

            async fn insert_sources(&mut self, rows: &[NewEventRelay]) -> QueryResult<Vec<(i64, i32)>> {
                diesel::insert_into(event_relays::table)
                    .values(rows)
                    .on_conflict_do_nothing()
                    .returning((event_relays::event_seq, event_relays::relay_id))
                    .get_results(self.0)$(.$aw)?
            }

            async fn stored_seqs(&mut self, seqs: &[i64]) -> QueryResult<Vec<i64>> {
                events::table
                    .filter(events::seq.eq_any(seqs))
                    .select(events::seq)
                    .load(self.0)$(.$aw)?
            }

            async fn forget_sources(&mut self, seqs: &[i64]) -> QueryResult<Vec<(i64, i32)>> {
                diesel::delete(event_relays::table.filter(event_relays::event_seq.eq_any(seqs)))
                    .returning((event_relays::event_seq, event_relays::relay_id))
                    .get_results(self.0)$(.$aw)?
            }

            async fn insert_tags(&mut self, tags: &[NewTag]) -> QueryResult<()> {
                diesel::insert_into(event_tags::table)
                    .values(tags)
                    .on_conflict_do_nothing()
                    .execute(self.0)$(.$aw)?
                    .map(drop)
            }

            async fn queue_retractions(&mut self, rows: &[NewRetraction]) -> QueryResult<()> {
                diesel::insert_into(retractions::table)
                    .values(rows)
                    .execute(self.0)$(.$aw)?
                    .map(drop)
            }

            async fn uncount_zaps(&mut self, ids: &[String]) -> QueryResult<Vec<String>> {
                use $crate::storage::schema::zap_counted;
                diesel::delete(zap_counted::table.filter(zap_counted::id.eq_any(ids)))
                    .returning(zap_counted::id)
                    .get_results(self.0)$(.$aw)?
            }

            async fn expire(&mut self, now: i64) -> QueryResult<Vec<Removed>> {
                diesel::delete(events::table.filter(events::expires_at.le(now)))
                    .returning((events::aggregated, events::seq, EventRow::as_select()))
                    .get_results(self.0)$(.$aw)?
            }

            async fn claim_sweep(&mut self) -> QueryResult<(i64, i64, i64)> {
                use $crate::storage::schema::tombstone_sweep as s;
                let (swept_to, unseen) = diesel::update(s::table)
                    .set(s::id.eq(s::id))
                    .returning((s::swept_to, s::unseen))
                    .get_result::<(i64, i64)>(&mut *self.0)$(.$aw)??;
                let now = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>($now))
                    .get_result::<i64>(&mut *self.0)$(.$aw)??;
                Ok((swept_to, unseen, now))
            }

            async fn tombstoned_since(&mut self, from: i64) -> QueryResult<Vec<Removed>> {
                diesel::delete(events::table.filter($crate::storage::queries::tombstoned_since!(from)))
                    .returning((events::aggregated, events::seq, EventRow::as_select()))
                    .get_results(self.0)$(.$aw)?
            }

            async fn count_unseen(&mut self, from: i64, to: i64) -> QueryResult<i64> {
                deleted_events::table
                    .filter(deleted_events::seen.eq(false))
                    .filter(deleted_events::added_at.ge(from))
                    .filter(deleted_events::added_at.lt(to))
                    .count()
                    .get_result(self.0)$(.$aw)?
            }

            async fn evict_unseen(&mut self, before: i64, n: i64) -> QueryResult<u64> {
                diesel::sql_query($crate::storage::queries::EVICT_UNSEEN)
                    .bind::<diesel::sql_types::BigInt, _>(before)
                    .bind::<diesel::sql_types::BigInt, _>(n)
                    .execute(self.0)$(.$aw)?
                    .map(|n| n as u64)
            }

            async fn save_sweep(&mut self, swept_to: i64, unseen: i64) -> QueryResult<()> {
                use $crate::storage::schema::tombstone_sweep as s;
                diesel::update(s::table)
                    .set((s::swept_to.eq(swept_to), s::unseen.eq(unseen)))
                    .execute(self.0)$(.$aw)?
                    .map(drop)
            }
        }
    };
}
pub(crate) use impl_steps;

/// Runs the steps of one batch; `tags` holds each event's tag rows, in batch order,
/// and `sightings` the deliveries to record (of the batch's events or of stored ones).
/// Returns, per event, its new row (`seq`) or `None`, and what else changed.
pub(crate) async fn write<S: Steps>(
    db: &mut S,
    prep: &mut Prepared,
    tags: Vec<Vec<NewTag>>,
    sightings: &[Sighting],
) -> QueryResult<(Vec<Option<i64>>, Removals)> {
    let ids = prep.ids();
    let mut removals = Removals::default();
    let mut removed: Vec<Removed> = Vec::new();
    // 1. Deletion requests: the stored events they name, and tombstones.
    for (author, deletion) in &prep.deletions {
        let gone = db.delete(author, deletion).await?;
        let removed_ids: HashSet<&str> = gone.iter().map(|(_, _, row)| row.id.as_str()).collect();
        let (tombstones, dropped) = tombstones(&deletion.ids, &removed_ids);
        for chunk in tombstones.chunks(S::ROWS) {
            db.tombstone_ids(author, chunk).await?;
        }
        removals.deleted += gone.len() as u64;
        removals.tombstones_dropped += dropped;
        removed.extend(gone);
    }
    // 2. Events that tombstones keep out.
    let mut named = Vec::new();
    for chunk in ids.chunks(S::ROWS) {
        named.extend(db.tombstoned_ids(chunk).await?);
    }
    let mut ended = Vec::new();
    for chunk in prep.addresses().chunks(S::ROWS) {
        ended.extend(db.tombstoned_addresses(chunk).await?);
    }
    let mut keep = prep.keep(&named, &ended, &mut removals);
    // 3. Versions: the batch's newest per address, offered to the heads.
    let offered = prep.offers(&mut keep, &mut removals);
    let offers = prep.heads(&offered);
    let mut won = HashSet::new();
    for chunk in offers.chunks(S::ROWS) {
        won.extend(db.offer_heads(chunk).await?);
    }
    let winners = prep.winners(&offered, &won, &mut keep, &mut removals);
    for chunk in winners.chunks(S::ROWS) {
        let gone = db.remove_superseded(chunk).await?;
        removals.superseded += gone.len() as u64;
        removed.extend(gone);
    }
    // 4. The rest, and the tags of what was new.
    let kept = prep.take_kept(&keep);
    let mut inserted = Vec::new();
    for chunk in kept.chunks(S::ROWS) {
        inserted.extend(db.insert_events(chunk).await?);
    }
    let by_id: HashMap<&str, i64> = inserted.iter().map(|(s, id)| (id.as_str(), *s)).collect();
    let mut deltas = Deltas::default();
    for row in kept
        .iter()
        .filter(|row| by_id.contains_key(row.id.as_str()))
    {
        deltas.count_hex(0, (row.created_at, row.kind, &row.id), true);
    }
    let rows: Vec<Option<i64>> = ids
        .iter()
        .map(|id| by_id.get(id.as_str()).copied())
        .collect();
    let mut new_tags = Vec::new();
    for (seq, mut event_tags) in rows.iter().zip(tags) {
        if let Some(seq) = seq {
            event_tags.iter_mut().for_each(|t| t.event_seq = *seq);
            new_tags.append(&mut event_tags);
        }
    }
    for chunk in new_tags.chunks(3 * S::ROWS) {
        db.insert_tags(chunk).await?;
    }
    // 4b. Provenance: the relays that delivered them, and copies of stored events.
    record_sources(db, sightings, &by_id, &mut deltas).await?;
    // 5. What the removed events had counted, and their provenance.
    removals.retractions = retract(db, removed, &mut deltas).await?;
    // 6. The fingerprints of what came and went.
    add_fingerprints(db, deltas).await?;
    Ok((rows, removals))
}

/// Records `sightings` as `event_relays` rows: the rows just inserted are known by
/// `inserted` (id to seq), the rest are looked up; a sighting of an event not stored
/// (kept out by the rules) records nothing. Each row added counts its event in its
/// relay's fingerprints.
async fn record_sources<S: Steps>(
    db: &mut S,
    sightings: &[Sighting],
    inserted: &HashMap<&str, i64>,
    deltas: &mut Deltas,
) -> QueryResult<()> {
    if sightings.is_empty() {
        return Ok(());
    }
    // Ids as text only for those whose row is not known.
    let hex: Vec<Option<String>> = sightings
        .iter()
        .map(|s| (s.seq <= 0).then(|| s.id.to_hex()))
        .collect();
    let mut seqs: HashMap<String, (i64, i64, i32)> = HashMap::new();
    let unknown: Vec<String> = hex
        .iter()
        .flatten()
        .filter(|id| !inserted.contains_key(id.as_str()))
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    for chunk in unknown.chunks(S::ROWS) {
        let found = db.seqs_of(chunk).await?;
        seqs.extend(
            found
                .into_iter()
                .map(|(id, seq, at, kind)| (id, (seq, at, kind))),
        );
    }
    // A row the dedup LRU remembers is taken as is (row numbers are never reused),
    // and checked below only where a provenance row was added for it. Each row with
    // the event's date and kind: the sighting's, or the database's where it was
    // looked up.
    let row_of = |s: &Sighting, id: &Option<String>| match id {
        None => Some((s.seq, s.created_at, s.kind)),
        Some(id) => inserted
            .get(id.as_str())
            .map(|seq| (*seq, s.created_at, s.kind))
            .or_else(|| seqs.get(id).copied()),
    };
    // Per row: the event's date, kind and id, for its relays' fingerprints.
    let mut events: HashMap<i64, (i64, i32, &[u8; 32])> = HashMap::new();
    let rows = sources(sightings.iter().zip(&hex).map(|(s, id)| {
        let row = row_of(s, id);
        if let Some((seq, at, kind)) = row {
            events.insert(seq, (at, kind, s.id.as_bytes()));
        }
        (s, row.map(|(seq, _, _)| seq))
    }));
    let mut added = Vec::new();
    for chunk in rows.chunks(S::ROWS) {
        added.extend(db.insert_sources(chunk).await?);
    }
    // A row the dedup LRU remembers (a sighting's own `seq`) may have been removed
    // since (a newer version, a deletion): checked only where a row was added for it,
    // and its provenance goes.
    let remembered: HashSet<i64> = sightings
        .iter()
        .filter(|s| s.seq > 0)
        .map(|s| s.seq)
        .collect();
    let mut gone: HashSet<i64> = added
        .iter()
        .map(|(seq, _)| *seq)
        .filter(|seq| remembered.contains(seq))
        .collect();
    let unsure: Vec<i64> = gone.iter().copied().collect();
    for chunk in unsure.chunks(S::ROWS) {
        for seq in db.stored_seqs(chunk).await? {
            gone.remove(&seq);
        }
    }
    if !gone.is_empty() {
        let gone: Vec<i64> = gone.iter().copied().collect();
        db.forget_sources(&gone).await?;
    }
    for (seq, relay) in added.into_iter().filter(|(seq, _)| !gone.contains(seq)) {
        if let Some(event) = events.get(&seq) {
            deltas.count(relay, *event, true);
        }
    }
    Ok(())
}

async fn add_fingerprints<S: Steps>(db: &mut S, deltas: Deltas) -> QueryResult<()> {
    for chunk in deltas.rows().chunks(S::ROWS) {
        db.add_fingerprints(chunk).await?;
    }
    Ok(())
}

/// Queues the retractions of `removed` rows (step 5, and the purge of expired and
/// tombstoned events): what each counted, a zap receipt only if `zap_counted` held it
/// (the row is taken); and removes their provenance, taking them out of the
/// fingerprints of every stored event (relay 0) and of the relays that delivered them.
/// Returns how many it queued.
pub(crate) async fn retract<S: Steps>(
    db: &mut S,
    removed: Vec<Removed>,
    deltas: &mut Deltas,
) -> QueryResult<u64> {
    let receipts: Vec<String> = removed
        .iter()
        .filter(|(aggregated, _, row)| *aggregated && row.kind == 9735)
        .map(|(_, _, row)| row.id.clone())
        .collect();
    let mut counted = HashSet::new();
    for chunk in receipts.chunks(S::ROWS) {
        counted.extend(db.uncount_zaps(chunk).await?);
    }
    // Out of relay 0's sums, and their provenance goes with them.
    for (_, _, row) in &removed {
        deltas.count_hex(0, (row.created_at, row.kind, &row.id), false);
    }
    let by_seq: HashMap<i64, &EventRow> = removed.iter().map(|(_, seq, row)| (*seq, row)).collect();
    let seqs: Vec<i64> = by_seq.keys().copied().collect();
    for chunk in seqs.chunks(S::ROWS) {
        for (seq, relay) in db.forget_sources(chunk).await? {
            if let Some(row) = by_seq.get(&seq) {
                deltas.count_hex(relay, (row.created_at, row.kind, &row.id), false);
            }
        }
    }
    let removed = removed.into_iter().map(|(a, _, row)| (a, row)).collect();
    let retractions = retractions(removed, &counted);
    for chunk in retractions.chunks(S::ROWS) {
        db.queue_retractions(chunk).await?;
    }
    Ok(retractions.len() as u64)
}

/// How long after the database time a tombstone is dated with it may still commit:
/// each sweep reads again the tombstones of this last stretch (PostgreSQL dates a row
/// with its transaction's start, and a writer's transaction may still be open).
pub(crate) const SWEEP_OVERLAP_SECS: i64 = 300;

/// Removes the events expired at `now` (none when 0), then sweeps the tombstones
/// added since the last sweep (any instance's): events they name that a concurrent
/// writer stored are removed, tombstones for unseen ids are counted, and the oldest
/// of those beyond `max_unseen` go. Retractions of the removed are queued.
pub(crate) async fn purge<S: Steps>(db: &mut S, now: i64, max_unseen: u64) -> QueryResult<Purged> {
    let expired = db.expire(now).await?;
    let (swept_to, unseen, db_now) = db.claim_sweep().await?;
    let tombstoned = db.tombstoned_since(swept_to).await?;
    let to = swept_to.max(db_now - SWEEP_OVERLAP_SECS);
    let mut unseen = unseen + db.count_unseen(swept_to, to).await?;
    let excess = unseen - i64::try_from(max_unseen).unwrap_or(i64::MAX);
    let evicted = if excess > 0 {
        db.evict_unseen(to, excess).await?
    } else {
        0
    };
    unseen -= evicted as i64;
    db.save_sweep(to, unseen).await?;
    let (expired_n, deleted) = (expired.len() as u64, tombstoned.len() as u64);
    let removed: Vec<Removed> = expired.into_iter().chain(tombstoned).collect();
    let mut deltas = Deltas::default();
    let retractions = retract(db, removed, &mut deltas).await?;
    add_fingerprints(db, deltas).await?;
    Ok(Purged {
        expired: expired_n,
        deleted,
        retractions,
        evicted,
        unseen: unseen.max(0) as u64,
    })
}

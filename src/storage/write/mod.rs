//! The write of one batch, step by step, for both backends: [`write`] runs the steps
//! of `batch` (module docs there) inside the caller's transaction, and each backend
//! says only how a step is asked of its database ([`Steps`]: `postgres.rs`,
//! `sqlite.rs` here).

use std::collections::{HashMap, HashSet};

use diesel::QueryResult;

pub(crate) mod postgres;
pub(crate) mod sqlite;

use super::batch::{retractions, Prepared, Removals};
use super::models::{EventRow, NewEvent, NewHead, NewRetraction, NewTag};
use crate::nostr::Deletion;

/// A stored event a step removed, and whether its contributions were applied.
pub(crate) type Removed = (bool, EventRow);

/// The queries of the steps, as one backend asks them, on a connection inside a
/// transaction. Each takes at most [`Steps::ROWS`] rows.
#[allow(async_fn_in_trait)] // Used with concrete backends only, never as `dyn`.
pub(crate) trait Steps {
    /// Rows per statement: what the backend's parameter limit and buffers allow.
    const ROWS: usize;

    /// Records `author`'s tombstones of `deletion` and removes the stored events
    /// they name (ids of the author's, versions of the addresses up to `until`).
    async fn delete(&mut self, author: &str, deletion: &Deletion) -> QueryResult<Vec<Removed>>;

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
}

/// Implements [`Steps`] for a backend's `$steps` (a connection in a transaction): the
/// queries are written once, and run awaited on an async connection (`run: [await]`)
/// or at once on a sync one (`run: []`). Only `offer_heads` is the backend's own
/// (PostgreSQL upserts many heads per statement, SQLite one).
macro_rules! impl_steps {
    ($steps:ident, rows: $rows:expr, run: [$($aw:tt)?], $($offer:tt)*) => {
        impl Steps for $steps<'_> {
            const ROWS: usize = $rows;

            async fn delete(&mut self, author: &str, d: &Deletion) -> QueryResult<Vec<Removed>> {
                let conn = &mut *self.0;
                let tombstones: Vec<_> = d
                    .ids
                    .iter()
                    .map(|id| (deleted_events::id.eq(id), deleted_events::pubkey.eq(author)))
                    .collect();
                diesel::insert_into(deleted_events::table)
                    .values(&tombstones)
                    .on_conflict_do_nothing()
                    .execute(&mut *conn)$(.$aw)??;
                let mut gone: Vec<Removed> = diesel::delete(
                    events::table
                        .filter(events::id.eq_any(&d.ids))
                        .filter(events::pubkey.eq(author))
                        .filter(events::kind.ne(5)),
                )
                .returning((events::aggregated, EventRow::as_select()))
                .get_results(&mut *conn)$(.$aw)??;
                for address in &d.addresses {
                    let upsert = diesel::insert_into(deleted_addresses::table)
                        .values((
                            deleted_addresses::address.eq(address),
                            deleted_addresses::until.eq(d.until),
                        ))
                        .on_conflict(deleted_addresses::address)
                        .do_update()
                        .set(deleted_addresses::until.eq(excluded(deleted_addresses::until)));
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
                        .returning((events::aggregated, EventRow::as_select()))
                        .get_results::<Removed>(&mut *conn)$(.$aw)??,
                    );
                }
                Ok(gone)
            }

            async fn tombstoned_ids(&mut self, ids: &[String]) -> QueryResult<Vec<(String, String)>> {
                deleted_events::table
                    .filter(deleted_events::id.eq_any(ids))
                    .load(self.0)$(.$aw)?
            }

            async fn tombstoned_addresses(
                &mut self,
                addresses: &[String],
            ) -> QueryResult<Vec<(String, i64)>> {
                deleted_addresses::table
                    .filter(deleted_addresses::address.eq_any(addresses))
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
                .returning((events::aggregated, EventRow::as_select()))
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
        }
    };
}
pub(crate) use impl_steps;

/// Runs the steps of one batch; `tags` holds each event's tag rows, in batch order.
/// Returns, per event, its new row (`seq`) or `None`, and what else changed.
pub(crate) async fn write<S: Steps>(
    db: &mut S,
    prep: &mut Prepared,
    tags: Vec<Vec<NewTag>>,
) -> QueryResult<(Vec<Option<i64>>, Removals)> {
    let ids = prep.ids();
    let mut removals = Removals::default();
    let mut removed: Vec<Removed> = Vec::new();
    // 1. Deletion requests: tombstones, and the stored events they name.
    for (author, deletion) in &prep.deletions {
        let gone = db.delete(author, deletion).await?;
        removals.deleted += gone.len() as u64;
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
    let rows = prep.take_kept(&keep);
    let mut inserted = Vec::new();
    for chunk in rows.chunks(S::ROWS) {
        inserted.extend(db.insert_events(chunk).await?);
    }
    let by_id: HashMap<&str, i64> = inserted.iter().map(|(s, id)| (id.as_str(), *s)).collect();
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
    // 5. What the removed events had counted.
    removals.retractions = retract(db, removed).await?;
    Ok((rows, removals))
}

/// Queues the retractions of `removed` rows (step 5, and the purge of expired and
/// tombstoned events): what each counted, a zap receipt only if `zap_counted` held it
/// (the row is taken). Returns how many it queued.
pub(crate) async fn retract<S: Steps>(db: &mut S, removed: Vec<Removed>) -> QueryResult<u64> {
    let receipts: Vec<String> = removed
        .iter()
        .filter(|(aggregated, row)| *aggregated && row.kind == 9735)
        .map(|(_, row)| row.id.clone())
        .collect();
    let mut counted = HashSet::new();
    for chunk in receipts.chunks(S::ROWS) {
        counted.extend(db.uncount_zaps(chunk).await?);
    }
    let retractions = retractions(removed, &counted);
    for chunk in retractions.chunks(S::ROWS) {
        db.queue_retractions(chunk).await?;
    }
    Ok(retractions.len() as u64)
}

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
use crate::nostr::zap::ZapPolicy;
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
}

/// Runs the steps of one batch; `tags` holds each event's tag rows, in batch order.
/// Returns, per event, its new row (`seq`) or `None`, and what else changed.
pub(crate) async fn write<S: Steps>(
    db: &mut S,
    prep: &mut Prepared,
    tags: Vec<Vec<NewTag>>,
    zaps: &ZapPolicy,
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
    let retractions = retractions(removed, zaps);
    for chunk in retractions.chunks(S::ROWS) {
        db.queue_retractions(chunk).await?;
    }
    removals.retractions = retractions.len() as u64;
    Ok((rows, removals))
}

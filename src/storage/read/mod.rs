//! Reads for the relay endpoint: NIP-01 filters answered in SQL over the events and
//! their indexed tags, through a pool of the endpoint's own whose queries are bounded
//! in time (PostgreSQL: `statement_timeout` on a read-only session; SQLite: a clock
//! the query checks on every row it visits).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nostr_sdk::Event;

mod postgres;
pub(super) mod sqlite;

use super::{Backend, EventStore, PgStore, SqliteStore, StoreError, StoreResult};

/// One NIP-01 filter as the database answers it: ids and authors in lowercase hex,
/// each tag filter as its letter and values. Empty lists and `None` select anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub ids: Vec<String>,
    pub authors: Vec<String>,
    pub kinds: Vec<i32>,
    pub tags: Vec<(String, Vec<String>)>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: i64,
}

/// A stored event as the endpoint sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub seq: i64,
    pub id: String,
    pub created_at: i64,
    /// The signed event, NIP-01 JSON.
    pub json: String,
}

/// The database as the relay endpoint reads it: the store's own queries (such as
/// `stats_of`), and these.
#[async_trait]
pub trait Reader: EventStore {
    /// The stored events `q` selects that have not expired at `now` (NIP-40), newest
    /// first (the lowest id first among equal times), at most `q.limit`.
    async fn select(&self, q: &Query, now: i64) -> StoreResult<Vec<Served>>;

    /// How many stored events `q` selects (its limit aside), unexpired at `now`.
    async fn count(&self, q: &Query, now: i64) -> StoreResult<i64>;

    /// `(id, created_at)` of at most `limit` events `q` selects (its limit aside), in
    /// no order: what a NIP-77 session compares (`EventStore::items` takes kinds,
    /// authors and times only).
    async fn items_of(&self, q: &Query, now: i64, limit: i64) -> StoreResult<Vec<(String, i64)>>;

    /// The events committed after `after_seq` (at most `limit`) and those at `seqs`
    /// (rows committed late, behind rows with higher numbers), in `seq` order.
    async fn committed(
        &self,
        after_seq: i64,
        seqs: &[i64],
        limit: i64,
    ) -> StoreResult<Vec<(i64, Event)>>;

    /// As `committed`, the rows' numbers only (an index-only read): how the feed
    /// keeps its place while no client listens.
    async fn committed_seqs(
        &self,
        after_seq: i64,
        seqs: &[i64],
        limit: i64,
    ) -> StoreResult<Vec<i64>>;

    /// Brings what the query planner knows of the tables up to date, where the
    /// database does not on its own (SQLite: `PRAGMA optimize`, bounded; without
    /// statistics it walks a kind's index for a filter that a tag selects).
    async fn refresh_statistics(&self) -> StoreResult<()>;

    /// The highest `seq` committed (0: none).
    async fn last_seq(&self) -> StoreResult<i64>;
}

/// Opens the endpoint's reader of the database `url` names: `connections` of its own,
/// each query stopped after `timeout`.
pub fn open_reader(
    url: &str,
    connections: usize,
    timeout: Duration,
) -> StoreResult<Arc<dyn Reader>> {
    match Backend::of_url(url) {
        Some(Backend::Postgres) => Ok(Arc::new(PgStore::open_reader(url, connections, timeout)?)),
        Some(Backend::Sqlite) => Ok(Arc::new(SqliteStore::open_reader(
            super::sqlite_path(url),
            connections,
            timeout,
        )?)),
        None => Err(StoreError::Pool(format!(
            "unsupported database url {:?}",
            super::migrate::redacted(url)
        ))),
    }
}

/// The events `$q` (a `&Query`) selects that have not expired at `$now`, as a boxed
/// query of either backend: each tag filter a semi-join on `event_tags`' (name, value)
/// index.
macro_rules! selected {
    ($q:expr, $now:expr) => {{
        use $crate::storage::schema::{event_tags, events};
        let q: &$crate::storage::read::Query = $q;
        let now: i64 = $now;
        let mut b = events::table
            .filter(
                events::expires_at
                    .is_null()
                    .or(events::expires_at.assume_not_null().gt(now)),
            )
            .into_boxed();
        if !q.ids.is_empty() {
            b = b.filter(events::id.eq_any(q.ids.clone()));
        }
        if !q.authors.is_empty() {
            b = b.filter(events::pubkey.eq_any(q.authors.clone()));
        }
        if !q.kinds.is_empty() {
            b = b.filter(events::kind.eq_any(q.kinds.clone()));
        }
        if let Some(since) = q.since {
            b = b.filter(events::created_at.ge(since));
        }
        if let Some(until) = q.until {
            b = b.filter(events::created_at.le(until));
        }
        for (name, values) in &q.tags {
            b = b.filter(
                events::seq.eq_any(
                    event_tags::table
                        .filter(event_tags::name.eq(name.clone()))
                        .filter(event_tags::value.eq_any(values.clone()))
                        .select(event_tags::event_seq),
                ),
            );
        }
        b
    }};
}
pub(crate) use selected;

/// The rows committed after `$after` and those at `$seqs`, in `seq` order, at most
/// `$limit` of the first and all of the second: one query, the primary key's index.
macro_rules! committed_rows {
    ($after:expr, $seqs:expr, $limit:expr) => {{
        use $crate::storage::schema::events;
        let seqs: &[i64] = $seqs;
        events::table
            .filter(events::seq.gt($after).or(events::seq.eq_any(seqs.to_vec())))
            .order(events::seq)
            .limit($limit + seqs.len() as i64)
    }};
}
pub(crate) use committed_rows;

/// `(seq, row)` in the order and limit `Reader::select` gives.
macro_rules! newest_first {
    ($b:expr, $limit:expr) => {{
        use $crate::storage::schema::events;
        $b.order((events::created_at.desc(), events::id.asc()))
            .limit($limit)
            .select((events::seq, $crate::storage::models::EventRow::as_select()))
    }};
}
pub(crate) use newest_first;

/// Rows as the endpoint sends them.
pub(crate) fn served(rows: Vec<(i64, super::models::EventRow)>) -> Vec<Served> {
    rows.into_iter()
        .map(|(seq, r)| Served {
            seq,
            json: r.json(),
            id: r.id,
            created_at: r.created_at,
        })
        .collect()
}

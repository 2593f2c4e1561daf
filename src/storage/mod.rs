//! Storage: one [`EventStore`] trait, a PostgreSQL and a SQLite implementation.
//!
//! Every write is a single transaction. `insert_events` reports which rows were new,
//! so that only they reach the aggregator and advance cursors; `apply_contributions`
//! claims events from the aggregation watermark and adds their deltas in the same
//! transaction, so each stored event is counted exactly once whatever crashes.

pub mod batch;
pub(crate) mod fingerprints;
pub mod migrate;
pub mod models;
mod postgres;
mod queries;
pub mod read;
pub mod registry;
pub mod schema;
pub(crate) mod sqlite;
pub mod tls;
mod write;
pub mod zaps;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use nostr_sdk::{Event, EventId};

use crate::nostr::aggregate::{Sourced, StatsDelta};
use crate::nostr::fingerprint::IdSum;
use crate::nostr::zap::ZapPolicy;
pub use registry::{Fence, Registry};
pub use zaps::ZapStore;

pub use batch::Removals;
pub use postgres::PgStore;
pub use read::{open_reader, Query, Reader, Served};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database connection failed: {0}")]
    Pool(String),
    #[error("the lease on {0} moved on to another instance")]
    LeaseLost(String),
    #[error("stored event {id} is malformed: {reason}")]
    Corrupt { id: String, reason: String },
}

impl StoreError {
    /// Whether the same write may well succeed as it is: PostgreSQL aborted it to break
    /// a deadlock or a serialization conflict with a concurrent transaction (two
    /// instances, or a removal beside the aggregator's claim). Such a batch is retried
    /// whole, never taken apart as if one of its events were unstorable.
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StoreError::Query(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => {
                true
            }
            StoreError::Query(Error::DatabaseError(_, info)) => {
                info.message().contains("deadlock detected")
            }
            _ => false,
        }
    }

    /// Whether the database refused the write for what it holds (a constraint, an
    /// encoding, a value or key too large): only such an error can make one event or
    /// one aggregate row unstorable. Resource and timeout errors (disk full,
    /// `statement_timeout`, `lock_timeout`, a busy or unreachable server) say nothing
    /// about the data: the write is retried as it is, however long that takes.
    pub fn is_about_data(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        /// Messages of PostgreSQL and SQLite errors about the server, not the data.
        const RESOURCE: [&str; 16] = [
            "statement timeout",
            "lock timeout",
            "no space left",
            "disk is full",
            "could not extend file",
            "could not write",
            "out of memory",
            "too many connections",
            "database is locked",
            "database table is locked",
            "disk i/o error",
            "read-only",
            "deadlock detected",
            "could not serialize",
            "terminating connection",
            "the database system is",
        ];
        match self {
            StoreError::Query(Error::DatabaseError(kind, info)) => match kind {
                DatabaseErrorKind::UniqueViolation
                | DatabaseErrorKind::ForeignKeyViolation
                | DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::RestrictViolation
                | DatabaseErrorKind::ExclusionViolation => true,
                DatabaseErrorKind::Unknown => {
                    let message = info.message().to_ascii_lowercase();
                    !RESOURCE.iter().any(|m| message.contains(m))
                }
                _ => false,
            },
            StoreError::Query(Error::SerializationError(_) | Error::DeserializationError(_)) => {
                true
            }
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One row of `relay_state`: how a relay's windows of one filter went.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable, serde::Serialize)]
pub struct RelayState {
    pub relay: String,
    pub filter: String,
    pub last_success: Option<i64>,
    pub last_failure: Option<i64>,
    pub consecutive_failures: i64,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

/// What the database says of itself, for `nostr-sync status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    /// `(relay, key, created_at)` of every cursor row (progress rows included).
    pub cursors: Vec<(String, String, i64)>,
    pub states: Vec<RelayState>,
    pub events: i64,
    /// Stored events whose aggregates are not yet applied.
    pub unaggregated: i64,
    /// Applied migrations, oldest first.
    pub migrations: Vec<String>,
}

/// What `EventStore::insert_events` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Per input event: its new row, or `None` (already stored, superseded, deleted).
    pub rows: Vec<Option<i64>>,
    pub removals: Removals,
}

/// What `EventStore::purge` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub expired: u64,
    /// Events a tombstone names, stored meanwhile by another instance.
    pub deleted: u64,
    pub retractions: u64,
    /// Tombstones for unseen ids removed, the oldest first, to keep them within the
    /// bound; and how many are left (those the sweeps have counted).
    pub evicted: u64,
    pub unseen: u64,
}

/// Which stored events a reconciliation (NIP-77) compares: those of a filter's kinds
/// and authors (empty: any) dated within `[since, until]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemQuery {
    pub kinds: Vec<i32>,
    pub authors: Vec<String>,
    pub since: i64,
    pub until: i64,
    /// Most items, in no order: callers want all of them, or to know there are more.
    /// (Ordering them would sort every match: a full scan and sort per call, which
    /// relays that connect and then fail, retrying, kept PostgreSQL busy with.)
    pub limit: i64,
}

/// Which backend a `database.url` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite://") || url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }
}

/// The SQLite file path of a `sqlite://path` URL.
pub fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

/// A relay's delivery of an event, for provenance (`event_relays`): the relay's id
/// (`relay_ids`; 0 or less records nothing), when it arrived (unix seconds), the
/// event's row if known (0: looked up by id, and its date and kind with it), and its
/// date and kind (for the relay's fingerprints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    pub id: EventId,
    pub relay: i32,
    pub at: i64,
    pub seq: i64,
    pub created_at: i64,
    pub kind: i32,
}

impl Sighting {
    /// `relay` delivered `event` (stored at row `seq`; 0: looked up) at `at`.
    pub fn of(event: &nostr_sdk::Event, relay: i32, at: i64, seq: i64) -> Self {
        Self {
            id: event.id,
            relay,
            at,
            seq,
            created_at: event.created_at.as_secs().try_into().unwrap_or(i64::MAX),
            kind: i32::from(event.kind.as_u16()),
        }
    }
}

/// What the database holds on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Footprint {
    pub bytes: i64,
    pub provenance_rows: i64,
}

/// One relay that delivered a stored event: its URL and when it first did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Source {
    pub relay: String,
    pub first_seen: i64,
}

impl From<(String, i64)> for Source {
    fn from((relay, first_seen): (String, i64)) -> Self {
        Self { relay, first_seen }
    }
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Writes `events` in one transaction under the rules of `batch` (versions,
    /// deletions), with the deliveries of `sightings` (of these events or of stored
    /// ones); returns, in input order, the row (`seq`) of each event that was stored,
    /// and what else changed.
    async fn write_batch(&self, events: &[Event], sightings: &[Sighting]) -> StoreResult<Written>;

    /// `write_batch` without provenance.
    async fn insert_events(&self, events: &[Event]) -> StoreResult<Written> {
        self.write_batch(events, &[]).await
    }

    /// The relays that delivered the stored event `id` (lowercase hex), first first.
    async fn sources(&self, id: &str) -> StoreResult<Vec<Source>>;

    /// Subtracts up to `limit` queued retractions from the aggregates, claiming them in
    /// the same transaction (so each is applied once); returns how many it applied.
    async fn apply_retractions(&self, limit: i64) -> StoreResult<usize>;

    /// Removes the events expired at `now` (NIP-40; none when 0), and any event a
    /// tombstone added since the last purge names that a concurrent writer stored (two
    /// instances); queues their retractions. Keeps at most `max_unseen` tombstones for
    /// ids never seen, removing the oldest.
    async fn purge(&self, now: i64, max_unseen: u64) -> StoreResult<Purged>;

    /// In one transaction: marks the source events of `items` as aggregated, skipping
    /// those already marked, and adds the deltas of the ones it marked. Returns how many
    /// contributions were applied.
    async fn apply_contributions(&self, items: &[Sourced]) -> StoreResult<usize>;

    /// Up to `limit` committed events after `after_seq` whose contributions are not yet
    /// applied (zap receipts waiting for their recipient's LNURL server among them).
    async fn unaggregated(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, Event)>>;

    /// The newest stored kind 0 of `pubkey`.
    async fn profile(&self, pubkey: &str) -> StoreResult<Option<Event>>;

    /// The stored NIP-65 relay lists of `authors` (hex; every author's when empty),
    /// at most `limit`, those stored last.
    async fn relay_lists(&self, authors: &[String], limit: i64) -> StoreResult<Vec<Event>>;

    /// Stored events after `after_seq` in arrival order, with their sequence numbers.
    async fn events_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, Event)>>;

    async fn count_events(&self) -> StoreResult<i64>;

    /// What the database holds on disk for this schema (tables, indexes, TOAST; the
    /// SQLite file's pages), and the provenance rows among it.
    async fn footprint(&self) -> StoreResult<Footprint>;

    /// Which of `ids` (lowercase hex) are stored: one indexed lookup per id, in one
    /// query per thousand.
    async fn stored_among(&self, ids: &[String]) -> StoreResult<Vec<String>>;

    /// Per span `[from, to)` of `created_at`: how many events of `kinds` (every kind
    /// when empty) are stored, and the sum of their ids, from `fingerprints`; of those
    /// `relay` delivered (`relay_ids`), or of all when 0.
    async fn fingerprint_sums(
        &self,
        relay: i32,
        kinds: &[i32],
        spans: &[(i64, i64)],
    ) -> StoreResult<Vec<IdSum>>;

    /// Per second within `[from, to)` holding events of `kinds` (every kind when
    /// empty; `relay`'s, or all when 0), in order, at most `limit`: their count and
    /// id sum.
    async fn fingerprint_seconds(
        &self,
        relay: i32,
        kinds: &[i32],
        from: i64,
        to: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, IdSum)>>;

    /// `(created_at, id)` of the stored events of `kinds` (every kind when empty)
    /// dated within any of `spans` (each `[from, to)`) that `relay` delivered (all
    /// when 0), found through the `fingerprints` rows of those seconds: each (second,
    /// kind) an index lookup.
    async fn ids_in_spans(
        &self,
        relay: i32,
        kinds: &[i32],
        spans: &[(i64, i64)],
    ) -> StoreResult<Vec<(i64, String)>>;

    /// Recounts `fingerprints` from the events and their provenance: `(rows
    /// recounted, rows that differ)`.
    /// With `repair`, rewrites the table from the recount when any differ (writers
    /// wait meanwhile).
    async fn check_fingerprints(&self, repair: bool) -> StoreResult<(u64, u64)>;

    /// `(seq, the first 32 hex digits of the id)` of up to `limit` stored events after
    /// `after_seq`, in `seq` order.
    async fn id_heads_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, String)>>;
    /// The aggregates of one event (`None`: nothing counts toward it).
    async fn stats_of(&self, event_id: &str) -> StoreResult<Option<StatsDelta>>;
    /// Cursors, relay states, counts and migrations; reads only.
    async fn overview(&self) -> StoreResult<Overview>;
    /// `(id, created_at)` of the stored events `q` selects, newest first.
    async fn items(&self, q: &ItemQuery) -> StoreResult<Vec<(String, i64)>>;

    /// Whether the database takes a write to `events` now: an update that changes
    /// nothing. It fails where inserts would fail for reasons other than their data
    /// (unreachable, restarting, locked by another writer).
    async fn probe_write(&self) -> StoreResult<()>;

    /// The whole stats table.
    async fn stats(&self) -> StoreResult<HashMap<String, StatsDelta>>;

    /// Replaces the stats table with `stats` (`check-aggregates --repair`, a recount of
    /// the stored events), and marks everything applied: no contribution waits, no
    /// retraction is queued. Zap receipts not judged yet are the exception: they stay
    /// with the zap judge, which the recount leaves them to.
    async fn replace_stats(&self, stats: &HashMap<String, StatsDelta>) -> StoreResult<()>;

    /// The same database, as the zap judge uses it.
    fn zap_store(&self) -> Arc<dyn ZapStore>;

    /// The same database, as the relay registry and the relays' sync state.
    fn registry(&self) -> Arc<dyn Registry>;
}

/// Opens the store that `url` names, with a pool of `max_connections`.
pub async fn open(url: &str, max_connections: usize) -> StoreResult<Arc<dyn EventStore>> {
    match Backend::of_url(url) {
        Some(Backend::Postgres) => Ok(Arc::new(PgStore::open(url, max_connections)?)),
        Some(Backend::Sqlite) => Ok(Arc::new(SqliteStore::open(
            sqlite_path(url),
            max_connections,
        )?)),
        None => Err(StoreError::Pool(format!(
            "unsupported database url {:?}: use postgres:// or sqlite://",
            migrate::redacted(url)
        ))),
    }
}

/// Ids per query of `EventStore::stored_among`.
pub(crate) const LOOKUPS_PER_QUERY: usize = 1_000;

/// Unix time now, in seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Recounts every aggregate from the stored events, paging through them and summing
/// as it goes: memory grows with the number of targets, not of events. Zap receipts
/// are judged by `zaps` against what the database holds of their targets and
/// servers, as if they arrived before the servers' last answers; one whose target was
/// removed since it was counted stays counted (`zap_counted`), as a reaction does.
pub async fn recount(
    store: &dyn EventStore,
    zaps: &ZapPolicy,
) -> StoreResult<HashMap<String, StatsDelta>> {
    let judge = store.zap_store();
    let mut sums: HashMap<String, StatsDelta> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.events_after(after, 5_000).await?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        let receipts: Vec<&Event> = page
            .iter()
            .map(|(_, e)| e)
            .filter(|e| crate::nostr::zap::holds_together(e))
            .collect();
        let facts = judge_facts(&*judge, receipts.iter().copied()).await?;
        let ids: Vec<String> = receipts.iter().map(|e| e.id.to_hex()).collect();
        let counted: std::collections::HashSet<String> =
            judge.zaps_counted(&ids).await?.into_iter().collect();
        let zapped = receipts.iter().filter_map(|e| {
            let zap = match facts.judge(zaps, e, 0) {
                // Counted while its target was stored: it stays counted.
                Err(crate::nostr::zap::ZapReject::AwaitingTarget)
                    if counted.contains(&e.id.to_hex()) =>
                {
                    crate::nostr::zap::verdict(e).ok()?
                }
                judged => judged.ok()?,
            };
            Some(crate::nostr::aggregate::zap_contribution(&zap))
        });
        for c in page
            .iter()
            .filter_map(|(_, e)| crate::nostr::aggregate::contribution(e))
            .chain(zapped)
        {
            sums.entry(c.target).or_default().add(&c.delta);
        }
    }
    Ok(sums)
}

/// What the database holds of the targets and recipients of `receipts` (those that
/// hold together).
pub async fn judge_facts<'a>(
    store: &dyn ZapStore,
    receipts: impl Iterator<Item = &'a Event>,
) -> StoreResult<zaps::Facts> {
    let mut targets = std::collections::BTreeSet::new();
    let mut recipients = std::collections::BTreeSet::new();
    for zap in receipts.filter_map(|e| crate::nostr::zap::verdict(e).ok()) {
        if let crate::nostr::zap::Target::Event(id) = zap.target {
            targets.insert(id);
        }
        recipients.insert(zap.recipient);
    }
    let targets: Vec<String> = targets.into_iter().collect();
    let recipients: Vec<String> = recipients.into_iter().collect();
    store.zap_facts(&targets, &recipients).await
}

#[cfg(test)]
mod tests {
    use super::StoreError;
    use diesel::result::{DatabaseErrorKind, Error};

    #[test]
    fn aborted_transactions_are_transient_and_refusals_are_not() {
        let db = |kind, message: &str| {
            StoreError::Query(Error::DatabaseError(kind, Box::new(message.to_owned())))
        };
        let cases = [
            (db(DatabaseErrorKind::Unknown, "deadlock detected"), true),
            (
                db(
                    DatabaseErrorKind::SerializationFailure,
                    "could not serialize",
                ),
                true,
            ),
            (db(DatabaseErrorKind::Unknown, "value too long"), false),
            (
                db(DatabaseErrorKind::UniqueViolation, "duplicate key"),
                false,
            ),
            (StoreError::Pool("refused".into()), false),
        ];
        for (error, transient) in cases {
            assert_eq!(error.is_transient(), transient, "{error}");
        }
    }

    #[test]
    fn only_errors_about_the_data_are_about_the_data() {
        let db = |kind, message: &str| {
            StoreError::Query(Error::DatabaseError(kind, Box::new(message.to_owned())))
        };
        let unknown = DatabaseErrorKind::Unknown;
        let cases = [
            (db(unknown, "index row size 8088 exceeds btree version 4 maximum 2704 for index \"event_stats_pkey\""), true),
            (db(unknown, "invalid byte sequence for encoding \"UTF8\": 0x00"), true),
            (db(unknown, "value too long for type character varying(64)"), true),
            (db(unknown, "string or blob too big"), true),
            (db(DatabaseErrorKind::UniqueViolation, "duplicate key"), true),
            (db(DatabaseErrorKind::CheckViolation, "check"), true),
            // A trigger of the operator's (SQLite reports no kind for it).
            (db(unknown, "poison refused"), true),
            (db(unknown, "could not extend file \"base/16384/2619\": No space left on device"), false),
            (db(unknown, "canceling statement due to statement timeout"), false),
            (db(unknown, "canceling statement due to lock timeout"), false),
            (db(unknown, "database or disk is full"), false),
            (db(unknown, "database is locked"), false),
            (db(unknown, "deadlock detected"), false),
            (db(DatabaseErrorKind::ClosedConnection, "connection closed"), false),
            (StoreError::Pool("timed out waiting for connection".into()), false),
        ];
        for (error, about_data) in cases {
            assert_eq!(error.is_about_data(), about_data, "{error}");
        }
    }
}

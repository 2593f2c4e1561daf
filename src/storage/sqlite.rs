//! SQLite, the embedded default: a deadpool of diesel-async `SyncConnectionWrapper`s.
//! Each operation runs as sync diesel inside one `spawn_blocking`, since every statement
//! sent through the async wrapper costs a thread hop of its own.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use async_trait::async_trait;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Bool;
use diesel::sqlite::Sqlite;
use diesel::SqliteConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::AsyncConnection;
use futures::executor::block_on;
use futures::FutureExt;
use nostr_sdk::Event;

use super::batch::Prepared;
use super::fingerprints;
use super::models::{tag_rows, EventRow, NewRetraction, StatsRow};
use super::queries::{claimed_deltas, relay_lists, rows_to_events, sources_of};
use super::registry::{Fence, Lease, NewRelay, Registry, RelayEntry, Round, ScoreRow};
use super::schema::{event_relays, event_stats, events, relay_cursors, relay_state, retractions};
use super::write::sqlite::{SqliteSteps, ROWS_PER_STATEMENT};
use super::write::{purge, write};
use super::zaps::{Facts, Receipt, Settlement, ZapServer, ZapStore};
use super::{
    now_secs, EventStore, Footprint, Purged, Sighting, Source, StoreError, StoreResult, Written,
};
use crate::nostr::aggregate::{Sourced, StatsDelta};
use crate::nostr::fingerprint::IdSum;

pub(crate) type Conn = SyncConnectionWrapper<SqliteConnection>;

/// Statements SQLite needs on every connection: WAL lets readers run beside the one
/// writer; `busy_timeout` makes pooled writers queue instead of failing. It comes
/// first, so that the WAL switch also waits for another process's transaction.
pub const PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

#[derive(Clone)]
pub struct SqliteStore {
    pub(super) pool: Pool<Conn>,
    /// Each query's time (the relay endpoint's reader): past it, a query that checks
    /// the clock (`read::sqlite::in_time`) fails. `None` for the writers.
    pub(super) query_timeout: Option<std::time::Duration>,
}

/// Claims the source rows of `items` not claimed yet and adds the contributions of
/// those it claimed, on a connection in a transaction (`EventStore::apply_contributions`,
/// and the zap judge's settlement). Returns the rows it claimed. SQLite takes no
/// multi-row upsert: one statement per stats row.
pub(crate) fn apply_in(
    conn: &mut SqliteConnection,
    items: &[Sourced],
) -> QueryResult<HashSet<i64>> {
    let sources: Vec<i64> = items.iter().map(|s| s.seq).collect();
    let mut claimed: HashSet<i64> = HashSet::new();
    for chunk in sources.chunks(ROWS_PER_STATEMENT) {
        let seqs: Vec<i64> = diesel::update(
            events::table
                .filter(events::seq.eq_any(chunk))
                .filter(events::aggregated.eq(false)),
        )
        .set(events::aggregated.eq(true))
        .returning(events::seq)
        .get_results(conn)?;
        claimed.extend(seqs);
    }
    for row in claimed_deltas(items, &claimed) {
        diesel::insert_into(event_stats::table)
            .values(&row)
            .on_conflict(event_stats::event_id)
            .do_update()
            .set(super::queries::add_excluded_stats!())
            .execute(conn)?;
    }
    Ok(claimed)
}

/// The zap judge's queries on a SQLite connection.
pub(crate) struct SqliteZaps<'c>(pub(crate) &'c mut SqliteConnection);

super::zaps::impl_zap_queries!(SqliteZaps, rows: ROWS_PER_STATEMENT, run: [], apply: apply_in);

/// The registry's queries on a SQLite connection. One instance holds every lease, and
/// the database lock orders writers: no locking clauses.
pub(crate) struct SqliteRegistry<'c>(pub(crate) &'c mut SqliteConnection);

super::registry::impl_registry_queries!(SqliteRegistry, run: [], claim: [], fence: []);

/// A pool of `max_connections` to the SQLite file at `path`, each set up with
/// [`PRAGMAS`].
pub(crate) fn pool(path: &str, max_connections: usize) -> StoreResult<Pool<Conn>> {
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        async move {
            let mut conn = Conn::establish(&url).await?;
            conn.spawn_blocking(|c| c.batch_execute(PRAGMAS))
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(path, config);
    Pool::builder(manager)
        .max_size(max_connections)
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))
}

impl SqliteStore {
    pub fn open(path: &str, max_connections: usize) -> StoreResult<Self> {
        Ok(Self {
            pool: pool(path, max_connections)?,
            query_timeout: None,
        })
    }

    pub(super) async fn run<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> QueryResult<R> + Send + 'static,
    {
        let mut conn: Object<Conn> = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let until = self.query_timeout.map(|t| Instant::now() + t);
        Ok(conn
            .spawn_blocking(move |c| {
                if let Some(until) = until {
                    bound(c, until)?;
                }
                f(c)
            })
            .await?)
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn write_batch(&self, batch: &[Event], sightings: &[Sighting]) -> StoreResult<Written> {
        let mut prep = Prepared::new(batch, now_secs());
        let tags = batch.iter().map(|e| tag_rows(0, e)).collect();
        let sightings = sightings.to_vec();
        let (rows, removals) = self
            .run(move |conn| {
                conn.immediate_transaction(|conn| {
                    // The SQLite steps never wait: the shared driver runs to its end
                    // at once on this blocking thread.
                    futures::executor::block_on(write(
                        &mut SqliteSteps(conn),
                        &mut prep,
                        tags,
                        &sightings,
                    ))
                })
            })
            .await?;
        Ok(Written { rows, removals })
    }

    async fn sources(&self, id: &str) -> StoreResult<Vec<Source>> {
        let id = id.to_owned();
        let rows = self
            .run(move |conn| sources_of!(&id).load::<(String, i64)>(conn))
            .await?;
        Ok(rows.into_iter().map(Source::from).collect())
    }

    async fn apply_retractions(&self, limit: i64) -> StoreResult<usize> {
        self.run(move |conn| {
            // Read first: an empty queue (the usual case) takes no write lock.
            let oldest: Vec<i64> = retractions::table
                .select(retractions::seq)
                .order(retractions::seq)
                .limit(limit)
                .load(conn)?;
            if oldest.is_empty() {
                return Ok(0);
            }
            conn.immediate_transaction(|conn| {
                let claimed: Vec<NewRetraction> =
                    diesel::delete(retractions::table.filter(retractions::seq.eq_any(oldest)))
                        .returning(NewRetraction::as_select())
                        .get_results(conn)?;
                let n = claimed.len();
                for row in super::queries::retraction_sums(claimed) {
                    super::queries::retract_stats!(row).execute(conn)?;
                }
                Ok(n)
            })
        })
        .await
    }

    async fn purge(&self, now: i64, max_unseen: u64) -> StoreResult<Purged> {
        self.run(move |conn| {
            // The SQLite steps never wait (see `insert_events`).
            conn.immediate_transaction(|conn| {
                block_on(purge(&mut SqliteSteps(conn), now, max_unseen))
            })
        })
        .await
    }

    async fn apply_contributions(&self, items: &[Sourced]) -> StoreResult<usize> {
        let items = items.to_vec();
        let claimed = self
            .run(move |conn| conn.immediate_transaction(|conn| apply_in(conn, &items)))
            .await?;
        Ok(claimed.len())
    }

    async fn unaggregated(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, Event)>> {
        let rows: Vec<(i64, EventRow)> = self
            .run(move |conn| {
                events::table
                    .filter(events::aggregated.eq(false))
                    .filter(events::seq.gt(after_seq))
                    .order(events::seq)
                    .limit(limit)
                    .select((events::seq, EventRow::as_select()))
                    .load(conn)
            })
            .await?;
        rows_to_events(rows)
    }

    async fn events_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, Event)>> {
        let rows: Vec<(i64, EventRow)> = self
            .run(move |conn| {
                events::table
                    .filter(events::seq.gt(after_seq))
                    .order(events::seq)
                    .limit(limit)
                    .select((events::seq, EventRow::as_select()))
                    .load(conn)
            })
            .await?;
        rows_to_events(rows)
    }

    async fn count_events(&self) -> StoreResult<i64> {
        self.run(|conn| events::table.count().get_result(conn))
            .await
    }

    async fn footprint(&self) -> StoreResult<Footprint> {
        self.run(|conn| {
            let bytes = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size())",
            ))
            .get_result(conn)?;
            let provenance_rows = event_relays::table.count().get_result(conn)?;
            Ok(Footprint {
                bytes,
                provenance_rows,
            })
        })
        .await
    }

    async fn stored_among(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        let ids = ids.to_vec();
        self.run(move |conn| {
            let mut found = Vec::new();
            for chunk in ids.chunks(super::LOOKUPS_PER_QUERY) {
                let held: Vec<String> = events::table
                    .filter(events::id.eq_any(chunk))
                    .select(events::id)
                    .load(conn)?;
                found.extend(held);
            }
            Ok(found)
        })
        .await
    }

    async fn fingerprint_sums(
        &self,
        relay: i32,
        kinds: &[i32],
        spans: &[(i64, i64)],
    ) -> StoreResult<Vec<IdSum>> {
        use diesel::sql_types::Text;
        let kinds = serde_json::to_string(kinds).unwrap_or_default();
        let spans = spans.to_vec();
        self.run(move |conn| {
            let mut sums = Vec::with_capacity(spans.len());
            for chunk in spans.chunks(fingerprints::SPANS_PER_QUERY) {
                let chunk = serde_json::to_string(chunk).unwrap_or_default();
                let rows: Vec<fingerprints::SpanSum> =
                    diesel::sql_query(fingerprints::SQLITE_SPAN_SUMS)
                        .bind::<Text, _>(chunk)
                        .bind::<Text, _>(&kinds)
                        .bind::<diesel::sql_types::Integer, _>(relay)
                        .load(conn)?;
                sums.extend(rows.iter().map(fingerprints::SpanSum::sum));
            }
            Ok(sums)
        })
        .await
    }

    async fn fingerprint_seconds(
        &self,
        relay: i32,
        kinds: &[i32],
        from: i64,
        to: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, IdSum)>> {
        use diesel::sql_types::{BigInt, Text};
        let kinds = serde_json::to_string(kinds).unwrap_or_default();
        self.run(move |conn| {
            let rows: Vec<fingerprints::SpanSum> = diesel::sql_query(fingerprints::SQLITE_SECONDS)
                .bind::<BigInt, _>(from)
                .bind::<BigInt, _>(to)
                .bind::<Text, _>(&kinds)
                .bind::<BigInt, _>(limit)
                .bind::<diesel::sql_types::Integer, _>(relay)
                .load(conn)?;
            Ok(rows.iter().map(|r| (r.i, r.sum())).collect())
        })
        .await
    }

    async fn ids_in_spans(
        &self,
        relay: i32,
        kinds: &[i32],
        spans: &[(i64, i64)],
    ) -> StoreResult<Vec<(i64, String)>> {
        use diesel::sql_types::Text;
        let kinds = serde_json::to_string(kinds).unwrap_or_default();
        let spans = spans.to_vec();
        self.run(move |conn| {
            let mut found = Vec::new();
            for chunk in spans.chunks(fingerprints::SPANS_PER_QUERY) {
                let chunk = serde_json::to_string(chunk).unwrap_or_default();
                let rows: Vec<fingerprints::Dated> =
                    diesel::sql_query(fingerprints::SQLITE_SPAN_IDS)
                        .bind::<Text, _>(chunk)
                        .bind::<Text, _>(&kinds)
                        .bind::<diesel::sql_types::Integer, _>(relay)
                        .load(conn)?;
                found.extend(rows.into_iter().map(|r| (r.created_at, r.id)));
            }
            Ok(found)
        })
        .await
    }

    async fn check_fingerprints(&self, repair: bool) -> StoreResult<(u64, u64)> {
        self.run(move |conn| {
            // One transaction: SQLite has one writer, and none writes meanwhile.
            conn.immediate_transaction(|conn| {
                let checked: fingerprints::Checked =
                    diesel::sql_query(fingerprints::SQLITE_CHECK).get_result(conn)?;
                if repair && checked.differing > 0 {
                    diesel::sql_query("DELETE FROM fingerprints").execute(conn)?;
                    diesel::sql_query(fingerprints::SQLITE_RECOUNT).execute(conn)?;
                }
                Ok((checked.recounted as u64, checked.differing as u64))
            })
        })
        .await
    }

    async fn id_heads_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, String)>> {
        self.run(move |conn| {
            events::table
                .filter(events::seq.gt(after_seq))
                .order(events::seq)
                .limit(limit)
                .select((events::seq, super::queries::id_head()))
                .load(conn)
        })
        .await
    }

    async fn probe_write(&self) -> StoreResult<()> {
        self.run(|conn| {
            diesel::sql_query(super::queries::PROBE_WRITE)
                .execute(conn)
                .map(drop)
        })
        .await
    }

    async fn stats(&self) -> StoreResult<HashMap<String, StatsDelta>> {
        let rows: Vec<StatsRow> = self
            .run(|conn| event_stats::table.select(StatsRow::as_select()).load(conn))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.event_id.clone(), r.delta()))
            .collect())
    }

    async fn replace_stats(&self, stats: &HashMap<String, StatsDelta>) -> StoreResult<()> {
        let rows: Vec<StatsRow> = stats
            .iter()
            .map(|(id, d)| StatsRow::new(id.clone(), d))
            .collect();
        self.run(move |conn| {
            conn.immediate_transaction(|conn| {
                diesel::delete(event_stats::table).execute(conn)?;
                // The recount holds every stored event and none removed: nothing is
                // left to add or to subtract.
                diesel::delete(retractions::table).execute(conn)?;
                // Zap receipts not judged yet stay with the zap actor (the recount
                // counts them only once judged).
                diesel::update(
                    events::table
                        .filter(events::aggregated.eq(false))
                        .filter(events::kind.ne(9735)),
                )
                .set(events::aggregated.eq(true))
                .execute(conn)?;
                for row in &rows {
                    diesel::insert_into(event_stats::table)
                        .values(row)
                        .execute(conn)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn items(&self, q: &super::ItemQuery) -> StoreResult<Vec<(String, i64)>> {
        let q = q.clone();
        self.run(move |conn| {
            let mut query = events::table
                .filter(events::created_at.between(q.since, q.until))
                .select((events::id, events::created_at))
                .limit(q.limit)
                .into_boxed();
            if !q.kinds.is_empty() {
                query = query.filter(events::kind.eq_any(q.kinds));
            }
            if !q.authors.is_empty() {
                query = query.filter(events::pubkey.eq_any(q.authors));
            }
            query.load(conn)
        })
        .await
    }

    async fn overview(&self) -> StoreResult<super::Overview> {
        self.run(|conn| {
            let cursors = relay_cursors::table
                .select((
                    relay_cursors::relay,
                    relay_cursors::filter,
                    relay_cursors::created_at,
                ))
                .order((relay_cursors::relay, relay_cursors::filter))
                .load(conn)?;
            let states = relay_state::table
                .order((relay_state::relay, relay_state::filter))
                .load(conn)?;
            let events = events::table.count().get_result(conn)?;
            let unaggregated = events::table
                .filter(events::aggregated.eq(false))
                .count()
                .get_result(conn)?;
            let migrations: Vec<super::queries::Version> =
                diesel::sql_query(super::queries::MIGRATIONS_QUERY).load(conn)?;
            Ok(super::Overview {
                cursors,
                states,
                events,
                unaggregated,
                migrations: migrations.into_iter().map(|v| v.version).collect(),
            })
        })
        .await
    }

    async fn stats_of(&self, event_id: &str) -> StoreResult<Option<StatsDelta>> {
        let event_id = event_id.to_owned();
        let row: Option<StatsRow> = self
            .run(move |conn| {
                event_stats::table
                    .filter(event_stats::event_id.eq(event_id))
                    .select(StatsRow::as_select())
                    .first(conn)
                    .optional()
            })
            .await?;
        Ok(row.map(|r| r.delta()))
    }

    fn zap_store(&self) -> std::sync::Arc<dyn ZapStore> {
        std::sync::Arc::new(self.clone())
    }

    fn registry(&self) -> std::sync::Arc<dyn Registry> {
        std::sync::Arc::new(self.clone())
    }

    async fn relay_lists(&self, authors: &[String], limit: i64) -> StoreResult<Vec<Event>> {
        let authors = authors.to_vec();
        let rows: Vec<(i64, EventRow)> = self
            .run(move |conn| relay_lists!(authors, limit).load(conn))
            .await?;
        Ok(rows_to_events(rows)?.into_iter().map(|(_, e)| e).collect())
    }

    async fn profile(&self, pubkey: &str) -> StoreResult<Option<Event>> {
        let pubkey = pubkey.to_owned();
        let row: Option<(i64, EventRow)> = self
            .run(move |conn| {
                events::table
                    .filter(events::pubkey.eq(pubkey))
                    .filter(events::kind.eq(0))
                    .order(events::created_at.desc())
                    .select((events::seq, EventRow::as_select()))
                    .first(conn)
                    .optional()
            })
            .await?;
        Ok(rows_to_events(row.into_iter().collect())?
            .pop()
            .map(|(_, e)| e))
    }
}

#[async_trait]
impl ZapStore for SqliteStore {
    async fn zap_receipts(&self, seqs: &[i64]) -> StoreResult<Vec<Receipt>> {
        let seqs = seqs.to_vec();
        self.run(move |c| block_on(SqliteZaps(c).receipts(&seqs)))
            .await
    }

    async fn unjudged_zaps(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<i64>> {
        self.run(move |c| block_on(SqliteZaps(c).unjudged(after_seq, limit)))
            .await
    }

    async fn zaps_awaiting(&self, targets: &[String]) -> StoreResult<Vec<i64>> {
        let targets = targets.to_vec();
        self.run(move |c| block_on(SqliteZaps(c).awaiting(&targets)))
            .await
    }

    async fn zaps_with_stored_targets(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<i64>> {
        self.run(move |c| block_on(SqliteZaps(c).with_stored_targets(after_seq, limit)))
            .await
    }

    async fn zaps_counted(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        let ids = ids.to_vec();
        self.run(move |c| block_on(SqliteZaps(c).counted(&ids)))
            .await
    }

    async fn zaps_of(&self, recipient: &str, after_seq: i64, limit: i64) -> StoreResult<Vec<i64>> {
        let recipient = recipient.to_owned();
        self.run(move |c| block_on(SqliteZaps(c).of(&recipient, after_seq, limit)))
            .await
    }

    async fn zap_facts(&self, targets: &[String], recipients: &[String]) -> StoreResult<Facts> {
        let (targets, recipients) = (targets.to_vec(), recipients.to_vec());
        self.run(move |c| block_on(SqliteZaps(c).facts(&targets, &recipients)))
            .await
    }

    async fn settle_zaps(&self, s: &Settlement, now: i64, recheck_secs: i64) -> StoreResult<usize> {
        let s = s.clone();
        self.run(move |c| {
            c.immediate_transaction(|c| block_on(SqliteZaps(c).settle(&s, now, recheck_secs)))
        })
        .await
    }

    async fn due_zap_recipients(&self, now: i64, limit: i64) -> StoreResult<Vec<(String, i32)>> {
        self.run(move |c| block_on(SqliteZaps(c).due(now, limit)))
            .await
    }

    async fn zap_server_answered(
        &self,
        recipient: &str,
        server: Option<&str>,
        now: i64,
    ) -> StoreResult<()> {
        let (recipient, server) = (recipient.to_owned(), server.map(str::to_owned));
        self.run(move |c| {
            c.immediate_transaction(|c| {
                block_on(SqliteZaps(c).answered(&recipient, server.as_deref(), now))
            })
        })
        .await
    }

    async fn zap_profiles_stored(&self, recipients: &[String], now: i64) -> StoreResult<()> {
        let recipients = recipients.to_vec();
        self.run(move |c| block_on(SqliteZaps(c).profiles_stored(&recipients, now)))
            .await
    }

    async fn zap_server_failed(
        &self,
        recipient: &str,
        next_check: i64,
        asked_at: i64,
    ) -> StoreResult<()> {
        let recipient = recipient.to_owned();
        self.run(move |c| block_on(SqliteZaps(c).failed(&recipient, next_check, asked_at)))
            .await
    }

    async fn zap_servers(&self) -> StoreResult<Vec<ZapServer>> {
        self.run(|c| block_on(SqliteZaps(c).servers())).await
    }
}

/// Each call one transaction: reads in a deferred one, writes in an immediate one.
#[async_trait]
impl Registry for SqliteStore {
    async fn relays(&self) -> StoreResult<Vec<RelayEntry>> {
        self.run(|c| block_on(SqliteRegistry(c).relays())).await
    }

    async fn sync_config(&self, relays: &[NewRelay], now: i64) -> StoreResult<(usize, usize)> {
        let relays = relays.to_vec();
        self.run(move |c| {
            c.immediate_transaction(|c| block_on(SqliteRegistry(c).sync_config(&relays, now)))
        })
        .await
    }

    async fn add_relay(&self, relay: &NewRelay, now: i64) -> StoreResult<bool> {
        let relay = relay.clone();
        self.run(move |c| {
            c.immediate_transaction(|c| block_on(SqliteRegistry(c).add_relay(&relay, now)))
        })
        .await
    }

    async fn remove_relay(&self, url: &str) -> StoreResult<bool> {
        let url = url.to_owned();
        self.run(move |c| block_on(SqliteRegistry(c).remove_relay(&url)))
            .await
    }

    async fn set_paused(&self, url: &str, paused: bool) -> StoreResult<bool> {
        let url = url.to_owned();
        self.run(move |c| block_on(SqliteRegistry(c).set_paused(&url, paused)))
            .await
    }

    async fn set_discovered(&self, want: &[NewRelay], now: i64) -> StoreResult<(usize, usize)> {
        let want = want.to_vec();
        self.run(move |c| {
            c.immediate_transaction(|c| block_on(SqliteRegistry(c).set_discovered(&want, now)))
        })
        .await
    }

    async fn scores(&self) -> StoreResult<Vec<ScoreRow>> {
        self.run(|c| block_on(SqliteRegistry(c).scores())).await
    }

    async fn save_scores(&self, rows: &[ScoreRow]) -> StoreResult<()> {
        let rows = rows.to_vec();
        self.run(move |c| {
            c.immediate_transaction(|c| block_on(SqliteRegistry(c).save_scores(&rows)))
        })
        .await
    }

    async fn block(&self, url: &str, until: i64) -> StoreResult<()> {
        let url = url.to_owned();
        self.run(move |c| block_on(SqliteRegistry(c).block(&url, until)))
            .await
    }

    async fn lease_round(&self, me: &str, now: i64, lease_secs: i64) -> StoreResult<Round> {
        let me = me.to_owned();
        self.run(move |c| {
            c.immediate_transaction(|c| {
                block_on(SqliteRegistry(c).lease_round(&me, now, lease_secs))
            })
        })
        .await
    }

    async fn held(&self, me: &str, now: i64) -> StoreResult<Vec<Lease>> {
        let me = me.to_owned();
        self.run(move |c| block_on(SqliteRegistry(c).held(&me, now)))
            .await
    }

    async fn release(&self, me: &str, leases: &[(String, i64)]) -> StoreResult<()> {
        let (me, leases) = (me.to_owned(), leases.to_vec());
        self.run(move |c| block_on(SqliteRegistry(c).release(&me, &leases)))
            .await
    }

    async fn leave(&self, me: &str) -> StoreResult<()> {
        let me = me.to_owned();
        self.run(move |c| c.immediate_transaction(|c| block_on(SqliteRegistry(c).leave(&me))))
            .await
    }

    async fn cursor(&self, relay: &str, key: &str) -> StoreResult<Option<i64>> {
        let (relay, key) = (relay.to_owned(), key.to_owned());
        self.run(move |c| block_on(SqliteRegistry(c).cursor(&relay, &key)))
            .await
    }

    async fn save_cursor(&self, fence: &Fence, key: &str, created_at: i64) -> StoreResult<bool> {
        let (fence, key) = (fence.clone(), key.to_owned());
        self.run(move |c| {
            c.immediate_transaction(|c| {
                block_on(SqliteRegistry(c).save_cursor(&fence, &key, created_at))
            })
        })
        .await
    }

    async fn delete_cursor(&self, fence: &Fence, key: &str) -> StoreResult<bool> {
        let (fence, key) = (fence.clone(), key.to_owned());
        self.run(move |c| {
            c.immediate_transaction(|c| block_on(SqliteRegistry(c).delete_cursor(&fence, &key)))
        })
        .await
    }

    async fn record_window(
        &self,
        fence: &Fence,
        key: &str,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let (fence, key, error) = (fence.clone(), key.to_owned(), error.map(str::to_owned));
        self.run(move |c| {
            c.immediate_transaction(|c| {
                block_on(SqliteRegistry(c).record_window(&fence, &key, error.as_deref()))
            })
        })
        .await
    }
}

/// The SQL function a bounded query calls on every row it visits. SQLite has no
/// statement timeout: a store opened with a query timeout (the endpoint's readers)
/// registers it before each call, to fail once the call's time is up.
pub(in crate::storage) const IN_TIME: &str = "nostr_sync_in_time";

/// What `IN_TIME` returns: true, or, once the query's time is up, an error that ends
/// the query.
#[derive(Debug)]
struct InTime(bool);

impl ToSql<Bool, Sqlite> for InTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        if !self.0 {
            return Err("canceling statement due to statement timeout".into());
        }
        <bool as ToSql<Bool, Sqlite>>::to_sql(&true, out)
    }
}

/// Makes `IN_TIME` on `c` hold until `until`.
fn bound(c: &mut SqliteConnection, until: Instant) -> QueryResult<()> {
    c.register_noarg_sql_function::<Bool, _, _>(IN_TIME, false, move || {
        InTime(Instant::now() < until)
    })
}

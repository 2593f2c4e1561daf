//! PostgreSQL through diesel-async's `AsyncPgConnection` (pure Rust, no libpq) and deadpool.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use nostr_sdk::Event;

use super::batch::Prepared;
use super::fingerprints;
use super::models::{tag_rows, EventRow, NewRetraction, StatsRow};
use super::queries::{claimed_deltas, relay_lists, rows_to_events, sources_of};
use super::registry::{Fence, Lease, NewRelay, Registry, RelayEntry, Round, ScoreRow};
use super::schema::{event_relays, event_stats, events, relay_cursors, relay_state, retractions};
use super::write::postgres::{PgSteps, ROWS_PER_STATEMENT};
use super::write::{purge, write};
use super::zaps::{Facts, Receipt, Settlement, ZapServer, ZapStore};
use super::{
    now_secs, EventStore, Footprint, Purged, Sighting, Source, StoreError, StoreResult, Written,
};
use crate::nostr::aggregate::{Sourced, StatsDelta};
use crate::nostr::fingerprint::IdSum;

#[derive(Clone)]
pub struct PgStore {
    pub(super) pool: Pool<AsyncPgConnection>,
}

/// Claims the source rows of `items` not claimed yet and adds the contributions of
/// those it claimed, on a connection in a transaction (`EventStore::apply_contributions`,
/// and the zap judge's settlement). Returns the rows it claimed.
pub(crate) async fn apply_in(
    conn: &mut AsyncPgConnection,
    items: &[Sourced],
) -> QueryResult<HashSet<i64>> {
    let sources: Vec<i64> = items.iter().map(|s| s.seq).collect();
    let mut claimed: HashSet<i64> = HashSet::new();
    for chunk in sources.chunks(ROWS_PER_STATEMENT) {
        let ids: Vec<i64> = diesel::update(
            events::table
                .filter(events::seq.eq_any(chunk))
                .filter(events::aggregated.eq(false)),
        )
        .set(events::aggregated.eq(true))
        .returning(events::seq)
        .get_results(conn)
        .await?;
        claimed.extend(ids);
    }
    let rows = claimed_deltas(items, &claimed);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        diesel::insert_into(event_stats::table)
            .values(chunk)
            .on_conflict(event_stats::event_id)
            .do_update()
            .set(super::queries::add_excluded_stats!())
            .execute(conn)
            .await?;
    }
    Ok(claimed)
}

/// The zap judge's queries on a PostgreSQL connection.
pub(crate) struct PgZaps<'c>(pub(crate) &'c mut AsyncPgConnection);

super::zaps::impl_zap_queries!(PgZaps, rows: ROWS_PER_STATEMENT, run: [await], apply: apply_in);

/// Starts a registry transaction that the server ends if its client stalls in it: a
/// process stopped (SIGSTOP, a frozen VM) inside a claim or a fenced write would
/// otherwise hold its relays' rows locked, and the other instances' claims, which
/// skip locked rows, would never take them over.
async fn bounded(c: &mut AsyncPgConnection) -> QueryResult<&mut AsyncPgConnection> {
    diesel::sql_query("SET LOCAL idle_in_transaction_session_timeout = '2s'")
        .execute(c)
        .await?;
    Ok(c)
}

/// The registry's queries on a PostgreSQL connection: claims skip the rows another
/// instance is claiming, and a fenced write holds its relay's row against claims.
pub(crate) struct PgRegistry<'c>(pub(crate) &'c mut AsyncPgConnection);

super::registry::impl_registry_queries!(PgRegistry, run: [await], claim: [for_update, skip_locked], fence: [for_share]);

/// A pool of `max_connections` to `url`; each new connection runs `setup` first.
pub(crate) fn pool(
    url: &str,
    max_connections: usize,
    setup: Option<String>,
) -> StoreResult<Pool<AsyncPgConnection>> {
    let mut config = diesel_async::pooled_connection::ManagerConfig::default();
    config.custom_setup = Box::new(move |url| {
        let setup = setup.clone();
        Box::pin(async move {
            let mut conn = super::tls::connect(url).await?;
            if let Some(sql) = setup {
                diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, &sql)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            }
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    Pool::builder(manager)
        .max_size(max_connections)
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))
}

impl PgStore {
    pub fn open(url: &str, max_connections: usize) -> StoreResult<Self> {
        Ok(Self {
            pool: pool(url, max_connections, None)?,
        })
    }

    pub(super) async fn conn(&self) -> StoreResult<Object<AsyncPgConnection>> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn write_batch(&self, batch: &[Event], sightings: &[Sighting]) -> StoreResult<Written> {
        let mut prep = Prepared::new(batch, now_secs());
        let tags = batch.iter().map(|e| tag_rows(0, e)).collect();
        let mut conn = self.conn().await?;
        let (rows, removals) = conn
            .transaction(async |conn| write(&mut PgSteps(conn), &mut prep, tags, sightings).await)
            .await?;
        Ok(Written { rows, removals })
    }

    async fn sources(&self, id: &str) -> StoreResult<Vec<Source>> {
        let mut conn = self.conn().await?;
        Ok(sources_of!(id)
            .load::<(String, i64)>(&mut conn)
            .await?
            .into_iter()
            .map(Source::from)
            .collect())
    }

    async fn apply_retractions(&self, limit: i64) -> StoreResult<usize> {
        let mut conn = self.conn().await?;
        // Read first: an empty queue (the usual case) costs no write transaction.
        let oldest: Vec<i64> = retractions::table
            .select(retractions::seq)
            .order(retractions::seq)
            .limit(limit)
            .load(&mut conn)
            .await?;
        if oldest.is_empty() {
            return Ok(0);
        }
        let applied = conn
            .transaction(async |conn| {
                let claimed: Vec<NewRetraction> =
                    diesel::delete(retractions::table.filter(retractions::seq.eq_any(oldest)))
                        .returning(NewRetraction::as_select())
                        .get_results(conn)
                        .await?;
                let n = claimed.len();
                for row in super::queries::retraction_sums(claimed) {
                    super::queries::retract_stats!(row).execute(conn).await?;
                }
                Ok::<_, diesel::result::Error>(n)
            })
            .await?;
        Ok(applied)
    }

    async fn purge(&self, now: i64, max_unseen: u64) -> StoreResult<Purged> {
        let mut conn = self.conn().await?;
        let purged = conn
            .transaction(async |conn| purge(&mut PgSteps(conn), now, max_unseen).await)
            .await?;
        Ok(purged)
    }

    async fn apply_contributions(&self, items: &[Sourced]) -> StoreResult<usize> {
        let mut conn = self.conn().await?;
        let claimed = conn
            .transaction(async |conn| apply_in(conn, items).await)
            .await?;
        Ok(claimed.len())
    }

    async fn unaggregated(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, Event)>> {
        let mut conn = self.conn().await?;
        let rows: Vec<(i64, EventRow)> = events::table
            .filter(events::aggregated.eq(false))
            .filter(events::seq.gt(after_seq))
            .order(events::seq)
            .limit(limit)
            .select((events::seq, EventRow::as_select()))
            .load(&mut conn)
            .await?;
        rows_to_events(rows)
    }

    async fn events_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, Event)>> {
        let mut conn = self.conn().await?;
        let rows: Vec<(i64, EventRow)> = events::table
            .filter(events::seq.gt(after_seq))
            .order(events::seq)
            .limit(limit)
            .select((events::seq, EventRow::as_select()))
            .load(&mut conn)
            .await?;
        rows_to_events(rows)
    }

    async fn items(&self, q: &super::ItemQuery) -> StoreResult<Vec<(String, i64)>> {
        let mut conn = self.conn().await?;
        let mut query = events::table
            .filter(events::created_at.between(q.since, q.until))
            .select((events::id, events::created_at))
            .limit(q.limit)
            .into_boxed();
        if !q.kinds.is_empty() {
            query = query.filter(events::kind.eq_any(q.kinds.clone()));
        }
        if !q.authors.is_empty() {
            query = query.filter(events::pubkey.eq_any(q.authors.clone()));
        }
        Ok(query.load(&mut conn).await?)
    }

    async fn overview(&self) -> StoreResult<super::Overview> {
        let mut conn = self.conn().await?;
        let cursors = relay_cursors::table
            .select((
                relay_cursors::relay,
                relay_cursors::filter,
                relay_cursors::created_at,
            ))
            .order((relay_cursors::relay, relay_cursors::filter))
            .load(&mut conn)
            .await?;
        let states = relay_state::table
            .order((relay_state::relay, relay_state::filter))
            .load(&mut conn)
            .await?;
        let events = events::table.count().get_result(&mut conn).await?;
        let unaggregated = events::table
            .filter(events::aggregated.eq(false))
            .count()
            .get_result(&mut conn)
            .await?;
        let migrations: Vec<super::queries::Version> =
            diesel::sql_query(super::queries::MIGRATIONS_QUERY)
                .load(&mut conn)
                .await?;
        Ok(super::Overview {
            cursors,
            states,
            events,
            unaggregated,
            migrations: migrations.into_iter().map(|v| v.version).collect(),
        })
    }

    async fn stats_of(&self, event_id: &str) -> StoreResult<Option<StatsDelta>> {
        let mut conn = self.conn().await?;
        let row: Option<StatsRow> = event_stats::table
            .filter(event_stats::event_id.eq(event_id))
            .select(StatsRow::as_select())
            .first(&mut conn)
            .await
            .optional()?;
        Ok(row.map(|r| r.delta()))
    }

    async fn count_events(&self) -> StoreResult<i64> {
        let mut conn = self.conn().await?;
        Ok(events::table.count().get_result(&mut conn).await?)
    }

    async fn footprint(&self) -> StoreResult<Footprint> {
        let mut conn = self.conn().await?;
        let bytes = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r')",
        ))
        .get_result(&mut conn)
        .await?;
        let provenance_rows = event_relays::table.count().get_result(&mut conn).await?;
        Ok(Footprint {
            bytes,
            provenance_rows,
        })
    }

    async fn stored_among(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        let mut conn = self.conn().await?;
        let mut found = Vec::new();
        for chunk in ids.chunks(super::LOOKUPS_PER_QUERY) {
            let held: Vec<String> = events::table
                .filter(events::id.eq_any(chunk))
                .select(events::id)
                .load(&mut conn)
                .await?;
            found.extend(held);
        }
        Ok(found)
    }

    async fn fingerprint_sums(
        &self,
        relay: i32,
        kinds: &[i32],
        spans: &[(i64, i64)],
    ) -> StoreResult<Vec<IdSum>> {
        use diesel::sql_types::{Array, BigInt, Integer};
        let mut conn = self.conn().await?;
        let mut sums = Vec::with_capacity(spans.len());
        for chunk in spans.chunks(fingerprints::SPANS_PER_QUERY) {
            let (from, to): (Vec<i64>, Vec<i64>) = chunk.iter().copied().unzip();
            let rows: Vec<fingerprints::SpanSum> = diesel::sql_query(fingerprints::PG_SPAN_SUMS)
                .bind::<Array<BigInt>, _>(from)
                .bind::<Array<BigInt>, _>(to)
                .bind::<Array<Integer>, _>(kinds)
                .bind::<Integer, _>(relay)
                .load(&mut conn)
                .await?;
            sums.extend(rows.iter().map(fingerprints::SpanSum::sum));
        }
        Ok(sums)
    }

    async fn fingerprint_seconds(
        &self,
        relay: i32,
        kinds: &[i32],
        from: i64,
        to: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, IdSum)>> {
        use diesel::sql_types::{Array, BigInt, Integer};
        let mut conn = self.conn().await?;
        let rows: Vec<fingerprints::PackedSecond> = diesel::sql_query(fingerprints::PG_SECONDS)
            .bind::<BigInt, _>(from)
            .bind::<BigInt, _>(to)
            .bind::<Array<Integer>, _>(kinds)
            .bind::<BigInt, _>(limit)
            .bind::<Integer, _>(relay)
            .load(&mut conn)
            .await?;
        rows.iter().map(|r| Ok((r.i, r.sum()?))).collect()
    }

    async fn ids_in_spans(
        &self,
        relay: i32,
        kinds: &[i32],
        spans: &[(i64, i64)],
    ) -> StoreResult<Vec<(i64, String)>> {
        use diesel::sql_types::{Array, BigInt, Integer};
        let mut conn = self.conn().await?;
        let mut found = Vec::new();
        for chunk in spans.chunks(fingerprints::SPANS_PER_QUERY) {
            let (from, to): (Vec<i64>, Vec<i64>) = chunk.iter().copied().unzip();
            let rows: Vec<fingerprints::Dated> = diesel::sql_query(fingerprints::PG_SPAN_IDS)
                .bind::<Array<BigInt>, _>(from)
                .bind::<Array<BigInt>, _>(to)
                .bind::<Array<Integer>, _>(kinds)
                .bind::<Integer, _>(relay)
                .load(&mut conn)
                .await?;
            found.extend(rows.into_iter().map(|r| (r.created_at, r.id)));
        }
        Ok(found)
    }

    async fn check_fingerprints(&self, repair: bool) -> StoreResult<(u64, u64)> {
        let mut conn = self.conn().await?;
        let checked: fingerprints::Checked = diesel::sql_query(fingerprints::PG_CHECK)
            .get_result(&mut conn)
            .await?;
        if repair && checked.differing > 0 {
            conn.transaction(async |conn| {
                // Writers add to the table last in their transaction: they wait here
                // and add theirs after, to rows that count none of their events.
                diesel::sql_query("LOCK TABLE fingerprints IN EXCLUSIVE MODE")
                    .execute(conn)
                    .await?;
                diesel::sql_query("DELETE FROM fingerprints")
                    .execute(conn)
                    .await?;
                diesel::sql_query(fingerprints::PG_RECOUNT)
                    .execute(conn)
                    .await?;
                Ok::<_, diesel::result::Error>(())
            })
            .await?;
        }
        Ok((checked.recounted as u64, checked.differing as u64))
    }

    async fn id_heads_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, String)>> {
        let mut conn = self.conn().await?;
        Ok(events::table
            .filter(events::seq.gt(after_seq))
            .order(events::seq)
            .limit(limit)
            .select((events::seq, super::queries::id_head()))
            .load(&mut conn)
            .await?)
    }

    async fn probe_write(&self) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        diesel::sql_query(super::queries::PROBE_WRITE)
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    async fn stats(&self) -> StoreResult<HashMap<String, StatsDelta>> {
        let mut conn = self.conn().await?;
        let rows: Vec<StatsRow> = event_stats::table
            .select(StatsRow::as_select())
            .load(&mut conn)
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
        let mut conn = self.conn().await?;
        conn.transaction(async |conn| {
            diesel::delete(event_stats::table).execute(conn).await?;
            // The recount holds every stored event and none removed: nothing is left
            // to add or to subtract.
            diesel::delete(retractions::table).execute(conn).await?;
            // Zap receipts not judged yet stay with the zap actor (the recount counts
            // them only once judged).
            diesel::update(
                events::table
                    .filter(events::aggregated.eq(false))
                    .filter(events::kind.ne(9735)),
            )
            .set(events::aggregated.eq(true))
            .execute(conn)
            .await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_into(event_stats::table)
                    .values(chunk)
                    .execute(conn)
                    .await?;
            }
            Ok::<_, diesel::result::Error>(())
        })
        .await?;
        Ok(())
    }

    fn zap_store(&self) -> std::sync::Arc<dyn ZapStore> {
        std::sync::Arc::new(self.clone())
    }

    fn registry(&self) -> std::sync::Arc<dyn Registry> {
        std::sync::Arc::new(self.clone())
    }

    async fn relay_lists(&self, authors: &[String], limit: i64) -> StoreResult<Vec<Event>> {
        let mut conn = self.conn().await?;
        let rows: Vec<(i64, EventRow)> = relay_lists!(authors, limit).load(&mut conn).await?;
        Ok(rows_to_events(rows)?.into_iter().map(|(_, e)| e).collect())
    }

    async fn profile(&self, pubkey: &str) -> StoreResult<Option<Event>> {
        let mut conn = self.conn().await?;
        let row: Option<(i64, EventRow)> = events::table
            .filter(events::pubkey.eq(pubkey))
            .filter(events::kind.eq(0))
            .order(events::created_at.desc())
            .select((events::seq, EventRow::as_select()))
            .first(&mut conn)
            .await
            .optional()?;
        Ok(rows_to_events(row.into_iter().collect())?
            .pop()
            .map(|(_, e)| e))
    }
}

/// One text column, for `sql_query`.
#[async_trait]
impl ZapStore for PgStore {
    async fn zap_receipts(&self, seqs: &[i64]) -> StoreResult<Vec<Receipt>> {
        Ok(PgZaps(&mut *self.conn().await?).receipts(seqs).await?)
    }

    async fn unjudged_zaps(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<i64>> {
        Ok(PgZaps(&mut *self.conn().await?)
            .unjudged(after_seq, limit)
            .await?)
    }

    async fn zaps_awaiting(&self, targets: &[String]) -> StoreResult<Vec<i64>> {
        Ok(PgZaps(&mut *self.conn().await?).awaiting(targets).await?)
    }

    async fn zaps_with_stored_targets(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<i64>> {
        Ok(PgZaps(&mut *self.conn().await?)
            .with_stored_targets(after_seq, limit)
            .await?)
    }

    async fn zaps_counted(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        Ok(PgZaps(&mut *self.conn().await?).counted(ids).await?)
    }

    async fn zaps_of(&self, recipient: &str, after_seq: i64, limit: i64) -> StoreResult<Vec<i64>> {
        Ok(PgZaps(&mut *self.conn().await?)
            .of(recipient, after_seq, limit)
            .await?)
    }

    async fn zap_facts(&self, targets: &[String], recipients: &[String]) -> StoreResult<Facts> {
        Ok(PgZaps(&mut *self.conn().await?)
            .facts(targets, recipients)
            .await?)
    }

    async fn settle_zaps(&self, s: &Settlement, now: i64, recheck_secs: i64) -> StoreResult<usize> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| PgZaps(c).settle(s, now, recheck_secs).await)
            .await?)
    }

    async fn due_zap_recipients(&self, now: i64, limit: i64) -> StoreResult<Vec<(String, i32)>> {
        Ok(PgZaps(&mut *self.conn().await?).due(now, limit).await?)
    }

    async fn zap_server_answered(
        &self,
        recipient: &str,
        server: Option<&str>,
        now: i64,
    ) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| PgZaps(c).answered(recipient, server, now).await)
            .await?)
    }

    async fn zap_profiles_stored(&self, recipients: &[String], now: i64) -> StoreResult<()> {
        Ok(PgZaps(&mut *self.conn().await?)
            .profiles_stored(recipients, now)
            .await?)
    }

    async fn zap_server_failed(
        &self,
        recipient: &str,
        next_check: i64,
        asked_at: i64,
    ) -> StoreResult<()> {
        Ok(PgZaps(&mut *self.conn().await?)
            .failed(recipient, next_check, asked_at)
            .await?)
    }

    async fn zap_servers(&self) -> StoreResult<Vec<ZapServer>> {
        Ok(PgZaps(&mut *self.conn().await?).servers().await?)
    }
}

/// Each call one transaction.
#[async_trait]
impl Registry for PgStore {
    async fn relays(&self) -> StoreResult<Vec<RelayEntry>> {
        Ok(PgRegistry(&mut *self.conn().await?).relays().await?)
    }

    async fn sync_config(&self, relays: &[NewRelay], now: i64) -> StoreResult<(usize, usize)> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| PgRegistry(bounded(c).await?).sync_config(relays, now).await)
            .await?)
    }

    async fn add_relay(&self, relay: &NewRelay, now: i64) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| PgRegistry(bounded(c).await?).add_relay(relay, now).await)
            .await?)
    }

    async fn remove_relay(&self, url: &str) -> StoreResult<bool> {
        Ok(PgRegistry(&mut *self.conn().await?)
            .remove_relay(url)
            .await?)
    }

    async fn set_paused(&self, url: &str, paused: bool) -> StoreResult<bool> {
        Ok(PgRegistry(&mut *self.conn().await?)
            .set_paused(url, paused)
            .await?)
    }

    async fn set_discovered(&self, want: &[NewRelay], now: i64) -> StoreResult<(usize, usize)> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| {
                PgRegistry(bounded(c).await?)
                    .set_discovered(want, now)
                    .await
            })
            .await?)
    }

    async fn scores(&self) -> StoreResult<Vec<ScoreRow>> {
        Ok(PgRegistry(&mut *self.conn().await?).scores().await?)
    }

    async fn save_scores(&self, rows: &[ScoreRow]) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| PgRegistry(bounded(c).await?).save_scores(rows).await)
            .await?)
    }

    async fn block(&self, url: &str, until: i64) -> StoreResult<()> {
        Ok(PgRegistry(&mut *self.conn().await?)
            .block(url, until)
            .await?)
    }

    async fn lease_round(&self, me: &str, now: i64, lease_secs: i64) -> StoreResult<Round> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| {
                PgRegistry(bounded(c).await?)
                    .lease_round(me, now, lease_secs)
                    .await
            })
            .await?)
    }

    async fn held(&self, me: &str, now: i64) -> StoreResult<Vec<Lease>> {
        Ok(PgRegistry(&mut *self.conn().await?).held(me, now).await?)
    }

    async fn release(&self, me: &str, leases: &[(String, i64)]) -> StoreResult<()> {
        Ok(PgRegistry(&mut *self.conn().await?)
            .release(me, leases)
            .await?)
    }

    async fn leave(&self, me: &str) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| PgRegistry(bounded(c).await?).leave(me).await)
            .await?)
    }

    async fn cursor(&self, relay: &str, key: &str) -> StoreResult<Option<i64>> {
        Ok(PgRegistry(&mut *self.conn().await?)
            .cursor(relay, key)
            .await?)
    }

    async fn save_cursor(&self, fence: &Fence, key: &str, created_at: i64) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| {
                PgRegistry(bounded(c).await?)
                    .save_cursor(fence, key, created_at)
                    .await
            })
            .await?)
    }

    async fn delete_cursor(&self, fence: &Fence, key: &str) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| {
                PgRegistry(bounded(c).await?)
                    .delete_cursor(fence, key)
                    .await
            })
            .await?)
    }

    async fn record_window(
        &self,
        fence: &Fence,
        key: &str,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| {
                PgRegistry(bounded(c).await?)
                    .record_window(fence, key, error)
                    .await
            })
            .await?)
    }
}

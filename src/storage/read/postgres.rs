//! The endpoint's reads on PostgreSQL: read-only sessions whose statements the
//! server cancels past the endpoint's query timeout.

use std::time::Duration;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use nostr_sdk::Event;

use super::{newest_first, selected, served, Query, Reader, Served};
use crate::nostr::aggregate::StatsDelta;
use crate::storage::models::{EventRow, StatsRow};
use crate::storage::queries::rows_to_events;
use crate::storage::schema::{event_stats, events};
use crate::storage::{StoreError, StoreResult};

pub(crate) struct PgReader {
    pool: Pool<AsyncPgConnection>,
}

impl PgReader {
    pub(crate) fn open(url: &str, connections: usize, timeout: Duration) -> StoreResult<Self> {
        let setup = format!(
            "SET default_transaction_read_only = on; SET statement_timeout = {}",
            timeout.as_millis().max(1)
        );
        Ok(Self {
            pool: crate::storage::postgres::pool(url, connections, Some(setup))?,
        })
    }

    async fn conn(&self) -> StoreResult<Object<AsyncPgConnection>> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))
    }
}

#[async_trait]
impl Reader for PgReader {
    async fn select(&self, q: &Query, now: i64) -> StoreResult<Vec<Served>> {
        let mut conn = self.conn().await?;
        let rows: Vec<(i64, EventRow)> = newest_first!(selected!(q, now), q.limit)
            .load(&mut conn)
            .await?;
        Ok(served(rows))
    }

    async fn count(&self, q: &Query, now: i64) -> StoreResult<i64> {
        let mut conn = self.conn().await?;
        Ok(selected!(q, now).count().get_result(&mut conn).await?)
    }

    async fn items(&self, q: &Query, now: i64, limit: i64) -> StoreResult<Vec<(String, i64)>> {
        let mut conn = self.conn().await?;
        Ok(selected!(q, now)
            .limit(limit)
            .select((events::id, events::created_at))
            .load(&mut conn)
            .await?)
    }

    async fn stats_of(&self, target: &str) -> StoreResult<Option<StatsDelta>> {
        let mut conn = self.conn().await?;
        let row: Option<StatsRow> = event_stats::table
            .filter(event_stats::event_id.eq(target))
            .select(StatsRow::as_select())
            .first(&mut conn)
            .await
            .optional()?;
        Ok(row.map(|r| r.delta()))
    }

    async fn committed(
        &self,
        after_seq: i64,
        seqs: &[i64],
        limit: i64,
    ) -> StoreResult<Vec<(i64, Event)>> {
        let mut conn = self.conn().await?;
        let mut rows: Vec<(i64, EventRow)> = Vec::new();
        if !seqs.is_empty() {
            rows = events::table
                .filter(events::seq.eq_any(seqs))
                .select((events::seq, EventRow::as_select()))
                .load(&mut conn)
                .await?;
        }
        rows.extend(
            events::table
                .filter(events::seq.gt(after_seq))
                .order(events::seq)
                .limit(limit)
                .select((events::seq, EventRow::as_select()))
                .load::<(i64, EventRow)>(&mut conn)
                .await?,
        );
        rows.sort_by_key(|(seq, _)| *seq);
        rows_to_events(rows)
    }

    async fn committed_seqs(
        &self,
        after_seq: i64,
        seqs: &[i64],
        limit: i64,
    ) -> StoreResult<Vec<i64>> {
        let mut conn = self.conn().await?;
        let mut found: Vec<i64> = Vec::new();
        if !seqs.is_empty() {
            found = events::table
                .filter(events::seq.eq_any(seqs))
                .select(events::seq)
                .load(&mut conn)
                .await?;
        }
        found.extend(
            events::table
                .filter(events::seq.gt(after_seq))
                .order(events::seq)
                .limit(limit)
                .select(events::seq)
                .load::<i64>(&mut conn)
                .await?,
        );
        Ok(found)
    }

    async fn refresh_statistics(&self) -> StoreResult<()> {
        // Autovacuum analyzes the tables as they change.
        Ok(())
    }

    async fn last_seq(&self) -> StoreResult<i64> {
        let mut conn = self.conn().await?;
        let max: Option<i64> = events::table
            .select(diesel::dsl::max(events::seq))
            .first(&mut conn)
            .await?;
        Ok(max.unwrap_or(0))
    }
}

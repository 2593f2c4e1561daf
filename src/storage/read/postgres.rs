//! The endpoint's reads on PostgreSQL: read-only sessions whose statements the
//! server cancels past the endpoint's query timeout.

use std::time::Duration;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use nostr_sdk::Event;

use super::{committed_rows, newest_first, selected, served, Query, Reader, Served};
use crate::storage::models::EventRow;
use crate::storage::queries::rows_to_events;
use crate::storage::schema::events;
use crate::storage::{PgStore, StoreResult};

impl PgStore {
    /// A store of `connections` of its own, in read-only sessions whose statements
    /// stop after `timeout`.
    pub(crate) fn open_reader(
        url: &str,
        connections: usize,
        timeout: Duration,
    ) -> StoreResult<Self> {
        let setup = format!(
            "SET default_transaction_read_only = on; SET statement_timeout = {}",
            timeout.as_millis().max(1)
        );
        Ok(Self {
            pool: crate::storage::postgres::pool(url, connections, Some(setup))?,
        })
    }
}

#[async_trait]
impl Reader for PgStore {
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

    async fn items_of(&self, q: &Query, now: i64, limit: i64) -> StoreResult<Vec<(String, i64)>> {
        let mut conn = self.conn().await?;
        Ok(selected!(q, now)
            .limit(limit)
            .select((events::id, events::created_at))
            .load(&mut conn)
            .await?)
    }

    async fn committed(
        &self,
        after_seq: i64,
        seqs: &[i64],
        limit: i64,
    ) -> StoreResult<Vec<(i64, Event)>> {
        let mut conn = self.conn().await?;
        let rows = committed_rows!(after_seq, seqs, limit)
            .select((events::seq, EventRow::as_select()))
            .load(&mut conn)
            .await?;
        rows_to_events(rows)
    }

    async fn committed_seqs(
        &self,
        after_seq: i64,
        seqs: &[i64],
        limit: i64,
    ) -> StoreResult<Vec<i64>> {
        let mut conn = self.conn().await?;
        Ok(committed_rows!(after_seq, seqs, limit)
            .select(events::seq)
            .load(&mut conn)
            .await?)
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

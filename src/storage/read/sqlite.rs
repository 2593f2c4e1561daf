//! The endpoint's reads on SQLite: readers beside the one writer (WAL). SQLite has no
//! statement timeout: the reader's store registers, before each call, a SQL function
//! that fails once the call's time is up, and every filtered query calls it on each
//! row it visits.

use std::time::Duration;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use nostr_sdk::Event;

use super::{committed_rows, newest_first, selected, served, Query, Reader, Served};
use crate::storage::models::EventRow;
use crate::storage::queries::rows_to_events;
use crate::storage::schema::events;
use crate::storage::sqlite::IN_TIME;
use crate::storage::{SqliteStore, StoreResult};

/// The bound every filtered query of a reader carries: a call of `IN_TIME`.
fn in_time() -> diesel::expression::SqlLiteral<Bool> {
    diesel::dsl::sql::<Bool>(&format!("{IN_TIME}()"))
}

impl SqliteStore {
    /// A store of `connections` of its own, each call stopped after `timeout`.
    pub(crate) fn open_reader(
        path: &str,
        connections: usize,
        timeout: Duration,
    ) -> StoreResult<Self> {
        Ok(Self {
            pool: crate::storage::sqlite::pool(path, connections)?,
            query_timeout: Some(timeout),
        })
    }
}

#[async_trait]
impl Reader for SqliteStore {
    async fn select(&self, q: &Query, now: i64) -> StoreResult<Vec<Served>> {
        let q = q.clone();
        let rows: Vec<(i64, EventRow)> = self
            .run(move |c| newest_first!(selected!(&q, now).filter(in_time()), q.limit).load(c))
            .await?;
        Ok(served(rows))
    }

    async fn count(&self, q: &Query, now: i64) -> StoreResult<i64> {
        let q = q.clone();
        self.run(move |c| selected!(&q, now).filter(in_time()).count().get_result(c))
            .await
    }

    async fn items_of(&self, q: &Query, now: i64, limit: i64) -> StoreResult<Vec<(String, i64)>> {
        let q = q.clone();
        self.run(move |c| {
            selected!(&q, now)
                .filter(in_time())
                .limit(limit)
                .select((events::id, events::created_at))
                .load(c)
        })
        .await
    }

    async fn committed(
        &self,
        after_seq: i64,
        seqs: &[i64],
        limit: i64,
    ) -> StoreResult<Vec<(i64, Event)>> {
        let seqs = seqs.to_vec();
        let rows = self
            .run(move |c| {
                committed_rows!(after_seq, &seqs, limit)
                    .select((events::seq, EventRow::as_select()))
                    .load(c)
            })
            .await?;
        rows_to_events(rows)
    }

    async fn committed_seqs(
        &self,
        after_seq: i64,
        seqs: &[i64],
        limit: i64,
    ) -> StoreResult<Vec<i64>> {
        let seqs = seqs.to_vec();
        self.run(move |c| {
            committed_rows!(after_seq, &seqs, limit)
                .select(events::seq)
                .load(c)
        })
        .await
    }

    async fn refresh_statistics(&self) -> StoreResult<()> {
        // Analyzes the tables whose size changed much since, reading at most about
        // 1,000 rows of each index (SQLite's recommended periodic call).
        self.run(|c| {
            diesel::connection::SimpleConnection::batch_execute(
                c,
                "PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002;",
            )
        })
        .await
    }

    async fn last_seq(&self) -> StoreResult<i64> {
        let max: Option<i64> = self
            .run(|c| events::table.select(diesel::dsl::max(events::seq)).first(c))
            .await?;
        Ok(max.unwrap_or(0))
    }
}

//! The endpoint's reads on SQLite: readers beside the one writer (WAL), each query
//! stopped by a clock it checks on every row it visits. SQLite has no statement
//! timeout; the check is a SQL function that fails once the query's time is up.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Bool;
use diesel::sqlite::Sqlite;
use diesel::SqliteConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use nostr_sdk::Event;

use super::{newest_first, selected, served, Query, Reader, Served};
use crate::nostr::aggregate::StatsDelta;
use crate::storage::models::{EventRow, StatsRow};
use crate::storage::queries::rows_to_events;
use crate::storage::schema::{event_stats, events};
use crate::storage::sqlite::Conn;
use crate::storage::{StoreError, StoreResult};

/// The SQL function a bounded query calls on every row it visits.
const IN_TIME: &str = "nostr_sync_in_time";

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

pub(crate) struct SqliteReader {
    pool: Pool<Conn>,
    timeout: Duration,
}

impl SqliteReader {
    pub(crate) fn open(path: &str, connections: usize, timeout: Duration) -> StoreResult<Self> {
        Ok(Self {
            pool: crate::storage::sqlite::pool(path, connections)?,
            timeout,
        })
    }

    /// Runs `f` on a connection whose `IN_TIME` holds until `timeout` from now.
    async fn run<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> QueryResult<R> + Send + 'static,
    {
        let mut conn: Object<Conn> = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let until = Instant::now() + self.timeout;
        Ok(conn
            .spawn_blocking(move |c| {
                c.register_noarg_sql_function::<Bool, _, _>(IN_TIME, false, move || {
                    InTime(Instant::now() < until)
                })?;
                f(c)
            })
            .await?)
    }
}

/// The bound every query of this reader carries: a call of `IN_TIME`.
fn in_time() -> diesel::expression::SqlLiteral<Bool> {
    diesel::dsl::sql::<Bool>("nostr_sync_in_time()")
}

#[async_trait]
impl Reader for SqliteReader {
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

    async fn items(&self, q: &Query, now: i64, limit: i64) -> StoreResult<Vec<(String, i64)>> {
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

    async fn stats_of(&self, target: &str) -> StoreResult<Option<StatsDelta>> {
        let target = target.to_owned();
        let row: Option<StatsRow> = self
            .run(move |c| {
                event_stats::table
                    .filter(event_stats::event_id.eq(target))
                    .select(StatsRow::as_select())
                    .first(c)
                    .optional()
            })
            .await?;
        Ok(row.map(|r| r.delta()))
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
                let mut rows: Vec<(i64, EventRow)> = Vec::new();
                if !seqs.is_empty() {
                    rows = events::table
                        .filter(events::seq.eq_any(seqs))
                        .select((events::seq, EventRow::as_select()))
                        .load(c)?;
                }
                rows.extend(
                    events::table
                        .filter(events::seq.gt(after_seq))
                        .order(events::seq)
                        .limit(limit)
                        .select((events::seq, EventRow::as_select()))
                        .load::<(i64, EventRow)>(c)?,
                );
                rows.sort_by_key(|(seq, _)| *seq);
                Ok(rows)
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
            let mut found: Vec<i64> = Vec::new();
            if !seqs.is_empty() {
                found = events::table
                    .filter(events::seq.eq_any(seqs))
                    .select(events::seq)
                    .load(c)?;
            }
            found.extend(
                events::table
                    .filter(events::seq.gt(after_seq))
                    .order(events::seq)
                    .limit(limit)
                    .select(events::seq)
                    .load::<i64>(c)?,
            );
            Ok(found)
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

//! The write steps' queries on PostgreSQL.

use std::collections::HashSet;

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{Removed, Steps};
use crate::nostr::Deletion;
use crate::storage::models::{
    EventRow, FingerprintRow, NewEvent, NewEventRelay, NewHead, NewRetraction, NewTag,
};
use crate::storage::queries::REPLACES_HEAD;
use crate::storage::schema::{
    deleted_addresses, deleted_events, event_relays, event_tags, events, replaceable_heads,
    retractions,
};

/// Rows per statement. PostgreSQL allows 65,535 bind parameters (events have 11
/// columns), but each connection keeps a send buffer as large as the largest message it
/// sent: 2,000 events in one statement held some 6 MB per pooled connection.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// The write steps' queries on a PostgreSQL connection in a transaction.
pub(crate) struct PgSteps<'c>(pub(crate) &'c mut AsyncPgConnection);

super::impl_steps!(
    PgSteps,
    rows: ROWS_PER_STATEMENT,
    now: "extract(epoch from now())::BIGINT",
    run: [await],
    async fn offer_heads(&mut self, offers: &[NewHead<'_>]) -> QueryResult<HashSet<String>> {
        let upsert = diesel::insert_into(replaceable_heads::table)
            .values(offers)
            .on_conflict(replaceable_heads::address)
            .do_update()
            .set((
                replaceable_heads::created_at.eq(excluded(replaceable_heads::created_at)),
                replaceable_heads::id.eq(excluded(replaceable_heads::id)),
            ));
        let won: Vec<String> =
            diesel::query_dsl::methods::FilterDsl::filter(upsert, sql::<Bool>(REPLACES_HEAD))
                .returning(replaceable_heads::address)
                .get_results(self.0)
                .await?;
        Ok(won.into_iter().collect())
    }

    async fn add_fingerprints(&mut self, rows: &[FingerprintRow]) -> QueryResult<()> {
        use crate::storage::schema::fingerprints as f;
        diesel::insert_into(f::table)
            .values(rows)
            .on_conflict((f::relay_id, f::second, f::kind))
            .do_update()
            .set(crate::storage::queries::add_excluded_fingerprints!())
            .execute(self.0)
            .await
            .map(drop)
    }
);

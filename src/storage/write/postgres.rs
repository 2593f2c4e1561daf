//! The write steps' queries on PostgreSQL.

use std::collections::HashSet;

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{Removed, Steps};
use crate::nostr::Deletion;
use crate::storage::models::{EventRow, NewEvent, NewHead, NewRetraction, NewTag};
use crate::storage::queries::REPLACES_HEAD;
use crate::storage::schema::{
    deleted_addresses, deleted_events, event_tags, events, replaceable_heads, retractions,
};

/// Rows per statement. PostgreSQL allows 65,535 bind parameters (events have 11
/// columns), but each connection keeps a send buffer as large as the largest message it
/// sent: 2,000 events in one statement held some 6 MB per pooled connection.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// The write steps' queries on a PostgreSQL connection in a transaction.
pub(crate) struct PgSteps<'c>(pub(crate) &'c mut AsyncPgConnection);

impl Steps for PgSteps<'_> {
    const ROWS: usize = ROWS_PER_STATEMENT;

    async fn delete(&mut self, author: &str, d: &Deletion) -> QueryResult<Vec<Removed>> {
        let conn = &mut *self.0;
        let tombstones: Vec<_> = d
            .ids
            .iter()
            .map(|id| (deleted_events::id.eq(id), deleted_events::pubkey.eq(author)))
            .collect();
        diesel::insert_into(deleted_events::table)
            .values(&tombstones)
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        let mut gone: Vec<Removed> = diesel::delete(
            events::table
                .filter(events::id.eq_any(&d.ids))
                .filter(events::pubkey.eq(author))
                .filter(events::kind.ne(5)),
        )
        .returning((events::aggregated, EventRow::as_select()))
        .get_results(conn)
        .await?;
        for address in &d.addresses {
            let upsert = diesel::insert_into(deleted_addresses::table)
                .values((
                    deleted_addresses::address.eq(address),
                    deleted_addresses::until.eq(d.until),
                ))
                .on_conflict(deleted_addresses::address)
                .do_update()
                .set(deleted_addresses::until.eq(excluded(deleted_addresses::until)));
            diesel::query_dsl::methods::FilterDsl::filter(
                upsert,
                deleted_addresses::until.lt(excluded(deleted_addresses::until)),
            )
            .execute(conn)
            .await?;
            gone.extend(
                diesel::delete(
                    events::table
                        .filter(events::address.eq(address))
                        .filter(events::created_at.le(d.until)),
                )
                .returning((events::aggregated, EventRow::as_select()))
                .get_results::<Removed>(conn)
                .await?,
            );
        }
        Ok(gone)
    }

    async fn tombstoned_ids(&mut self, ids: &[String]) -> QueryResult<Vec<(String, String)>> {
        deleted_events::table
            .filter(deleted_events::id.eq_any(ids))
            .load(self.0)
            .await
    }

    async fn tombstoned_addresses(
        &mut self,
        addresses: &[String],
    ) -> QueryResult<Vec<(String, i64)>> {
        deleted_addresses::table
            .filter(deleted_addresses::address.eq_any(addresses))
            .load(self.0)
            .await
    }

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

    async fn remove_superseded(&mut self, heads: &[(&str, &str)]) -> QueryResult<Vec<Removed>> {
        let (addresses, ids): (Vec<&str>, Vec<&str>) = heads.iter().copied().unzip();
        diesel::delete(
            events::table
                .filter(events::address.eq_any(addresses))
                .filter(events::id.ne_all(ids)),
        )
        .returning((events::aggregated, EventRow::as_select()))
        .get_results(self.0)
        .await
    }

    async fn insert_events(&mut self, rows: &[NewEvent]) -> QueryResult<Vec<(i64, String)>> {
        diesel::insert_into(events::table)
            .values(rows)
            .on_conflict(events::id)
            .do_nothing()
            .returning((events::seq, events::id))
            .get_results(self.0)
            .await
    }

    async fn insert_tags(&mut self, tags: &[NewTag]) -> QueryResult<()> {
        diesel::insert_into(event_tags::table)
            .values(tags)
            .on_conflict_do_nothing()
            .execute(self.0)
            .await
            .map(drop)
    }

    async fn queue_retractions(&mut self, rows: &[NewRetraction]) -> QueryResult<()> {
        diesel::insert_into(retractions::table)
            .values(rows)
            .execute(self.0)
            .await
            .map(drop)
    }
}

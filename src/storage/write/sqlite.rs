//! The write steps' queries on SQLite.

use std::collections::HashSet;

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel::upsert::excluded;
use diesel::SqliteConnection;

use super::{Removed, Steps};
use crate::nostr::Deletion;
use crate::storage::models::{EventRow, NewEvent, NewHead, NewRetraction, NewTag};
use crate::storage::queries::REPLACES_HEAD;
use crate::storage::schema::{
    deleted_addresses, deleted_events, event_tags, events, replaceable_heads, retractions,
};

/// SQLite allows 32,766 bind parameters per statement; events have 9 columns.
pub(crate) const ROWS_PER_STATEMENT: usize = 1_000;

/// The write steps' queries on a SQLite connection in a transaction.
pub(crate) struct SqliteSteps<'c>(pub(crate) &'c mut SqliteConnection);

impl Steps for SqliteSteps<'_> {
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
            .execute(&mut *conn)?;
        let mut gone: Vec<Removed> = diesel::delete(
            events::table
                .filter(events::id.eq_any(&d.ids))
                .filter(events::pubkey.eq(author))
                .filter(events::kind.ne(5)),
        )
        .returning((events::aggregated, EventRow::as_select()))
        .get_results(conn)?;
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
            .execute(&mut *conn)?;
            gone.extend(
                diesel::delete(
                    events::table
                        .filter(events::address.eq(address))
                        .filter(events::created_at.le(d.until)),
                )
                .returning((events::aggregated, EventRow::as_select()))
                .get_results::<Removed>(conn)?,
            );
        }
        Ok(gone)
    }

    async fn tombstoned_ids(&mut self, ids: &[String]) -> QueryResult<Vec<(String, String)>> {
        deleted_events::table
            .filter(deleted_events::id.eq_any(ids))
            .load(self.0)
    }

    async fn tombstoned_addresses(
        &mut self,
        addresses: &[String],
    ) -> QueryResult<Vec<(String, i64)>> {
        deleted_addresses::table
            .filter(deleted_addresses::address.eq_any(addresses))
            .load(self.0)
    }

    async fn offer_heads(&mut self, offers: &[NewHead<'_>]) -> QueryResult<HashSet<String>> {
        // One statement per offer: diesel has no multi-row upsert for SQLite.
        let mut won = HashSet::new();
        for offer in offers {
            let upsert = diesel::insert_into(replaceable_heads::table)
                .values(offer)
                .on_conflict(replaceable_heads::address)
                .do_update()
                .set((
                    replaceable_heads::created_at.eq(excluded(replaceable_heads::created_at)),
                    replaceable_heads::id.eq(excluded(replaceable_heads::id)),
                ));
            won.extend(
                diesel::query_dsl::methods::FilterDsl::filter(upsert, sql::<Bool>(REPLACES_HEAD))
                    .returning(replaceable_heads::address)
                    .get_results::<String>(&mut *self.0)?,
            );
        }
        Ok(won)
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
    }

    async fn insert_events(&mut self, rows: &[NewEvent]) -> QueryResult<Vec<(i64, String)>> {
        diesel::insert_into(events::table)
            .values(rows)
            .on_conflict(events::id)
            .do_nothing()
            .returning((events::seq, events::id))
            .get_results(self.0)
    }

    async fn insert_tags(&mut self, tags: &[NewTag]) -> QueryResult<()> {
        diesel::insert_into(event_tags::table)
            .values(tags)
            .on_conflict_do_nothing()
            .execute(self.0)
            .map(drop)
    }

    async fn queue_retractions(&mut self, rows: &[NewRetraction]) -> QueryResult<()> {
        diesel::insert_into(retractions::table)
            .values(rows)
            .execute(self.0)
            .map(drop)
    }
}

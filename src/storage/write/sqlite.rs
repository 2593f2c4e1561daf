//! The write steps' queries on SQLite.

use std::collections::HashSet;

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel::upsert::excluded;
use diesel::SqliteConnection;

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

/// SQLite allows 32,766 bind parameters per statement; an event row binds 11
/// (`NewEvent`), so 1,000 rows bind 11,000.
pub(crate) const ROWS_PER_STATEMENT: usize = 1_000;

/// The write steps' queries on a SQLite connection in a transaction.
pub(crate) struct SqliteSteps<'c>(pub(crate) &'c mut SqliteConnection);

super::impl_steps!(
    SqliteSteps,
    rows: ROWS_PER_STATEMENT,
    now: "CAST(strftime('%s', 'now') AS INTEGER)",
    run: [],
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

    async fn add_fingerprints(&mut self, rows: &[FingerprintRow]) -> QueryResult<()> {
        use crate::storage::schema::fingerprints as f;
        for row in rows {
            diesel::insert_into(f::table)
                .values(row)
                .on_conflict((f::relay_id, f::second, f::kind))
                .do_update()
                .set(crate::storage::queries::add_excluded_fingerprints!())
                .execute(&mut *self.0)?;
        }
        Ok(())
    }
);

//! What both backends' queries share: SQL text, the upserts written once as macros
//! (diesel builds them for either backend), and the sums over claimed rows.

use std::collections::HashMap;

use nostr_sdk::Event;

use super::models;
use super::{StoreError, StoreResult};
use crate::nostr::aggregate::{Contribution, Sourced, StatsDelta};

/// The upsert's `SET`: adds the excluded (new) row's deltas to the stored counters,
/// saturating at `i64::MAX` so no sum of claimed amounts can overflow (PostgreSQL would
/// refuse the write forever; SQLite would turn the column into a float). Deltas are
/// never negative: retractions go through `retract_stats!`.
/// The `fingerprints` upsert's `SET`: each row's count and limbs added to those stored.
macro_rules! add_excluded_fingerprints {
    () => {{
        use diesel::upsert::excluded;
        use $crate::storage::schema::fingerprints::dsl::*;
        (
            n.eq(n + excluded(n)),
            l0.eq(l0 + excluded(l0)),
            l1.eq(l1 + excluded(l1)),
            l2.eq(l2 + excluded(l2)),
            l3.eq(l3 + excluded(l3)),
            l4.eq(l4 + excluded(l4)),
            l5.eq(l5 + excluded(l5)),
            l6.eq(l6 + excluded(l6)),
            l7.eq(l7 + excluded(l7)),
        )
    }};
}
pub(crate) use add_excluded_fingerprints;

macro_rules! add_excluded_stats {
    () => {{
        use diesel::dsl::sql;
        use diesel::sql_types::BigInt;
        let add = |c: &str| {
            sql::<BigInt>(&format!(
                "CASE WHEN event_stats.{c} > 9223372036854775807 - excluded.{c} \
                 THEN 9223372036854775807 ELSE event_stats.{c} + excluded.{c} END"
            ))
        };
        use $crate::storage::schema::event_stats::dsl::*;
        (
            reactions.eq(add("reactions")),
            replies.eq(add("replies")),
            reposts.eq(add("reposts")),
            zaps.eq(add("zaps")),
            zap_msats.eq(add("zap_msats")),
        )
    }};
}
pub(crate) use add_excluded_stats;

/// The `UPDATE` that subtracts a summed retraction (`models::StatsRow` with negative
/// amounts) from a target's row, stopping at 0. A target without a row never counted
/// anything, and is left alone. The amounts are integers formatted into the statement.
macro_rules! retract_stats {
    ($row:expr) => {{
        use diesel::dsl::sql;
        use diesel::sql_types::BigInt;
        use $crate::storage::schema::event_stats::dsl::*;
        let sub = |c: &str, d: i64| {
            let d = d.max(-i64::MAX);
            sql::<BigInt>(&format!(
                "CASE WHEN {c} + ({d}) < 0 THEN 0 ELSE {c} + ({d}) END"
            ))
        };
        let row = &$row;
        diesel::update(event_stats.filter(event_id.eq(row.event_id.clone()))).set((
            reactions.eq(sub("reactions", row.reactions)),
            replies.eq(sub("replies", row.replies)),
            reposts.eq(sub("reposts", row.reposts)),
            zaps.eq(sub("zaps", row.zaps)),
            zap_msats.eq(sub("zap_msats", row.zap_msats)),
        ))
    }};
}
pub(crate) use retract_stats;

/// The upsert that records how a window ended, for both backends: one statement whose
/// inserted row holds only what this outcome sets (the other columns NULL), merged
/// into the stored row column by column.
macro_rules! record_window_upsert {
    ($relay:expr, $filter:expr, $error:expr, $now:expr) => {{
        use diesel::dsl::sql;
        use diesel::sql_types::{BigInt, Nullable, Text};
        use $crate::storage::schema::relay_state as rs;
        let (ok, now): (bool, i64) = ($error.is_none(), $now);
        diesel::insert_into(rs::table)
            .values((
                rs::relay.eq($relay),
                rs::filter.eq($filter),
                rs::last_success.eq(ok.then_some(now)),
                rs::last_failure.eq((!ok).then_some(now)),
                rs::consecutive_failures.eq(i64::from(!ok)),
                rs::last_error.eq($error),
                rs::updated_at.eq(now),
            ))
            .on_conflict((rs::relay, rs::filter))
            .do_update()
            .set((
                rs::last_success.eq(sql::<Nullable<BigInt>>(
                    "COALESCE(excluded.last_success, relay_state.last_success)",
                )),
                rs::last_failure.eq(sql::<Nullable<BigInt>>(
                    "COALESCE(excluded.last_failure, relay_state.last_failure)",
                )),
                rs::consecutive_failures.eq(sql::<BigInt>(
                    "CASE WHEN excluded.consecutive_failures = 0 THEN 0 \
                     ELSE relay_state.consecutive_failures + 1 END",
                )),
                rs::last_error.eq(sql::<Nullable<Text>>(
                    "COALESCE(excluded.last_error, relay_state.last_error)",
                )),
                rs::updated_at.eq(now),
            ))
    }};
}
pub(crate) use record_window_upsert;

/// One applied migration (diesel's own table).
#[derive(diesel::QueryableByName)]
pub(crate) struct Version {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub version: String,
}

pub(crate) const MIGRATIONS_QUERY: &str =
    "SELECT version FROM __diesel_schema_migrations ORDER BY version";

/// The no-op write of `EventStore::probe_write`.
pub(crate) const PROBE_WRITE: &str =
    "UPDATE events SET aggregated = aggregated WHERE seq = (SELECT max(seq) FROM events)";

/// The stored events named by the tombstones added since `from` (left by a writer
/// that ran beside the deletion's), for the purge's sweep. Driven from the new
/// tombstones (their `added_at` index) through the events' id and address indexes:
/// the sweep runs every `retention.expiry_check_secs` and must read neither every
/// event nor every tombstone (on SQLite it holds the write lock meanwhile).
macro_rules! tombstoned_since {
    ($from:expr) => {
        diesel::dsl::sql::<diesel::sql_types::Bool>(
            "seq IN (SELECT e.seq FROM deleted_events d JOIN events e ON e.id = d.id \
             WHERE e.pubkey = d.pubkey AND e.kind <> 5 AND d.added_at >= ",
        )
        .bind::<diesel::sql_types::BigInt, _>($from)
        .sql(
            " UNION ALL SELECT e.seq FROM deleted_addresses a \
             JOIN events e ON e.address = a.address \
             WHERE e.created_at <= a.until AND e.kind <> 5 AND a.added_at >= ",
        )
        .bind::<diesel::sql_types::BigInt, _>($from)
        .sql(")")
    };
}
pub(crate) use tombstoned_since;

/// Removes the `$2` oldest tombstones for unseen ids added before `$1` (SQLite numbers
/// `$1`, `$2` as PostgreSQL does).
pub(crate) const EVICT_UNSEEN: &str = "DELETE FROM deleted_events WHERE (id, pubkey) IN (\
     SELECT id, pubkey FROM deleted_events WHERE NOT seen AND added_at < $1 \
     ORDER BY added_at LIMIT $2)";

/// The conditional upsert's `WHERE`: the offered version replaces the head (NIP-01).
pub(crate) const REPLACES_HEAD: &str = "excluded.created_at > replaceable_heads.created_at \
     OR (excluded.created_at = replaceable_heads.created_at AND excluded.id < replaceable_heads.id)";

/// Sums retractions per target.
pub(crate) fn retraction_sums(claimed: Vec<models::NewRetraction>) -> Vec<models::StatsRow> {
    let retracted: Vec<Contribution> = claimed
        .into_iter()
        .map(|r| Contribution {
            delta: r.delta(),
            target: r.target,
        })
        .collect();
    ordered_rows(crate::nostr::aggregate::sum_by_target(&retracted))
}

/// Sums `items` per target and drops those whose source row was not claimed.
pub(crate) fn claimed_deltas(
    items: &[Sourced],
    claimed: &std::collections::HashSet<i64>,
) -> Vec<models::StatsRow> {
    ordered_rows(crate::nostr::aggregate::sum_by_target(
        items
            .iter()
            .filter(|s| claimed.contains(&s.seq) && !s.contribution.target.is_empty())
            .map(|s| &s.contribution),
    ))
}

/// Parses stored rows back into events, keeping their sequence numbers.
pub(crate) fn rows_to_events(rows: Vec<(i64, models::EventRow)>) -> StoreResult<Vec<(i64, Event)>> {
    rows.into_iter()
        .map(|(seq, r)| {
            let id = r.id.clone();
            let event = r.into_event().map_err(|e| StoreError::Corrupt {
                id,
                reason: e.to_string(),
            })?;
            Ok((seq, event))
        })
        .collect()
}

/// Stats rows ordered by target: a fixed order keeps concurrent upserts from
/// deadlocking each other.
fn ordered_rows(sums: HashMap<String, StatsDelta>) -> Vec<models::StatsRow> {
    let mut rows: Vec<_> = sums
        .into_iter()
        .map(|(id, d)| models::StatsRow::new(id, &d))
        .collect();
    rows.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    rows
}

/// The relays that delivered the stored event `$id` (hex), first first:
/// `(url, first_seen)`.
macro_rules! sources_of {
    ($id:expr) => {{
        use $crate::storage::schema::{event_relays, events, relay_ids};
        event_relays::table
            .inner_join(events::table)
            .inner_join(relay_ids::table)
            .filter(events::id.eq($id))
            .order((event_relays::first_seen, relay_ids::url))
            .select((relay_ids::url, event_relays::first_seen))
    }};
}
pub(crate) use sources_of;

/// `(seq, row)` of the stored NIP-65 relay lists of `$authors` (every author's when
/// empty), the `$limit` stored last.
macro_rules! relay_lists {
    ($authors:expr, $limit:expr) => {{
        use $crate::storage::schema::events;
        let mut q = events::table
            .filter(events::kind.eq(i32::from($crate::nostr::RELAY_LIST_KIND)))
            .order(events::seq.desc())
            .limit($limit)
            .select((events::seq, $crate::storage::models::EventRow::as_select()))
            .into_boxed();
        if !$authors.is_empty() {
            q = q.filter(events::pubkey.eq_any($authors));
        }
        q
    }};
}
pub(crate) use relay_lists;

/// The first 32 hex digits of an event's id (`events.id`): what the committed-id
/// filter reads of it, half of the text to send and decode.
pub(super) fn id_head() -> diesel::expression::SqlLiteral<diesel::sql_types::Text> {
    diesel::dsl::sql("substr(id, 1, 32)")
}

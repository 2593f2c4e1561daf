//! The relay registry, the fleet's leases on it, and the sync state only a relay's
//! lease holder may write. The queries are written once ([`impl_registry_queries`])
//! for both backends; each backend runs them in a transaction ([`Registry`] in
//! `postgres.rs`, `sqlite.rs`).
//!
//! A lease is a registry row's `holder`, `token` and `lease_until`. Claiming one takes
//! the row with `FOR UPDATE SKIP LOCKED` on PostgreSQL (two instances never wait on
//! each other's claims) and gives it a new token. A holder's writes of the relay's
//! cursors and window outcomes first read the row (`FOR SHARE` on PostgreSQL, so a
//! claim waits for the write or the write sees the claim) and are refused when the
//! token moved on: an instance that was stopped past its lease cannot move a cursor
//! its successor already moved.

use async_trait::async_trait;
use serde::Serialize;

use super::StoreResult;

/// Who may write a relay's sync state: the holder of its lease, with its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub relay: String,
    pub holder: String,
    pub token: i64,
}

/// One row of the registry.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable, Serialize)]
pub struct RelayEntry {
    pub url: String,
    /// `config`, `cli` or `discovered`.
    pub source: String,
    /// Its source still lists it.
    pub enabled: bool,
    /// An operator paused it.
    pub paused: bool,
    /// Its own settings (JSON, `RelaySettings` without the key itself), or empty.
    pub settings: String,
    pub added_at: i64,
    pub holder: Option<String>,
    pub token: i64,
    pub lease_until: i64,
}

impl RelayEntry {
    /// Whether the fleet syncs it.
    pub fn active(&self) -> bool {
        self.enabled && !self.paused
    }

    /// `active`, `paused` or `disabled` (its source no longer lists it).
    pub fn state(&self) -> &'static str {
        Self::state_of(self.enabled, self.paused)
    }

    pub fn state_of(enabled: bool, paused: bool) -> &'static str {
        match (enabled, paused) {
            (true, false) => "active",
            (_, true) => "paused",
            (false, false) => "disabled",
        }
    }
}

/// A relay to write into the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRelay {
    /// Normalised (`fleet::normalise`).
    pub url: String,
    pub source: &'static str,
    pub settings: String,
}

/// What a relay's lease holder measured over discovery's window, and its block.
#[derive(Debug, Clone, PartialEq, diesel::Queryable, diesel::Insertable, Serialize)]
#[diesel(table_name = crate::storage::schema::relay_scores)]
pub struct ScoreRow {
    pub url: String,
    /// Events first stored from it.
    pub novel: i64,
    pub duplicates: i64,
    /// Failed cycles.
    pub failures: i64,
    pub failures_in_row: i64,
    pub uptime: f64,
    pub score: f64,
    /// Blocked by discovery until then (unix seconds; 0: not blocked).
    pub blocked_until: i64,
    pub updated_at: i64,
}

/// A lease this instance holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub url: String,
    pub token: i64,
    /// The relay's own settings (`RelayEntry::settings`).
    pub settings: String,
    /// Whether it is still to be synced (else paused or disabled: to be handed back).
    pub active: bool,
    /// The relay's id for good (`relay_ids`), which provenance records.
    pub id: i32,
}

/// A lease as read, before its relay's id is looked up.
pub(crate) type LeaseRow = (String, i64, String, bool);

/// What one lease round left this instance with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Every lease it holds, in URL order.
    pub held: Vec<Lease>,
    /// Registry relays by state (`RelayEntry::state`).
    pub states: Vec<(&'static str, u64)>,
    /// Of those, how many it took from an instance whose lease had lapsed.
    pub takeovers: u64,
    /// Relays it may hold at most (`fleet::share`).
    pub share: usize,
    /// Live instances (this one included).
    pub instances: usize,
}

/// How long an instance that stopped heartbeating stays listed.
pub(crate) const FORGET_INSTANCE_SECS: i64 = 3_600;

#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Every registry row, in URL order.
    async fn relays(&self) -> StoreResult<Vec<RelayEntry>>;

    /// Writes the configuration's relays (source `config`, enabled, their settings);
    /// disables the `config` relays it no longer lists. Returns (added, disabled).
    async fn sync_config(&self, relays: &[NewRelay], now: i64) -> StoreResult<(usize, usize)>;

    /// Adds `relay`, or enables and resumes it; whether it was not there before.
    async fn add_relay(&self, relay: &NewRelay, now: i64) -> StoreResult<bool>;

    /// Removes `url` from the registry (its cursors stay); whether it was there.
    async fn remove_relay(&self, url: &str) -> StoreResult<bool>;

    /// Pauses or resumes `url`; whether it is in the registry.
    async fn set_paused(&self, url: &str, paused: bool) -> StoreResult<bool>;

    /// In one transaction: writes `me`'s heartbeat, renews its leases until
    /// `now + lease_secs` (those of paused or disabled relays too, until handed back),
    /// and claims active relays without a live lease up to its fair share.
    async fn lease_round(&self, me: &str, now: i64, lease_secs: i64) -> StoreResult<Round>;

    /// `me`'s leases that last beyond `now`: what an instance restarted under the same
    /// id holds already. Reads only (a relay without an id yet gets 0).
    async fn held(&self, me: &str, now: i64) -> StoreResult<Vec<Lease>>;

    /// Gives up `me`'s leases `(url, token)` (their actors have stopped); a lease
    /// taken anew since (another token) is kept.
    async fn release(&self, me: &str, leases: &[(String, i64)]) -> StoreResult<()>;

    /// Gives up all of `me`'s leases and its heartbeat row (a clean stop).
    async fn leave(&self, me: &str) -> StoreResult<()>;

    /// Makes the `discovered` relays of the registry `want`: adds those not there,
    /// enables them and updates their settings; disables the other discovered ones.
    /// A relay of another source is left as it is. Returns (added, disabled).
    async fn set_discovered(&self, want: &[NewRelay], now: i64) -> StoreResult<(usize, usize)>;

    /// Every relay's score row.
    async fn scores(&self) -> StoreResult<Vec<ScoreRow>>;

    /// Writes what the holder measured (every column but `blocked_until`).
    async fn save_scores(&self, rows: &[ScoreRow]) -> StoreResult<()>;

    /// Blocks `url` for discovery until `until`, its failures in a row counted afresh.
    async fn block(&self, url: &str, until: i64) -> StoreResult<()>;

    /// The stored cursor `key` of `relay`.
    async fn cursor(&self, relay: &str, key: &str) -> StoreResult<Option<i64>>;

    /// Saves a cursor of `fence.relay`; `false`, writing nothing, if the lease moved on.
    async fn save_cursor(&self, fence: &Fence, key: &str, created_at: i64) -> StoreResult<bool>;

    /// Deletes a cursor of `fence.relay`; `false`, deleting nothing, if the lease
    /// moved on.
    async fn delete_cursor(&self, fence: &Fence, key: &str) -> StoreResult<bool>;

    /// Records how a window of `fence.relay` ended (`error` is `None` on success);
    /// `false`, writing nothing, if the lease moved on.
    async fn record_window(
        &self,
        fence: &Fence,
        key: &str,
        error: Option<&str>,
    ) -> StoreResult<bool>;
}

/// The registry's queries on one connection `$q(&mut conn)`, for both backends.
/// `run: [await]` for diesel-async's PostgreSQL connection, `[]` for SQLite's
/// synchronous one; `claim` and `fence` are the locking clauses of the claim and the
/// fence check (empty on SQLite, whose writers take the database lock).
macro_rules! impl_registry_queries {
    ($q:ident, run: [$($aw:tt)?], claim: [$($claim:ident),*], fence: [$($fence:ident),*]) => {
        impl $q<'_> {
            pub(crate) async fn relays(&mut self) -> diesel::QueryResult<Vec<$crate::storage::registry::RelayEntry>> {
                use $crate::storage::schema::relays;
                relays::table.order(relays::url).load(&mut *self.0)$(.$aw)?
            }

            /// Inserts `r` if it is new; whether it was.
            async fn insert_relay(&mut self, r: &$crate::storage::registry::NewRelay, now: i64) -> diesel::QueryResult<bool> {
                use $crate::storage::schema::relays;
                let n = diesel::insert_into(relays::table)
                    .values((
                        relays::url.eq(&r.url),
                        relays::source.eq(r.source),
                        relays::settings.eq(&r.settings),
                        relays::added_at.eq(now),
                    ))
                    .on_conflict_do_nothing()
                    .execute(&mut *self.0)$(.$aw)??;
                Ok(n > 0)
            }

            pub(crate) async fn sync_config(&mut self, list: &[$crate::storage::registry::NewRelay], now: i64) -> diesel::QueryResult<(usize, usize)> {
                use $crate::storage::schema::relays;
                let mut added = 0;
                for r in list {
                    if self.insert_relay(r, now).await? {
                        added += 1;
                    } else {
                        diesel::update(relays::table.filter(relays::url.eq(&r.url)))
                            .set((
                                relays::source.eq(r.source),
                                relays::enabled.eq(true),
                                relays::settings.eq(&r.settings),
                            ))
                            .execute(&mut *self.0)$(.$aw)??;
                    }
                }
                let urls: Vec<&str> = list.iter().map(|r| r.url.as_str()).collect();
                let disabled = diesel::update(
                    relays::table
                        .filter(relays::source.eq("config"))
                        .filter(relays::enabled.eq(true))
                        .filter(relays::url.ne_all(urls)),
                )
                .set(relays::enabled.eq(false))
                .execute(&mut *self.0)$(.$aw)??;
                Ok((added, disabled))
            }

            pub(crate) async fn add_relay(&mut self, r: &$crate::storage::registry::NewRelay, now: i64) -> diesel::QueryResult<bool> {
                use $crate::storage::schema::relays;
                if self.insert_relay(r, now).await? {
                    return Ok(true);
                }
                diesel::update(relays::table.filter(relays::url.eq(&r.url)))
                    .set((relays::enabled.eq(true), relays::paused.eq(false)))
                    .execute(&mut *self.0)$(.$aw)??;
                Ok(false)
            }

            pub(crate) async fn set_discovered(&mut self, want: &[$crate::storage::registry::NewRelay], now: i64) -> diesel::QueryResult<(usize, usize)> {
                use $crate::storage::schema::relays;
                let mut added = 0;
                for r in want {
                    if self.insert_relay(r, now).await? {
                        added += 1;
                    } else {
                        diesel::update(
                            relays::table
                                .filter(relays::url.eq(&r.url))
                                .filter(relays::source.eq("discovered")),
                        )
                        .set((relays::enabled.eq(true), relays::settings.eq(&r.settings)))
                        .execute(&mut *self.0)$(.$aw)??;
                    }
                }
                let urls: Vec<&str> = want.iter().map(|r| r.url.as_str()).collect();
                let disabled = diesel::update(
                    relays::table
                        .filter(relays::source.eq("discovered"))
                        .filter(relays::enabled.eq(true))
                        .filter(relays::url.ne_all(urls)),
                )
                .set(relays::enabled.eq(false))
                .execute(&mut *self.0)$(.$aw)??;
                Ok((added, disabled))
            }

            pub(crate) async fn scores(&mut self) -> diesel::QueryResult<Vec<$crate::storage::registry::ScoreRow>> {
                use $crate::storage::schema::relay_scores;
                relay_scores::table.order(relay_scores::url).load(&mut *self.0)$(.$aw)?
            }

            pub(crate) async fn save_scores(&mut self, rows: &[$crate::storage::registry::ScoreRow]) -> diesel::QueryResult<()> {
                use $crate::storage::schema::relay_scores as s;
                use diesel::upsert::excluded;
                for row in rows {
                    diesel::insert_into(s::table)
                        .values(row)
                        .on_conflict(s::url)
                        .do_update()
                        .set((
                            s::novel.eq(excluded(s::novel)),
                            s::duplicates.eq(excluded(s::duplicates)),
                            s::failures.eq(excluded(s::failures)),
                            s::failures_in_row.eq(excluded(s::failures_in_row)),
                            s::uptime.eq(excluded(s::uptime)),
                            s::score.eq(excluded(s::score)),
                            s::updated_at.eq(excluded(s::updated_at)),
                        ))
                        .execute(&mut *self.0)$(.$aw)??;
                }
                Ok(())
            }

            pub(crate) async fn block(&mut self, url: &str, until: i64) -> diesel::QueryResult<()> {
                use $crate::storage::schema::relay_scores as s;
                use diesel::upsert::excluded;
                diesel::insert_into(s::table)
                    .values((s::url.eq(url), s::blocked_until.eq(until)))
                    .on_conflict(s::url)
                    .do_update()
                    .set((s::blocked_until.eq(excluded(s::blocked_until)), s::failures_in_row.eq(0)))
                    .execute(&mut *self.0)$(.$aw)??;
                Ok(())
            }

            pub(crate) async fn remove_relay(&mut self, url: &str) -> diesel::QueryResult<bool> {
                use $crate::storage::schema::relays;
                let n = diesel::delete(relays::table.filter(relays::url.eq(url)))
                    .execute(&mut *self.0)$(.$aw)??;
                Ok(n > 0)
            }

            pub(crate) async fn set_paused(&mut self, url: &str, paused: bool) -> diesel::QueryResult<bool> {
                use $crate::storage::schema::relays;
                let n = diesel::update(relays::table.filter(relays::url.eq(url)))
                    .set(relays::paused.eq(paused))
                    .execute(&mut *self.0)$(.$aw)??;
                Ok(n > 0)
            }

            pub(crate) async fn lease_round(&mut self, me: &str, now: i64, lease_secs: i64) -> diesel::QueryResult<$crate::storage::registry::Round> {
                use $crate::storage::schema::{instances, relays};
                use diesel::upsert::excluded;
                diesel::insert_into(instances::table)
                    .values((instances::id.eq(me), instances::started_at.eq(now), instances::heartbeat_at.eq(now)))
                    .on_conflict(instances::id)
                    .do_update()
                    .set(instances::heartbeat_at.eq(excluded(instances::heartbeat_at)))
                    .execute(&mut *self.0)$(.$aw)??;
                let forget = now - lease_secs.max($crate::storage::registry::FORGET_INSTANCE_SECS);
                diesel::delete(instances::table.filter(instances::heartbeat_at.lt(forget)))
                    .execute(&mut *self.0)$(.$aw)??;
                let mine = relays::holder.eq(me);
                let active = relays::enabled.eq(true).and(relays::paused.eq(false));
                diesel::update(relays::table.filter(mine))
                    .set(relays::lease_until.eq(now + lease_secs))
                    .execute(&mut *self.0)$(.$aw)??;
                let lease = (relays::url, relays::token, relays::settings, active);
                let mut held: Vec<$crate::storage::registry::LeaseRow> = relays::table
                    .filter(mine)
                    .select(lease)
                    .load(&mut *self.0)$(.$aw)??;
                let by_state: Vec<(bool, bool, i64)> = relays::table
                    .group_by((relays::enabled, relays::paused))
                    .select((relays::enabled, relays::paused, diesel::dsl::count_star()))
                    .load(&mut *self.0)$(.$aw)??;
                let mut states: Vec<(&'static str, u64)> = Vec::new();
                for (enabled, paused, n) in by_state {
                    let state = $crate::storage::registry::RelayEntry::state_of(enabled, paused);
                    match states.iter_mut().find(|(s, _)| *s == state) {
                        Some((_, total)) => *total += n as u64,
                        None => states.push((state, n as u64)),
                    }
                }
                let kept = held.iter().filter(|l| l.3).count();
                let live: i64 = instances::table
                    .filter(instances::heartbeat_at.ge(now - lease_secs))
                    .count()
                    .get_result(&mut *self.0)$(.$aw)??;
                let to_sync = states.iter().find(|(s, _)| *s == "active").map_or(0, |(_, n)| *n);
                let share = $crate::fleet::share(to_sync as usize, live as usize);
                let mut takeovers = 0;
                if kept < share {
                    let free: Vec<(String, Option<String>)> = relays::table
                        .filter(active)
                        .filter(relays::holder.is_null().or(relays::lease_until.lt(now)))
                        .order(relays::url)
                        .limit((share - kept) as i64)
                        .select((relays::url, relays::holder))
                        $(.$claim())*
                        .load(&mut *self.0)$(.$aw)??;
                    let urls: Vec<&str> = free.iter().map(|(u, _)| u.as_str()).collect();
                    diesel::update(relays::table.filter(relays::url.eq_any(&urls)))
                        .set((
                            relays::holder.eq(me),
                            relays::token.eq(relays::token + 1),
                            relays::lease_until.eq(now + lease_secs),
                        ))
                        .execute(&mut *self.0)$(.$aw)??;
                    held.extend(
                        relays::table
                            .filter(relays::url.eq_any(&urls))
                            .select(lease)
                            .load::<$crate::storage::registry::LeaseRow>(&mut *self.0)$(.$aw)??,
                    );
                    takeovers = free.iter().filter(|(_, was)| was.as_deref().is_some_and(|w| w != me)).count() as u64;
                }
                held.sort_by(|a, b| a.0.cmp(&b.0));
                let held = self.with_ids(held, true).await?;
                Ok($crate::storage::registry::Round {
                    held,
                    states,
                    takeovers,
                    share,
                    instances: live as usize,
                })
            }

            pub(crate) async fn held(&mut self, me: &str, now: i64) -> diesel::QueryResult<Vec<$crate::storage::registry::Lease>> {
                use $crate::storage::schema::relays;
                let active = relays::enabled.eq(true).and(relays::paused.eq(false));
                let rows: Vec<$crate::storage::registry::LeaseRow> = relays::table
                    .filter(relays::holder.eq(me))
                    .filter(relays::lease_until.gt(now))
                    .order(relays::url)
                    .select((relays::url, relays::token, relays::settings, active))
                    .load(&mut *self.0)$(.$aw)??;
                // Reads only: the ids were given when the leases were taken.
                self.with_ids(rows, false).await
            }

            /// `rows` with their relays' ids; with `give`, given to those without one
            /// (else their id is 0: provenance not recorded).
            async fn with_ids(&mut self, rows: Vec<$crate::storage::registry::LeaseRow>, give: bool) -> diesel::QueryResult<Vec<$crate::storage::registry::Lease>> {
                use $crate::storage::schema::relay_ids;
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let urls: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
                let mut ids: std::collections::HashMap<String, i32> = relay_ids::table
                    .filter(relay_ids::url.eq_any(&urls))
                    .select((relay_ids::url, relay_ids::id))
                    .load::<(String, i32)>(&mut *self.0)$(.$aw)??
                    .into_iter()
                    .collect();
                let missing: Vec<&str> = urls.iter().copied().filter(|u| !ids.contains_key(*u)).collect();
                // Only the missing are inserted: a conflicting insert would still use
                // up a value of PostgreSQL's sequence, every round.
                if give && !missing.is_empty() {
                    let new: Vec<_> = missing.iter().map(|u| relay_ids::url.eq(*u)).collect();
                    diesel::insert_into(relay_ids::table)
                        .values(&new)
                        .on_conflict_do_nothing()
                        .execute(&mut *self.0)$(.$aw)??;
                    ids.extend(
                        relay_ids::table
                            .filter(relay_ids::url.eq_any(&missing))
                            .select((relay_ids::url, relay_ids::id))
                            .load::<(String, i32)>(&mut *self.0)$(.$aw)??,
                    );
                }
                Ok(rows
                    .into_iter()
                    .map(|(url, token, settings, active)| $crate::storage::registry::Lease {
                        id: ids.get(&url).copied().unwrap_or(0),
                        url,
                        token,
                        settings,
                        active,
                    })
                    .collect())
            }

            pub(crate) async fn release(&mut self, me: &str, leases: &[(String, i64)]) -> diesel::QueryResult<()> {
                use $crate::storage::schema::relays;
                for (url, token) in leases {
                    diesel::update(
                        relays::table
                            .filter(relays::holder.eq(me))
                            .filter(relays::url.eq(url))
                            .filter(relays::token.eq(token)),
                    )
                    .set((relays::holder.eq(None::<String>), relays::lease_until.eq(0)))
                    .execute(&mut *self.0)$(.$aw)??;
                }
                Ok(())
            }

            pub(crate) async fn leave(&mut self, me: &str) -> diesel::QueryResult<()> {
                use $crate::storage::schema::{instances, relays};
                diesel::update(relays::table.filter(relays::holder.eq(me)))
                    .set((relays::holder.eq(None::<String>), relays::lease_until.eq(0)))
                    .execute(&mut *self.0)$(.$aw)??;
                diesel::delete(instances::table.filter(instances::id.eq(me)))
                    .execute(&mut *self.0)$(.$aw)??;
                Ok(())
            }

            pub(crate) async fn cursor(&mut self, relay: &str, key: &str) -> diesel::QueryResult<Option<i64>> {
                use $crate::storage::schema::relay_cursors as rc;
                rc::table
                    .filter(rc::relay.eq(relay))
                    .filter(rc::filter.eq(key))
                    .select(rc::created_at)
                    .first(&mut *self.0)$(.$aw)?
                    .optional()
            }

            /// Whether `f` still holds its relay's lease; until the transaction ends,
            /// no claim can change that.
            async fn fenced(&mut self, f: &$crate::storage::registry::Fence) -> diesel::QueryResult<bool> {
                use $crate::storage::schema::relays;
                let row: Option<(Option<String>, i64)> = relays::table
                    .filter(relays::url.eq(&f.relay))
                    .select((relays::holder, relays::token))
                    $(.$fence())*
                    .first(&mut *self.0)$(.$aw)?
                    .optional()?;
                Ok(matches!(row, Some((Some(h), t)) if h == f.holder && t == f.token))
            }

            pub(crate) async fn save_cursor(&mut self, f: &$crate::storage::registry::Fence, key: &str, created_at: i64) -> diesel::QueryResult<bool> {
                use $crate::storage::schema::relay_cursors as rc;
                use diesel::upsert::excluded;
                if !self.fenced(f).await? {
                    return Ok(false);
                }
                diesel::insert_into(rc::table)
                    .values((
                        rc::relay.eq(&f.relay),
                        rc::filter.eq(key),
                        rc::created_at.eq(created_at),
                        rc::updated_at.eq($crate::storage::now_secs()),
                    ))
                    .on_conflict((rc::relay, rc::filter))
                    .do_update()
                    .set((
                        rc::created_at.eq(excluded(rc::created_at)),
                        rc::updated_at.eq(excluded(rc::updated_at)),
                    ))
                    .execute(&mut *self.0)$(.$aw)??;
                Ok(true)
            }

            pub(crate) async fn delete_cursor(&mut self, f: &$crate::storage::registry::Fence, key: &str) -> diesel::QueryResult<bool> {
                use $crate::storage::schema::relay_cursors as rc;
                if !self.fenced(f).await? {
                    return Ok(false);
                }
                diesel::delete(rc::table.filter(rc::relay.eq(&f.relay)).filter(rc::filter.eq(key)))
                    .execute(&mut *self.0)$(.$aw)??;
                Ok(true)
            }

            pub(crate) async fn record_window(&mut self, f: &$crate::storage::registry::Fence, key: &str, error: Option<&str>) -> diesel::QueryResult<bool> {
                if !self.fenced(f).await? {
                    return Ok(false);
                }
                $crate::storage::queries::record_window_upsert!(&f.relay, key, error, $crate::storage::now_secs())
                    .execute(&mut *self.0)$(.$aw)??;
                Ok(true)
            }
        }
    };
}
pub(crate) use impl_registry_queries;

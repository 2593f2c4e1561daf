//! Zap receipts as the database holds them while they are judged (`nostr::zap`): the
//! facts a judgement needs (the target's author and splits, the recipient's server
//! keys), the receipts that wait (`zap_pending`, by target and by recipient), the
//! schedule of LNURL lookups (`zap_servers`), and the settlement of judged receipts
//! in one transaction. The queries are written once ([`impl_zap_queries`]) for both
//! backends; each backend only runs them ([`ZapStore`] in `postgres.rs`, `sqlite.rs`).

use std::collections::HashMap;

use async_trait::async_trait;
use nostr_sdk::Event;

use super::StoreResult;
use crate::nostr::aggregate::Contribution;
use crate::nostr::zap::{verdict, ServerFacts, TargetFacts, Zap, ZapPolicy, ZapReject};

/// A stored receipt not yet counted.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub seq: i64,
    /// When it was stored (unix seconds).
    pub first_seen: i64,
    pub event: Event,
}

/// What the database knows of some receipts' targets and recipients.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// By event id: the stored targets.
    pub targets: HashMap<String, TargetFacts>,
    /// By recipient: their server, when it was ever looked up.
    pub servers: HashMap<String, ServerFacts>,
}

impl Facts {
    /// `receipt`, stored at `first_seen`, judged by `policy` against these facts: what
    /// it zaps (`Err` for why it counts nothing, or waits).
    pub fn judge(
        &self,
        policy: &ZapPolicy,
        receipt: &Event,
        first_seen: i64,
    ) -> Result<Zap, ZapReject> {
        let zap = verdict(receipt)?;
        let target = self.targets.get(zap.target.key());
        let server = self.servers.get(&zap.recipient);
        policy.judge(receipt, first_seen, target, server)
    }
}

/// A receipt that waits to be judged again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub seq: i64,
    pub recipient: String,
    /// The `event_stats` key of its target.
    pub target: String,
    /// It waits for its recipient's server (else for its target).
    pub on_server: bool,
}

/// Judged receipts, settled together.
#[derive(Debug, Clone, Default)]
pub struct Settlement {
    /// `(seq, id, contribution)` of receipts that count.
    pub counted: Vec<(i64, String, Contribution)>,
    /// Receipts that count nothing, or whose rows are gone.
    pub refused: Vec<i64>,
    pub waiting: Vec<Waiting>,
}

impl Settlement {
    pub fn is_empty(&self) -> bool {
        self.counted.is_empty() && self.refused.is_empty() && self.waiting.is_empty()
    }
}

/// One row of `zap_servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZapServer {
    pub recipient: String,
    /// The key the server named at its last answer (`None`: it signs no receipts).
    pub server: Option<String>,
    /// Keys it named, newest first.
    pub keys: Vec<String>,
    pub checked_at: i64,
    pub next_check: Option<i64>,
    pub failures: i32,
}

#[async_trait]
pub trait ZapStore: Send + Sync + 'static {
    /// The receipts among `seqs` that are stored and not yet counted.
    async fn zap_receipts(&self, seqs: &[i64]) -> StoreResult<Vec<Receipt>>;

    /// Up to `limit` receipts after `after_seq` that are neither counted nor waiting:
    /// never judged (stored before a crash, or while the judge was behind).
    async fn unjudged_zaps(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<i64>>;

    /// Waiting receipts whose target is one of `targets` (`event_stats` keys).
    async fn zaps_awaiting(&self, targets: &[String]) -> StoreResult<Vec<i64>>;

    /// Up to `limit` waiting receipts after `after_seq` whose target is stored: a
    /// target that arrived while its receipts' judge was not told (a restart).
    async fn zaps_with_stored_targets(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<i64>>;

    /// Up to `limit` waiting receipts of `recipient` after `after_seq`, in order.
    async fn zaps_of(&self, recipient: &str, after_seq: i64, limit: i64) -> StoreResult<Vec<i64>>;

    /// Which of `ids` are receipts whose zap is counted (`zap_counted`).
    async fn zaps_counted(&self, ids: &[String]) -> StoreResult<Vec<String>>;

    /// The stored events among `targets` (ids), and the servers of `recipients`.
    async fn zap_facts(&self, targets: &[String], recipients: &[String]) -> StoreResult<Facts>;

    /// In one transaction: counts `counted` and marks `refused` (each only if not
    /// marked yet: a receipt counts once), and parks `waiting`, scheduling a lookup of
    /// the recipient's server (at `now`, or `recheck_secs` after its last answer)
    /// for those that wait on it. Returns how many receipts it counted.
    async fn settle_zaps(&self, s: &Settlement, now: i64, recheck_secs: i64) -> StoreResult<usize>;

    /// Up to `limit` recipients whose server is due to be asked at `now`, the longest
    /// due first, with their failures in a row.
    async fn due_zap_recipients(&self, now: i64, limit: i64) -> StoreResult<Vec<(String, i32)>>;

    /// Records the answer of `recipient`'s server at `now`: the key it names, if any.
    async fn zap_server_answered(
        &self,
        recipient: &str,
        server: Option<&str>,
        now: i64,
    ) -> StoreResult<()>;

    /// New profiles of `recipients` were stored: those a receipt waits for are due
    /// again just after `now`, however long their lookup was backing off (no profile
    /// then, or one naming no server).
    async fn zap_profiles_stored(&self, recipients: &[String], now: i64) -> StoreResult<()>;

    /// Records that `recipient`'s server could not be asked in a round that began at
    /// `asked_at`; asks again at `next_check`, unless a new profile made the lookup due
    /// after `asked_at` meanwhile.
    async fn zap_server_failed(
        &self,
        recipient: &str,
        next_check: i64,
        asked_at: i64,
    ) -> StoreResult<()>;

    /// Every row of `zap_servers`, by recipient.
    async fn zap_servers(&self) -> StoreResult<Vec<ZapServer>>;
}

/// Keys kept per recipient: a provider change keeps the old provider's receipts
/// counting, and a few changes are all a recipient makes.
pub const KEYS_KEPT: usize = 4;

/// `keys` (comma-separated, newest first) after the server named `server`.
pub fn remember_key(keys: &str, server: Option<&str>) -> String {
    let mut out: Vec<&str> = server.into_iter().collect();
    out.extend(
        keys.split(',')
            .filter(|k| !k.is_empty() && Some(*k) != server),
    );
    out.truncate(KEYS_KEPT);
    out.join(",")
}

pub(crate) fn split_keys(keys: &str) -> Vec<String> {
    keys.split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The target facts of a stored row: its author and its `zap` split tags.
pub(crate) fn target_facts(pubkey: String, tags: &str) -> TargetFacts {
    let tags: Vec<Vec<String>> = serde_json::from_str(tags).unwrap_or_default();
    TargetFacts {
        author: pubkey,
        splits: crate::nostr::zap::split_recipients(tags.iter().map(Vec::as_slice)),
    }
}

/// Implements the queries of [`ZapStore`] on a backend's `$q` (a connection), awaited
/// (`run: [await]`) or run at once (`run: []`), as `write::impl_steps` does.
macro_rules! impl_zap_queries {
    ($q:ident, rows: $rows:expr, run: [$($aw:tt)?], apply: $apply:path) => {
        impl $q<'_> {
            pub(crate) async fn receipts(&mut self, seqs: &[i64]) -> QueryResult<Vec<$crate::storage::zaps::Receipt>> {
                use $crate::storage::schema::events;
                let mut out = Vec::new();
                for chunk in seqs.chunks($rows) {
                    let rows: Vec<(i64, i64, EventRow)> = events::table
                        .filter(events::seq.eq_any(chunk))
                        .filter(events::aggregated.eq(false))
                        .filter(events::kind.eq(9735))
                        .select((events::seq, events::first_seen, EventRow::as_select()))
                        .load(&mut *self.0)$(.$aw)??;
                    for (seq, first_seen, row) in rows {
                        let id = row.id.clone();
                        match row.into_event() {
                            Ok(event) => out.push($crate::storage::zaps::Receipt { seq, first_seen, event }),
                            Err(error) => tracing::error!(%id, %error, "stored receipt does not parse"),
                        }
                    }
                }
                Ok(out)
            }

            pub(crate) async fn unjudged(&mut self, after_seq: i64, limit: i64) -> QueryResult<Vec<i64>> {
                use $crate::storage::schema::{events, zap_pending};
                use diesel::dsl::{exists, not};
                events::table
                    .filter(events::aggregated.eq(false))
                    .filter(events::seq.gt(after_seq))
                    .filter(events::kind.eq(9735))
                    .filter(not(exists(zap_pending::table.filter(zap_pending::seq.eq(events::seq)))))
                    .order(events::seq)
                    .limit(limit)
                    .select(events::seq)
                    .load(self.0)$(.$aw)?
            }

            pub(crate) async fn awaiting(&mut self, targets: &[String]) -> QueryResult<Vec<i64>> {
                use $crate::storage::schema::zap_pending;
                let mut out = Vec::new();
                for chunk in targets.chunks($rows) {
                    out.extend(
                        zap_pending::table
                            .filter(zap_pending::target.eq_any(chunk))
                            .select(zap_pending::seq)
                            .load::<i64>(&mut *self.0)$(.$aw)??,
                    );
                }
                Ok(out)
            }

            pub(crate) async fn with_stored_targets(&mut self, after_seq: i64, limit: i64) -> QueryResult<Vec<i64>> {
                use $crate::storage::schema::{events, zap_pending};
                use diesel::dsl::exists;
                zap_pending::table
                    .filter(zap_pending::seq.gt(after_seq))
                    .filter(exists(events::table.filter(events::id.eq(zap_pending::target))))
                    .order(zap_pending::seq)
                    .limit(limit)
                    .select(zap_pending::seq)
                    .load(self.0)$(.$aw)?
            }

            pub(crate) async fn counted(&mut self, ids: &[String]) -> QueryResult<Vec<String>> {
                use $crate::storage::schema::zap_counted;
                let mut out = Vec::new();
                for chunk in ids.chunks($rows) {
                    out.extend(
                        zap_counted::table
                            .filter(zap_counted::id.eq_any(chunk))
                            .select(zap_counted::id)
                            .load::<String>(&mut *self.0)$(.$aw)??,
                    );
                }
                Ok(out)
            }

            pub(crate) async fn of(&mut self, recipient: &str, after_seq: i64, limit: i64) -> QueryResult<Vec<i64>> {
                use $crate::storage::schema::zap_pending;
                zap_pending::table
                    .filter(zap_pending::recipient.eq(recipient))
                    .filter(zap_pending::seq.gt(after_seq))
                    .order(zap_pending::seq)
                    .limit(limit)
                    .select(zap_pending::seq)
                    .load(self.0)$(.$aw)?
            }

            pub(crate) async fn facts(&mut self, targets: &[String], recipients: &[String]) -> QueryResult<$crate::storage::zaps::Facts> {
                use $crate::storage::schema::{events, zap_servers};
                let mut facts = $crate::storage::zaps::Facts::default();
                for chunk in targets.chunks($rows) {
                    let rows: Vec<(String, String, String)> = events::table
                        .filter(events::id.eq_any(chunk))
                        .select((events::id, events::pubkey, events::tags))
                        .load(&mut *self.0)$(.$aw)??;
                    for (id, pubkey, tags) in rows {
                        facts.targets.insert(id, $crate::storage::zaps::target_facts(pubkey, &tags));
                    }
                }
                for chunk in recipients.chunks($rows) {
                    let rows: Vec<(String, String, i64)> = zap_servers::table
                        .filter(zap_servers::recipient.eq_any(chunk))
                        .select((zap_servers::recipient, zap_servers::keys, zap_servers::checked_at))
                        .load(&mut *self.0)$(.$aw)??;
                    for (recipient, keys, checked_at) in rows {
                        facts.servers.insert(
                            recipient,
                            $crate::nostr::zap::ServerFacts {
                                keys: $crate::storage::zaps::split_keys(&keys),
                                checked_at,
                            },
                        );
                    }
                }
                Ok(facts)
            }

            /// Run inside a transaction (see `ZapStore::settle_zaps`).
            pub(crate) async fn settle(
                &mut self,
                s: &$crate::storage::zaps::Settlement,
                now: i64,
                recheck_secs: i64,
            ) -> QueryResult<usize> {
                use $crate::storage::schema::{zap_counted, zap_pending, zap_servers};
                use diesel::dsl::sql;
                use diesel::sql_types::{BigInt, Nullable};
                // Counted and refused receipts are claimed as the aggregator claims its
                // rows; a refused one adds nothing.
                let items: Vec<$crate::nostr::aggregate::Sourced> = s
                    .counted
                    .iter()
                    .map(|(seq, _, c)| $crate::nostr::aggregate::Sourced { seq: *seq, contribution: c.clone() })
                    .chain(s.refused.iter().map(|seq| $crate::nostr::aggregate::Sourced { seq: *seq, contribution: Default::default() }))
                    .collect();
                let claimed = $apply(&mut *self.0, &items)$(.$aw)??;
                let decided: Vec<i64> = items.iter().map(|i| i.seq).collect();
                for chunk in decided.chunks($rows) {
                    diesel::delete(zap_pending::table.filter(zap_pending::seq.eq_any(chunk)))
                        .execute(&mut *self.0)$(.$aw)??;
                }
                let ids: Vec<_> = s
                    .counted
                    .iter()
                    .filter(|(seq, _, _)| claimed.contains(seq))
                    .map(|(_, id, _)| $crate::storage::models::NewZapCounted { id })
                    .collect();
                for chunk in ids.chunks($rows) {
                    diesel::insert_into(zap_counted::table)
                        .values(chunk)
                        .on_conflict_do_nothing()
                        .execute(&mut *self.0)$(.$aw)??;
                }
                let parked: Vec<_> = s
                    .waiting
                    .iter()
                    .map(|w| $crate::storage::models::NewZapPending {
                        seq: w.seq,
                        recipient: &w.recipient,
                        target: &w.target,
                    })
                    .collect();
                for chunk in parked.chunks($rows) {
                    diesel::insert_into(zap_pending::table)
                        .values(chunk)
                        .on_conflict_do_nothing()
                        .execute(&mut *self.0)$(.$aw)??;
                }
                let mut asked = std::collections::BTreeSet::new();
                for w in s.waiting.iter().filter(|w| w.on_server) {
                    asked.insert(w.recipient.as_str());
                }
                // Ask now if never asked, else `recheck_secs` after the last answer;
                // a lookup already due keeps its time.
                let due = format!(
                    "CASE WHEN zap_servers.next_check IS NOT NULL THEN zap_servers.next_check \
                     WHEN zap_servers.checked_at + {recheck_secs} > excluded.next_check \
                     THEN zap_servers.checked_at + {recheck_secs} ELSE excluded.next_check END"
                );
                for recipient in asked {
                    diesel::insert_into(zap_servers::table)
                        .values((
                            zap_servers::recipient.eq(recipient),
                            zap_servers::server.eq(None::<String>),
                            zap_servers::checked_at.eq(0),
                            zap_servers::keys.eq(""),
                            zap_servers::next_check.eq(Some(now)),
                            zap_servers::failures.eq(0),
                        ))
                        .on_conflict(zap_servers::recipient)
                        .do_update()
                        .set(zap_servers::next_check.eq(sql::<Nullable<BigInt>>(&due)))
                        .execute(&mut *self.0)$(.$aw)??;
                }
                Ok(ids.len())
            }

            pub(crate) async fn due(&mut self, now: i64, limit: i64) -> QueryResult<Vec<(String, i32)>> {
                use $crate::storage::schema::zap_servers;
                zap_servers::table
                    .filter(zap_servers::next_check.le(now))
                    .order(zap_servers::next_check)
                    .limit(limit)
                    .select((zap_servers::recipient, zap_servers::failures))
                    .load(self.0)$(.$aw)?
            }

            /// Run inside a transaction (it reads the keys it extends).
            pub(crate) async fn answered(&mut self, recipient: &str, server: Option<&str>, now: i64) -> QueryResult<()> {
                use $crate::storage::schema::zap_servers;
                let keys: Option<String> = zap_servers::table
                    .filter(zap_servers::recipient.eq(recipient))
                    .select(zap_servers::keys)
                    .first(&mut *self.0)$(.$aw)?
                    .optional()?;
                let keys = $crate::storage::zaps::remember_key(keys.as_deref().unwrap_or(""), server);
                diesel::insert_into(zap_servers::table)
                    .values((
                        zap_servers::recipient.eq(recipient),
                        zap_servers::server.eq(server),
                        zap_servers::checked_at.eq(now),
                        zap_servers::keys.eq(&keys),
                        zap_servers::next_check.eq(None::<i64>),
                        zap_servers::failures.eq(0),
                    ))
                    .on_conflict(zap_servers::recipient)
                    .do_update()
                    .set((
                        zap_servers::server.eq(server),
                        zap_servers::checked_at.eq(now),
                        zap_servers::keys.eq(&keys),
                        zap_servers::next_check.eq(None::<i64>),
                        zap_servers::failures.eq(0),
                    ))
                    .execute(&mut *self.0)$(.$aw)?
                    .map(drop)
            }

            pub(crate) async fn profiles_stored(&mut self, recipients: &[String], now: i64) -> QueryResult<()> {
                use $crate::storage::schema::zap_servers;
                for chunk in recipients.chunks($rows) {
                    // After `now`: a round that began by `now` and found no profile
                    // cannot back this lookup off (`failed`).
                    diesel::update(
                        zap_servers::table
                            .filter(zap_servers::recipient.eq_any(chunk))
                            .filter(zap_servers::next_check.is_not_null()),
                    )
                    .set(zap_servers::next_check.eq(Some(now + 1)))
                    .execute(&mut *self.0)$(.$aw)??;
                }
                Ok(())
            }

            pub(crate) async fn failed(&mut self, recipient: &str, next_check: i64, asked_at: i64) -> QueryResult<()> {
                use $crate::storage::schema::zap_servers;
                diesel::update(
                    zap_servers::table
                        .filter(zap_servers::recipient.eq(recipient))
                        .filter(zap_servers::next_check.le(asked_at)),
                )
                    .set((
                        zap_servers::failures.eq(zap_servers::failures + 1),
                        zap_servers::next_check.eq(Some(next_check)),
                    ))
                    .execute(self.0)$(.$aw)?
                    .map(drop)
            }

            pub(crate) async fn servers(&mut self) -> QueryResult<Vec<$crate::storage::zaps::ZapServer>> {
                use $crate::storage::schema::zap_servers;
                #[allow(clippy::type_complexity)]
                let rows: Vec<(String, Option<String>, String, i64, Option<i64>, i32)> = zap_servers::table
                    .order(zap_servers::recipient)
                    .select((
                        zap_servers::recipient,
                        zap_servers::server,
                        zap_servers::keys,
                        zap_servers::checked_at,
                        zap_servers::next_check,
                        zap_servers::failures,
                    ))
                    .load(self.0)$(.$aw)??;
                Ok(rows
                    .into_iter()
                    .map(|(recipient, server, keys, checked_at, next_check, failures)| {
                        $crate::storage::zaps::ZapServer {
                            recipient,
                            server,
                            keys: $crate::storage::zaps::split_keys(&keys),
                            checked_at,
                            next_check,
                            failures,
                        }
                    })
                    .collect())
            }
        }
    };
}
pub(crate) use impl_zap_queries;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_keep_their_newest_keys() {
        let cases = [
            ("", Some("a"), "a"),
            ("a", Some("a"), "a"),
            ("a", Some("b"), "b,a"),
            ("b,a", Some("a"), "a,b"),
            ("a,b,c,d", Some("e"), "e,a,b,c"),
            ("a,b", None, "a,b"),
            ("", None, ""),
        ];
        for (keys, server, want) in cases {
            assert_eq!(remember_key(keys, server), want, "{keys} + {server:?}");
        }
    }

    #[test]
    fn stored_tags_give_the_target_facts() {
        let a = "aa".repeat(32);
        let tags = format!(
            r#"[["zap","{a}","wss://r","1"],["p","{}"],["zap","x"]]"#,
            "bb".repeat(32)
        );
        let f = target_facts("cc".repeat(32), &tags);
        assert_eq!(f.splits, vec![a]);
        assert_eq!(
            target_facts("cc".repeat(32), "not json").splits,
            Vec::<String>::new()
        );
    }
}

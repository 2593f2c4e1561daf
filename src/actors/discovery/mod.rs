//! DiscoveryActor: outbox discovery (NIP-65), when `discovery.enabled`.
//!
//! Every `discovery.refresh_secs` (sooner while relay lists are still missing) it
//! reads the stored relay lists of the selected authors (the configured relays and
//! the indexers are asked for them: `Settings::relay_list_filter`), admits their
//! write relays (`discovery::admit`; host names are resolved and must give public
//! addresses only), blocks the discovered relays that failed too often in a row (the
//! lease holders write `relay_scores`), plans within the budget (`discovery::plan`)
//! and writes the result into the registry as `discovered` relays, each with the
//! filters narrowed to its authors (`discovery::narrow`). The lease rounds then sync
//! them like any other relay; a relay no longer planned is disabled (evicted).
//!
//! Every instance of a fleet runs it; they read the same lists and scores and write
//! the same rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, WrapFuture};

use crate::config::{RelaySettings, Settings};
use crate::discovery::{self, Refusal, Rules};
use crate::metrics::Counters;
use crate::storage::registry::NewRelay;
use crate::storage::{now_secs, EventStore, Registry, StoreResult};

/// While relay lists are still coming in (their number changed since the last
/// refresh, or none is stored yet), the next refresh comes at most this much later.
const CATCHING_UP: Duration = Duration::from_secs(2);

/// Longest wait for one host name's addresses.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Rounds of planning, each after dropping the relays whose names did not resolve
/// to public addresses.
const PLAN_ROUNDS: usize = 4;

/// Relay lists read per query, by author.
const AUTHORS_PER_QUERY: usize = 500;

pub struct DiscoveryActor {
    settings: Arc<Settings>,
    store: Arc<dyn EventStore>,
    registry: Arc<dyn Registry>,
    counters: Arc<Counters>,
    /// Relay lists the last refresh read.
    lists: Option<usize>,
}

impl DiscoveryActor {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn EventStore>,
        registry: Arc<dyn Registry>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            settings,
            store,
            registry,
            counters,
            lists: None,
        }
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let job = Refresh {
            settings: self.settings.clone(),
            store: self.store.clone(),
            registry: self.registry.clone(),
            counters: self.counters.clone(),
        };
        let every = Duration::from_secs(self.settings.discovery.refresh_secs);
        let before = self.lists;
        ctx.spawn(
            job.run(before)
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let next = match result {
                        Ok(lists) => {
                            act.lists = Some(lists);
                            let settled = lists > 0 && before == Some(lists);
                            if settled {
                                every
                            } else {
                                every.min(CATCHING_UP)
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "discovery failed; trying again");
                            every.min(CATCHING_UP)
                        }
                    };
                    ctx.run_later(next, |act, ctx| act.refresh(ctx));
                }),
        );
    }
}

impl Actor for DiscoveryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.refresh(ctx);
    }
}

/// One refresh, detached from the actor.
struct Refresh {
    settings: Arc<Settings>,
    store: Arc<dyn EventStore>,
    registry: Arc<dyn Registry>,
    counters: Arc<Counters>,
}

impl Refresh {
    /// Returns how many authors' relay lists it read (`before`: the last refresh's).
    async fn run(self, before: Option<usize>) -> StoreResult<usize> {
        let d = &self.settings.discovery;
        let rules = Rules {
            allow_private: d.allow_private,
            blocklist: d.blocklist.clone(),
        };
        let (lists, named, refused) = self.lists(&rules).await?;
        let now = now_secs();
        let rows = self.registry.relays().await?;
        let scores = self.registry.scores().await?;
        let mut excluded: HashSet<String> = rows
            .iter()
            .filter(|r| r.source != "discovered")
            .map(|r| r.url.clone())
            .collect();
        let discovered: HashSet<&str> = rows
            .iter()
            .filter(|r| r.source == "discovered")
            .map(|r| r.url.as_str())
            .collect();
        let active: HashSet<&str> = rows
            .iter()
            .filter(|r| r.source == "discovered" && r.enabled)
            .map(|r| r.url.as_str())
            .collect();
        let mut blocked: HashSet<String> = HashSet::new();
        for s in &scores {
            let failing = s.failures_in_row >= d.block_after_failures as i64
                && active.contains(s.url.as_str());
            if failing {
                let until = now + d.block_secs as i64;
                self.registry.block(&s.url, until).await?;
                tracing::warn!(
                    relay = %s.url,
                    failures = s.failures_in_row,
                    until,
                    "discovered relay blocked: its cycles failed too often in a row; the next candidate takes its place"
                );
                blocked.insert(s.url.clone());
            } else if s.blocked_until > now {
                blocked.insert(s.url.clone());
            } else if s.blocked_until > 0 {
                // The block is over: its failures in a row, from before it, start
                // afresh, so that they do not block it again before it has run.
                self.registry.block(&s.url, 0).await?;
                tracing::info!(relay = %s.url, "discovered relay's block is over");
            }
        }
        excluded.extend(blocked.iter().cloned());
        let score_of: HashMap<String, f64> =
            scores.iter().map(|s| (s.url.clone(), s.score)).collect();
        let mut unresolved: usize = 0;
        let mut plan = discovery::Plan::default();
        let current: HashSet<String> = active.iter().map(|u| u.to_string()).collect();
        for _ in 0..PLAN_ROUNDS {
            plan = discovery::plan(
                &lists,
                &score_of,
                &current,
                &excluded,
                d.per_author,
                d.max_relays,
            );
            let mut dropped = false;
            for url in plan.relays.keys() {
                let Some(host) = named.get(url) else { continue };
                if !resolves_public(host, url, d.allow_private).await {
                    excluded.insert(url.clone());
                    unresolved += 1;
                    dropped = true;
                }
            }
            if !dropped {
                break;
            }
        }
        // What the last round found unfit goes too (the budget is then not filled).
        plan.relays.retain(|url, _| !excluded.contains(url));
        let want: Vec<NewRelay> = plan
            .relays
            .iter()
            .map(|(url, authors)| NewRelay {
                url: url.clone(),
                source: "discovered",
                settings: narrowed(&self.settings, authors),
            })
            .collect();
        let (added, disabled) = self.registry.set_discovered(&want, now).await?;
        let evicted = discovered
            .iter()
            .filter(|u| !plan.relays.contains_key(**u) && !blocked.contains(**u))
            .count();
        let states = [
            (
                "candidate",
                plan.candidates.saturating_sub(plan.relays.len()) as u64,
            ),
            ("active", plan.relays.len() as u64),
            ("blocked", blocked.len() as u64),
            ("evicted", evicted as u64),
        ];
        *self
            .counters
            .discovery_states
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = states.into_iter().collect();
        let selected = self.selected().len();
        let news = added + disabled > 0 || before != Some(lists.len());
        if news {
            tracing::info!(
                authors = lists.len(),
                selected,
                candidates = plan.candidates,
                relays = plan.relays.len(),
                added,
                disabled,
                blocked = blocked.len(),
                refused,
                unresolved,
                "discovery refreshed"
            );
        }
        Ok(lists.len())
    }

    /// The selected authors (none: every author).
    fn selected(&self) -> Vec<String> {
        self.settings.selected_authors()
    }

    /// Author to the admitted write relays of its stored relay list; the host name of
    /// each admitted URL that has one; how many URLs were refused.
    async fn lists(
        &self,
        rules: &Rules,
    ) -> StoreResult<(
        BTreeMap<String, Vec<String>>,
        HashMap<String, String>,
        usize,
    )> {
        let selected = self.selected();
        let max = self.settings.discovery.max_authors as i64;
        let mut events = Vec::new();
        if selected.is_empty() {
            events = self.store.relay_lists(&[], max).await?;
        } else {
            for chunk in selected.chunks(AUTHORS_PER_QUERY) {
                let limit = 2 * chunk.len() as i64;
                events.extend(self.store.relay_lists(chunk, limit).await?);
            }
        }
        // The newest list of each author (a replaced one may linger a moment).
        events.sort_by_key(|e| std::cmp::Reverse(e.created_at));
        let mut lists = BTreeMap::new();
        let mut names = HashMap::new();
        let mut refused: BTreeMap<&'static str, usize> = BTreeMap::new();
        for event in events {
            let author = event.pubkey.to_hex();
            if lists.contains_key(&author) {
                continue;
            }
            let tags: Vec<Vec<String>> = event.tags.iter().map(|t| t.as_slice().to_vec()).collect();
            let mut own = Vec::new();
            for raw in discovery::write_relays(&tags) {
                match discovery::admit(&raw, rules) {
                    Ok((url, host)) => {
                        if let Some(host) = host {
                            names.insert(url.clone(), host);
                        }
                        if !own.contains(&url) {
                            own.push(url);
                        }
                    }
                    Err(why) => *refused.entry(Refusal::label(why)).or_default() += 1,
                }
            }
            lists.insert(author, own);
        }
        if !refused.is_empty() {
            tracing::debug!(?refused, "relay list URLs refused");
        }
        Ok((lists, names, refused.values().sum()))
    }
}

/// Whether `host` resolves, and only to addresses discovery may connect to.
async fn resolves_public(host: &str, url: &str, allow_private: bool) -> bool {
    let port = url::Url::parse(url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or(443);
    let lookup = tokio::net::lookup_host((host.to_owned(), port));
    let addrs: Vec<IpAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        _ => {
            tracing::debug!(relay = %url, "discovered relay's host does not resolve; left out");
            return false;
        }
    };
    let ok = !addrs.is_empty() && (allow_private || addrs.iter().all(|ip| discovery::public(*ip)));
    if !ok {
        tracing::warn!(relay = %url, ?addrs, "discovered relay's host resolves to addresses that are not public; left out");
    }
    ok
}

/// The registry settings of a discovered relay asked for `authors`: the filters
/// narrowed to them.
fn narrowed(settings: &Settings, authors: &[String]) -> String {
    let own = RelaySettings {
        filters: discovery::narrow(&settings.filters, authors),
        ..Default::default()
    };
    serde_json::to_string(&own).unwrap_or_default()
}

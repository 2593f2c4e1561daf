//! RegistryActor: the one actor that knows which relays this instance syncs.
//!
//! Every `fleet.round()` it runs a lease round (`Registry::lease_round`: heartbeat,
//! renewals, claims up to its fair share) and makes the relay actors match what it
//! holds: it starts an actor for each new lease on the relay Arbiters; stops at once
//! the actors whose lease it lost or whose relay left the registry; and drains (lets
//! the running cycle finish and save its cursor) then hands back the relays beyond its
//! share, and those paused or disabled. `Reload` (SIGHUP) writes the configuration's
//! relays into the registry and restarts the actors whose relay settings changed.
//! `Leave` (shutdown) stops every relay actor and hands back every lease, so that the
//! other instances take them at once instead of after `fleet.lease_secs`.
//!
//! A relay actor it stops is let go: only this actor holds its address strongly (the
//! watchdog and the health probe hold weak ones), so its actix `Supervisor` does not
//! restart it.

pub mod messages;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, ResponseActFuture, Supervisor,
    WeakRecipient, WrapFuture,
};

use self::messages::{Leave, Reload};
use crate::actors::interval::messages::{Unwatch, Watch};
use crate::actors::interval::IntervalSupervisor;
use crate::actors::pipeline::Pipeline;
use crate::actors::relay::clients::Clients;
use crate::actors::relay::state::SyncState;
use crate::actors::relay::RelayActor;
use crate::actors::Ping;
use crate::config::{RelayConfig, Settings};
use crate::discovery::score::{History, Sample};
use crate::http::Health;
use crate::metrics::Counters;
use crate::storage::registry::{Fence, Lease, Round, ScoreRow};
use crate::storage::{now_secs, EventStore, Registry};

/// The relay actors the health probe asks, by name; weak, as the watchdog's.
pub type Probes = Arc<Mutex<BTreeMap<String, WeakRecipient<Ping>>>>;

/// Longest wait for a relay actor to stop (it drains for up to `relay::DRAIN`).
const STOP_WAIT: Duration = Duration::from_secs(10);

/// What starting a relay actor takes.
pub struct Spawner {
    pub pipeline: Pipeline,
    /// The store relay actors read through (a pool of their own).
    pub store: Arc<dyn EventStore>,
    /// The same pool, as their sync state is written through.
    pub registry: Arc<dyn Registry>,
    pub supervisor: Addr<IntervalSupervisor>,
    pub clients: Arc<Clients>,
    pub arbiters: Vec<actix::ArbiterHandle>,
    pub probes: Probes,
    pub health: Arc<Health>,
}

struct Running {
    addr: Addr<RelayActor>,
    token: i64,
    config: RelayConfig,
    /// The registry's settings for it when started.
    stored: String,
}

pub struct RegistryActor {
    me: String,
    settings: Arc<Settings>,
    registry: Arc<dyn Registry>,
    spawner: Spawner,
    counters: Arc<Counters>,
    running: BTreeMap<String, Running>,
    /// Relays whose actors are stopping: not started again until they have.
    stopping: BTreeSet<String>,
    /// Relays whose settings do not make a relay actor, logged once.
    broken: BTreeSet<String>,
    next_arbiter: usize,
    in_round: bool,
    /// Held by a lease round and by `Leave`: the leases are handed back only once a
    /// round under way has committed.
    round_lock: Arc<tokio::sync::Mutex<()>>,
    /// When the last successful round began: the leases it renewed last until
    /// `fleet.lease_secs` after that.
    renewed: Option<Instant>,
    leaving: bool,
    /// The configuration's relays are in the registry (written before the first
    /// round, retried until written).
    config_written: bool,
    /// Samples of each running relay's counters, for its score.
    histories: BTreeMap<String, History>,
}

impl RegistryActor {
    pub fn new(
        settings: Arc<Settings>,
        registry: Arc<dyn Registry>,
        spawner: Spawner,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            me: settings.fleet.instance(),
            settings,
            registry,
            spawner,
            counters,
            running: BTreeMap::new(),
            stopping: BTreeSet::new(),
            broken: BTreeSet::new(),
            next_arbiter: 0,
            in_round: false,
            round_lock: Arc::default(),
            renewed: None,
            leaving: false,
            config_written: false,
            histories: BTreeMap::new(),
        }
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.leaving {
            return;
        }
        self.stop_if_lapsed(ctx);
        if self.in_round {
            return;
        }
        self.in_round = true;
        let (registry, me) = (self.registry.clone(), self.me.clone());
        let lease = self.settings.fleet.lease_secs as i64;
        let config = (!self.config_written).then(|| self.settings.registry_entries());
        let lock = self.round_lock.clone();
        let began = Instant::now();
        let round = async move {
            let _round = lock.lock().await;
            if let Some(entries) = config {
                let (added, disabled) = registry.sync_config(&entries, now_secs()).await?;
                if added + disabled > 0 {
                    tracing::info!(
                        added,
                        disabled,
                        "configuration's relays written to the registry"
                    );
                }
            }
            registry.lease_round(&me, now_secs(), lease).await
        };
        ctx.spawn(round.into_actor(self).map(move |round, act, ctx| {
            act.in_round = false;
            match round {
                Ok(round) if !act.leaving => {
                    act.config_written = true;
                    act.renewed = Some(began);
                    act.apply(round, ctx)
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    %error,
                    "lease round failed: leases lapse after fleet.lease_secs unless a round succeeds"
                ),
            }
        }));
    }

    /// Stops every relay actor once the leases the last successful round renewed may
    /// have lapsed (rounds fail or hang: the database is unreachable, or this process
    /// was stopped): another instance may sync them by now. Their leases are not
    /// released (they may no longer be ours); the next successful round starts again
    /// what it holds.
    fn stop_if_lapsed(&mut self, ctx: &mut Context<Self>) {
        let lease = Duration::from_secs(self.settings.fleet.lease_secs);
        let margin = self.settings.fleet.round();
        let lapsed = self
            .renewed
            .is_some_and(|at| at.elapsed() + margin >= lease);
        if !lapsed || self.running.is_empty() {
            return;
        }
        tracing::warn!(
            relays = self.running.len(),
            "leases not renewed within fleet.lease_secs: stopping every relay actor until a round succeeds"
        );
        let urls: Vec<String> = self.running.keys().cloned().collect();
        for url in urls {
            self.stop_then(&url, false, false, ctx);
        }
    }

    /// Samples each running relay's counters and scores it over the window
    /// (`discovery::score`); with discovery on, writes the scores where discovery
    /// (on any instance) reads them.
    fn score(&mut self, ctx: &mut Context<Self>) {
        let now = now_secs();
        let window = self.settings.discovery.score_window_secs;
        self.histories
            .retain(|url, _| self.running.contains_key(url));
        let mut rows = Vec::with_capacity(self.running.len());
        for url in self.running.keys() {
            let c = self.counters.relay(url);
            let sample = Sample {
                at: now as u64,
                novel: c.new_events.load(Ordering::Relaxed),
                received: c.received.load(Ordering::Relaxed),
                rejected: c.rejected_total(),
                cycles_failed: c.cycles_failed.load(Ordering::Relaxed),
                connected: c.connected.load(Ordering::Relaxed) == 1,
            };
            let history = self.histories.entry(url.clone()).or_default();
            history.record(sample, window);
            let w = history.windowed();
            let score = crate::discovery::score::score(&w);
            c.set_score(score);
            rows.push(ScoreRow {
                url: url.clone(),
                novel: w.novel as i64,
                duplicates: w.duplicates as i64,
                failures: w.failures as i64,
                failures_in_row: c.failures_in_row.load(Ordering::Relaxed) as i64,
                uptime: w.uptime,
                score,
                blocked_until: 0,
                updated_at: now,
            });
        }
        if !self.settings.discovery.enabled || rows.is_empty() {
            return;
        }
        let registry = self.registry.clone();
        ctx.spawn(
            async move {
                if let Err(error) = registry.save_scores(&rows).await {
                    tracing::debug!(%error, "relay scores not written; the next round writes them");
                }
            }
            .into_actor(self),
        );
    }

    /// Makes the relay actors match `round`.
    fn apply(&mut self, round: Round, ctx: &mut Context<Self>) {
        let c = &self.counters;
        c.leases_held
            .store(round.held.len() as u64, Ordering::Relaxed);
        c.lease_takeovers
            .fetch_add(round.takeovers, Ordering::Relaxed);
        *c.relay_states.lock().unwrap_or_else(|e| e.into_inner()) =
            round.states.iter().copied().collect();
        if round.takeovers > 0 {
            tracing::info!(
                relays = round.takeovers,
                "took over relays whose holder's lease lapsed"
            );
        }
        let held: BTreeMap<&str, &Lease> = round.held.iter().map(|l| (l.url.as_str(), l)).collect();
        let lost: Vec<String> = self
            .running
            .iter()
            .filter(|(url, r)| held.get(url.as_str()).is_none_or(|l| l.token != r.token))
            .map(|(url, _)| url.clone())
            .collect();
        for url in lost {
            tracing::warn!(relay = %url, "lease lost or relay removed from the registry: stopping its actor");
            self.stop_then(&url, false, true, ctx);
        }
        let active: Vec<String> = round
            .held
            .iter()
            .filter(|l| l.active)
            .map(|l| l.url.clone())
            .collect();
        let mut hand_back: BTreeSet<String> = round
            .held
            .iter()
            .filter(|l| !l.active)
            .map(|l| l.url.clone())
            .collect();
        hand_back.extend(crate::fleet::to_release(&active, round.share));
        for lease in round.held.iter().filter(|l| hand_back.contains(&l.url)) {
            if !self.stopping.contains(&lease.url) {
                self.hand_back(lease.url.clone(), lease.token, ctx);
            }
        }
        // Settings the registry changed since an actor started (discovery narrows a
        // relay to other authors; `[[relay]]` edits on another instance), or an id it
        // started without (resumed before its first round gave one): restarted after
        // its running cycle, and started again by the next round.
        let provenance = self.settings.storage.provenance;
        let changed: Vec<String> = round
            .held
            .iter()
            .filter(|l| l.active && !hand_back.contains(&l.url))
            .filter(|l| {
                self.running.get(&l.url).is_some_and(|r| {
                    let id = if provenance { l.id } else { 0 };
                    r.stored != l.settings || r.config.source != id
                })
            })
            .map(|l| l.url.clone())
            .collect();
        for url in changed {
            tracing::info!(relay = %url, "relay's registry settings changed: restarting its actor");
            self.stop_then(&url, true, false, ctx);
        }
        for lease in round.held.iter().filter(|l| l.active) {
            let url = &lease.url;
            if !self.running.contains_key(url)
                && !self.stopping.contains(url)
                && !hand_back.contains(url)
                && !self.start(lease)
            {
                // Not to be synced from here (its settings do not make an actor on
                // this host): handed back, for another instance to try.
                self.hand_back(url.clone(), lease.token, ctx);
            }
        }
        self.score(ctx);
    }

    /// Starts `lease`'s relay actor; `false` if its settings do not make one.
    fn start(&mut self, lease: &Lease) -> bool {
        let config = match self.settings.relay_config(&lease.url, &lease.settings) {
            Ok(config) => RelayConfig {
                source: if self.settings.storage.provenance {
                    lease.id
                } else {
                    0
                },
                ..config
            },
            Err(error) => {
                if self.broken.insert(lease.url.clone()) {
                    tracing::error!(relay = %lease.url, %error, "cannot sync this relay here; handing it back");
                }
                return false;
            }
        };
        self.broken.remove(&lease.url);
        let s = &self.spawner;
        let fence = Fence {
            relay: lease.url.clone(),
            holder: self.me.clone(),
            token: lease.token,
        };
        let state = SyncState::new(s.registry.clone(), fence, self.counters.clone());
        let arbiter = &s.arbiters[self.next_arbiter % s.arbiters.len()];
        self.next_arbiter += 1;
        let actor = {
            let (config, settings, pipeline, store) = (
                config.clone(),
                self.settings.clone(),
                s.pipeline.clone(),
                s.store.clone(),
            );
            let (supervisor, clients) = (s.supervisor.clone().recipient(), s.clients.clone());
            move |_: &mut _| {
                RelayActor::new(
                    config.clone(),
                    settings.clone(),
                    pipeline.clone(),
                    store.clone(),
                    state.clone(),
                    supervisor.clone(),
                    clients.clone(),
                )
            }
        };
        let addr = Supervisor::start_in_arbiter(arbiter, actor);
        let url = lease.url.clone();
        s.supervisor.do_send(Watch {
            relay: url.clone(),
            addr: addr.clone().recipient().downgrade(),
            counters: self.counters.relay(&url),
        });
        s.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(probe_name(&url), addr.clone().recipient().downgrade());
        tracing::info!(relay = %url, token = lease.token, "holding the relay's lease");
        self.running.insert(
            url,
            Running {
                addr,
                token: lease.token,
                config,
                stored: lease.settings.clone(),
            },
        );
        true
    }

    /// Stops `url`'s actor, if running, and lets it go (with `forget`, its metrics
    /// series too); resolves once it stopped.
    fn stop(
        &mut self,
        url: &str,
        drain: bool,
        forget: bool,
    ) -> Option<impl std::future::Future<Output = ()>> {
        let running = self.running.remove(url)?;
        let s = &self.spawner;
        s.supervisor.do_send(Unwatch {
            relay: url.to_owned(),
        });
        let name = probe_name(url);
        s.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        s.health.forget(&name);
        if forget {
            self.counters.forget_relay(url);
        }
        let stopped = running
            .addr
            .send(crate::actors::relay::messages::Leave { drain });
        Some(async move {
            let _ = stopped.await;
        })
    }

    /// Stops `url`'s actor (`drain`: after its running cycle; `forget`: its series
    /// too); a new one is not started until it has stopped (a round then starts one
    /// if the lease is still held: a restart under new settings).
    fn stop_then(&mut self, url: &str, drain: bool, forget: bool, ctx: &mut Context<Self>) {
        let Some(stopped) = self.stop(url, drain, forget) else {
            return;
        };
        self.stopping.insert(url.to_owned());
        let url = url.to_owned();
        let wait = async move {
            let _ = tokio::time::timeout(STOP_WAIT, stopped).await;
            url
        };
        ctx.spawn(wait.into_actor(self).map(|url, act, _| {
            act.stopping.remove(&url);
        }));
    }

    /// Drains `url`'s actor, then gives up its lease (the one of `token`: a lease
    /// taken anew meanwhile is kept).
    fn hand_back(&mut self, url: String, token: i64, ctx: &mut Context<Self>) {
        self.stopping.insert(url.clone());
        let stopped = self.stop(&url, true, true);
        let (registry, me) = (self.registry.clone(), self.me.clone());
        let release = async move {
            if let Some(stopped) = stopped {
                let _ = tokio::time::timeout(STOP_WAIT, stopped).await;
            }
            let released = registry.release(&me, &[(url.clone(), token)]).await;
            (url, released)
        };
        ctx.spawn(release.into_actor(self).map(|(url, released), act, _| {
            match released {
                Ok(()) => tracing::info!(relay = %url, "handed the relay back"),
                // The next round renews it and tries again.
                Err(error) => {
                    tracing::warn!(relay = %url, %error, "cannot hand the relay back yet")
                }
            }
            act.stopping.remove(&url);
        }));
    }
}

fn probe_name(url: &str) -> String {
    format!("relay {url}")
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(instance = %self.me, lease_secs = self.settings.fleet.lease_secs, "joining the fleet");
        // Leases this instance id still holds (a quick restart) are synced at once,
        // before any write: a database that is busy or locked delays only the round.
        let (registry, me) = (self.registry.clone(), self.me.clone());
        let held = async move { registry.held(&me, now_secs()).await };
        ctx.wait(held.into_actor(self).map(|held, act, ctx| {
            for lease in held.unwrap_or_default().iter().filter(|l| l.active) {
                act.start(lease);
            }
            act.round(ctx);
        }));
        ctx.run_interval(self.settings.fleet.round(), |act, ctx| act.round(ctx));
    }
}

impl Handler<Reload> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: Reload, ctx: &mut Self::Context) {
        self.settings = msg.0;
        let entries = self.settings.registry_entries();
        let registry = self.registry.clone();
        let write = async move { registry.sync_config(&entries, now_secs()).await };
        ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
            match written {
                Ok((added, disabled)) => {
                    tracing::info!(
                        added,
                        disabled,
                        "configuration's relays written to the registry"
                    )
                }
                Err(error) => tracing::error!(%error, "cannot write the configuration's relays"),
            }
            // Settings of relays held: the registry's as of the last round are kept
            // by their actors; the configuration's are re-read.
            let changed: Vec<String> = act
                .running
                .iter()
                .filter(|(url, r)| {
                    // Its id is the registry's, not the configuration's.
                    act.settings.relay_config(url, &r.stored).is_ok_and(|c| {
                        let c = RelayConfig {
                            source: r.config.source,
                            ..c
                        };
                        c != r.config
                    })
                })
                .map(|(url, _)| url.clone())
                .collect();
            for url in changed {
                tracing::info!(relay = %url, "relay settings changed: restarting its actor");
                act.stop_then(&url, true, false, ctx);
            }
            act.round(ctx);
        }));
    }
}

impl Handler<Leave> for RegistryActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Leave, _: &mut Self::Context) -> Self::Result {
        self.leaving = true;
        let urls: Vec<String> = self.running.keys().cloned().collect();
        // The process ends: its totals and series stay readable to the last.
        let stopped: Vec<_> = urls
            .iter()
            .filter_map(|u| self.stop(u, false, false))
            .collect();
        let (registry, me) = (self.registry.clone(), self.me.clone());
        let lock = self.round_lock.clone();
        Box::pin(
            async move {
                let _ = tokio::time::timeout(STOP_WAIT, futures::future::join_all(stopped)).await;
                // A round under way commits first: its claims are handed back too.
                let _round = lock.lock().await;
                if let Err(error) = registry.leave(&me).await {
                    tracing::warn!(%error, "cannot hand the leases back: they lapse instead");
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<Ping> for RegistryActor {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

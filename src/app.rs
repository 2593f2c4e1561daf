//! The wiring: every actor spawned bottom-up with its mailbox capacity, and the ordered
//! shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use actix::{Actor, Addr, Arbiter, Recipient, SyncArbiter};

use crate::actors::aggregator::messages::FlushNow;
use crate::actors::aggregator::{apply_backlog, AggregatorActor};
use crate::actors::dedup::DedupActor;
use crate::actors::discovery::DiscoveryActor;
use crate::actors::interval::policy::Bounds;
use crate::actors::interval::IntervalSupervisor;
use crate::actors::lnurl::{LnurlActor, LnurlOptions};
use crate::actors::pipeline::{Pipeline, StorageHandle};
use crate::actors::registry::{RegistryActor, Spawner};
use crate::actors::serve::Endpoint;
use crate::actors::sightings::Sightings;
use crate::actors::storage::messages::IsIdle;
use crate::actors::storage::{StorageActor, WritePolicy};
use crate::actors::verify::VerifyActor;
use crate::actors::zaps::ZapActor;
use crate::actors::Ping;
use crate::config::Settings;
use crate::http::Health;
use crate::metrics::Counters;
use crate::nostr::zap::ZapPolicy;
use crate::storage::{self, EventStore};

/// Set once shutdown begins: a panic while actors are being torn down (diesel-async's
/// SQLite wrapper panics when a call is dropped unfinished on a single-threaded
/// runtime) must not turn a clean stop into an internal-error exit.
pub static SHUTTING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

// Every actor answers the health check.
crate::actors::answers_ping!(
    crate::actors::aggregator::AggregatorActor,
    crate::actors::dedup::DedupActor,
    crate::actors::interval::IntervalSupervisor,
    crate::actors::lnurl::LnurlActor,
    crate::actors::relay::RelayActor,
    crate::actors::storage::StorageActor,
    crate::actors::verify::VerifyActor,
    crate::actors::zaps::ZapActor,
);

/// Longest a shutdown waits for the relay actors to stop and the leases to be handed
/// back.
const LEAVE_WAIT: Duration = Duration::from_secs(5);

/// Messages a storage worker's mailbox holds. The events in them are bounded by its
/// admission semaphore (`mailbox.storage`); this only bounds the messages.
const STORAGE_MAILBOX_MESSAGES: usize = 64;

pub struct App {
    registry: Addr<RegistryActor>,
    /// Outbox discovery, when on; held for as long as the service runs.
    _discovery: Option<Addr<DiscoveryActor>>,
    relays: Vec<Arbiter>,
    /// The zap actor's and the LNURL actor's, with what to quiesce before stopping it.
    zap_arbiter: Arbiter,
    quiesce: Vec<Recipient<crate::actors::Quiesce>>,
    /// The operator endpoint's address and its stop signal.
    http: Option<(SocketAddr, oneshot::Sender<()>)>,
    /// The relay endpoint (`[serve]`), when on.
    endpoint: Option<Endpoint>,
    probes: actix_rt::task::JoinHandle<()>,
    stop_probes: Arc<std::sync::atomic::AtomicBool>,
    pub health: Arc<Health>,
    storage: Vec<Addr<StorageActor>>,
    aggregator: Addr<AggregatorActor>,
    pub counters: Arc<Counters>,
    /// How this service judges zap receipts (and what it learnt of LNURL servers).
    pub zaps: ZapPolicy,
    pub store: Arc<dyn EventStore>,
}

impl App {
    /// Opens the store, applies any aggregation backlog, and starts the pipeline.
    /// Must run inside an actix System; migrations must have run.
    pub async fn start(settings: Settings) -> anyhow::Result<App> {
        Self::start_with(settings, |store| store).await
    }

    /// `start`, with the store the pipeline writes through passed through `wrap` first
    /// (the benchmark's yardstick is such a wrapper). The steps, bottom-up: serve the
    /// operator endpoint, open the store, spawn the sinks (aggregator, zap judge), the
    /// pipeline (dedup, verifiers, storage workers), then the registry actor, which
    /// starts the relay actors for the leases it takes.
    pub async fn start_with(
        settings: Settings,
        wrap: impl FnOnce(Arc<dyn EventStore>) -> Arc<dyn EventStore>,
    ) -> anyhow::Result<App> {
        let settings = Arc::new(settings);
        let counters = Arc::new(Counters::default());
        let health = Arc::new(Health::new(
            counters.clone(),
            settings.max_held_events() as u64,
        ));
        let http = serve_http(&settings, &health)?;
        let store = open_store(&settings, &counters, wrap).await?;
        let sinks = spawn_sinks(&settings, &store, &counters).await?;
        let (pipeline, storage) = spawn_pipeline(&settings, &store, &counters, &sinks)?;
        let mut actors: Vec<(String, Recipient<Ping>)> = vec![
            ("aggregator".into(), sinks.aggregator.clone().recipient()),
            ("zaps".into(), sinks.judge.clone().recipient()),
            ("dedup".into(), pipeline.dedup.clone().recipient()),
            ("verify".into(), pipeline.verify.clone().recipient()),
        ];
        for (n, worker) in storage.iter().enumerate() {
            actors.push((format!("storage-{n}"), worker.clone().recipient()));
        }
        if let Some(lnurl) = &sinks.lnurl {
            actors.push(("lnurl".into(), lnurl.clone().recipient()));
        }
        let probes = crate::actors::registry::Probes::default();
        let fleet =
            spawn_registry(&settings, &store, &health, &counters, pipeline, &probes).await?;
        actors.push(("interval".into(), fleet.supervisor.clone().recipient()));
        actors.push(("registry".into(), fleet.registry.clone().recipient()));
        let stop_probes = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probes = actix_rt::spawn(probe(
            health.clone(),
            store.clone(),
            (actors, probes),
            stop_probes.clone(),
        ));
        let endpoint = serve_relay(&settings, &counters)?;
        health.started.store(true, Ordering::Relaxed);
        // The LNURL actor first: the zap actor then judges what it learnt.
        let mut quiesce: Vec<Recipient<crate::actors::Quiesce>> =
            sinks.lnurl.map(|l| l.recipient()).into_iter().collect();
        quiesce.push(sinks.judge.recipient());
        Ok(App {
            registry: fleet.registry,
            _discovery: fleet.discovery,
            relays: fleet.arbiters,
            zap_arbiter: sinks.zap_arbiter,
            quiesce,
            http,
            endpoint,
            probes,
            stop_probes,
            health,
            storage,
            aggregator: sinks.aggregator,
            counters,
            zaps: sinks.zaps,
            store,
        })
    }

    /// Applies a configuration read again (SIGHUP): its relays and filters; the keys
    /// that need a restart are named in one warn line and keep their running values.
    pub fn reload(&self, running: &Settings, read: Settings) -> Settings {
        let (applied, ignored) = running.live_update(read);
        if !ignored.is_empty() {
            tracing::warn!(keys = ?ignored, "configuration reloaded; these keys need a restart and keep their running values");
        } else {
            tracing::info!("configuration reloaded");
        }
        self.registry
            .do_send(crate::actors::registry::messages::Reload(Arc::new(
                applied.clone(),
            )));
        applied
    }

    /// Where `/metrics`, `/livez` and `/readyz` are served, if they are.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(addr, _)| *addr)
    }

    /// Where the relay endpoint (`[serve]`) listens, if it does.
    pub fn serve_addr(&self) -> Option<SocketAddr> {
        self.endpoint.as_ref().map(|e| e.addr)
    }

    /// Waits until every relay completed `cycles` sync cycles, or `timeout` passes.
    pub async fn wait_for_cycles(&self, cycles: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let (done, total) = self.counters.relays_with_cycles(cycles);
            if total > 0 && done == total {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops reading from relays, commits what was received, flushes aggregates.
    /// Returns whether everything was committed within `timeout`.
    pub async fn shutdown(mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        SHUTTING_DOWN.store(true, Ordering::Relaxed);
        self.health.started.store(false, Ordering::Relaxed);
        // Clients first: they only read.
        if let Some(endpoint) = self.endpoint.take() {
            endpoint.stop().await;
        }
        // Leases handed back first: the other instances take the relays at once. A
        // stalled database must not eat the drain's time: the leases lapse instead
        // (only the wait is dropped; the actor finishes its call).
        let _ = tokio::time::timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .min(LEAVE_WAIT),
            self.registry.send(crate::actors::registry::messages::Leave),
        )
        .await;
        for arbiter in &self.relays {
            arbiter.stop();
        }
        let mut drained = false;
        while Instant::now() < deadline {
            let mut idle = true;
            for worker in &self.storage {
                idle &= worker.send(IsIdle).await.unwrap_or(true);
            }
            if idle {
                drained = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut flushed = false;
        while Instant::now() < deadline {
            match self.aggregator.send(FlushNow).await {
                Ok(0) => {
                    flushed = true;
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(_) => break,
            }
        }
        // Zap receipts queued are judged now; what a timeout leaves is judged at the next
        // start (it is stored).
        let mut judged = true;
        for actor in &self.quiesce {
            while actor.send(crate::actors::Quiesce).await.unwrap_or(false) {
                if Instant::now() >= deadline {
                    judged = false;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.zap_arbiter.stop();
        // The probes finish what they started (see `probe`); waiting is bounded.
        self.stop_probes.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.probes).await;
        if let Some((_, stop)) = self.http {
            let _ = stop.send(());
        }
        if !(drained && flushed && judged) {
            tracing::warn!(
                drained,
                flushed,
                judged,
                "shutdown timed out; the next start re-fetches and re-aggregates"
            );
        }
        drained && flushed && judged
    }
}

/// Binds the operator endpoint first: a taken port is a start-up error, not a silent
/// gap in monitoring.
fn serve_http(
    settings: &Settings,
    health: &Arc<Health>,
) -> anyhow::Result<Option<(SocketAddr, oneshot::Sender<()>)>> {
    match settings.http.listen.as_str() {
        "" => Ok(None),
        listen => {
            let listener = std::net::TcpListener::bind(listen)
                .map_err(|e| anyhow::anyhow!("http.listen {listen}: {e}"))?;
            let addr = listener.local_addr()?;
            let (stop, stopped) = oneshot::channel();
            crate::http::spawn(listener, health.clone(), stopped)?;
            tracing::info!(%addr, "serving /metrics, /livez and /readyz");
            Ok(Some((addr, stop)))
        }
    }
}

/// Starts the relay endpoint when `serve.listen` is set, with a database pool of its
/// own. A taken port is a start-up error.
fn serve_relay(settings: &Settings, counters: &Arc<Counters>) -> anyhow::Result<Option<Endpoint>> {
    let serve = &settings.serve;
    if serve.listen.is_empty() {
        return Ok(None);
    }
    let reader = storage::open_reader(
        &settings.database.url,
        serve.database_connections,
        Duration::from_millis(serve.query_timeout_ms),
    )?;
    Ok(Some(Endpoint::start(serve, reader, counters.clone())?))
}

/// The writers' store (through `wrap`), with the aggregation backlog applied.
async fn open_store(
    settings: &Settings,
    counters: &Arc<Counters>,
    wrap: impl FnOnce(Arc<dyn EventStore>) -> Arc<dyn EventStore>,
) -> anyhow::Result<Arc<dyn EventStore>> {
    let store =
        wrap(storage::open(&settings.database.url, settings.database.max_connections).await?);
    let backlog = apply_backlog(&*store, counters).await?;
    if backlog > 0 {
        tracing::info!(
            events = backlog,
            "applied aggregates left over by the last run"
        );
    }
    Ok(store)
}

/// Where stored events go next: the aggregator, and the zap judge (with the LNURL
/// actor, where recipients' servers decide) on an Arbiter of their own.
struct Sinks {
    aggregator: Addr<AggregatorActor>,
    judge: Addr<ZapActor>,
    lnurl: Option<Addr<LnurlActor>>,
    zap_arbiter: Arbiter,
    /// Whose zap receipts count: the zap actor judges them all by it.
    zaps: ZapPolicy,
}

async fn spawn_sinks(
    settings: &Arc<Settings>,
    store: &Arc<dyn EventStore>,
    counters: &Arc<Counters>,
) -> anyhow::Result<Sinks> {
    let zaps = settings.aggregates.zap_policy();
    let aggregator = AggregatorActor::new(
        store.clone(),
        counters.clone(),
        settings.flush_interval(),
        settings.mailbox.aggregator,
        Duration::from_secs(settings.retention.expiry_check_secs),
        settings.retention.max_unseen_tombstones,
    )
    .start();
    // Zap receipts are judged on an Arbiter of their own, with connections of their
    // own: a connection dies with the Arbiter that opened it, on both backends (a
    // SQLite connection runs its calls on the blocking pool of the runtime it was
    // opened on), so a shared one would fail the writers' next call once this Arbiter
    // stops.
    let zap_arbiter = Arbiter::new();
    let zap_store = storage::open(&settings.database.url, 2).await?;
    let judge = {
        let (store, zaps, counters) = (zap_store.zap_store(), zaps.clone(), counters.clone());
        let every = settings.flush_interval();
        let recheck = settings.aggregates.lnurl_recheck_secs as i64;
        ZapActor::start_in_arbiter(&zap_arbiter.handle(), move |_| {
            ZapActor::new(store, zaps, counters, every, recheck)
        })
    };
    // Only where a recipient's LNURL server decides.
    let lnurl = zaps.asks_servers().then(|| {
        let (store, judge) = (zap_store.clone(), judge.clone().recipient());
        let a = &settings.aggregates;
        let options = LnurlOptions {
            every: Duration::from_secs(a.lnurl_check_secs),
            allow_private: a.lnurl_allow_private,
            between_fetches: Duration::from_secs(1) / a.lnurl_fetches_per_sec.max(1),
            per_host: Duration::from_secs(1) / a.lnurl_host_fetches_per_sec.max(1),
        };
        LnurlActor::start_in_arbiter(&zap_arbiter.handle(), move |_| {
            LnurlActor::new(store, judge, options)
        })
    });
    Ok(Sinks {
        aggregator,
        judge,
        lnurl,
        zap_arbiter,
        zaps,
    })
}

/// The dedup actor, the verifiers and the storage workers, as relay actors reach them.
fn spawn_pipeline(
    settings: &Settings,
    store: &Arc<dyn EventStore>,
    counters: &Arc<Counters>,
    sinks: &Sinks,
) -> anyhow::Result<(Pipeline, Vec<Addr<StorageActor>>)> {
    let mailbox = &settings.mailbox;
    let lru = std::num::NonZeroUsize::new(settings.dedup.lru_capacity)
        .ok_or_else(|| anyhow::anyhow!("dedup.lru_capacity must be at least 1"))?;
    let filter = crate::actors::dedup::FilterSlot::default();
    let sightings = Arc::new(Sightings::new(counters.clone()));
    let dedup = DedupActor::new(
        lru,
        filter.clone(),
        mailbox.dedup,
        counters.clone(),
        sightings.clone(),
    )
    .start();
    actix_rt::spawn(crate::actors::dedup::load_filter(
        store.clone(),
        filter,
        counters.clone(),
    ));
    let verify_threads = settings.verify_threads();
    let verify = {
        let counters = counters.clone();
        SyncArbiter::start(verify_threads, move || VerifyActor::new(counters.clone()))
    };
    let perf = &settings.sync.performance;
    let policy = WritePolicy {
        batch_size: perf.batch_size,
        batch_timeout: Duration::from_millis(perf.batch_timeout_ms),
        max_batch_rows: perf.max_batch_rows,
        retry_min: Duration::from_millis(settings.database.retry_min_ms),
        retry_max: Duration::from_millis(settings.database.retry_max_ms),
        min_commit_interval: Duration::from_millis(perf.min_commit_interval_ms),
    };
    // SQLite has one writer at a time: more workers only contend for its lock.
    let workers = match storage::Backend::of_url(&settings.database.url) {
        Some(storage::Backend::Sqlite) => 1,
        _ => settings.storage.workers,
    };
    let storage: Vec<Addr<StorageActor>> = (0..workers)
        .map(|id| {
            StorageActor::new(
                id,
                store.clone(),
                sinks.judge.clone().recipient(),
                dedup.clone(),
                sinks.aggregator.clone(),
                counters.clone(),
                policy.clone(),
                STORAGE_MAILBOX_MESSAGES,
                sightings.clone(),
            )
            .start()
        })
        .collect();
    let handles = storage
        .iter()
        .map(|addr| StorageHandle {
            addr: addr.clone(),
            admission: Arc::new(tokio::sync::Semaphore::new(mailbox.storage)),
        })
        .collect();
    let pipeline = Pipeline {
        dedup,
        verify,
        verify_threads,
        storage: handles,
        store: store.clone(),
        counters: counters.clone(),
        frame_bytes: Arc::new(tokio::sync::Semaphore::new(mailbox.frame_bytes_total)),
        sightings,
    };
    Ok((pipeline, storage))
}

/// The relays' side: the interval supervisor, the relay Arbiters, and the registry
/// actor that starts relay actors on them for the leases it takes.
struct Fleet {
    supervisor: Addr<IntervalSupervisor>,
    arbiters: Vec<Arbiter>,
    registry: Addr<RegistryActor>,
    discovery: Option<Addr<DiscoveryActor>>,
}

async fn spawn_registry(
    settings: &Arc<Settings>,
    store: &Arc<dyn EventStore>,
    health: &Arc<Health>,
    counters: &Arc<Counters>,
    pipeline: Pipeline,
    probes: &crate::actors::registry::Probes,
) -> anyhow::Result<Fleet> {
    let i = &settings.interval;
    let bounds = Bounds {
        idle: Duration::from_secs(i.idle_secs),
        normal: Duration::from_secs(i.normal_secs),
        busy: Duration::from_secs(i.busy_secs),
        busy_threshold: i.busy_threshold,
        backoff_min: Duration::from_millis(settings.sync.backoff_min_ms),
        backoff_max: Duration::from_millis(settings.sync.backoff_max_ms),
    };
    let supervisor = IntervalSupervisor::new(bounds, Duration::from_secs(i.watchdog_secs)).start();
    // Relay actors read and save cursors from their own Arbiters. A PostgreSQL
    // connection dies with the Arbiter that opened it, so they get a pool of their
    // own rather than leaving dead connections in the writers' pool at shutdown.
    // Sized by the configuration's relays (relays added at run time share them).
    let configured = settings.relay_urls().len();
    // Discovered relays come at run time: as many Arbiters as cores then.
    let arbiters_for = if settings.discovery.enabled {
        usize::MAX
    } else {
        configured
    };
    let cursors = storage::open(&settings.database.url, configured.clamp(1, 4)).await?;
    // Relay actors share about one Arbiter per core: a relay costs an actor and its
    // connection's tasks, not an OS thread (1,000 relays, mostly dead, are cheap).
    let mut arbiters = Vec::new();
    for _ in 0..relay_arbiters(arbiters_for) {
        let runtime = relay_runtime()?;
        arbiters.push(Arbiter::with_tokio_rt(move || runtime));
    }
    let registry = RegistryActor::new(
        settings.clone(),
        store.registry(),
        Spawner {
            pipeline,
            store: cursors.clone(),
            registry: cursors.registry(),
            supervisor: supervisor.clone(),
            clients: Arc::new(crate::actors::relay::clients::Clients::default()),
            arbiters: arbiters.iter().map(|a| a.handle()).collect(),
            probes: probes.clone(),
            health: health.clone(),
        },
        counters.clone(),
    )
    .start();
    let discovery = settings.discovery.enabled.then(|| {
        DiscoveryActor::new(
            settings.clone(),
            store.clone(),
            store.registry(),
            counters.clone(),
        )
        .start()
    });
    Ok(Fleet {
        supervisor,
        arbiters,
        registry,
        discovery,
    })
}

/// Arbiters the relay actors share: one per core, no more than the configured relays
/// (at least one: relays may come from the registry alone).
fn relay_arbiters(relays: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    relays.clamp(1, cores)
}

/// The runtime of a relay Arbiter. Its blocking pool (name lookups) is kept small: the
/// default allows 512 threads per runtime, one per relay being looked up at once.
fn relay_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
}

/// Every second, until `stop`: whether the database takes writes, and which actors
/// answer. A database call is never cancelled (diesel-async's SQLite wrapper blocks in
/// place when one is dropped unfinished, which panics on actix's single-threaded
/// runtime): a probe slower than `WAIT` marks the database down and is left to finish.
async fn probe(
    health: Arc<Health>,
    store: Arc<dyn EventStore>,
    (actors, relays): (
        Vec<(String, Recipient<Ping>)>,
        crate::actors::registry::Probes,
    ),
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    const WAIT: Duration = Duration::from_secs(2);
    // Known from the start: one that never answers goes silent too.
    for (name, _) in &actors {
        health.alive(name);
    }
    let mut pending: Option<actix_rt::task::JoinHandle<bool>> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut handle = match pending.take() {
            Some(h) => h,
            None => {
                let store = store.clone();
                actix_rt::spawn(async move { store.probe_write().await.is_ok() })
            }
        };
        // Dropping the timeout drops only our wait, not the probe.
        let ok = match tokio::time::timeout(WAIT, &mut handle).await {
            Ok(done) => done.unwrap_or(false),
            Err(_) => {
                pending = Some(handle);
                false
            }
        };
        if health.database.swap(ok, Ordering::Relaxed) != ok {
            tracing::info!(taking_writes = ok, "database");
        }
        // The fixed actors and the relay actors of the moment (one that left is no
        // longer asked); a relay's address is held only while its ask is sent.
        let mut names: Vec<String> = actors.iter().map(|(name, _)| name.clone()).collect();
        let mut asks: Vec<_> = actors.iter().map(|(_, actor)| actor.send(Ping)).collect();
        for (name, weak) in relays.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Some(actor) = weak.upgrade() {
                names.push(name.clone());
                asks.push(actor.send(Ping));
            }
        }
        // All at once: a few silent actors must not delay the others' answers past
        // the window /livez allows.
        let answers =
            futures::future::join_all(asks.into_iter().map(|ask| tokio::time::timeout(WAIT, ask)))
                .await;
        for (name, answer) in names.iter().zip(answers) {
            if let Ok(Ok(())) = answer {
                health.alive(name);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some(probe) = pending {
        let _ = probe.await;
    }
}

//! The operator's endpoint (`[http] listen`): `/metrics` in Prometheus text format,
//! `/livez` and `/readyz`. It runs on a thread of its own and only reads shared state
//! (the counters, and a [`Health`] that the service updates every second), so a busy
//! or stalled pipeline never delays a scrape.
//!
//! - `/readyz` is 200 once migrations ran and the pipeline started, while the database
//!   takes writes (a probe every second, and the last event write did not fail) and at
//!   least one relay is connected; else 503 with the reasons.
//! - `/metrics` is rendered by `exporter`.
//! - `/livez` is 200 while every actor answers a `Ping` (asked every second) within
//!   [`LIVE_WITHIN`]; else 503 naming the actors that stopped answering.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

pub use self::exporter::render;
use crate::metrics::Counters;

mod exporter;

/// An actor that has not answered for this long fails `/livez`.
pub const LIVE_WITHIN: Duration = Duration::from_secs(10);

/// What the probes last saw.
#[derive(Debug)]
pub struct Health {
    pub counters: Arc<Counters>,
    /// Events the pipeline may hold at most (`Settings::max_held_events`).
    pub max_held: u64,
    /// Migrations ran and the pipeline is up.
    pub started: AtomicBool,
    /// The last write probe succeeded.
    pub database: AtomicBool,
    /// When each actor last answered a `Ping`.
    answered: Mutex<BTreeMap<String, Instant>>,
}

impl Health {
    pub fn new(counters: Arc<Counters>, max_held: u64) -> Self {
        Self {
            counters,
            max_held,
            started: AtomicBool::new(false),
            database: AtomicBool::new(false),
            answered: Mutex::new(BTreeMap::new()),
        }
    }

    fn answered(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Instant>> {
        self.answered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `actor` answered just now.
    pub fn alive(&self, actor: &str) {
        self.answered().insert(actor.to_owned(), Instant::now());
    }

    /// `actor` is gone on purpose (a relay that left this instance).
    pub fn forget(&self, actor: &str) {
        self.answered().remove(actor);
    }

    /// The actors that have not answered within `within`.
    pub fn silent(&self, within: Duration) -> Vec<String> {
        self.answered()
            .iter()
            .filter(|(_, at)| at.elapsed() > within)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Why the service is not ready, if it is not.
    pub fn not_ready(&self) -> Vec<String> {
        let mut why = Vec::new();
        if !self.started.load(Ordering::Relaxed) {
            why.push("starting".to_owned());
        }
        if !self.database.load(Ordering::Relaxed) {
            why.push("database not taking writes".to_owned());
        }
        if let Some(error) = self.counters.write_error() {
            why.push(format!("event writes failing (retried): {error}"));
        }
        let relays = self
            .counters
            .relays
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // An instance of a fleet may hold no relay: nothing to be connected to.
        if !relays.is_empty()
            && !relays
                .values()
                .any(|r| r.connected.load(Ordering::Relaxed) == 1)
        {
            why.push("no relay connected".to_owned());
        }
        why
    }
}

/// Starts serving on `listener` from a thread of its own until `stop` is dropped or
/// sent to.
pub fn spawn(
    listener: std::net::TcpListener,
    health: Arc<Health>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                tokio::select! {
                    _ = accept(listener, health) => {}
                    _ = stop => {}
                }
            })
        })?;
    Ok(())
}

/// Connections served at once; more are closed as they come.
const MAX_CONNECTIONS: usize = 64;
/// Longest wait for a request's headers (a client that trickles them is dropped).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection, however busy.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

async fn accept(listener: tokio::net::TcpListener, health: Arc<Health>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, say: wait instead of spinning on it.
                tracing::debug!(%error, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let health = health.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&req, &health)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let serve = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, serve).await;
            drop(slot);
        });
    }
}

fn route<B>(req: &Request<B>, health: &Health) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(&health.counters, health.max_held),
        ),
        "/livez" => match health.silent(LIVE_WITHIN).as_slice() {
            [] => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            silent => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not answering: {}\n", silent.join(", ")),
            ),
        },
        "/readyz" => match health.not_ready().as_slice() {
            [] => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
            why => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {}\n", why.join(", ")),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    respond(status, content_type, body)
}

/// A response of `status` with `body` as `content_type`.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

//! The relay endpoint (`[serve]`): the database served as a read-only Nostr relay,
//! on an Arbiter of its own with a database pool of its own, so neither a busy client
//! nor a slow query takes a thread or a connection from the sync.
//!
//! ```text
//!   client ws ──▶ connection task ×clients ── select / count / items ──▶ Reader (own pool)
//!                        ▲    └──▶ writer task (outbound byte budget) ──▶ client ws
//!                        └── Batch (broadcast) ── feed task ── committed rows ──▶ Reader
//! ```
//!
//! The rules (what a client may ask, which COUNT the aggregates answer, the messages)
//! live in `crate::serve`; this module only executes them. Connections are tasks, not
//! actors: each owns its socket and subscriptions and talks to nothing but the feed.

mod connection;
mod feed;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{broadcast, watch};

use crate::config::ServeSettings;
use crate::http::respond;
use crate::metrics::Counters;
use crate::storage::Reader;

pub use feed::{Batch, Live};

/// Longest wait for a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection shares.
pub(crate) struct Shared {
    pub limits: ServeSettings,
    pub reader: Arc<dyn Reader>,
    pub counters: Arc<Counters>,
    pub feed: broadcast::Sender<Arc<Batch>>,
    /// The highest row the feed has broadcast: a subscription opened now has its
    /// stored events from its query, and takes from the feed only rows above it (or
    /// found late, below it).
    pub published: std::sync::atomic::AtomicI64,
    /// Wakes an idle feed: a client connected.
    pub connected: tokio::sync::Notify,
    pub stop: watch::Receiver<bool>,
}

/// The running endpoint.
pub struct Endpoint {
    pub addr: SocketAddr,
    arbiter: Arbiter,
    stop: watch::Sender<bool>,
}

impl Endpoint {
    /// Binds `limits.listen` and serves from an Arbiter of its own.
    pub fn start(
        limits: &ServeSettings,
        reader: Arc<dyn Reader>,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Endpoint> {
        let listener = std::net::TcpListener::bind(&limits.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on serve.listen {}: {e}", limits.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let (tx, _) = broadcast::channel(feed::BATCHES);
        let shared = Arc::new(Shared {
            limits: limits.clone(),
            reader,
            counters,
            feed: tx,
            published: std::sync::atomic::AtomicI64::new(0),
            connected: tokio::sync::Notify::new(),
            stop: stopped,
        });
        let arbiter = Arbiter::new();
        let feed_shared = shared.clone();
        arbiter.spawn(async move { feed::run(feed_shared).await });
        arbiter.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => accept(listener, shared).await,
                Err(error) => tracing::error!(%error, "the relay endpoint cannot listen"),
            }
        });
        tracing::info!(%addr, "relay endpoint listening");
        Ok(Endpoint {
            addr,
            arbiter,
            stop,
        })
    }

    /// Closes every connection and stops the Arbiter.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        // Connections close their sockets and finish a query in flight.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.arbiter.stop();
    }
}

async fn accept(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "cannot accept a client");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        actix_rt::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(route(req, shared)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        });
    }
}

/// A websocket upgrade (the connection is then served by `connection::serve`), the
/// NIP-11 document, or a line saying what this is.
fn route(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let upgrade = header(hyper::header::UPGRADE) == "websocket";
    let full = shared.counters.serve.connections.get() >= shared.limits.max_connections as i64;
    if upgrade && full {
        shared
            .counters
            .serve
            .connections_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "too many clients\n".into(),
        );
    }
    if upgrade {
        let Some(key) = req.headers().get(hyper::header::SEC_WEBSOCKET_KEY).cloned() else {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "no websocket key\n".into(),
            );
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        actix_rt::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => connection::serve(upgraded, shared).await,
                Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("websocket"),
        );
        headers.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("Upgrade"),
        );
        if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
            headers.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
        }
        return response;
    }
    if header(hyper::header::ACCEPT).contains("application/nostr+json") {
        let mut response = respond(
            StatusCode::OK,
            "application/nostr+json",
            crate::serve::document(&shared.limits),
        );
        let headers = response.headers_mut();
        for (name, value) in [
            ("access-control-allow-origin", "*"),
            ("access-control-allow-headers", "*"),
            ("access-control-allow-methods", "GET"),
        ] {
            headers.insert(name, hyper::header::HeaderValue::from_static(value));
        }
        return response;
    }
    respond(
        StatusCode::OK,
        "text/plain",
        "a read-only Nostr relay: connect with a websocket\n".into(),
    )
}

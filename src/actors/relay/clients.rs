//! What relay actors share. The nostr-sdk clients: every client preallocates state
//! whatever its relays do (a signature cache of 128,000 entries: some 300 kB resident),
//! so the relays share one client per NIP-42 key instead of having one each, and one
//! transport routes each connection to the tap of the relay actor it belongs to. And
//! the answers of the catch-up check (does the database hold many events of a
//! window?), which depend on the database, not the relay: a thousand relays started at
//! once, or relays that connect and fail and retry, ask the database once a while.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_wsocket::ConnectionMode;
use nostr_sdk::pool::transport::error::TransportError;
use nostr_sdk::pool::transport::websocket::{WebSocketSink, WebSocketStream, WebSocketTransport};
use nostr_sdk::prelude::*;
use nostr_sdk::util::BoxedFuture;

use super::transport::TapTransport;

/// Slots of a client's notification channel (the pool's; each relay has its own, see
/// `RelayActor`). Nothing here listens to it.
const POOL_NOTIFICATIONS: usize = 64;

/// Each relay's tap, by URL as the SDK writes it.
#[derive(Debug, Default)]
struct Routes(Mutex<HashMap<String, TapTransport>>);

#[derive(Debug, Clone)]
struct Routed(Arc<Routes>);

#[derive(Debug, thiserror::Error)]
#[error("no relay actor for {0}")]
struct NoRoute(String);

impl WebSocketTransport for Routed {
    fn support_ping(&self) -> bool {
        true
    }

    fn connect<'a>(
        &'a self,
        url: &'a Url,
        mode: &'a ConnectionMode,
        timeout: Duration,
    ) -> BoxedFuture<'a, Result<(WebSocketSink, WebSocketStream), TransportError>> {
        Box::pin(async move {
            let tap = self
                .0
                 .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(url.as_str())
                .cloned();
            match tap {
                Some(tap) => tap.connect(url, mode, timeout).await,
                None => Err(TransportError::backend(NoRoute(url.to_string()))),
            }
        })
    }
}

/// How long an answer of the catch-up check is reused.
const HELD_FRESH: Duration = Duration::from_secs(600);

/// The shared clients, where their connections go, and the catch-up check's answers.
#[derive(Debug, Default)]
pub struct Clients {
    routes: Arc<Routes>,
    by_key: Mutex<HashMap<Option<PublicKey>, Client>>,
    /// Per filter key and window start: whether the database held many events, and when
    /// that was checked.
    held: Mutex<HashMap<(String, u64), (std::time::Instant, bool)>>,
    /// Held while the database is asked, so that relays asking at once ask it once.
    pub checking: tokio::sync::Mutex<()>,
}

impl Clients {
    /// The catch-up check's answer for `key` from `since`, if checked lately.
    pub fn held_recently(&self, key: &str, since: u64) -> Option<bool> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&(key.to_owned(), since))
            .filter(|(at, _)| at.elapsed() < HELD_FRESH)
            .map(|(_, held)| *held)
    }

    pub fn remember_held(&self, key: String, since: u64, held: bool) {
        let mut map = self.held.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (at, _)| at.elapsed() < HELD_FRESH);
        map.insert((key, since), (std::time::Instant::now(), held));
    }

    /// Connections to `url` go to `tap` from now on (a restarted actor's new tap).
    pub fn route(&self, url: &str, tap: TapTransport) {
        let key = Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.to_string());
        self.routes
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, tap);
    }

    /// The client of relays authenticating with `auth` (NIP-42), or of those without.
    pub fn client(&self, auth: Option<&Keys>) -> Client {
        let key = auth.map(|k| k.public_key());
        let mut clients = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(key)
            .or_insert_with(|| {
                // Events never reach the SDK, so its database (which by default tracks
                // 35,000 ids, preallocated) need remember next to nothing.
                let tracker = MemoryDatabase::with_opts(MemoryDatabaseOptions {
                    events: false,
                    max_events: Some(1),
                });
                let builder = Client::builder()
                    .database(tracker)
                    .websocket_transport(Routed(self.routes.clone()))
                    .opts(
                        ClientOptions::new()
                            .automatic_authentication(auth.is_some())
                            .pool(
                                RelayPoolOptions::new()
                                    .notification_channel_size(POOL_NOTIFICATIONS),
                            ),
                    );
                // The SDK answers a relay's AUTH challenge (NIP-42) when it has a signer.
                match auth {
                    Some(keys) => builder.signer(keys.clone()).build(),
                    None => builder.build(),
                }
            })
            .clone()
    }
}

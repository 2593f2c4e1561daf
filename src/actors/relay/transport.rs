//! The websocket tap. nostr-sdk 0.44 hands received events to consumers through a
//! bounded broadcast channel that silently drops them when a consumer lags, and it
//! verifies every signature on one task per connection. This transport wraps the
//! SDK's own websocket and takes every text frame into a bounded channel read by the
//! relay actor; EVENT frames stop here, the control frames the SDK needs (EOSE, CLOSED,
//! AUTH, NEG-MSG, NEG-ERR) also go on to the SDK so its connection and subscription
//! state stays right. A full
//! channel stalls the socket read, which is backpressure all the way to the relay:
//! nothing can be dropped.
//!
//! It also turns Nagle's algorithm off. Paging sends a CLOSE and the next REQ back to
//! back; with Nagle on, the REQ waits for the relay to acknowledge the CLOSE, which
//! a relay with delayed ACKs does after 40 ms: 40 ms per page, and seconds per window
//! on a relay that clamps its pages small.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_wsocket::{ConnectionMode, Message, WebSocket};
use futures::stream::SplitSink;
use futures::{Sink, SinkExt, StreamExt};
use nostr_sdk::pool::transport::error::TransportError;
use nostr_sdk::pool::transport::websocket::{WebSocketSink, WebSocketStream, WebSocketTransport};
use nostr_sdk::util::BoxedFuture;
use nostr_sdk::{JsonUtil, Url};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::MaybeTlsStream;

use crate::metrics::{Reject, RelayCounters};

#[derive(Debug, thiserror::Error)]
#[error("relay actor stopped reading")]
struct ReaderGone;

#[derive(Debug, thiserror::Error)]
#[error("the relay sent {MAX_JUNK_IN_A_ROW} frames in a row that are no Nostr message")]
struct JunkOnly;

/// Frames in a row that are no Nostr message (binary, or text no parser reads) after
/// which a connection is closed: the cycle fails and backs off, instead of reading
/// junk for as long as the relay cares to send it.
const MAX_JUNK_IN_A_ROW: usize = 64;

/// A text frame on its way to the relay actor, with the bytes it holds of the budgets.
pub struct RawFrame {
    pub text: String,
    _bytes: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// What raw frames may hold: bytes per relay and over all relays. A frame larger than
/// a whole budget takes all of it.
#[derive(Debug, Clone)]
pub struct FrameBudget {
    pub relay: Arc<Semaphore>,
    pub relay_bytes: usize,
    pub total: Arc<Semaphore>,
    pub total_bytes: usize,
}

impl FrameBudget {
    async fn take(&self, len: usize) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let n = |budget: usize| u32::try_from(len.clamp(1, budget.max(1))).unwrap_or(u32::MAX);
        let relay = self
            .relay
            .clone()
            .acquire_many_owned(n(self.relay_bytes))
            .await
            .ok()?;
        let total = self
            .total
            .clone()
            .acquire_many_owned(n(self.total_bytes))
            .await
            .ok()?;
        Some((relay, total))
    }
}

#[derive(Debug, Clone)]
pub struct TapTransport {
    frames: mpsc::Sender<RawFrame>,
    budget: FrameBudget,
    /// Largest websocket message (and frame) accepted; a larger one ends the connection.
    max_message: usize,
    counters: Arc<RelayCounters>,
}

impl TapTransport {
    pub fn new(
        frames: mpsc::Sender<RawFrame>,
        budget: FrameBudget,
        max_message: usize,
        counters: Arc<RelayCounters>,
    ) -> Self {
        Self {
            frames,
            budget,
            max_message,
            counters,
        }
    }
}

/// Buffer sizes of one websocket (tungstenite's defaults are 128 kB each way, held by
/// every connection however quiet).
const READ_BUFFER: usize = 16 * 1024;
const WRITE_BUFFER: usize = 16 * 1024;

/// A websocket to `url` that refuses messages over `max_message` bytes: tungstenite's
/// default (64 MiB) would let one relay make us buffer that much per frame.
async fn connect_bounded(
    url: &Url,
    timeout: Duration,
    max_message: usize,
) -> Result<WebSocket, TransportError> {
    let host = url
        .host_str()
        .ok_or_else(|| TransportError::backend(BadUrl))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| TransportError::backend(BadUrl))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let connect = async {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(TransportError::backend)?;
        let (ws, _) =
            tokio_tungstenite::client_async_tls_with_config(url.as_str(), tcp, Some(config), None)
                .await
                .map_err(TransportError::backend)?;
        Ok(WebSocket::Tokio(ws))
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| TransportError::backend(ConnectTimeout))?
}

#[derive(Debug, thiserror::Error)]
#[error("relay URL has no host or port")]
struct BadUrl;

#[derive(Debug, thiserror::Error)]
#[error("connection timed out")]
struct ConnectTimeout;

/// The message type of a frame (`["EOSE", ...]` is `EOSE`), if it looks like a message.
fn label(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('[')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

/// Whether a frame is an EVENT message, which only the relay actor handles.
pub fn is_event_frame(text: &str) -> bool {
    label(text) == Some("EVENT")
}

/// Whether the SDK should see a frame: the messages it manages the connection with
/// (subscriptions, NIP-42, NIP-77). EVENT frames are ours alone, and garbage is
/// counted by the relay actor (the SDK would log an ERROR line for each); NOTICE, OK
/// and COUNT are counted or unused here, and a relay chattering NOTICEs could
/// otherwise overrun the SDK's notification channel mid-reconciliation, which ends
/// it early as if complete.
pub fn is_sdk_frame(text: &str) -> bool {
    label(text).is_some_and(|l| SDK_LABELS.contains(&l))
}

const SDK_LABELS: [&str; 5] = ["EOSE", "CLOSED", "AUTH", "NEG-MSG", "NEG-ERR"];

/// Whether a text frame is a Nostr message at all (EVENT frames are judged later, by
/// the relay actor), and whether it goes on to the SDK: only control frames it can read
/// (one it cannot read it would log whole, at ERROR, once per frame; the relay actor
/// counts those). The label is read once: every EVENT frame passes here.
fn sort(text: &str) -> (bool, bool) {
    match label(text) {
        Some("EVENT") => (true, false),
        Some(l) if SDK_LABELS.contains(&l) => {
            let ok = nostr_sdk::RelayMessage::from_json(text).is_ok();
            (ok, ok)
        }
        _ => (nostr_sdk::RelayMessage::from_json(text).is_ok(), false),
    }
}

impl WebSocketTransport for TapTransport {
    fn support_ping(&self) -> bool {
        true
    }

    fn connect<'a>(
        &'a self,
        url: &'a Url,
        _mode: &'a ConnectionMode,
        timeout: Duration,
    ) -> BoxedFuture<'a, Result<(WebSocketSink, WebSocketStream), TransportError>> {
        Box::pin(async move {
            let socket = connect_bounded(url, timeout, self.max_message).await?;
            no_delay(&socket);
            let (sink, stream) = socket.split();
            let sink = Box::new(Forward(sink)) as WebSocketSink;
            let frames = self.frames.clone();
            let counters = self.counters.clone();
            let budget = self.budget.clone();
            // Frames in a row that no Nostr client could read (this connection's).
            let junk = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let stream = stream.filter_map(move |msg| {
                let frames = frames.clone();
                let counters = counters.clone();
                let budget = budget.clone();
                let junk = junk.clone();
                async move {
                    let (readable, for_sdk) = match &msg {
                        Ok(Message::Text(text)) => sort(text),
                        Ok(Message::Binary(_)) => (false, false),
                        _ => (true, false),
                    };
                    if readable {
                        junk.store(0, Ordering::Relaxed);
                    } else if junk.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_JUNK_IN_A_ROW {
                        // Counted below as usual; the connection ends here.
                        counters.reject(Reject::InvalidJson);
                        tracing::debug!("relay sends only junk; closing the connection");
                        return Some(Err(TransportError::backend(JunkOnly)));
                    }
                    match msg {
                        Ok(Message::Text(text)) => {
                            let pass = for_sdk.then(|| text.clone());
                            // Waiting for bytes stalls the socket read: backpressure.
                            let Some(bytes) = budget.take(text.len()).await else {
                                return Some(Err(TransportError::backend(ReaderGone)));
                            };
                            let frame = RawFrame {
                                text,
                                _bytes: bytes,
                            };
                            if frames.send(frame).await.is_err() {
                                return Some(Err(TransportError::backend(ReaderGone)));
                            }
                            pass.map(|t| Ok(Message::Text(t)))
                        }
                        // Nostr speaks text: binary frames are counted and dropped here,
                        // where the SDK would log a line for each.
                        Ok(Message::Binary(_)) => {
                            counters.reject(Reject::InvalidJson);
                            None
                        }
                        Err(async_wsocket::Error::Ws(WsError::Capacity(e))) => {
                            counters.reject(Reject::TooLarge);
                            counters.frames_too_large.fetch_add(1, Ordering::Relaxed);
                            Some(Err(TransportError::backend(e)))
                        }
                        Err(e) => Some(Err(TransportError::backend(e))),
                        Ok(other) => Some(Ok(other)),
                    }
                }
            });
            Ok((sink, Box::pin(stream) as WebSocketStream))
        })
    }
}

/// Turns Nagle's algorithm off on the socket under `socket` (see the module docs).
fn no_delay(socket: &WebSocket) {
    #[allow(unreachable_patterns)]
    let tcp = match socket {
        WebSocket::Tokio(ws) => match ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => Some(tcp),
            MaybeTlsStream::Rustls(tls) => Some(tls.get_ref().0),
            _ => None,
        },
        _ => None,
    };
    if let Some(Err(error)) = tcp.map(|t| t.set_nodelay(true)) {
        tracing::debug!(%error, "cannot turn Nagle's algorithm off");
    }
}

/// The websocket's sending half, with the SDK's error type.
struct Forward(SplitSink<WebSocket, Message>);

impl Sink<Message> for Forward {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready_unpin(cx).map_err(TransportError::backend)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.0
            .start_send_unpin(item)
            .map_err(TransportError::backend)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_flush_unpin(cx).map_err(TransportError::backend)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_close_unpin(cx).map_err(TransportError::backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frames_are_recognised() {
        assert!(is_event_frame(r#"["EVENT","s",{}]"#));
        assert!(is_event_frame(" [ \"EVENT\", \"s\", {}]"));
        assert!(!is_event_frame(r#"["EOSE","s"]"#));
        assert!(!is_event_frame(r#"["NOTICE","EVENT"]"#));
        assert!(!is_event_frame("[\"EV"));
        for (frame, sdk) in [
            (r#"["EOSE","s"]"#, true),
            (r#" [ "CLOSED","s","auth-required: x"]"#, true),
            (r#"["AUTH","challenge"]"#, true),
            (r#"["NEG-MSG","s","00"]"#, true),
            (r#"["OK","00",true,""]"#, false),
            (r#"["NOTICE","hello"]"#, false),
            (r#"["EVENT","s",{}]"#, false),
            ("not json", false),
            ("[]", false),
            (r#"["EVENTUALLY"]"#, false),
            ("[\"\u{e9}", false),
        ] {
            assert_eq!(is_sdk_frame(frame), sdk, "{frame}");
        }
        // Labelled as the SDK's, but unreadable: kept from it (and junk).
        assert!(sort(r#"["EOSE","s"]"#).0);
        assert!(sort(r#"["NOTICE","hello"]"#).0);
        assert!(sort(r#"["EVENT","s",{"not":"checked here"}]"#).0);
        assert!(!sort(r#"["EOSE",{"x":1}]"#).0);
        assert!(!sort(r#"["NOTICE",5,"#).0);
        assert!(!sort("\u{1}junk").0);
        // Only readable control frames go on to the SDK.
        assert_eq!(sort(r#"["EOSE","s"]"#), (true, true));
        assert_eq!(sort(r#"["EOSE",{"x":1}]"#), (false, false));
        assert_eq!(sort(r#"["NOTICE","hello"]"#), (true, false));
        assert_eq!(sort(r#"["EVENT","s",{}]"#), (true, false));
    }
}

//! The websocket tap. nostr-sdk 0.44 hands received events to consumers through a
//! bounded broadcast channel that silently drops them when a consumer lags, and it
//! verifies every signature on one task per connection. This transport wraps the
//! SDK's own websocket and takes every text frame into a bounded channel read by the
//! relay actor; EVENT frames stop here, the rest (EOSE, CLOSED, NOTICE, OK, AUTH) also
//! go on to the SDK so its connection and subscription state stays right. A full
//! channel stalls the socket read, which is backpressure all the way to the relay:
//! nothing can be dropped.
//!
//! It also turns Nagle's algorithm off. Paging sends a CLOSE and the next REQ back to
//! back; with Nagle on, the REQ waits for the relay to acknowledge the CLOSE, which
//! a relay with delayed ACKs does after 40 ms: 40 ms per page, and seconds per window
//! on a relay that clamps its pages small.

use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use async_wsocket::{ConnectionMode, Message, WebSocket};
use futures::stream::SplitSink;
use futures::{Sink, SinkExt, StreamExt, TryStreamExt};
use nostr_sdk::pool::transport::error::TransportError;
use nostr_sdk::pool::transport::websocket::{WebSocketSink, WebSocketStream, WebSocketTransport};
use nostr_sdk::util::BoxedFuture;
use nostr_sdk::Url;
use tokio::sync::mpsc;
use tokio_tungstenite::MaybeTlsStream;

#[derive(Debug, thiserror::Error)]
#[error("relay actor stopped reading")]
struct ReaderGone;

#[derive(Debug, Clone)]
pub struct TapTransport {
    frames: mpsc::Sender<String>,
}

impl TapTransport {
    pub fn new(frames: mpsc::Sender<String>) -> Self {
        Self { frames }
    }
}

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

/// Whether the SDK should see a frame: the messages it manages the connection with.
/// EVENT frames are ours alone, and garbage is counted by the relay actor; the SDK
/// would log an ERROR line for every garbage frame a hostile relay sends.
pub fn is_sdk_frame(text: &str) -> bool {
    matches!(
        label(text),
        Some("EOSE" | "CLOSED" | "NOTICE" | "OK" | "AUTH" | "COUNT" | "NEG-MSG" | "NEG-ERR")
    )
}

impl WebSocketTransport for TapTransport {
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
            let socket = WebSocket::connect(url, mode, timeout)
                .await
                .map_err(TransportError::backend)?;
            no_delay(&socket);
            let (sink, stream) = socket.split();
            let sink = Box::new(Forward(sink)) as WebSocketSink;
            let stream = stream.map_err(TransportError::backend);
            let frames = self.frames.clone();
            let stream = stream.filter_map(move |msg| {
                let frames = frames.clone();
                async move {
                    match msg {
                        Ok(Message::Text(text)) => {
                            let pass = is_sdk_frame(&text).then(|| text.clone());
                            if frames.send(text).await.is_err() {
                                return Some(Err(TransportError::backend(ReaderGone)));
                            }
                            pass.map(|t| Ok(Message::Text(t)))
                        }
                        other => Some(other),
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
            (r#"["OK","00",true,""]"#, true),
            (r#"["EVENT","s",{}]"#, false),
            ("not json", false),
            ("[]", false),
            (r#"["EVENTUALLY"]"#, false),
            ("[\"\u{e9}", false),
        ] {
            assert_eq!(is_sdk_frame(frame), sdk, "{frame}");
        }
    }
}

//! The websocket tap. nostr-sdk 0.44 hands received events to consumers through a
//! bounded broadcast channel that silently drops them when a consumer lags, and it
//! verifies every signature on one task per connection. This transport wraps the
//! SDK's own websocket and takes every text frame into a bounded channel read by the
//! relay actor; EVENT frames stop here, the rest (EOSE, CLOSED, NOTICE, OK, AUTH) also
//! go on to the SDK so its connection and subscription state stays right. A full
//! channel stalls the socket read, which is backpressure all the way to the relay:
//! nothing can be dropped.

use std::time::Duration;

use async_wsocket::{ConnectionMode, Message};
use futures::StreamExt;
use nostr_sdk::pool::transport::error::TransportError;
use nostr_sdk::pool::transport::websocket::{
    DefaultWebsocketTransport, WebSocketSink, WebSocketStream, WebSocketTransport,
};
use nostr_sdk::util::BoxedFuture;
use nostr_sdk::Url;
use tokio::sync::mpsc;

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

/// Whether a frame is an EVENT message, which only the relay actor handles.
pub fn is_event_frame(text: &str) -> bool {
    text.trim_start()
        .strip_prefix('[')
        .is_some_and(|rest| rest.trim_start().starts_with("\"EVENT\""))
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
            let (sink, stream) = DefaultWebsocketTransport
                .connect(url, mode, timeout)
                .await?;
            let frames = self.frames.clone();
            let stream = stream.filter_map(move |msg| {
                let frames = frames.clone();
                async move {
                    match msg {
                        Ok(Message::Text(text)) => {
                            let pass = (!is_event_frame(&text)).then(|| text.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frames_are_recognised() {
        assert!(is_event_frame(r#"["EVENT","s",{}]"#));
        assert!(is_event_frame(" [ \"EVENT\", \"s\", {}]"));
        assert!(!is_event_frame(r#"["EOSE","s"]"#));
        assert!(!is_event_frame(r#"["NOTICE","EVENT"]"#));
    }
}

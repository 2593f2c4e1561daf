//! Misbehaving relay endpoints on loopback, for `bench --dead-relays`: what a service
//! configured with many public relays meets, cheaply hosted in one process.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// How an endpoint misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dead {
    /// Accepts TCP connections and says nothing, not even the websocket handshake.
    Silent,
    /// Completes the handshake, then never answers anything.
    Wedged,
    /// Completes the handshake, then sends binary and unparsable text frames, ten a
    /// second, for as long as the connection lasts.
    Junk,
    /// Refuses connections (nothing listens on its port).
    Closed,
}

impl Dead {
    pub const ALL: [Dead; 4] = [Dead::Silent, Dead::Wedged, Dead::Junk, Dead::Closed];
}

/// Starts one endpoint; its `ws://` URL.
pub async fn start(kind: Dead) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", listener.local_addr()?);
    if kind == Dead::Closed {
        // The port was free a moment ago; nothing listens on it now.
        drop(listener);
        return Ok(url);
    }
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                match kind {
                    Dead::Silent => {
                        // Hold the socket open, unread, until the peer gives up.
                        let mut buf = [0u8; 1];
                        let _ = tcp.peek(&mut buf).await;
                        std::future::pending::<()>().await;
                    }
                    Dead::Wedged => {
                        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                            return;
                        };
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                    Dead::Junk => {
                        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                            return;
                        };
                        let (mut tx, mut rx) = ws.split();
                        let junk = async {
                            for i in 0u64.. {
                                let frame = if i % 2 == 0 {
                                    Message::binary(vec![0xde, 0xad, 0xbe, 0xef])
                                } else {
                                    Message::text(format!("[\"NOTICE\",{i},\"\\u0000"))
                                };
                                if tx.send(frame).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        };
                        let read = async { while let Some(Ok(_)) = rx.next().await {} };
                        tokio::select! {
                            _ = junk => {}
                            _ = read => {}
                        }
                    }
                    Dead::Closed => {}
                }
            });
        }
    });
    Ok(url)
}

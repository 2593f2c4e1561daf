//! A TCP proxy (in front of PostgreSQL, or of a relay) that a test can cut and restore:
//! a real outage that touches no other test. Cutting closes every open connection and
//! refuses new ones until `restore`. In front of a relay it can also serve a NIP-11
//! document: a plain HTTP GET is answered with it, a websocket upgrade is forwarded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct TcpProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<AbortHandle>>>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> TcpProxy {
        Self::with(target, None, None).await
    }

    /// As `start`, answering HTTP requests that are not websocket upgrades with the
    /// NIP-11 document `nip11`.
    pub async fn serving(target: String, nip11: Option<String>) -> TcpProxy {
        Self::with(target, nip11, None).await
    }

    /// As `start`, passing at most `bytes_per_sec` from the target to its clients: a
    /// slow relay.
    pub async fn throttled(target: String, bytes_per_sec: usize) -> TcpProxy {
        Self::with(target, None, Some(bytes_per_sec)).await
    }

    async fn with(target: String, nip11: Option<String>, rate: Option<usize>) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let pipes = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
        let (c, p) = (cut.clone(), pipes.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let target = target.clone();
                let nip11 = nip11.clone();
                let pipe = tokio::spawn(async move {
                    let mut head = Vec::new();
                    if let Some(doc) = nip11 {
                        // Read the request head to tell a NIP-11 GET from an upgrade.
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match client.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                        if !text.contains("upgrade: websocket") {
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/nostr+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                                doc.len()
                            );
                            let _ = client.write_all(response.as_bytes()).await;
                            return;
                        }
                    }
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    if server.write_all(&head).await.is_err() {
                        return;
                    }
                    let Some(rate) = rate else {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    };
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    let up = tokio::io::copy(&mut client_rx, &mut server_tx);
                    let down = async {
                        // 10 ms worth at a time.
                        let mut buf = vec![0u8; (rate / 100).max(1)];
                        loop {
                            match server_rx.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if client_tx.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
                p.lock().unwrap().push(pipe.abort_handle());
            }
        });
        TcpProxy { port, cut, pipes }
    }

    /// `url`, which points at `target`, routed through this proxy instead.
    pub fn route(&self, url: &str, target: &str) -> String {
        let routed = url.replacen(target, &format!("127.0.0.1:{}", self.port), 1);
        assert_ne!(routed, url, "{url} does not point at {target}");
        routed
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

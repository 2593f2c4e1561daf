//! An LNURL-pay server on loopback (LUD-06), for the demo and the tests: it answers
//! every GET with a pay document that allows Nostr and names a key, which the key can
//! be changed to while it runs (a recipient's provider changing its key).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bitcoin::bech32;
use nostr_relay_builder::prelude::PublicKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running server.
#[derive(Clone)]
pub struct LnurlServer {
    /// `http://127.0.0.1:port`.
    pub base: String,
    key: Arc<Mutex<PublicKey>>,
    served: Arc<AtomicUsize>,
}

impl LnurlServer {
    /// Starts a server whose documents name `nostr_pubkey`.
    pub async fn start(nostr_pubkey: PublicKey) -> std::io::Result<LnurlServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = LnurlServer {
            base,
            key: Arc::new(Mutex::new(nostr_pubkey)),
            served: Arc::new(AtomicUsize::new(0)),
        };
        let (key, served) = (server.key.clone(), server.served.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                served.fetch_add(1, Ordering::SeqCst);
                let key = key.lock().map(|k| k.to_hex()).unwrap_or_default();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = format!(
                        r#"{{"tag":"payRequest","callback":"http://127.0.0.1/cb","minSendable":1000,"maxSendable":100000000000,"metadata":"[]","allowsNostr":true,"nostrPubkey":"{key}"}}"#
                    );
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(response.as_bytes()).await;
                });
            }
        });
        Ok(server)
    }

    /// The key documents name from now on.
    pub fn set_key(&self, key: PublicKey) {
        if let Ok(mut k) = self.key.lock() {
            *k = key;
        }
    }

    /// Requests served so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// The LUD-06 `lnurl1…` string of this server's document for `name`.
    pub fn lud06(&self, name: &str) -> String {
        lud06(&format!("{}/lnurlp/{name}", self.base))
    }
}

/// The LUD-06 bech32 form of `url`.
pub fn lud06(url: &str) -> String {
    bech32::Hrp::parse("lnurl")
        .ok()
        .and_then(|hrp| bech32::encode::<bech32::Bech32>(hrp, url.as_bytes()).ok())
        .unwrap_or_default()
}

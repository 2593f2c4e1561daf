//! A TCP proxy (in front of PostgreSQL, or of a relay) that a test can cut and restore:
//! a real outage that touches no other test. Cutting closes every open connection and
//! refuses new ones until `restore`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
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

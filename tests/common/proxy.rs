//! A TCP proxy in front of PostgreSQL that a test can cut and restore: a real outage
//! that touches no other test. Cutting closes every open connection and refuses new
//! ones until `restore`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct PgProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<AbortHandle>>>,
}

impl PgProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> PgProxy {
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
        PgProxy { port, cut, pipes }
    }

    /// `url` (a PostgreSQL URL on 127.0.0.1:5432) routed through this proxy.
    pub fn route(&self, url: &str) -> String {
        let routed = url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port), 1);
        assert_ne!(routed, url, "the test database is not at 127.0.0.1:5432");
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

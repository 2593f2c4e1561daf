//! The built binary as a child process: SIGTERM during a heavy sync exits cleanly
//! within the shutdown timeout, and a restart completes the sync exactly.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{run, TestDb};
use nostr_sync::dataset::{Dataset, HostedRelay};
use nostr_sync::storage;

both_backends!(sigterm_commits_and_a_restart_completes_the_sync);

fn start(db: &TestDb, relays: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nostr-sync"))
        .arg("run")
        .env("NOSTR_SYNC__DATABASE__URL", &db.url)
        .env("NOSTR_SYNC__RELAYS", relays.join(","))
        .env("NOSTR_SYNC__SYNC__LIVE", "false")
        .env("NOSTR_SYNC__SHUTDOWN__TIMEOUT_SECS", "20")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
}

/// Sends SIGTERM and returns the exit status and how long the exit took.
async fn terminate(mut child: Child) -> (Option<i32>, Duration) {
    let sent = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), sent.elapsed());
        }
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_count(store: &dyn storage::EventStore, at_least: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = store.count_events().await.unwrap();
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigterm_commits_and_a_restart_completes_the_sync(db: TestDb) {
    run(async {
        let data = Dataset::generate(20_000, 3, 0.5, 11);
        let mut relays = Vec::new();
        let mut urls = Vec::new();
        for r in 0..3 {
            let hosted = HostedRelay::start(data.relay_events(r), 500).await.unwrap();
            urls.push(hosted.url().await);
            relays.push(hosted);
        }
        let store = storage::open(&db.url, 2).await.unwrap();

        let child = start(&db, &urls);
        let partial = wait_for_count(&*store, 2_000, Duration::from_secs(120)).await;
        assert!(partial >= 2_000, "the sync did not start");
        let (code, took) = terminate(child).await;
        assert_eq!(code, Some(0), "unclean exit on SIGTERM");
        assert!(took < Duration::from_secs(20), "exit took {took:?}");
        // Everything committed was aggregated before the exit.
        assert_eq!(
            store.stats().await.unwrap(),
            storage::recount(&*store).await.unwrap()
        );

        let child = start(&db, &urls);
        let total = wait_for_count(&*store, 20_000, Duration::from_secs(300)).await;
        let (code, _) = terminate(child).await;
        assert_eq!(code, Some(0));
        assert_eq!(total, 20_000);
        assert_eq!(store.count_events().await.unwrap(), 20_000);
        assert_eq!(store.stats().await.unwrap(), data.expected_stats());
    });
}

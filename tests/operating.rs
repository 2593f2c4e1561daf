//! What an operator sees: `/metrics`, `/livez` and `/readyz` during a real sync.

mod common;

use std::time::Duration;

use common::{http_get, run, settings, TestDb, SYNC_TIMEOUT};
use nostr_sync::app::App;
use nostr_sync::dataset::{Dataset, HostedRelay};
use nostr_sync::storage;

both_backends!(metrics_move_and_agree_with_the_database);

/// The value of the sample `name` (with its labels, as exported), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn metrics_move_and_agree_with_the_database(db: TestDb) {
    run(async {
        let data = Dataset::generate(3_000, 2, 0.5, 31);
        let mut relays = Vec::new();
        let mut urls = Vec::new();
        for r in 0..2 {
            let relay = HostedRelay::start(data.relay_events(r), 100).await.unwrap();
            urls.push(relay.url().await);
            relays.push(relay);
        }
        let mut s = settings(&db, urls.clone());
        s.http.listen = "127.0.0.1:0".into();
        let app = App::start(s).await.unwrap();
        let http = app.http_addr().unwrap();

        // Scraped while the sync runs: counters only move forward.
        let mut last = 0.0;
        let mut scrapes = 0;
        while !app.wait_for_cycles(1, Duration::from_millis(50)).await {
            let (status, text) = http_get(http, "/metrics").await;
            assert_eq!(status, 200);
            let stored = sample(&text, "nostr_sync_stored_total").unwrap();
            assert!(stored >= last, "stored went back from {last} to {stored}");
            last = stored;
            scrapes += 1;
        }
        assert!(app.wait_for_cycles(1, SYNC_TIMEOUT).await);
        assert!(scrapes > 0);
        // Aggregates are flushed on a timer; the pipeline is idle once cycles are done.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let (_, text) = http_get(http, "/metrics").await;
        let store = storage::open(&db.url, 2).await.unwrap();
        let rows = store.count_events().await.unwrap() as f64;
        assert_eq!(rows, data.events.len() as f64);
        assert_eq!(sample(&text, "nostr_sync_stored_total"), Some(rows));
        assert_eq!(
            sample(&text, "nostr_sync_receipt_to_commit_seconds_count"),
            Some(rows)
        );
        let every = "nostr_sync_receipt_to_commit_seconds_bucket{le=\"+Inf\"}";
        let every = sample(&text, every).or_else(|| {
            sample(
                &text,
                "nostr_sync_receipt_to_commit_seconds_bucket{le=\"inf\"}",
            )
        });
        assert_eq!(every, Some(rows), "the last bucket counts every event");
        let received: f64 = urls
            .iter()
            .map(|u| {
                let name = format!("nostr_sync_relay_received_total{{relay=\"{u}\"}}");
                sample(&text, &name).unwrap()
            })
            .sum();
        assert_eq!(sample(&text, "nostr_sync_received_total"), Some(received));
        let delivered: usize = data.placement.iter().map(Vec::len).sum();
        assert!(received >= delivered as f64);
        for u in &urls {
            let connected = format!("nostr_sync_relay_connected{{relay=\"{u}\"}}");
            assert_eq!(sample(&text, &connected), Some(1.0), "{u}");
            let limit = format!("nostr_sync_relay_page_limit{{relay=\"{u}\"}}");
            assert_eq!(sample(&text, &limit), Some(500.0), "{u}");
            let lag = format!("nostr_sync_relay_cursor_lag_seconds{{relay=\"{u}\"}}");
            assert!(sample(&text, &lag).is_some_and(|l| l < 60.0), "{u}");
        }
        let commits = sample(&text, "nostr_sync_storage_commit_seconds_count").unwrap();
        assert_eq!(sample(&text, "nostr_sync_db_commits_total"), Some(commits));
        assert_eq!(
            sample(&text, "nostr_sync_storage_batch_events_sum"),
            Some(rows),
            "every stored event went through one commit"
        );
        assert_eq!(http_get(http, "/readyz").await.0, 200);
        assert_eq!(http_get(http, "/livez").await.0, 200);
        assert_eq!(http_get(http, "/nothing").await.0, 404);
        assert!(app.shutdown(Duration::from_secs(30)).await);
    });
}

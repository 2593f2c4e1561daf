//! What an operator sees: `/metrics`, `/livez` and `/readyz` during a real sync.

mod common;

use std::time::Duration;

use common::{http_get, run, settings, TestDb, SYNC_TIMEOUT};
use nostr_sync::app::App;
use nostr_sync::storage;
use nostr_sync_tools::dataset::{Dataset, HostedRelay};

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
        let (_relays, urls) = common::host(&data, &[100]).await;
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
        // What `status` reads: each relay's window recorded as a success.
        let overview = store.overview().await.unwrap();
        for u in &urls {
            let state = overview.states.iter().find(|s| &s.relay == u).unwrap();
            assert!(state.last_success.is_some(), "{state:?}");
            assert_eq!(state.consecutive_failures, 0, "{state:?}");
        }
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

/// Whether the connection at `url` is encrypted, as the server sees it.
fn encrypted(url: &str) -> Result<bool, String> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let mut pg =
        nostr_sync::storage::migrate::PgBlocking::connect(url).map_err(|e| e.to_string())?;
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut pg.conn)
        .map_err(|e| e.to_string())?;
    Ok(row.ssl)
}

/// PostgreSQL over TLS, against the local server with SSL on (its self-signed
/// certificate, CN=localhost): `require` encrypts (and verifies given a root file),
/// `verify-full` checks the chain and the name, `verify-ca` the chain only and needs a
/// root file; and the whole pipeline syncs over `require`.
#[test]
fn postgres_over_tls() {
    let Some(db) = TestDb::new(common::Backend::Postgres) else {
        return;
    };
    let base = common::pg_base_url();
    let with = |params: &str| {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}{params}")
    };
    let cert = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    assert_eq!(encrypted(&base), Ok(false), "plain by default");
    assert_eq!(encrypted(&with("sslmode=require")), Ok(true));
    let localhost = with(&format!("sslmode=verify-full&sslrootcert={cert}")).replacen(
        "127.0.0.1",
        "localhost",
        1,
    );
    assert_eq!(encrypted(&localhost), Ok(true));
    let wrong_name = with(&format!("sslmode=verify-full&sslrootcert={cert}"));
    assert!(
        encrypted(&wrong_name).is_err(),
        "the name 127.0.0.1 is not on the certificate"
    );
    assert_eq!(
        encrypted(&with(&format!("sslmode=verify-ca&sslrootcert={cert}"))),
        Ok(true)
    );
    // Without a root file, verify-ca refuses to connect rather than trust the public
    // web roots (which any public certificate, a MITM's too, chains to).
    if !std::path::Path::new(&format!("{}/.postgresql/root.crt", env!("HOME"))).exists() {
        let error = encrypted(&with("sslmode=verify-ca")).unwrap_err();
        assert!(error.contains("root certificate"), "{error}");
    }
    // `require` with a root file verifies against it, as libpq does.
    assert_eq!(
        encrypted(&with(&format!("sslmode=require&sslrootcert={cert}"))),
        Ok(true)
    );
    let public = "/etc/ssl/certs/ca-certificates.crt";
    if std::path::Path::new(public).exists() {
        assert!(
            encrypted(&with(&format!("sslmode=require&sslrootcert={public}"))).is_err(),
            "the self-signed certificate is not under those roots"
        );
    }

    // Migrations connect the same way (none is pending here).
    let tls_url = format!("{}&sslmode=require", db.url);
    assert_eq!(
        nostr_sync::storage::migrate::run_pending(&tls_url).map_err(|e| e.to_string()),
        Ok(0)
    );

    run(async {
        let data = Dataset::generate(500, 1, 0.0, 32);
        let relay = HostedRelay::start(data.relay_events(0), 500).await.unwrap();
        let mut s = settings(&db, vec![relay.url().await]);
        s.database.url = tls_url;
        let counters = common::sync_once(s).await;
        assert_eq!(nostr_sync::metrics::Counters::get(&counters.stored), 500);
        let store = storage::open(&db.url, 1).await.unwrap();
        assert_eq!(store.count_events().await.unwrap(), 500);
    });
}

both_backends!(docs_queries_run_on_both_backends);

/// The SQL blocks of `docs/schema.md`, in order.
fn doc_queries() -> Vec<String> {
    let doc = include_str!("../docs/schema.md");
    doc.split("```sql")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().trim().to_owned())
        .collect()
}

mod rows {
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Text};

    #[derive(QueryableByName, Debug)]
    pub struct Count {
        #[diesel(sql_type = BigInt)]
        pub n: i64,
    }

    #[derive(QueryableByName, Debug)]
    pub struct FirstFrom {
        #[diesel(sql_type = Text)]
        pub url: String,
        #[diesel(sql_type = BigInt)]
        pub first_from: i64,
    }

    #[derive(QueryableByName, Debug)]
    pub struct Top {
        #[diesel(sql_type = Text)]
        pub id: String,
        #[diesel(sql_type = BigInt)]
        pub reactions: i64,
        #[diesel(sql_type = BigInt)]
        pub replies: i64,
        #[diesel(sql_type = BigInt)]
        pub reposts: i64,
    }

    #[derive(QueryableByName, Debug)]
    pub struct Referencing {
        #[diesel(sql_type = Text)]
        pub id: String,
    }

    #[derive(QueryableByName, Debug)]
    pub struct Zaps {
        #[diesel(sql_type = BigInt)]
        pub zaps: i64,
        #[diesel(sql_type = BigInt)]
        pub msats: i64,
    }
}

/// Runs `sql` on the test database, whichever backend it is.
fn query<
    T: diesel::QueryableByName<diesel::pg::Pg>
        + diesel::QueryableByName<diesel::sqlite::Sqlite>
        + 'static,
>(
    db: &TestDb,
    sql: &str,
) -> Vec<T> {
    use diesel::prelude::*;
    match db.backend {
        common::Backend::Sqlite => {
            let mut c = diesel::SqliteConnection::establish(storage::sqlite_path(&db.url)).unwrap();
            diesel::sql_query(sql).load(&mut c).unwrap()
        }
        common::Backend::Postgres => {
            let mut pg = nostr_sync::storage::migrate::PgBlocking::connect(&db.url).unwrap();
            diesel::sql_query(sql).load(&mut pg.conn).unwrap()
        }
    }
}

/// The example queries of `docs/schema.md` run on a synced database, and answer what
/// the NIP rules (the test oracle) say they should.
fn docs_queries_run_on_both_backends(db: TestDb) {
    let data = Dataset::generate(1_500, 1, 0.0, 33);
    run(async {
        let relay = HostedRelay::start(data.relay_events(0), 500).await.unwrap();
        common::sync_once(settings(&db, vec![relay.url().await])).await;
    });
    let expected = common::oracle::expected_stats(&data.events);
    let queries = doc_queries();
    assert_eq!(queries.len(), 4);

    let top: Vec<rows::Top> = query(&db, &queries[0]);
    let score = |id: &str| {
        expected
            .get(id)
            .map_or(0, |s| s.reactions + s.replies + s.reposts)
    };
    let newest = data
        .events
        .iter()
        .map(|e| e.created_at.as_secs())
        .max()
        .unwrap();
    let best = data
        .events
        .iter()
        .filter(|e| {
            e.kind == nostr_sdk::Kind::TextNote && e.created_at.as_secs() + 86_400 >= newest
        })
        .map(|e| score(&e.id.to_hex()))
        .max()
        .unwrap();
    assert!(!top.is_empty() && top.len() <= 20);
    assert_eq!(top[0].reactions + top[0].replies + top[0].reposts, best);
    for t in &top {
        assert_eq!(t.reactions + t.replies + t.reposts, score(&t.id), "{t:?}");
    }

    let (note, replies) = expected
        .iter()
        .max_by_key(|(id, s)| (s.replies, (*id).clone()))
        .map(|(id, s)| (id.clone(), s.replies))
        .unwrap();
    let referencing: Vec<rows::Referencing> = query(&db, &queries[1].replace(":note", &note));
    assert!(referencing.len() as i64 >= replies && replies > 0);
    for r in &referencing {
        let e = data.events.iter().find(|e| e.id.to_hex() == r.id).unwrap();
        assert!(
            e.tags.iter().any(|t| t.as_slice().get(1) == Some(&note)),
            "{r:?}"
        );
    }

    let mut by_author: std::collections::HashMap<String, (i64, i64)> = Default::default();
    for e in &data.events {
        if let Some(s) = expected.get(&e.id.to_hex()) {
            let a = by_author.entry(e.pubkey.to_hex()).or_default();
            a.0 += s.zaps;
            a.1 += s.zap_msats;
        }
    }
    let (author, (zaps, msats)) = by_author
        .into_iter()
        .max_by_key(|(a, t)| (t.1, a.clone()))
        .unwrap();
    let got: Vec<rows::Zaps> = query(&db, &queries[2].replace(":author", &author));
    assert_eq!((got[0].zaps, got[0].msats), (zaps, msats));
    assert!(msats > 0);

    // One relay delivered everything stored, each event first (in the last day: the
    // sync took seconds).
    let stored: Vec<rows::Count> = query(&db, "SELECT COUNT(*) AS n FROM events");
    let firsts: Vec<rows::FirstFrom> = query(&db, &queries[3]);
    assert_eq!(firsts.len(), 1, "{firsts:?}");
    assert!(firsts[0].url.starts_with("ws://127.0.0.1:"), "{firsts:?}");
    assert_eq!(firsts[0].first_from, stored[0].n);
}

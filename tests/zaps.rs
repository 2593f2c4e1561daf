//! NIP-57 appendix F against a loopback LNURL server: a zap receipt counts only when it
//! is signed by the `nostrPubkey` of the recipient's LNURL server, found from the
//! recipient's own profile. Anyone can make an invoice for any amount with a node key
//! of their own and publish a receipt for it: that forgery counts nothing.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::bech32;
use common::hostile::HostileRelay;
use common::{oracle, run, settings, TestDb};
use nostr_sdk::prelude::*;
use nostr_sync::app::App;
use nostr_sync::config::{Negentropy, ZapVerification};
use nostr_sync::metrics::Counters;
use nostr_sync::nostr::zap::ZapReject;
use nostr_sync::storage;
use nostr_sync_tools::dataset::Zapper;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_backends!(only_receipts_of_the_recipients_lnurl_server_count);

/// An LNURL server on loopback answering every GET with a pay document naming
/// `nostr_pubkey`; its URL, and how many requests it served.
async fn lnurl_server(nostr_pubkey: PublicKey) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/lnurlp/bob", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let body = format!(
        r#"{{"tag":"payRequest","callback":"http://127.0.0.1/cb","minSendable":1000,"maxSendable":100000000000,"metadata":"[]","allowsNostr":true,"nostrPubkey":"{}"}}"#,
        nostr_pubkey.to_hex()
    );
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, served)
}

fn lnurl(url: &str) -> String {
    let hrp = bech32::Hrp::parse("lnurl").unwrap();
    bech32::encode::<bech32::Bech32>(hrp, url.as_bytes()).unwrap()
}

/// Bob's LNURL server signs with `zapper`'s key. A receipt it signed counts; a forged
/// one (a stranger's node key and Nostr key, 18 million BTC, near the most an invoice can say) counts nothing; a receipt
/// for Carol, who has no profile stored, waits and counts nothing. The server is asked
/// once, and a restart counts nothing twice.
fn only_receipts_of_the_recipients_lnurl_server_count(db: TestDb) {
    run(async {
        let (bob, carol, fan) = (Keys::generate(), Keys::generate(), Keys::generate());
        let zapper = Zapper::with_keys(Keys::generate(), 1);
        let forger = Zapper::with_keys(Keys::generate(), 2);
        let (url, served) = lnurl_server(zapper.keys.public_key()).await;
        let profile = EventBuilder::new(
            Kind::Metadata,
            format!(r#"{{"name":"bob","lud06":"{}"}}"#, lnurl(&url)),
        )
        .sign_with_keys(&bob)
        .unwrap();
        let note = EventBuilder::text_note("zap me")
            .sign_with_keys(&bob)
            .unwrap();
        let carols = EventBuilder::text_note("me too")
            .sign_with_keys(&carol)
            .unwrap();
        let now = Timestamp::now();
        let genuine = zapper.receipt(&fan, (note.id, bob.public_key()), 21_000, now);
        let forged = forger.receipt(
            &fan,
            (note.id, bob.public_key()),
            18_000_000 * 100_000_000_000,
            now,
        );
        let waiting = zapper.receipt(&fan, (carols.id, carol.public_key()), 5_000, now);
        let note_id = note.id;
        let events = vec![profile, note, carols, genuine, forged, waiting];
        let relay = HostileRelay::paged(events.clone(), 500).await;

        let mut s = settings(&db, vec![relay.url.clone()]);
        s.sync.negentropy = Negentropy::Off;
        s.aggregates.zap_verification = ZapVerification::Lnurl;
        s.aggregates.lnurl_check_secs = 1;
        let servers: HashMap<String, String> =
            [(bob.public_key().to_hex(), zapper.keys.public_key().to_hex())].into();
        let want = oracle::expected_stats_with_servers(&events, &servers);
        assert_eq!(
            want.get(&note_id.to_hex()).map(|d| (d.zaps, d.zap_msats)),
            Some((1, 21_000))
        );

        let app = App::start(s.clone()).await.unwrap();
        assert!(app.wait_for_cycles(1, common::SYNC_TIMEOUT).await);
        let store = app.store.clone();
        let began = std::time::Instant::now();
        while store.stats().await.unwrap() != want && began.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let counters = app.counters.clone();
        assert!(app.shutdown(Duration::from_secs(30)).await);
        assert_eq!(store.stats().await.unwrap(), want);
        assert!(Counters::get(&counters.zap_rejects[ZapReject::Pending as usize]) >= 1);
        assert_eq!(
            store.zap_servers().await.unwrap(),
            vec![(
                bob.public_key().to_hex(),
                Some(zapper.keys.public_key().to_hex())
            )]
        );
        // Carol's receipt waits in the backlog; nothing else does.
        let waiting_ids: Vec<EventId> = store
            .unaggregated(0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.id)
            .collect();
        assert_eq!(waiting_ids, vec![events[5].id]);

        // A restart: the server is remembered, nothing is counted twice.
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, common::SYNC_TIMEOUT).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The recount judges receipts as this service did, with what it learnt.
        let zaps = app.zaps.clone();
        assert!(app.shutdown(Duration::from_secs(30)).await);
        let store = storage::open(&db.url, 1).await.unwrap();
        assert_eq!(store.stats().await.unwrap(), want);
        assert_eq!(
            served.load(Ordering::SeqCst),
            1,
            "the LNURL server is asked once"
        );
        assert_eq!(storage::recount(&*store, &zaps).await.unwrap(), want);
    });
}

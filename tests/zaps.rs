//! NIP-57 against loopback LNURL servers and real relays: a zap receipt counts only for
//! the event it zaps and only for that event's author or zap splits (appendix G), and
//! only when signed by a key the recipient's own server named (appendix F). Anyone can
//! make an invoice for any amount with a node key of their own, run an LNURL server of
//! their own, and publish a receipt for it: those count nothing. Receipts that cannot
//! be judged yet wait, and are judged once, when their target or server arrives. A
//! stranger's profile cannot make the service fetch from a private address.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::hostile::HostileRelay;
use common::{oracle, run, settings, TestDb};
use nostr_sdk::prelude::*;
use nostr_sync::app::App;
use nostr_sync::config::{Negentropy, Settings, ZapVerification};
use nostr_sync::metrics::Counters;
use nostr_sync::nostr::aggregate::StatsDelta;
use nostr_sync::nostr::zap::ZapReject;
use nostr_sync::storage;
use nostr_sync_tools::dataset::Zapper;
use nostr_sync_tools::lnurl::{lud06, LnurlServer};

both_backends!(
    zaps_count_only_for_their_recipients_own_events,
    a_receipt_before_its_note_waits_then_counts_once,
    junk_and_profileless_recipients_delay_no_one,
    a_provider_change_is_picked_up_at_the_recheck,
);

fn profile(keys: &Keys, lnurl: &str) -> Event {
    EventBuilder::new(
        Kind::Metadata,
        format!(r#"{{"name":"x","lud06":"{lnurl}"}}"#),
    )
    .sign_with_keys(keys)
    .unwrap()
}

fn note(keys: &Keys, tags: &[[&str; 2]]) -> Event {
    EventBuilder::text_note("zap me")
        .tags(tags.iter().map(|t| Tag::parse(*t).unwrap()))
        .sign_with_keys(keys)
        .unwrap()
}

/// Settings judging by LNURL servers on loopback, asked every second.
fn lnurl_settings(db: &TestDb, relays: Vec<String>) -> Settings {
    let mut s = settings(db, relays);
    s.sync.negentropy = Negentropy::Off;
    s.aggregates.zap_verification = ZapVerification::Lnurl;
    s.aggregates.lnurl_check_secs = 1;
    s.aggregates.lnurl_allow_private = true;
    s.aggregates.lnurl_fetches_per_sec = 100;
    s.aggregates.lnurl_host_fetches_per_sec = 100;
    s
}

/// Syncs `events` from one relay with `s` until the stats are `want` and some receipt
/// was judged (or 30 s pass); returns the stats then, and the service's counters.
async fn sync(
    s: &Settings,
    events: Vec<Event>,
    want: &HashMap<String, StatsDelta>,
) -> (HashMap<String, StatsDelta>, std::sync::Arc<Counters>) {
    sync_until(s, events, want, |_| true).await
}

/// As `sync`, waiting also for `settled` of the counters (a receipt that counts
/// nothing leaves the stats as they were: only its rejection says it was judged).
async fn sync_until(
    s: &Settings,
    events: Vec<Event>,
    want: &HashMap<String, StatsDelta>,
    settled: impl Fn(&Counters) -> bool,
) -> (HashMap<String, StatsDelta>, std::sync::Arc<Counters>) {
    // A page holds them all: these tests are about zaps, not paging a crowded second
    // (every event of a test may be dated the same second, and a full page of one
    // second is read again kind by kind, only the kinds it showed).
    let relay = HostileRelay::paged(events, 5_000).await;
    let mut s = s.clone();
    s.relays = vec![relay.url.clone()];
    s.sync.page_limit = 5_000;
    let app = App::start(s).await.unwrap();
    assert!(app.wait_for_cycles(1, common::SYNC_TIMEOUT).await);
    let store = app.store.clone();
    let began = Instant::now();
    let judged = |c: &Counters| {
        Counters::get(&c.aggregated) + c.zap_rejects.iter().map(Counters::get).sum::<u64>()
    };
    while (store.stats().await.unwrap() != *want
        || judged(&app.counters) == 0
        || !settled(&app.counters))
        && began.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counters = app.counters.clone();
    assert!(app.shutdown(Duration::from_secs(30)).await);
    (store.stats().await.unwrap(), counters)
}

fn servers(pairs: &[(&Keys, &[&Keys])]) -> HashMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(r, ks)| {
            (
                r.public_key().to_hex(),
                ks.iter().map(|k| k.public_key().to_hex()).collect(),
            )
        })
        .collect()
}

/// Bob's server signs with the zapper's key. A receipt it signed for Bob's note counts;
/// one for Dave's note whose `zap` tag names Bob counts; a forged one (a stranger's
/// node and Nostr key, 18 million BTC) counts nothing; and the attacker's own server
/// signing a 100 BTC receipt for the attacker on Bob's note counts nothing, although
/// appendix F holds for it. Carol has no profile: her receipt waits. Each server is
/// asked once, and a restart counts nothing twice.
fn zaps_count_only_for_their_recipients_own_events(db: TestDb) {
    run(async {
        let (bob, carol, dave, fan, attacker) = (
            Keys::generate(),
            Keys::generate(),
            Keys::generate(),
            Keys::generate(),
            Keys::generate(),
        );
        let zapper = Zapper::with_keys(Keys::generate(), 1);
        let forger = Zapper::with_keys(Keys::generate(), 2);
        let attackers_server = Zapper::with_keys(Keys::generate(), 3);
        let bobs = LnurlServer::start(zapper.keys.public_key()).await.unwrap();
        let theirs = LnurlServer::start(attackers_server.keys.public_key())
            .await
            .unwrap();
        let bob_hex = bob.public_key().to_hex();
        let (bobs_note, daves_note, carols_note) = (
            note(&bob, &[]),
            note(&dave, &[["zap", &bob_hex]]),
            note(&carol, &[]),
        );
        let now = Timestamp::now();
        let events = vec![
            profile(&bob, &bobs.lud06("bob")),
            profile(&attacker, &theirs.lud06("a")),
            bobs_note.clone(),
            daves_note.clone(),
            carols_note.clone(),
            zapper.receipt(&fan, (bobs_note.id, bob.public_key()), 21_000, now),
            zapper.receipt(&fan, (daves_note.id, bob.public_key()), 5_000, now),
            forger.receipt(
                &fan,
                (bobs_note.id, bob.public_key()),
                18_000_000 * 100_000_000_000,
                now,
            ),
            attackers_server.receipt(
                &fan,
                (bobs_note.id, attacker.public_key()),
                10_000_000_000_000,
                now,
            ),
            zapper.receipt(&fan, (carols_note.id, carol.public_key()), 7_000, now),
        ];
        let known = servers(&[
            (&bob, &[&zapper.keys]),
            (&attacker, &[&attackers_server.keys]),
        ]);
        let want = oracle::expected_stats_with_servers(&events, &known);
        let zaps_of = |s: &HashMap<String, StatsDelta>, e: &Event| {
            s.get(&e.id.to_hex()).map(|d| (d.zaps, d.zap_msats))
        };
        assert_eq!(zaps_of(&want, &bobs_note), Some((1, 21_000)));
        assert_eq!(zaps_of(&want, &daves_note), Some((1, 5_000)));

        let mut s = lnurl_settings(&db, vec![]);
        // A receipt stored in the very second the server answered may predate the
        // answer: it waits for the re-check, which would outlast the test's wait.
        s.aggregates.lnurl_recheck_secs = 1;
        let rejected = |c: &Counters, r: ZapReject| Counters::get(&c.zap_rejects[r as usize]);
        let (stats, counters) = sync_until(&s, events.clone(), &want, |c| {
            rejected(c, ZapReject::WrongRecipient) >= 1
                && rejected(c, ZapReject::UnknownSigner) >= 1
        })
        .await;
        let asked = bobs.served();
        assert_eq!(stats, want);
        assert!(rejected(&counters, ZapReject::WrongRecipient) >= 1);
        assert!(rejected(&counters, ZapReject::UnknownSigner) >= 1);
        let store = storage::open(&db.url, 1).await.unwrap();
        let waiting: Vec<EventId> = store
            .unaggregated(0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.id)
            .collect();
        assert_eq!(waiting, vec![events[9].id], "Carol's receipt waits");

        // A restart: the servers are remembered, nothing is counted twice.
        let (stats, _) = sync(&s, events.clone(), &want).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(stats, want);
        assert!(asked >= 1, "Bob's server was never asked");
        assert_eq!(
            bobs.served(),
            asked,
            "Bob's server is asked again after a restart"
        );
        assert_eq!(
            theirs.served(),
            0,
            "the attacker's server is never asked: its receipt pays no author of the note"
        );
        let policy = s.aggregates.zap_policy();
        assert_eq!(storage::recount(&*store, &policy).await.unwrap(), want);
    });
}

/// A receipt stored before the note it zaps waits (counting nothing); when the note
/// arrives it is judged and counts, once, restarts or not.
fn a_receipt_before_its_note_waits_then_counts_once(db: TestDb) {
    run(async {
        let (bob, fan) = (Keys::generate(), Keys::generate());
        let zapper = Zapper::with_keys(Keys::generate(), 4);
        let server = LnurlServer::start(zapper.keys.public_key()).await.unwrap();
        let bobs_note = note(&bob, &[]);
        let receipt = zapper.receipt(
            &fan,
            (bobs_note.id, bob.public_key()),
            42_000,
            Timestamp::now(),
        );
        let first = vec![profile(&bob, &server.lud06("bob")), receipt.clone()];
        let s = lnurl_settings(&db, vec![]);
        let (stats, counters) = sync(&s, first.clone(), &HashMap::new()).await;
        assert_eq!(stats, HashMap::new());
        assert!(Counters::get(&counters.zap_rejects[ZapReject::AwaitingTarget as usize]) >= 1);

        let all: Vec<Event> = first.into_iter().chain([bobs_note.clone()]).collect();
        let want = oracle::expected_stats_with_servers(&all, &servers(&[(&bob, &[&zapper.keys])]));
        assert_eq!(
            want.get(&bobs_note.id.to_hex())
                .map(|d| (d.zaps, d.zap_msats)),
            Some((1, 42_000))
        );
        let (stats, _) = sync(&s, all.clone(), &want).await;
        assert_eq!(stats, want);
        let (stats, _) = sync(&s, all, &want).await;
        assert_eq!(stats, want, "counted once");
    });
}

/// One receipt naming 1,990 junk `p` values (about as many as an event may carry) and 300 recipients without a profile do
/// not keep a genuine recipient's receipt waiting: it counts within a few rounds.
fn junk_and_profileless_recipients_delay_no_one(db: TestDb) {
    run(async {
        let (bob, fan) = (Keys::generate(), Keys::generate());
        let zapper = Zapper::with_keys(Keys::generate(), 5);
        let server = LnurlServer::start(zapper.keys.public_key()).await.unwrap();
        let now = Timestamp::now();
        let mut events = Vec::new();
        for _ in 0..300 {
            let stranger = Keys::generate();
            let n = note(&stranger, &[]);
            events.push(zapper.receipt(&fan, (n.id, stranger.public_key()), 1_000, now));
            events.push(n);
        }
        // Junk `p` values after a valid recipient's: the request names that recipient
        // alone, as a check of the first `p` only would accept.
        let stranger = Keys::generate().public_key();
        let junk: Vec<Tag> = (0..1_990)
            .map(|i| Tag::parse(["p", &format!("{i:064x}")]).unwrap())
            .collect();
        let target = note(&bob, &[]);
        let request = EventBuilder::new(Kind::ZapRequest, "")
            .tag(Tag::public_key(stranger))
            .tag(Tag::event(target.id))
            .sign_with_keys(&fan)
            .unwrap()
            .as_json();
        let invoice = zapper.invoice(&request, 1_000, now);
        events.push(
            EventBuilder::new(Kind::ZapReceipt, "")
                .tag(Tag::public_key(stranger))
                .tags(junk)
                .tag(Tag::event(target.id))
                .tag(Tag::parse(["bolt11", &invoice]).unwrap())
                .tag(Tag::parse(["description", &request]).unwrap())
                .sign_with_keys(&zapper.keys)
                .unwrap(),
        );
        events.push(zapper.receipt(&fan, (target.id, bob.public_key()), 21_000, now));
        events.push(target.clone());
        events.push(profile(&bob, &server.lud06("bob")));
        let want =
            oracle::expected_stats_with_servers(&events, &servers(&[(&bob, &[&zapper.keys])]));
        assert_eq!(
            want.get(&target.id.to_hex()).map(|d| (d.zaps, d.zap_msats)),
            Some((1, 21_000))
        );
        let s = lnurl_settings(&db, vec![]);
        let began = Instant::now();
        let (stats, _) = sync(&s, events, &want).await;
        assert_eq!(stats, want);
        assert!(
            began.elapsed() < Duration::from_secs(25),
            "{:?}",
            began.elapsed()
        );
        let store = storage::open(&db.url, 1).await.unwrap();
        let rows = store.zap_store().zap_servers().await.unwrap();
        assert_eq!(
            rows.len(),
            301,
            "only valid recipients of receipts that hold together"
        );
        assert!(rows
            .iter()
            .filter(|r| r.recipient != bob.public_key().to_hex())
            .all(|r| r.failures >= 1));
    });
}

/// Bob's provider changes its key. A receipt signed with the new key, arriving after
/// the server's last answer, waits for the re-check (`lnurl_recheck_secs`), then
/// counts; the old key's receipt still counts.
fn a_provider_change_is_picked_up_at_the_recheck(db: TestDb) {
    run(async {
        let (bob, fan) = (Keys::generate(), Keys::generate());
        let (old, new) = (
            Zapper::with_keys(Keys::generate(), 6),
            Zapper::with_keys(Keys::generate(), 7),
        );
        let server = LnurlServer::start(old.keys.public_key()).await.unwrap();
        let bobs_note = note(&bob, &[]);
        let now = Timestamp::now();
        let first = vec![
            profile(&bob, &server.lud06("bob")),
            bobs_note.clone(),
            old.receipt(&fan, (bobs_note.id, bob.public_key()), 1_000, now),
        ];
        let mut s = lnurl_settings(&db, vec![]);
        s.aggregates.lnurl_recheck_secs = 2;
        let want = oracle::expected_stats_with_servers(&first, &servers(&[(&bob, &[&old.keys])]));
        let (stats, _) = sync(&s, first.clone(), &want).await;
        assert_eq!(stats, want);

        server.set_key(new.keys.public_key());
        let all: Vec<Event> = first
            .into_iter()
            .chain([new.receipt(&fan, (bobs_note.id, bob.public_key()), 2_000, now)])
            .collect();
        let want =
            oracle::expected_stats_with_servers(&all, &servers(&[(&bob, &[&old.keys, &new.keys])]));
        assert_eq!(
            want.get(&bobs_note.id.to_hex())
                .map(|d| (d.zaps, d.zap_msats)),
            Some((2, 3_000))
        );
        let (stats, _) = sync(&s, all, &want).await;
        assert_eq!(stats, want);
        assert_eq!(server.served(), 2, "asked again once");
    });
}

/// With `lnurl_allow_private = false` (the default), profiles naming loopback,
/// private, link-local and unspecified addresses, by address or by a name that
/// resolves to one, make no connection: a listener on loopback sees none.
#[test]
fn lnurl_servers_on_private_addresses_are_never_asked() {
    let db = TestDb::new(common::Backend::Sqlite).unwrap();
    run(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok(_conn) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let zapper = Zapper::with_keys(Keys::generate(), 8);
        let fan = Keys::generate();
        let urls = [
            format!("http://127.0.0.1:{port}/x"),
            format!("https://127.0.0.1:{port}/x"),
            format!("https://localhost:{port}/x"),
            format!("https://[::1]:{port}/x"),
            format!("https://0.0.0.0:{port}/x"),
            format!("https://[::ffff:127.0.0.1]:{port}/x"),
            "https://10.0.0.1/x".to_owned(),
            "https://169.254.169.254/latest/meta-data".to_owned(),
        ];
        let now = Timestamp::now();
        let mut events = Vec::new();
        for url in &urls {
            let victim = Keys::generate();
            let n = note(&victim, &[]);
            events.push(profile(&victim, &lud06(url)));
            events.push(zapper.receipt(&fan, (n.id, victim.public_key()), 1_000, now));
            events.push(n);
        }
        // And LUD-16 names of loopback hosts.
        for host in ["localhost", "127.0.0.1"] {
            let victim = Keys::generate();
            let n = note(&victim, &[]);
            events.push(
                EventBuilder::new(Kind::Metadata, format!(r#"{{"lud16":"x@{host}"}}"#))
                    .sign_with_keys(&victim)
                    .unwrap(),
            );
            events.push(zapper.receipt(&fan, (n.id, victim.public_key()), 1_000, now));
            events.push(n);
        }
        let mut s = lnurl_settings(&db, vec![]);
        s.aggregates.lnurl_allow_private = false;
        let relay = HostileRelay::paged(events, 500).await;
        s.relays = vec![relay.url.clone()];
        let app = App::start(s).await.unwrap();
        assert!(app.wait_for_cycles(1, common::SYNC_TIMEOUT).await);
        let zaps = app.store.zap_store();
        let began = Instant::now();
        loop {
            let rows = zaps.zap_servers().await.unwrap();
            if rows.len() == urls.len() + 2 && rows.iter().all(|r| r.failures >= 1) {
                break;
            }
            assert!(began.elapsed() < Duration::from_secs(30), "{rows:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(app.shutdown(Duration::from_secs(30)).await);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    });
}

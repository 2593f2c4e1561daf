//! The relay registry and its leases, the same cases on PostgreSQL and SQLite: one row
//! per relay however its URL is written; instances share the relays evenly, take over
//! a lapsed instance's, and hand back what an operator pauses; a holder's writes of
//! its relay's cursors and window outcomes are refused once its lease moved on.
//! The expected shares are worked out here from the rule (relays over live instances,
//! rounded up), not read from the code.

mod common;

use common::{run, TestDb};
use nostr_sync::fleet::normalise;
use nostr_sync::storage;
use nostr_sync::storage::registry::{Fence, NewRelay, Round};

fn relay(url: &str, source: &'static str) -> NewRelay {
    NewRelay {
        url: normalise(url).unwrap(),
        source,
        settings: String::new(),
    }
}

fn urls(round: &Round) -> Vec<String> {
    round.held.iter().map(|l| l.url.clone()).collect()
}

fn fence(round: &Round, url: &str, holder: &str) -> Fence {
    let lease = round.held.iter().find(|l| l.url == url).unwrap();
    Fence {
        relay: url.to_owned(),
        holder: holder.to_owned(),
        token: lease.token,
    }
}

fn leases_are_shared_taken_over_and_fenced(db: TestDb) {
    run(async {
        let store = storage::open(&db.url, 2).await.unwrap();
        let reg = store.registry();
        // One relay, written three ways, is one row.
        for url in [
            "WSS://Relay.Example:443/",
            "wss://relay.example/",
            "wss://relay.example",
        ] {
            reg.add_relay(&relay(url, "cli"), 100).await.unwrap();
        }
        let rows = reg.relays().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].url, "wss://relay.example");
        // Six from the configuration; a second start writes nothing new, and one left
        // out of it is disabled (the CLI's relay is not the configuration's).
        let six: Vec<NewRelay> = (0..6)
            .map(|i| relay(&format!("ws://r{i}.example"), "config"))
            .collect();
        assert_eq!(reg.sync_config(&six, 100).await.unwrap(), (6, 0));
        assert_eq!(reg.sync_config(&six, 101).await.unwrap(), (0, 0));
        assert_eq!(reg.sync_config(&six[..5], 102).await.unwrap(), (0, 1));
        assert_eq!(reg.sync_config(&six, 103).await.unwrap(), (0, 0));
        let rows = reg.relays().await.unwrap();
        assert_eq!(rows.iter().filter(|r| r.active()).count(), 7);

        // Alone, `a` takes all seven, each with its first token.
        let lease = 30;
        let a = reg.lease_round("a", 1_000, lease).await.unwrap();
        assert_eq!((a.held.len(), a.share, a.instances), (7, 7, 1));
        assert!(a.held.iter().all(|l| l.token == 1 && l.active));
        // Each relay has an id for good (provenance names relays by it), the same in
        // every round and in what a restarted instance resumes.
        let ids: std::collections::BTreeSet<i32> = a.held.iter().map(|l| l.id).collect();
        assert!(ids.len() == 7 && !ids.contains(&0), "{ids:?}");
        let again = reg.lease_round("a", 1_000, lease).await.unwrap();
        let resumed = reg.held("a", 1_000).await.unwrap();
        assert_eq!(resumed.len(), 7);
        for later in [&again.held, &resumed] {
            for (x, y) in a.held.iter().zip(later) {
                assert_eq!((&x.url, x.id), (&y.url, y.id));
            }
        }
        // `b` joins: its share is 4 of 7, but every relay is leased.
        let b = reg.lease_round("b", 1_001, lease).await.unwrap();
        assert_eq!((b.held.len(), b.share, b.instances), (0, 4, 2));
        // `a` hands back three (its share is 4 now); `b` takes them, new tokens.
        let a = reg.lease_round("a", 1_002, lease).await.unwrap();
        assert_eq!(a.share, 4);
        let extra: Vec<String> = urls(&a)[4..].to_vec();
        let leases: Vec<(String, i64)> = a.held[4..]
            .iter()
            .map(|l| (l.url.clone(), l.token))
            .collect();
        // A release under another token (a lease taken anew since) keeps the lease.
        let stale: Vec<(String, i64)> = leases.iter().map(|(u, t)| (u.clone(), t + 1)).collect();
        reg.release("a", &stale).await.unwrap();
        assert_eq!(
            reg.lease_round("a", 1_002, lease).await.unwrap().held.len(),
            7
        );
        reg.release("a", &leases).await.unwrap();
        let b = reg.lease_round("b", 1_003, lease).await.unwrap();
        assert_eq!(urls(&b), extra);
        assert!(b.held.iter().all(|l| l.token == 2));
        assert_eq!(b.takeovers, 0, "released leases are not taken over");
        let rows = reg.relays().await.unwrap();
        let held_by = |who: &str| {
            rows.iter()
                .filter(|r| r.holder.as_deref() == Some(who))
                .count()
        };
        assert_eq!((held_by("a"), held_by("b")), (4, 3));

        // `a`'s writes go through under its lease.
        let mine = urls(&a)[0].clone();
        let fa = fence(&a, &mine, "a");
        assert!(reg.save_cursor(&fa, "f", 42).await.unwrap());
        assert!(reg.record_window(&fa, "f", None).await.unwrap());
        assert_eq!(reg.cursor(&mine, "f").await.unwrap(), Some(42));

        // `a` stops renewing (paused, cut off): once its lease lapsed, `b`, alone
        // alive, takes everything, `a`'s four as takeovers.
        let b = reg.lease_round("b", 1_040, lease).await.unwrap();
        assert_eq!((b.held.len(), b.instances, b.takeovers), (7, 1, 4));
        let fb = fence(&b, &mine, "b");
        assert_eq!(fb.token, 2);
        assert!(reg.save_cursor(&fb, "f", 50).await.unwrap());
        // `a` wakes and writes with its old token: refused, nothing written.
        assert!(!reg.save_cursor(&fa, "f", 10).await.unwrap());
        assert!(!reg.delete_cursor(&fa, "f").await.unwrap());
        assert!(!reg.record_window(&fa, "f", Some("late")).await.unwrap());
        assert_eq!(reg.cursor(&mine, "f").await.unwrap(), Some(50));
        let states = store.overview().await.unwrap().states;
        let state = states.iter().find(|s| s.relay == mine).unwrap();
        assert_eq!(state.last_error, None, "the refused outcome was written");
        // Its next round tells it: it holds nothing, and its share is 4 again.
        let a = reg.lease_round("a", 1_041, lease).await.unwrap();
        assert_eq!((a.held.len(), a.share), (0, 4));

        // Window outcomes: failures count up, a success resets them.
        for _ in 0..2 {
            assert!(reg.record_window(&fb, "g", Some("refused")).await.unwrap());
        }
        let states = store.overview().await.unwrap().states;
        let state = states
            .iter()
            .find(|s| s.relay == mine && s.filter == "g")
            .unwrap();
        assert_eq!(state.consecutive_failures, 2);
        assert_eq!(state.last_error.as_deref(), Some("refused"));
        assert!(reg.record_window(&fb, "g", None).await.unwrap());
        assert!(reg.delete_cursor(&fb, "f").await.unwrap());
        assert_eq!(reg.cursor(&mine, "f").await.unwrap(), None);

        // Paused: `b` keeps the lease until it hands it back, told it is inactive.
        assert!(reg.set_paused(&mine, true).await.unwrap());
        let b = reg.lease_round("b", 1_042, lease).await.unwrap();
        let paused = b.held.iter().find(|l| l.url == mine).unwrap();
        assert!(!paused.active);
        assert!(b.states.contains(&("paused", 1)));
        reg.release("b", &[(mine.clone(), paused.token)])
            .await
            .unwrap();
        let a = reg.lease_round("a", 1_043, lease).await.unwrap();
        assert!(!urls(&a).contains(&mine), "a paused relay is claimed");
        // Removed: gone from the registry, its cursors kept.
        assert!(
            !reg.save_cursor(&fb, "f", 60).await.unwrap(),
            "a handed-back lease writes"
        );
        assert!(reg.remove_relay(&mine).await.unwrap());
        assert!(!reg.remove_relay(&mine).await.unwrap());
        assert!(!reg.set_paused(&mine, false).await.unwrap());
        assert_eq!(reg.relays().await.unwrap().len(), 6);
        assert!(!reg.save_cursor(&fb, "f", 70).await.unwrap());
        // A clean stop hands every lease back.
        reg.leave("b").await.unwrap();
        assert!(reg
            .relays()
            .await
            .unwrap()
            .iter()
            .all(|r| r.holder.as_deref() != Some("b")));
    });
}

both_backends!(leases_are_shared_taken_over_and_fenced);

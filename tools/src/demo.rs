//! `nostr-sync-tools demo`: three in-process relays with overlapping, freshly signed events,
//! synced by the real pipeline into the configured database.

use std::time::{Duration, Instant};

use crate::dataset::{Dataset, HostedRelay};
use nostr_sync::app::App;
use nostr_sync::config::Settings;
use nostr_sync::metrics::Counters;

pub const RELAYS: usize = 3;

pub async fn run(mut settings: Settings, events: usize) -> anyhow::Result<()> {
    println!("generating and signing {events} events for {RELAYS} relays...");
    let seed = rand::random();
    let (signed, authors, _zapper) = crate::dataset::sign_events_by(events, seed);
    let mut data = Dataset {
        placement: crate::dataset::place(signed.len(), RELAYS, 0.4, seed),
        events: signed,
    };
    // The zapper's LNURL server, on loopback, and a profile for every author naming it
    // (LUD-06), so that receipts count under the default verification: signed by the
    // recipient's server (NIP-57 appendix F).
    let zapper = data
        .events
        .iter()
        .find(|e| e.kind == nostr_sdk::Kind::ZapReceipt)
        .map(|e| e.pubkey);
    let lnurl = match zapper {
        Some(key) => Some(crate::lnurl::LnurlServer::start(key).await?),
        None => None,
    };
    if let Some(server) = &lnurl {
        for (i, author) in authors.iter().enumerate() {
            let content = format!(
                r#"{{"name":"author{i}","lud06":"{}"}}"#,
                server.lud06(&format!("a{i}"))
            );
            let profile = nostr_sdk::EventBuilder::new(nostr_sdk::Kind::Metadata, content)
                .sign_with_keys(author)?;
            data.placement[i % RELAYS].push(data.events.len());
            data.events.push(profile);
        }
        settings.aggregates.lnurl_allow_private = true;
        settings.aggregates.lnurl_check_secs = 1;
        settings.aggregates.lnurl_fetches_per_sec = 1_000;
        settings.aggregates.lnurl_host_fetches_per_sec = 1_000;
    }
    let mut relays = Vec::new();
    for r in 0..RELAYS {
        relays.push(HostedRelay::start(data.relay_events(r), 500).await?);
    }
    settings.relays.clear();
    for relay in &relays {
        settings.relays.push(relay.url().await);
    }
    settings.sync.live = false;
    settings.http.listen.clear();
    let held: usize = data.placement.iter().map(Vec::len).sum();
    println!(
        "relays: {} holding {held} events, {} unique",
        settings.relays.join(" "),
        data.events.len()
    );

    let before = nostr_sync::storage::open(&settings.database.url, 1)
        .await?
        .count_events()
        .await?;
    let started = Instant::now();
    let second = settings.clone();
    let app = App::start(settings).await?;
    let synced = app.wait_for_cycles(1, Duration::from_secs(300)).await;
    let elapsed = started.elapsed();
    let store = app.store.clone();
    // Every receipt's recipient names the zapper as its server: judged by the rules
    // alone, receipts count as the service counts them once it asked the servers.
    let zaps = nostr_sync::nostr::zap::ZapPolicy::default();
    let expected = crate::dataset::expected_stats_by(&data.events, &data.events, &zaps);
    let zapped = Instant::now();
    while store.stats().await? != expected && zapped.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counters = app.counters.clone();
    app.shutdown(Duration::from_secs(30)).await;
    anyhow::ensure!(synced, "relays did not finish their first cycle");

    let after = store.count_events().await?;
    let c = &counters;
    println!("\nsynced in {:.2}s", elapsed.as_secs_f64());
    println!("  received from relays : {}", c.received());
    println!("  duplicates skipped   : {}", Counters::get(&c.duplicates));
    println!("  signatures verified  : {}", Counters::get(&c.verified));
    println!("  rejected             : {}", c.rejected());
    println!("  new events stored    : {}", Counters::get(&c.stored));
    println!("  database commits     : {}", Counters::get(&c.db_commits));
    println!("  events in database   : {after} (was {before})");
    println!(
        "  unique events/s      : {:.0}",
        Counters::get(&c.stored) as f64 / elapsed.as_secs_f64()
    );

    if let Some(server) = &lnurl {
        println!(
            "  zap receipts judged  : by the recipients' LNURL server ({} documents fetched from {})",
            server.served(),
            server.base
        );
    }

    let stats = store.stats().await?;
    let mut top: Vec<_> = expected
        .keys()
        .filter_map(|id| stats.get(id).map(|s| (id, s)))
        .collect();
    top.sort_by_key(|(id, s)| (std::cmp::Reverse(s.reactions), (*id).clone()));
    println!("\nmost reacted events:");
    println!(
        "  {:<16} {:>9} {:>7} {:>7} {:>5} {:>12}",
        "event", "reactions", "replies", "reposts", "zaps", "zap msats"
    );
    for (id, s) in top.iter().take(5) {
        println!(
            "  {:<16} {:>9} {:>7} {:>7} {:>5} {:>12}",
            &id[..16],
            s.reactions,
            s.replies,
            s.reposts,
            s.zaps,
            s.zap_msats
        );
    }
    let mismatched = expected
        .iter()
        .filter(|(id, d)| stats.get(*id) != Some(d))
        .count();
    println!(
        "\naggregates checked against a recount of the generated events: {}",
        if mismatched == 0 {
            "all equal".to_string()
        } else {
            format!("{mismatched} differ")
        }
    );
    anyhow::ensure!(mismatched == 0, "aggregates differ from the recount");

    // NIP-09: authors delete every tenth of their reactions, replies and reposts; the
    // deletions reach one relay, and the next sync retracts what the events counted.
    let deletions = crate::dataset::deletions(&data.events, &authors, 10);
    println!(
        "\naggregate totals before deletions: {}",
        totals(&store.stats().await?)
    );
    for d in &deletions {
        relays[0].publish(d).await?;
    }
    let app = App::start(second).await?;
    let synced = app.wait_for_cycles(1, Duration::from_secs(300)).await;
    let counters = app.counters.clone();
    app.shutdown(Duration::from_secs(30)).await;
    for hosted in relays {
        hosted.relay.shutdown();
    }
    anyhow::ensure!(synced, "relays did not finish their second cycle");
    let stats = store.stats().await?;
    println!(
        "{} deletions by the events' authors synced: {} events removed, {} contributions retracted",
        deletions.len(),
        Counters::get(&counters.deleted),
        Counters::get(&counters.retracted)
    );
    println!("aggregate totals after deletions : {}", totals(&stats));
    let deleted: std::collections::HashSet<String> = deletions
        .iter()
        .flat_map(|d| {
            nostr_sync::nostr::deletion(d)
                .map(|d| d.ids)
                .unwrap_or_default()
        })
        .collect();
    let remaining: Vec<_> = data
        .events
        .iter()
        .filter(|e| !deleted.contains(&e.id.to_hex()))
        .cloned()
        .collect();
    let expected = crate::dataset::expected_stats_by(&remaining, &data.events, &zaps);
    let mismatched = expected
        .iter()
        .filter(|(id, d)| stats.get(*id) != Some(d))
        .count()
        + stats
            .iter()
            .filter(|(id, d)| !expected.contains_key(*id) && **d != Default::default())
            .count();
    println!(
        "aggregates checked against a recount without the deleted events: {}",
        if mismatched == 0 {
            "all equal".to_string()
        } else {
            format!("{mismatched} differ")
        }
    );
    anyhow::ensure!(
        mismatched == 0,
        "aggregates differ from the recount after deletions"
    );
    Ok(())
}

/// Sums of every aggregate row.
fn totals(
    stats: &std::collections::HashMap<String, nostr_sync::nostr::aggregate::StatsDelta>,
) -> String {
    let mut sum = nostr_sync::nostr::aggregate::StatsDelta::default();
    for d in stats.values() {
        sum.add(d);
    }
    format!(
        "{} reactions, {} replies, {} reposts, {} zaps ({} msats)",
        sum.reactions, sum.replies, sum.reposts, sum.zaps, sum.zap_msats
    )
}

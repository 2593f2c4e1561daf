//! The aggregates a database of `events` must hold, written from the NIP texts and
//! independently of the service's `contribution()`: if both agreed only because they
//! were the same code, the end-to-end tests would prove nothing.
//!
//! - NIP-25: a reaction (kind 7) counts for the event of its last `e` tag.
//! - NIP-10: a note (kind 1) replies to the `e` tag marked `reply`; with only a `root`
//!   marker, to the root; unmarked `e` tags are positional and the last is the parent;
//!   `mention` tags never make a reply.
//! - NIP-18: a repost (kind 6) or generic repost (kind 16) counts for its `e` tag.
//! - NIP-57: a zap receipt (kind 9735) counts for its `e` tag, with the amount of the
//!   `bolt11` invoice (BOLT-11: the human-readable part is `ln` + currency + amount +
//!   multiplier m/u/n/p of a bitcoin); no amount, a malformed one, or more than the
//!   21 million bitcoin that exist counts zero msat. Sums never wrap.

use std::collections::HashMap;

use nostr_sdk::Event;
use nostr_sync::actors::aggregator::deltas::StatsDelta;

fn e_values(event: &Event) -> Vec<(String, Option<String>)> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(|t| t.len() >= 2 && t[0] == "e")
        .filter(|t| t[1].len() == 64 && t[1].chars().all(|c| c.is_ascii_hexdigit()))
        .map(|t| (t[1].to_lowercase(), t.get(3).cloned()))
        .collect()
}

/// msat of a BOLT-11 invoice, read character by character.
fn invoice_msats(invoice: &str) -> i64 {
    let lower: Vec<char> = invoice.trim().to_lowercase().chars().collect();
    let Some(sep) = lower.iter().rposition(|c| *c == '1') else {
        return 0;
    };
    let hrp = &lower[..sep];
    if hrp.len() < 2 || hrp[0] != 'l' || hrp[1] != 'n' {
        return 0;
    }
    let mut i = 2;
    while i < hrp.len() && hrp[i].is_ascii_lowercase() {
        i += 1;
    }
    let mut amount: u128 = 0;
    let mut digits = 0;
    while i < hrp.len() && hrp[i].is_ascii_digit() {
        amount = amount.saturating_mul(10) + hrp[i].to_digit(10).unwrap_or(0) as u128;
        digits += 1;
        i += 1;
    }
    if digits == 0 {
        return 0;
    }
    // In tenths of a msat, so that pico-bitcoin stays exact.
    let per_btc: u128 = 1_000_000_000_000;
    let tenths = match &hrp[i..] {
        [] => amount.saturating_mul(per_btc),
        ['m'] => amount.saturating_mul(per_btc / 1_000),
        ['u'] => amount.saturating_mul(per_btc / 1_000_000),
        ['n'] => amount.saturating_mul(per_btc / 1_000_000_000),
        ['p'] => amount,
        _ => return 0,
    };
    if tenths % 10 != 0 || tenths / 10 > 21_000_000 * 100_000_000_000 {
        return 0;
    }
    (tenths / 10) as i64
}

fn target(event: &Event) -> Option<(String, StatsDelta)> {
    let tags = e_values(event);
    let one = StatsDelta::default();
    match event.kind.as_u16() {
        7 => Some((
            tags.last()?.0.clone(),
            StatsDelta {
                reactions: 1,
                ..one
            },
        )),
        6 | 16 => Some((tags.first()?.0.clone(), StatsDelta { reposts: 1, ..one })),
        1 => {
            let marked = |m: &str| tags.iter().find(|(_, mark)| mark.as_deref() == Some(m));
            let parent = marked("reply").or_else(|| marked("root")).or_else(|| {
                tags.iter()
                    .rev()
                    .find(|(_, mark)| mark.as_deref().is_none_or(str::is_empty))
            })?;
            Some((parent.0.clone(), StatsDelta { replies: 1, ..one }))
        }
        9735 => {
            let msats = event
                .tags
                .iter()
                .map(|t| t.as_slice())
                .find(|t| t.len() >= 2 && t[0] == "bolt11")
                .map_or(0, |t| invoice_msats(&t[1]));
            Some((
                tags.last()?.0.clone(),
                StatsDelta {
                    zaps: 1,
                    zap_msats: msats,
                    ..one
                },
            ))
        }
        _ => None,
    }
}

/// The stats table a complete, exact copy of `events` holds.
pub fn expected_stats<'a>(
    events: impl IntoIterator<Item = &'a Event>,
) -> HashMap<String, StatsDelta> {
    let mut out: HashMap<String, StatsDelta> = HashMap::new();
    for event in events {
        if let Some((target, d)) = target(event) {
            let s = out.entry(target).or_default();
            s.reactions = s.reactions.saturating_add(d.reactions);
            s.replies = s.replies.saturating_add(d.replies);
            s.reposts = s.reposts.saturating_add(d.reposts);
            s.zaps = s.zaps.saturating_add(d.zaps);
            s.zap_msats = s.zap_msats.saturating_add(d.zap_msats);
        }
    }
    out
}

#[test]
fn invoices() {
    assert_eq!(invoice_msats("lnbc2500u1pvjluez"), 250_000_000);
    assert_eq!(invoice_msats("lnbc20p1x"), 2);
    assert_eq!(invoice_msats("lnbc15p1x"), 0);
    assert_eq!(invoice_msats("lnbc5\u{e9}1x"), 0);
    assert_eq!(invoice_msats("lnbc210000001x"), 2_100_000_000_000_000_000);
    assert_eq!(invoice_msats("lnbc210000011x"), 0);
}

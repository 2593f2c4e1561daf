//! The aggregates a database of `events` must hold, written from the NIP texts and
//! independently of the service's `contribution()`: if both agreed only because they
//! were the same code, the end-to-end tests would prove nothing.
//!
//! - NIP-25: a reaction (kind 7) counts for the event of its last `e` tag.
//! - NIP-10: a note (kind 1) replies to the `e` tag marked `reply`; with only a `root`
//!   marker, to the root; unmarked `e` tags are positional and the last is the parent;
//!   `mention` tags never make a reply.
//! - NIP-18: a repost (kind 6) or generic repost (kind 16) counts for its `e` tag; a
//!   generic repost with only an `a` tag counts for that address (`kind:pubkey:d`).
//! - NIP-57: a zap receipt (kind 9735) counts for its `e` tag (else its `a` tag) with
//!   its invoice's amount, only when it holds together (see `zap_msats`) and its `p`
//!   is the zapped event's author or one of the event's `zap` split tags (appendix G;
//!   for an `a` tag, the address's pubkey); otherwise it counts nothing. Sums never
//!   wrap.
//! - This service's own bound (docs/guarantees.md): an address (`kind:pubkey:d`)
//!   longer than 1,024 bytes is no database key. An event at such an address is not
//!   kept, and an `a` tag naming one counts nothing and deletes nothing.

use std::collections::HashMap;

use nostr_sdk::Event;
use nostr_sync::nostr::aggregate::StatsDelta;

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

/// What a zap receipt counts for (NIP-57, appendix F), or `None` when it does not hold
/// together: the invoice must decode (checksum, signature), carry an amount no larger
/// than the 21 million bitcoin that exist, and commit by its description hash to the
/// `description` tag, which must be a signed kind-9734 request whose `amount` (if any)
/// is the invoice's. The request "MUST have only one p tag" and "0 or 1 e tags"; the
/// receipt's `p`, `e` and `a` tags are the request's. Returns the amount, the `p`, and
/// the target (the `e`, else the `a` coordinate).
fn zap_msats(receipt: &Event) -> Option<(i64, String, String)> {
    use bitcoin::hashes::{sha256, Hash};
    use nostr_sdk::JsonUtil;
    let first = |e: &Event, name: &str| -> Option<String> {
        e.tags
            .iter()
            .map(|t| t.as_slice())
            .find(|t| t.len() > 1 && t[0] == name)
            .map(|t| t[1].clone())
    };
    let invoice: lightning_invoice::Bolt11Invoice = first(receipt, "bolt11")?.parse().ok()?;
    let msats = invoice.amount_milli_satoshis()?;
    if msats > 21_000_000 * 100_000_000_000 {
        return None;
    }
    let description = first(receipt, "description")?;
    let request = Event::from_json(&description).ok()?;
    if request.kind.as_u16() != 9734 || request.verify().is_err() {
        return None;
    }
    let lightning_invoice::Bolt11InvoiceDescriptionRef::Hash(h) = invoice.description() else {
        return None;
    };
    if h.0.to_byte_array() != sha256::Hash::hash(description.as_bytes()).to_byte_array() {
        return None;
    }
    if let Some(asked) = first(&request, "amount") {
        if asked.parse::<u64>().ok()? != msats {
            return None;
        }
    }
    let all = |e: &Event, name: &str| -> Vec<String> {
        e.tags
            .iter()
            .map(|t| t.as_slice())
            .filter(|t| t.len() > 1 && t[0] == name)
            .map(|t| t[1].clone())
            .collect()
    };
    for name in ["p", "e", "a"] {
        let (ours, theirs) = (all(receipt, name), all(&request, name));
        if ours.len() > 1 || ours != theirs {
            return None;
        }
    }
    let p = all(receipt, "p").pop()?.to_lowercase();
    let target = match e_values(receipt).pop() {
        Some((id, _)) => id,
        None => all(receipt, "a").pop().and_then(|a| coordinate(&a))?,
    };
    Some((msats as i64, p, target))
}

/// Whether `p` may receive zaps for `target`: its author, or one of its `zap` tags
/// (NIP-57 appendix G); for an address, the address's pubkey.
fn pays(p: &str, target: &str, events: &HashMap<String, &Event>) -> bool {
    if target.contains(':') {
        return target.split(':').nth(1) == Some(p);
    }
    let Some(event) = events.get(target) else {
        return false;
    };
    event.pubkey.to_hex() == p
        || event
            .tags
            .iter()
            .map(|t| t.as_slice())
            .any(|t| t.len() > 1 && t[0] == "zap" && t[1].to_lowercase() == p)
}

fn target(event: &Event, events: &HashMap<String, &Event>) -> Option<(String, StatsDelta)> {
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
        6 => Some((tags.first()?.0.clone(), StatsDelta { reposts: 1, ..one })),
        16 => {
            let target = match tags.first() {
                Some((id, _)) => id.clone(),
                None => event
                    .tags
                    .iter()
                    .map(|t| t.as_slice())
                    .filter(|t| t.len() > 1 && t[0] == "a")
                    .find_map(|t| coordinate(&t[1]))?,
            };
            Some((target, StatsDelta { reposts: 1, ..one }))
        }
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
            let (msats, p, target) = zap_msats(event)?;
            if !pays(&p, &target, events) {
                return None;
            }
            Some((
                target,
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
    let events: Vec<&Event> = events.into_iter().collect();
    let by_id: HashMap<String, &Event> = events.iter().map(|e| (e.id.to_hex(), *e)).collect();
    let mut out: HashMap<String, StatsDelta> = HashMap::new();
    for event in events {
        if let Some((target, d)) = target(event, &by_id) {
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

/// As `expected_stats`, with NIP-57 appendix F's last rule: "The zapReceipt event's
/// pubkey MUST be the same as the recipient's lnurl provider's nostrPubkey". `servers`
/// maps a recipient (`p`, hex) to the keys (hex) their provider used; receipts signed
/// by anyone else count nothing.
pub fn expected_stats_with_servers<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    servers: &HashMap<String, Vec<String>>,
) -> HashMap<String, StatsDelta> {
    let signed_by_server = |e: &&Event| {
        if e.kind.as_u16() != 9735 {
            return true;
        }
        let recipient = e
            .tags
            .iter()
            .map(|t| t.as_slice())
            .find(|t| t.len() > 1 && t[0] == "p")
            .map(|t| t[1].to_lowercase());
        recipient
            .and_then(|r| servers.get(&r))
            .is_some_and(|keys| keys.contains(&e.pubkey.to_hex()))
    };
    expected_stats(events.into_iter().filter(signed_by_server))
}

/// `kind:pubkey:d` of an `a` tag's value, when it names a replaceable (d empty) or
/// addressable event: NIP-01's coordinate.
fn coordinate(value: &str) -> Option<String> {
    if value.len() > LONGEST_ADDRESS {
        return None;
    }
    let mut parts = value.splitn(3, ':');
    let kind: u32 = parts.next()?.parse().ok()?;
    let pubkey = parts.next()?;
    let d = parts.next()?;
    let replaceable = kind == 0 || kind == 3 || (10_000..20_000).contains(&kind);
    let addressable = (30_000..40_000).contains(&kind);
    let hex = pubkey.len() == 64 && pubkey.chars().all(|c| c.is_ascii_hexdigit());
    ((replaceable && d.is_empty() || addressable) && hex)
        .then(|| format!("{kind}:{}:{d}", pubkey.to_lowercase()))
}

/// Longest address the service keeps, in bytes.
const LONGEST_ADDRESS: usize = 1_024;

/// NIP-01's key for versions of one event: `kind:pubkey:d`, or `None` for kinds that
/// do not replace each other.
fn version_key(event: &Event) -> Option<String> {
    let kind = u32::from(event.kind.as_u16());
    let pubkey = event.pubkey.to_hex();
    if kind == 0 || kind == 3 || (10_000..20_000).contains(&kind) {
        return Some(format!("{kind}:{pubkey}:"));
    }
    if (30_000..40_000).contains(&kind) {
        let d = event
            .tags
            .iter()
            .map(|t| t.as_slice())
            .find(|t| t.len() > 1 && t[0] == "d")
            .map(|t| t[1].clone())
            .unwrap_or_default();
        return Some(format!("{kind}:{pubkey}:{d}"));
    }
    None
}

/// What a relay that follows the NIPs keeps of `events` at unix time `now`:
///
/// - NIP-01: ephemeral kinds (20000–29999) are not kept; of the versions of one
///   replaceable or addressable event only the newest is, the lowest id on a tie.
/// - NIP-40: an event whose `expiration` is at or before `now` is not kept.
/// - NIP-09: a kind 5 removes the events its `e` tags name and, through `a` tags, the
///   versions of that address dated up to its own `created_at`, in both cases only the
///   events of its own author; a kind 5 is never removed.
pub fn kept(events: &[Event], now: u64) -> Vec<Event> {
    let expired = |e: &Event| {
        e.tags
            .iter()
            .map(|t| t.as_slice())
            .find(|t| t.len() > 1 && t[0] == "expiration")
            .and_then(|t| t[1].trim().parse::<u64>().ok())
            .is_some_and(|at| at <= now)
    };
    let mut unique: HashMap<nostr_sdk::EventId, &Event> = HashMap::new();
    for e in events {
        let kind = e.kind.as_u16();
        let too_long = version_key(e).is_some_and(|k| k.len() > LONGEST_ADDRESS);
        if !(20_000..30_000).contains(&kind) && !expired(e) && !too_long {
            unique.insert(e.id, e);
        }
    }
    // Versions: newest per key, lowest id on a tie.
    let mut newest: HashMap<String, &Event> = HashMap::new();
    for e in unique.values() {
        if let Some(key) = version_key(e) {
            let held = newest.entry(key).or_insert(e);
            let better = e.created_at > held.created_at
                || (e.created_at == held.created_at && e.id.to_hex() < held.id.to_hex());
            if better {
                *held = e;
            }
        }
    }
    // Deletions by their authors.
    let mut gone_ids: std::collections::HashSet<(String, String)> = Default::default();
    let mut gone_until: HashMap<String, u64> = HashMap::new();
    for d in unique.values().filter(|e| e.kind.as_u16() == 5) {
        let author = d.pubkey.to_hex();
        for t in d.tags.iter().map(|t| t.as_slice()).filter(|t| t.len() > 1) {
            if t[0] == "e" {
                gone_ids.insert((t[1].to_lowercase(), author.clone()));
            } else if t[0] == "a" {
                if let Some(c) = coordinate(&t[1]).filter(|c| c.split(':').nth(1) == Some(&author))
                {
                    let until = gone_until.entry(c).or_default();
                    *until = (*until).max(d.created_at.as_secs());
                }
            }
        }
    }
    let mut out: Vec<Event> = unique
        .values()
        .filter(|e| match version_key(e) {
            Some(key) => newest.get(&key).is_some_and(|n| n.id == e.id),
            None => true,
        })
        .filter(|e| {
            e.kind.as_u16() == 5
                || !(gone_ids.contains(&(e.id.to_hex(), e.pubkey.to_hex()))
                    || version_key(e)
                        .and_then(|k| gone_until.get(&k))
                        .is_some_and(|until| e.created_at.as_secs() <= *until))
        })
        .map(|e| (*e).clone())
        .collect();
    out.sort_by_key(|e| e.id);
    out
}

//! Nostr rules, without actix or diesel: what a database kept by nostr-sync holds.
//! Each rule is table-tested from the NIP text.

use nostr_sdk::Event;

pub mod aggregate;
pub mod fingerprint;
pub mod lnurl;
pub mod zap;

/// Why a valid event is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Kinds 20000–29999 (NIP-01): relays do not keep them, nor do we.
    Ephemeral,
    /// Its `expiration` tag (NIP-40) is in the past.
    Expired,
    /// An addressable event whose address is longer than [`MAX_ADDRESS_BYTES`].
    AddressTooLong,
}

/// Longest address (`kind:pubkey:d`) kept. Addresses are database keys (the version
/// heads, tombstones and aggregate rows are keyed by them), and a PostgreSQL btree
/// entry cannot exceed about 2.7 kB: an address anyone can make 8 kB long would fail
/// every write that carries it. Events at longer addresses are not stored, reposts of
/// them count nothing, deletions of them remove nothing (nothing is stored there).
pub const MAX_ADDRESS_BYTES: usize = 1024;

/// The kind of a relay list (NIP-65): where its author writes and reads.
pub const RELAY_LIST_KIND: u16 = 10_002;

/// Whether `event` is to be stored at unix time `now`.
pub fn admit(event: &Event, now: u64) -> Result<(), Skip> {
    if (20_000..30_000).contains(&event.kind.as_u16()) {
        return Err(Skip::Ephemeral);
    }
    if expiration(event).is_some_and(|at| at <= now) {
        return Err(Skip::Expired);
    }
    if address_len(event).is_some_and(|n| n > MAX_ADDRESS_BYTES) {
        return Err(Skip::AddressTooLong);
    }
    Ok(())
}

/// The `expiration` tag's time (NIP-40), if the event has a readable one.
pub fn expiration(event: &Event) -> Option<u64> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .find(|t| t.len() >= 2 && t[0] == "expiration")
        .and_then(|t| t[1].trim().parse().ok())
}

/// Whether versions of `kind` replace each other per pubkey (NIP-01: 0, 3, 10000–19999).
pub fn is_replaceable(kind: u16) -> bool {
    kind == 0 || kind == 3 || (10_000..20_000).contains(&kind)
}

/// Whether versions of `kind` replace each other per pubkey and `d` tag (30000–39999).
pub fn is_addressable(kind: u16) -> bool {
    (30_000..40_000).contains(&kind)
}

/// The key under which versions of `event` replace each other, as an `a` tag writes it:
/// `kind:pubkey:d`, with `d` the first `d` tag's value ("" without one, and always ""
/// for replaceable kinds). `None` for every other kind.
pub fn address(event: &Event) -> Option<String> {
    let kind = event.kind.as_u16();
    let d = d_of(event)?;
    Some(format!("{kind}:{}:{d}", hex(event.pubkey.as_bytes())))
}

/// The `d` part of `event`'s address; `None` for kinds without versions.
fn d_of(event: &Event) -> Option<&str> {
    let kind = event.kind.as_u16();
    if is_replaceable(kind) {
        Some("")
    } else if is_addressable(kind) {
        Some(
            event
                .tags
                .iter()
                .map(|t| t.as_slice())
                .find(|t| t.len() >= 2 && t[0] == "d")
                .map_or("", |t| t[1].as_str()),
        )
    } else {
        None
    }
}

/// The length in bytes of `address(event)`, without writing it.
fn address_len(event: &Event) -> Option<usize> {
    let kind = event.kind.as_u16();
    let digits = kind.checked_ilog10().unwrap_or(0) as usize + 1;
    d_of(event).map(|d| digits + 1 + 64 + 1 + d.len())
}

/// An `a` tag's value (`kind:pubkey:d`) as `address` writes it, when it names a
/// replaceable (with `d` empty) or addressable event; `None` otherwise.
pub fn parse_address(value: &str) -> Option<String> {
    if value.len() > MAX_ADDRESS_BYTES {
        return None;
    }
    let mut parts = value.splitn(3, ':');
    let kind: u16 = parts.next()?.parse().ok()?;
    let pubkey = parts.next()?;
    let d = parts.next()?;
    let versioned = (is_replaceable(kind) && d.is_empty()) || is_addressable(kind);
    (versioned && is_hex_id(pubkey)).then(|| format!("{kind}:{}:{d}", pubkey.to_ascii_lowercase()))
}

/// Whether version `a` replaces version `b` of one address: it is newer, or as old
/// with the lower id (NIP-01). `(created_at, id)`, ids as lowercase hex.
pub fn replaces(a: (i64, &str), b: (i64, &str)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// What a kind-5 deletion request (NIP-09) removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletion {
    /// Ids of its `e` tags (lowercase hex); only events with the deletion's pubkey go.
    pub ids: Vec<String>,
    /// Addresses of its `a` tags whose pubkey is the deletion's own: their versions
    /// dated up to `until` go.
    pub addresses: Vec<String>,
    /// The deletion's `created_at`.
    pub until: i64,
}

/// The targets of `event` if it is a deletion request. An `a` tag naming another
/// author's address, or a kind that has no versions, deletes nothing.
pub fn deletion(event: &Event) -> Option<Deletion> {
    if event.kind.as_u16() != 5 {
        return None;
    }
    let author = hex(event.pubkey.as_bytes());
    let mut out = Deletion {
        until: event.created_at.as_secs() as i64,
        ..Default::default()
    };
    for t in event.tags.iter().map(|t| t.as_slice()) {
        match t {
            [name, id, ..] if name == "e" && is_hex_id(id) => out.ids.push(id.to_ascii_lowercase()),
            [name, coordinate, ..] if name == "a" => {
                let mut parts = coordinate.splitn(3, ':');
                let (Some(kind), Some(pubkey), Some(d)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Ok(kind) = kind.parse::<u16>() else {
                    continue;
                };
                if pubkey.eq_ignore_ascii_case(&author)
                    && (is_replaceable(kind) && d.is_empty() || is_addressable(kind))
                    && coordinate.len() <= MAX_ADDRESS_BYTES
                {
                    out.addresses.push(format!("{kind}:{author}:{d}"));
                }
            }
            _ => {}
        }
    }
    out.ids.sort();
    out.ids.dedup();
    out.addresses.sort();
    out.addresses.dedup();
    Some(out)
}

/// Whether `s` is a 32-byte id in hex.
pub fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase hex of `bytes`, as ids, keys and signatures are written. The `hex`
/// crate behind `to_hex()` pushes one `char` at a time, and a signature's `Display`
/// formats each byte: together some 10% of the storage thread's time.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::{EventBuilder, Keys, Kind, Tag};

    /// `hex` writes ids, keys and signatures as nostr does.
    #[test]
    fn hex_is_nostrs_hex() {
        for i in 0..20u8 {
            let e = EventBuilder::text_note(format!("{i}"))
                .sign_with_keys(&Keys::generate())
                .unwrap();
            assert_eq!(hex(e.id.as_bytes()), e.id.to_hex());
            assert_eq!(hex(e.pubkey.as_bytes()), e.pubkey.to_hex());
            assert_eq!(hex(&e.sig.serialize()), e.sig.to_string());
        }
        assert_eq!(hex(&[0x00, 0x0f, 0xf0, 0xff]), "000ff0ff");
        assert_eq!(hex(&[]), "");
    }

    fn signed(keys: &Keys, kind: u16, created_at: u64, tags: Vec<Vec<&str>>) -> Event {
        EventBuilder::new(Kind::from(kind), "x")
            .tags(tags.into_iter().map(|t| Tag::parse(t).unwrap()))
            .custom_created_at(nostr_sdk::Timestamp::from(created_at))
            .sign_with_keys(keys)
            .unwrap()
    }

    /// NIP-01: "for kind n such that 10000 <= n < 20000 || n == 0 || n == 3, events
    /// are replaceable ... for kind n such that 30000 <= n < 40000, events are
    /// addressable by their kind, pubkey and d tag value".
    #[test]
    fn addresses_follow_nip01() {
        let keys = Keys::generate();
        let pk = keys.public_key().to_hex();
        type Case<'a> = (u16, Vec<Vec<&'a str>>, Option<String>);
        let cases: Vec<Case> = vec![
            (0, vec![], Some(format!("0:{pk}:"))),
            (3, vec![vec!["d", "ignored"]], Some(format!("3:{pk}:"))),
            (10_002, vec![], Some(format!("10002:{pk}:"))),
            (19_999, vec![], Some(format!("19999:{pk}:"))),
            (1, vec![], None),
            (2, vec![], None),
            (20_000, vec![], None),
            (29_999, vec![], None),
            (30_023, vec![], Some(format!("30023:{pk}:"))),
            (30_023, vec![vec!["d"]], Some(format!("30023:{pk}:"))),
            (
                30_023,
                vec![vec!["d", "a:b"], vec!["d", "second"]],
                Some(format!("30023:{pk}:a:b")),
            ),
            (39_999, vec![vec!["d", ""]], Some(format!("39999:{pk}:"))),
            (40_000, vec![vec!["d", "x"]], None),
        ];
        for (kind, tags, want) in cases {
            let got = address(&signed(&keys, kind, 1, tags.clone()));
            assert_eq!(got, want, "kind {kind} {tags:?}");
        }
    }

    /// "In case of replaceable events with the same timestamp, the event with the
    /// lowest id (first in lexical order) should be retained".
    #[test]
    fn newer_or_lower_id_replaces() {
        let cases = [
            ((2, "b"), (1, "a"), true),
            ((1, "a"), (2, "b"), false),
            ((1, "a"), (1, "b"), true),
            ((1, "b"), (1, "a"), false),
            ((1, "a"), (1, "a"), false),
        ];
        for (a, b, want) in cases {
            assert_eq!(replaces(a, b), want, "{a:?} over {b:?}");
        }
    }

    /// NIP-09: `e` tags name events, `a` tags name addresses whose versions up to the
    /// deletion's `created_at` go; only the author's own events are deleted.
    #[test]
    fn deletions_follow_nip09() {
        let keys = Keys::generate();
        let pk = keys.public_key().to_hex();
        let other = Keys::generate().public_key().to_hex();
        let id = "A".repeat(64);
        let own = format!("30023:{pk}:post");
        let foreign = format!("30023:{other}:post");
        let replaceable = format!("0:{}:", pk.to_uppercase());
        let note = format!("1:{pk}:");
        let d = signed(
            &keys,
            5,
            1_000,
            vec![
                vec!["e", &id],
                vec!["e", &id],
                vec!["e", "short"],
                vec!["a", &own],
                vec!["a", &foreign],
                vec!["a", &replaceable],
                vec!["a", &note],
                vec!["a", "garbage"],
                vec!["k", "1"],
            ],
        );
        assert_eq!(
            deletion(&d),
            Some(Deletion {
                ids: vec!["a".repeat(64)],
                addresses: vec![format!("0:{pk}:"), own],
                until: 1_000,
            })
        );
        assert_eq!(deletion(&signed(&keys, 1, 1, vec![vec!["e", &id]])), None);
        // An address too long to be stored is too long to be a tombstone.
        let long = format!("30023:{pk}:{}", "x".repeat(2_000));
        let d = signed(&keys, 5, 1_000, vec![vec!["a", &long]]);
        assert_eq!(deletion(&d).map(|d| d.addresses), Some(vec![]));
        assert_eq!(parse_address(&long), None);
        assert!(parse_address(&format!("30023:{pk}:{}", "x".repeat(900))).is_some());
    }

    #[test]
    fn ephemeral_and_expired_events_are_skipped() {
        let keys = Keys::generate();
        let now = 1_700_000_000;
        let event = |kind: u16, tags: Vec<Vec<String>>| {
            EventBuilder::new(Kind::from(kind), "x")
                .tags(tags.into_iter().map(|t| Tag::parse(t).unwrap()))
                .sign_with_keys(&keys)
                .unwrap()
        };
        let exp = |at: String| vec![vec!["expiration".to_owned(), at]];
        let cases: Vec<(Event, Result<(), Skip>)> = vec![
            (event(1, vec![]), Ok(())),
            (event(19_999, vec![]), Ok(())),
            (event(20_000, vec![]), Err(Skip::Ephemeral)),
            (event(29_999, vec![]), Err(Skip::Ephemeral)),
            (event(30_000, vec![]), Ok(())),
            (event(1, exp((now - 1).to_string())), Err(Skip::Expired)),
            (event(1, exp(now.to_string())), Err(Skip::Expired)),
            (event(1, exp((now + 60).to_string())), Ok(())),
            (event(1, exp("soon".into())), Ok(())),
        ];
        // `kind:pubkey:d` of 30023 is 6 + 64 + 2 bytes around `d`.
        let d = |n: usize| vec![vec!["d".to_owned(), "x".repeat(n)]];
        let cases: Vec<(Event, Result<(), Skip>)> = cases
            .into_iter()
            .chain([
                (event(30_023, d(1024 - 71)), Ok(())),
                (event(30_023, d(1024 - 70)), Err(Skip::AddressTooLong)),
                (event(30_023, d(8_000)), Err(Skip::AddressTooLong)),
                // Replaceable kinds have no `d` in their address.
                (event(10_002, d(8_000)), Ok(())),
                (event(1, d(8_000)), Ok(())),
            ])
            .collect();
        for (e, want) in cases {
            assert_eq!(admit(&e, now), want, "{:?}", e.tags);
        }
    }
}

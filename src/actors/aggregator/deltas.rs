//! Pure aggregation rules: which stored event counts toward which target, and how much.
//! No actix types here, so the rules are unit-tested and shared by the actor, start-up
//! recovery and `check-aggregates`.

use std::collections::HashMap;

use nostr_sdk::{Event, Kind, TagKind};

/// What one stored event contributes to the stats of the event it points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsDelta {
    pub reactions: i64,
    pub replies: i64,
    pub reposts: i64,
    pub zaps: i64,
    pub zap_msats: i64,
}

impl StatsDelta {
    /// Adds `other`, saturating: sums never wrap, whatever amounts events claim.
    pub fn add(&mut self, other: &StatsDelta) {
        self.reactions = self.reactions.saturating_add(other.reactions);
        self.replies = self.replies.saturating_add(other.replies);
        self.reposts = self.reposts.saturating_add(other.reposts);
        self.zaps = self.zaps.saturating_add(other.zaps);
        self.zap_msats = self.zap_msats.saturating_add(other.zap_msats);
    }
}

/// One event's contribution: `target` is the event whose row in `event_stats` changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub target: String,
    pub delta: StatsDelta,
}

/// A stored event's contribution, keyed by the event's row (`events.seq`), which is
/// what the aggregation watermark marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced {
    pub seq: i64,
    pub contribution: Contribution,
}

/// The contribution of `event`, or `None` for events that count toward nothing.
pub fn contribution(event: &Event) -> Option<Contribution> {
    let (target, delta) = match event.kind {
        Kind::Reaction => (
            last_e_tag(event)?,
            StatsDelta {
                reactions: 1,
                ..Default::default()
            },
        ),
        Kind::TextNote => (
            reply_target(event)?,
            StatsDelta {
                replies: 1,
                ..Default::default()
            },
        ),
        Kind::Repost | Kind::GenericRepost => (
            first_e_tag(event)?,
            StatsDelta {
                reposts: 1,
                ..Default::default()
            },
        ),
        Kind::ZapReceipt => {
            let msats = event
                .tags
                .iter()
                .find(|t| t.kind() == TagKind::custom("bolt11"))
                .and_then(|t| t.content())
                .and_then(bolt11_msats)
                .unwrap_or(0);
            (
                last_e_tag(event)?,
                StatsDelta {
                    zaps: 1,
                    zap_msats: msats,
                    ..Default::default()
                },
            )
        }
        _ => return None,
    };
    Some(Contribution { target, delta })
}

/// Sums contributions per target.
pub fn sum_by_target<'a>(
    items: impl IntoIterator<Item = &'a Contribution>,
) -> HashMap<String, StatsDelta> {
    let mut out: HashMap<String, StatsDelta> = HashMap::new();
    for c in items {
        out.entry(c.target.clone()).or_default().add(&c.delta);
    }
    out
}

fn e_tags(event: &Event) -> impl Iterator<Item = &[String]> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(|t| t.len() >= 2 && t[0] == "e" && is_hex_id(&t[1]))
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn first_e_tag(event: &Event) -> Option<String> {
    e_tags(event).next().map(|t| t[1].to_ascii_lowercase())
}

fn last_e_tag(event: &Event) -> Option<String> {
    e_tags(event).last().map(|t| t[1].to_ascii_lowercase())
}

/// NIP-10: the `reply` marker wins, then the `root` marker; without markers the last
/// `e` tag is the parent. `mention` tags never make a note a reply.
fn reply_target(event: &Event) -> Option<String> {
    let tags: Vec<&[String]> = e_tags(event).collect();
    let marked = |m: &str| {
        tags.iter()
            .find(|t| t.get(3).map(String::as_str) == Some(m))
    };
    if let Some(t) = marked("reply").or_else(|| marked("root")) {
        return Some(t[1].to_ascii_lowercase());
    }
    tags.iter()
        .rev()
        .find(|t| t.get(3).is_none_or(|m| m.is_empty()))
        .map(|t| t[1].to_ascii_lowercase())
}

/// Every bitcoin there will ever be, in millisatoshis: no invoice can be for more.
pub const MAX_MSATS: i64 = 21_000_000 * 100_000_000_000;

/// The amount of a BOLT11 invoice in millisatoshis, from its human-readable part
/// (`lnbc2500u1...` is 2500 µBTC). `None` for invoices without an amount, malformed
/// ones (anything not ASCII among them), and amounts above [`MAX_MSATS`].
pub fn bolt11_msats(invoice: &str) -> Option<i64> {
    let lower = invoice.trim().to_ascii_lowercase();
    if !lower.is_ascii() {
        return None;
    }
    let hrp = lower.get(..lower.rfind('1')?)?;
    let rest = hrp.strip_prefix("ln")?;
    // Currency prefix: letters up to the first digit (bc, tb, tbs, bcrt, sb).
    let amount = rest.get(rest.find(|c: char| c.is_ascii_digit())?..)?;
    let (digits, multiplier) = match amount.as_bytes().last()? {
        c if c.is_ascii_digit() => (amount, None),
        c => (amount.get(..amount.len() - 1)?, Some(*c)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    // 1 BTC = 100_000_000_000 msat.
    let msats = match multiplier {
        None => n.checked_mul(100_000_000_000),
        Some(b'm') => n.checked_mul(100_000_000),
        Some(b'u') => n.checked_mul(100_000),
        Some(b'n') => n.checked_mul(100),
        Some(b'p') if n % 10 == 0 => Some(n / 10),
        _ => None,
    }?;
    (msats <= MAX_MSATS).then_some(msats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::{EventBuilder, Keys, Tag};

    #[test]
    fn bolt11_amounts() {
        let cases = [
            ("lnbc2500u1pvjluezpp5", Some(250_000_000)),
            ("lnbc1m1xyz", Some(100_000_000)),
            ("lnbc10n1abc", Some(1_000)),
            ("lnbc20p1abc", Some(2)),
            ("lnbc15p1abc", None),
            ("lntb5u1abc", Some(500_000)),
            ("lnbcrt3m1abc", Some(300_000_000)),
            ("lnbc1pvjluez", None),
            ("not an invoice", None),
            ("LNBC2U1ABC", Some(200_000)),
            // Non-ASCII where the multiplier or digits would be: once a panic.
            ("lnbc5é1pvjluez", None),
            ("lnbcé1", None),
            ("lné1", None),
            ("lnbc1é", None),
            ("lnbc21000000001", None),
            ("lnbc210000001", Some(MAX_MSATS)),
            ("lnbc92233720368547758071", None),
        ];
        for (invoice, want) in cases {
            assert_eq!(bolt11_msats(invoice), want, "{invoice}");
        }
    }

    proptest::proptest! {
        /// No string, however malformed, panics the parser or yields an impossible amount.
        #[test]
        fn bolt11_never_panics(s in "\\PC*", prefix in "(ln|LN)(bc|tb|bcrt)?[0-9]{0,22}[munpé€]?1?") {
            for invoice in [s.clone(), format!("{prefix}{s}")] {
                if let Some(m) = bolt11_msats(&invoice) {
                    proptest::prop_assert!((0..=MAX_MSATS).contains(&m));
                }
            }
        }
    }

    proptest::proptest! {
        /// Any tags on any counted kind: a contribution or none, never a panic.
        #[test]
        fn any_tags_are_handled(
            kind in proptest::sample::select(vec![1u16, 6, 7, 16, 9735]),
            tags in proptest::collection::vec(proptest::collection::vec("\\PC{0,70}", 1..5), 0..6),
        ) {
            let tags: Vec<Vec<&str>> = tags.iter().map(|t| t.iter().map(String::as_str).collect()).collect();
            let tags = tags.into_iter().filter_map(|t| Tag::parse(t).ok()).collect::<Vec<_>>();
            let event = EventBuilder::new(Kind::from(kind), "x").tags(tags).sign_with_keys(&Keys::generate()).expect("sign");
            if let Some(c) = contribution(&event) {
                proptest::prop_assert!(c.delta.zap_msats <= MAX_MSATS && c.delta.zap_msats >= 0);
            }
        }
    }

    #[test]
    fn sums_saturate() {
        let big = StatsDelta {
            zap_msats: MAX_MSATS,
            zaps: 1,
            ..Default::default()
        };
        let mut sum = StatsDelta::default();
        for _ in 0..10 {
            sum.add(&big);
        }
        assert_eq!((sum.zaps, sum.zap_msats), (10, i64::MAX));
    }

    fn note(tags: Vec<Vec<&str>>, kind: Kind) -> Event {
        let tags = tags
            .into_iter()
            .map(|t| Tag::parse(t).expect("tag"))
            .collect::<Vec<_>>();
        EventBuilder::new(kind, "x")
            .tags(tags)
            .sign_with_keys(&Keys::generate())
            .expect("sign")
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn reply_targets_follow_nip10() {
        let cases: Vec<(Vec<Vec<&str>>, Option<&str>)> = vec![
            (vec![], None),
            (vec![vec!["e", A], vec!["e", B]], Some(B)),
            (
                vec![vec!["e", A, "", "root"], vec!["e", B, "", "reply"]],
                Some(B),
            ),
            (
                vec![vec!["e", B, "", "reply"], vec!["e", A, "", "root"]],
                Some(B),
            ),
            (vec![vec!["e", A, "", "root"]], Some(A)),
            (vec![vec!["e", A, "", "mention"]], None),
            (vec![vec!["e", "short"]], None),
        ];
        for (tags, want) in cases {
            let got = contribution(&note(tags.clone(), Kind::TextNote)).map(|c| c.target);
            assert_eq!(got.as_deref(), want, "{tags:?}");
        }
    }

    #[test]
    fn kinds_map_to_counters() {
        let r = contribution(&note(vec![vec!["e", A], vec!["e", B]], Kind::Reaction)).unwrap();
        assert_eq!((r.target.as_str(), r.delta.reactions), (B, 1));
        let r = contribution(&note(vec![vec!["e", A], vec!["e", B]], Kind::Repost)).unwrap();
        assert_eq!((r.target.as_str(), r.delta.reposts), (A, 1));
        let z = contribution(&note(
            vec![vec!["e", A], vec!["bolt11", "lnbc21u1xyz"]],
            Kind::ZapReceipt,
        ))
        .unwrap();
        assert_eq!((z.delta.zaps, z.delta.zap_msats), (1, 2_100_000));
        assert!(contribution(&note(vec![vec!["e", A]], Kind::Metadata)).is_none());
    }
}

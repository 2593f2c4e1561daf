//! Aggregation rules: which stored event counts toward which target, and how much.
//! Shared by the storage actors, start-up recovery, removals (deletions, expiry) and
//! `check-aggregates`, so all of them count the same.

use std::collections::HashMap;

use nostr_sdk::{Event, Kind};

use super::is_hex_id;

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
    /// The same amounts taken away: what removing a counted event retracts.
    pub fn negated(&self) -> StatsDelta {
        StatsDelta {
            reactions: -self.reactions,
            replies: -self.replies,
            reposts: -self.reposts,
            zaps: -self.zaps,
            zap_msats: -self.zap_msats,
        }
    }

    /// Adds `other`, saturating: sums never wrap, whatever amounts events claim.
    pub fn add(&mut self, other: &StatsDelta) {
        self.reactions = self.reactions.saturating_add(other.reactions);
        self.replies = self.replies.saturating_add(other.replies);
        self.reposts = self.reposts.saturating_add(other.reposts);
        self.zaps = self.zaps.saturating_add(other.zaps);
        self.zap_msats = self.zap_msats.saturating_add(other.zap_msats);
    }
}

/// One event's contribution: `target` is the row of `event_stats` that changes: an
/// event id, or for a kind-16 repost of an address (`a` tag only), that address. The
/// default (no target, nothing to add) only claims a row that counts nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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

/// The contribution of `event`, or `None` for events that count toward nothing here.
/// Zap receipts count only once judged against the database (`nostr::zap`): their
/// contribution is [`zap_contribution`].
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
        Kind::Repost => (
            first_e_tag(event)?,
            StatsDelta {
                reposts: 1,
                ..Default::default()
            },
        ),
        // NIP-18: a generic repost names an event, or an address (`a`) when it reposts
        // a replaceable or addressable event; the address stands for its newest version.
        Kind::GenericRepost => (
            first_e_tag(event).or_else(|| first_a_tag(event))?,
            StatsDelta {
                reposts: 1,
                ..Default::default()
            },
        ),
        _ => return None,
    };
    Some(Contribution { target, delta })
}

/// What a zap that was judged to count adds to its target.
pub fn zap_contribution(zap: &crate::nostr::zap::Zap) -> Contribution {
    Contribution {
        target: zap.target.key().to_owned(),
        delta: StatsDelta {
            zaps: 1,
            zap_msats: zap.msats,
            ..Default::default()
        },
    }
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

/// The first `a` tag naming a replaceable or addressable event, as `nostr::address`
/// writes it.
fn first_a_tag(event: &Event) -> Option<String> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(|t| t.len() >= 2 && t[0] == "a")
        .find_map(|t| super::parse_address(&t[1]))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::zap::MAX_MSATS;
    use nostr_sdk::{EventBuilder, Keys, Tag};

    proptest::proptest! {
        /// Any tags on any counted kind: a contribution or none, never a panic.
        #[test]
        fn any_tags_are_handled(
            kind in proptest::sample::select(vec![1u16, 6, 7, 16]),
            tags in proptest::collection::vec(proptest::collection::vec("\\PC{0,70}", 1..5), 0..6),
        ) {
            let tags: Vec<Vec<&str>> = tags.iter().map(|t| t.iter().map(String::as_str).collect()).collect();
            let tags = tags.into_iter().filter_map(|t| Tag::parse(t).ok()).collect::<Vec<_>>();
            let event = EventBuilder::new(Kind::from(kind), "x").tags(tags).sign_with_keys(&Keys::generate()).expect("sign");
            if let Some(c) = contribution(&event) {
                proptest::prop_assert!(c.delta.zap_msats == 0 && c.delta.zaps == 0);
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
        // Kind 16: an `e` tag wins; with only an `a` tag, the address counts.
        let address = format!("30023:{A}:post");
        let tags = vec![vec!["a", address.as_str()], vec!["e", B]];
        let r = contribution(&note(tags, Kind::GenericRepost)).unwrap();
        assert_eq!((r.target.as_str(), r.delta.reposts), (B, 1));
        let upper = format!("30023:{}:post", A.to_uppercase());
        let replaceable_with_d = format!("0:{A}:d");
        let note_address = format!("1:{A}:");
        for (tag, want) in [
            (upper.as_str(), Some(address.as_str())),
            (note_address.as_str(), None),
            (replaceable_with_d.as_str(), None),
            ("30023:short:x", None),
            ("garbage", None),
        ] {
            let r = contribution(&note(vec![vec!["a", tag]], Kind::GenericRepost));
            assert_eq!(r.map(|c| c.target).as_deref(), want, "{tag}");
        }
        let replaceable = format!("10002:{A}:");
        let r = contribution(&note(vec![vec!["a", &replaceable]], Kind::GenericRepost));
        assert_eq!(r.map(|c| c.target), Some(replaceable));
        // Receipts count only once judged (`nostr::zap`), never here.
        let zapper = nostr_sync_tools::dataset::Zapper::new(3);
        let target = (
            nostr_sdk::EventId::from_hex(A).unwrap(),
            Keys::generate().public_key(),
        );
        let receipt = zapper.receipt(
            &Keys::generate(),
            target,
            2_100_000,
            nostr_sdk::Timestamp::from(1_700_000_000),
        );
        assert!(contribution(&receipt).is_none());
        assert!(contribution(&note(vec![vec!["e", A]], Kind::Metadata)).is_none());
    }
}

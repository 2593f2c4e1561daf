//! NIP-45 COUNTs the aggregates answer. A filter of exactly one of these shapes, and
//! nothing else (no authors, ids, times or other tags), is answered from
//! `event_stats`, so a client reads the numbers the SQL tables hold, after the same
//! rules (deletions, versions, expiry, zap verification):
//!
//! | filter                               | counter     |
//! |--------------------------------------|-------------|
//! | `{"kinds":[7],"#e":[id]}`            | `reactions` |
//! | `{"kinds":[1],"#e":[id]}`            | `replies`   |
//! | `{"kinds":[6,16],"#e":[id]}`         | `reposts`   |
//! | `{"kinds":[16],"#a":[address]}`      | `reposts` (of an address) |
//! | `{"kinds":[9735],"#e":[id]}`         | `zaps`      |
//! | `{"kinds":[9735],"#a":[address]}`    | `zaps` (of an address) |
//!
//! Any other filter is counted in SQL.

use std::collections::BTreeSet;

use nostr_sdk::{Filter, SingleLetterTag};

use crate::nostr::aggregate::StatsDelta;

/// An aggregate column of `event_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Reactions,
    Replies,
    Reposts,
    Zaps,
}

impl Counter {
    /// Its value in `stats` (0 when nothing counts toward the target).
    pub fn of(self, stats: Option<&StatsDelta>) -> i64 {
        let Some(s) = stats else { return 0 };
        match self {
            Counter::Reactions => s.reactions,
            Counter::Replies => s.replies,
            Counter::Reposts => s.reposts,
            Counter::Zaps => s.zaps,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Counter::Reactions => "reactions",
            Counter::Replies => "replies",
            Counter::Reposts => "reposts",
            Counter::Zaps => "zaps",
        }
    }
}

/// The counter and target (`event_stats.event_id`) `filters` ask for, if they are a
/// single filter of one of the shapes above.
pub fn counter(filters: &[Filter]) -> Option<(Counter, String)> {
    let [f] = filters else { return None };
    if f.ids.is_some()
        || f.authors.is_some()
        || f.since.is_some()
        || f.until.is_some()
        || f.search.is_some()
        || f.generic_tags.len() != 1
    {
        return None;
    }
    let kinds: BTreeSet<u16> = f.kinds.iter().flatten().map(|k| k.as_u16()).collect();
    let (letter, values) = f.generic_tags.iter().next()?;
    let [target] = values.iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    let on_event = *letter == SingleLetterTag::lowercase(nostr_sdk::Alphabet::E)
        && crate::nostr::is_hex_id(target);
    let on_address = *letter == SingleLetterTag::lowercase(nostr_sdk::Alphabet::A);
    let counter = match kinds.iter().copied().collect::<Vec<_>>()[..] {
        [7] if on_event => Counter::Reactions,
        [1] if on_event => Counter::Replies,
        [6, 16] if on_event => Counter::Reposts,
        [16] if on_address => Counter::Reposts,
        [9735] if on_event || on_address => Counter::Zaps,
        _ => return None,
    };
    Some((counter, target.clone()))
}

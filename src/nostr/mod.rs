//! Nostr rules, without actix or diesel: what a database kept by nostr-sync holds.
//! Each rule is table-tested from the NIP text.

use nostr_sdk::Event;

pub mod zap;

/// Why a valid event is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Kinds 20000–29999 (NIP-01): relays do not keep them, nor do we.
    Ephemeral,
    /// Its `expiration` tag (NIP-40) is in the past.
    Expired,
}

/// Whether `event` is to be stored at unix time `now`.
pub fn admit(event: &Event, now: u64) -> Result<(), Skip> {
    if (20_000..30_000).contains(&event.kind.as_u16()) {
        return Err(Skip::Ephemeral);
    }
    if expiration(event).is_some_and(|at| at <= now) {
        return Err(Skip::Expired);
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

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::{EventBuilder, Keys, Kind, Tag};

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
        for (e, want) in cases {
            assert_eq!(admit(&e, now), want, "{:?}", e.tags);
        }
    }
}

//! The fleet's rules, with no actix or diesel in them: how a relay URL is written in
//! the registry, how many relays each instance takes, and which it hands over.
//!
//! Instances share one registry (`storage::registry`). Each holds a lease on every
//! relay it syncs; a lease is renewed every third of its length, and one that lapses
//! is anybody's. An instance takes at most its fair share of the relays to sync
//! (`share`), and hands over what it holds beyond it (`to_release`), so that a joining
//! instance finds relays to take and a dead one's are spread over the others.

/// Longest relay URL the registry takes.
pub const MAX_URL_BYTES: usize = 512;

/// `url` as the registry keys it: lowercase scheme and host, no default port, no
/// trailing slash, no fragment; only ws:// and wss:// URLs with a host.
pub fn normalise(url: &str) -> Result<String, String> {
    let trimmed = url.trim();
    if trimmed.len() > MAX_URL_BYTES {
        return Err(format!(
            "relay url is {} bytes, longer than {MAX_URL_BYTES}",
            trimmed.len()
        ));
    }
    let mut parsed = url::Url::parse(trimmed).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "ws" | "wss") || parsed.host().is_none() {
        return Err(format!("{url:?} is not a ws:// or wss:// url"));
    }
    // The url crate lowercases scheme and host and drops ws's and wss's default ports.
    parsed.set_fragment(None);
    let mut out = parsed.to_string();
    while out.ends_with('/') && parsed.query().is_none() {
        out.pop();
    }
    Ok(out)
}

/// How many relays each of `instances` live instances takes of `relays`: all of them
/// shared evenly, rounded up (an instance alone takes every relay).
pub fn share(relays: usize, instances: usize) -> usize {
    relays.div_ceil(instances.max(1))
}

/// Which of the `held` relays to hand over, to keep `share`: the last ones in URL
/// order, so that instances agree without asking each other.
pub fn to_release(held: &[String], share: usize) -> Vec<String> {
    let mut sorted: Vec<&String> = held.iter().collect();
    sorted.sort();
    sorted.into_iter().skip(share).cloned().collect()
}

/// Who this instance is in the registry when `fleet.instance_id` is not set: host
/// name and process id.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_relay_written_many_ways_is_one_url() {
        let cases = [
            ("WSS://Relay.Example:443/", "wss://relay.example"),
            ("wss://relay.example/", "wss://relay.example"),
            ("wss://relay.example", "wss://relay.example"),
            ("  wss://relay.example  ", "wss://relay.example"),
            ("ws://Relay.Example:80", "ws://relay.example"),
            ("ws://relay.example:443", "ws://relay.example:443"),
            ("wss://relay.example:7777/", "wss://relay.example:7777"),
            ("wss://relay.example/nostr/", "wss://relay.example/nostr"),
            ("wss://relay.example/Path", "wss://relay.example/Path"),
            ("wss://relay.example/#frag", "wss://relay.example"),
            ("wss://relay.example/?a=1", "wss://relay.example/?a=1"),
            ("ws://127.0.0.1:4000/", "ws://127.0.0.1:4000"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalise(input).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn what_is_not_a_relay_url_is_refused() {
        let long = format!("wss://relay.example/{}", "a".repeat(MAX_URL_BYTES));
        for input in [
            "https://relay.example",
            "relay.example",
            "",
            "wss://",
            "mailto:x@y",
            long.as_str(),
        ] {
            assert!(normalise(input).is_err(), "{input}");
        }
    }

    #[test]
    fn shares_are_even_and_cover_every_relay() {
        let cases = [
            (6, 1, 6),
            (6, 2, 3),
            (6, 3, 2),
            (7, 3, 3),
            (0, 2, 0),
            (1, 3, 1),
            (1000, 2, 500),
            (5, 0, 5),
        ];
        for (relays, instances, expected) in cases {
            assert_eq!(share(relays, instances), expected, "{relays}/{instances}");
            assert!(share(relays, instances) * instances.max(1) >= relays);
        }
    }

    #[test]
    fn the_last_relays_in_url_order_are_handed_over() {
        let held: Vec<String> = ["ws://c", "ws://a", "ws://d", "ws://b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(to_release(&held, 2), vec!["ws://c", "ws://d"]);
        assert!(to_release(&held, 4).is_empty());
        assert!(to_release(&held, 9).is_empty());
        assert_eq!(to_release(&held, 0).len(), 4);
    }
}

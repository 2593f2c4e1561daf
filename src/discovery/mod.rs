//! Outbox discovery's rules, with no actix or diesel in them: which relay URLs a
//! published relay list may add (`admit`, `public`), which relays an author writes to
//! (NIP-65, `write_relays`), which relays to sync for which authors within a budget
//! (`plan`), how the filters are narrowed to a relay's authors (`narrow`), and how a
//! relay is scored (`score`).
//!
//! A relay list is anyone's to publish: nothing in one may make the service connect
//! inward (loopback, private, link-local, multicast addresses; `allow_private` lifts
//! this for tests and private deployments) or grow past its budget (`per_author`
//! relays per author, `max_relays` in all).

pub mod score;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use crate::config::FilterSettings;

/// Longest relay URL a relay list may add.
pub const MAX_URL_BYTES: usize = 256;

/// What a published URL must pass.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Loopback and private addresses allowed (tests, private deployments).
    pub allow_private: bool,
    /// Hosts (`relay.example`) or URLs (normalised) never added.
    pub blocklist: Vec<String>,
}

/// Why a published URL is not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a ws:// or wss:// URL with a host.
    NotRelay,
    /// It carries a user name or password.
    UserInfo,
    /// Longer than [`MAX_URL_BYTES`].
    TooLong,
    /// Its host or URL is on the blocklist.
    Blocked,
    /// Its host is, or resolves to, an address that is not public unicast.
    NotPublic,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NotRelay => "not_relay",
            Refusal::UserInfo => "user_info",
            Refusal::TooLong => "too_long",
            Refusal::Blocked => "blocked",
            Refusal::NotPublic => "not_public",
        }
    }
}

/// A published URL, checked as far as it can be without resolving its host: its
/// normalised form (`fleet::normalise`) and, if the host is a name, that name (to be
/// resolved and checked with [`public`] before use).
pub fn admit(raw: &str, rules: &Rules) -> Result<(String, Option<String>), Refusal> {
    let raw = raw.trim();
    if raw.len() > MAX_URL_BYTES {
        return Err(Refusal::TooLong);
    }
    let parsed = url::Url::parse(raw).map_err(|_| Refusal::NotRelay)?;
    if !matches!(parsed.scheme(), "ws" | "wss") {
        return Err(Refusal::NotRelay);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Refusal::UserInfo);
    }
    let url = crate::fleet::normalise(raw).map_err(|_| Refusal::NotRelay)?;
    let host = match parsed.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let local = name == "localhost" || name.ends_with(".localhost");
            if local && !rules.allow_private {
                return Err(Refusal::NotPublic);
            }
            Some(name)
        }
        Some(url::Host::Ipv4(ip)) => {
            if !rules.allow_private && !public(IpAddr::V4(ip)) {
                return Err(Refusal::NotPublic);
            }
            None
        }
        Some(url::Host::Ipv6(ip)) => {
            if !rules.allow_private && !public(IpAddr::V6(ip)) {
                return Err(Refusal::NotPublic);
            }
            None
        }
        None => return Err(Refusal::NotRelay),
    };
    let host_text = parsed
        .host_str()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let blocked = rules.blocklist.iter().any(|b| {
        let b = b.trim().trim_end_matches('.').to_ascii_lowercase();
        let under = host_text
            .strip_suffix(b.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
        under || crate::fleet::normalise(&b).is_ok_and(|n| n == url)
    });
    if blocked {
        return Err(Refusal::Blocked);
    }
    Ok((url, host))
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local,
/// shared (CGNAT), documentation, benchmarking, multicast, broadcast, unspecified or
/// reserved, nor an IPv6 address mapping one of those.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64
        }
    }
}

/// The relays a NIP-65 relay list's `tags` name for writing, in their order: `r`
/// tags with no marker or the `write` marker (`read` ones are where the author reads).
pub fn write_relays(tags: &[Vec<String>]) -> Vec<String> {
    let mut seen = HashSet::new();
    tags.iter()
        .filter(|t| t.first().is_some_and(|n| n == "r"))
        .filter(|t| t.get(2).is_none_or(|m| m.is_empty() || m == "write"))
        .filter_map(|t| t.get(1).cloned())
        .filter(|u| seen.insert(u.clone()))
        .collect()
}

/// What discovery syncs: each relay with the authors it is asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Relay URL to its authors (sorted).
    pub relays: BTreeMap<String, Vec<String>>,
    /// Distinct admissible relays the lists named (chosen or not).
    pub candidates: usize,
}

/// The relays to sync for `lists` (author to the admitted write relays of their
/// newest relay list): for each author, its `per_author` relays named by most of the
/// authors (then those synced already, `current`, so that equal relays do not swap
/// at every refresh; then the best `scores`, then URL order), leaving out `excluded`
/// relays (blocked, refused, or synced for everyone already); then, past
/// `max_relays`, the relays fewest authors were given to (then the same order) go.
/// An author whose pick went gets, instead, the kept relays it lists.
pub fn plan(
    lists: &BTreeMap<String, Vec<String>>,
    scores: &HashMap<String, f64>,
    current: &HashSet<String>,
    excluded: &HashSet<String>,
    per_author: usize,
    max_relays: usize,
) -> Plan {
    let mut named: HashMap<&str, usize> = HashMap::new();
    for relays in lists.values() {
        for url in relays.iter().filter(|u| !excluded.contains(*u)) {
            *named.entry(url.as_str()).or_default() += 1;
        }
    }
    let score = |u: &str| scores.get(u).copied().unwrap_or(0.0);
    let held = |u: &str| current.contains(u);
    // Best first: named by more authors, then synced already, then a better score,
    // then URL order.
    let better = |a: &&str, b: &&str| {
        named[b]
            .cmp(&named[a])
            .then(held(b).cmp(&held(a)))
            .then(score(b).total_cmp(&score(a)))
            .then(a.cmp(b))
    };
    let mut given: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (author, relays) in lists {
        let mut own: Vec<&str> = relays
            .iter()
            .map(String::as_str)
            .filter(|u| !excluded.contains(*u))
            .collect();
        own.sort_by(better);
        for url in own.into_iter().take(per_author) {
            given.entry(url).or_default().insert(author.as_str());
        }
    }
    let mut ranked: Vec<&str> = given.keys().copied().collect();
    ranked.sort_by(|a, b| {
        given[b]
            .len()
            .cmp(&given[a].len())
            .then(held(b).cmp(&held(a)))
            .then(score(b).total_cmp(&score(a)))
            .then(a.cmp(b))
    });
    let kept: HashSet<&str> = ranked.into_iter().take(max_relays).collect();
    let mut relays: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (author, list) in lists {
        let mine = list
            .iter()
            .filter(|u| kept.contains(u.as_str()))
            .filter(|u| given[u.as_str()].contains(author.as_str()));
        let mut picked: Vec<&String> = mine.collect();
        if picked.is_empty() {
            // Its picks went over the budget: the kept relays it lists instead.
            let mut others: Vec<&str> = list
                .iter()
                .map(String::as_str)
                .filter(|u| kept.contains(u))
                .collect();
            others.sort_by(better);
            picked = list
                .iter()
                .filter(|u| others.iter().take(per_author).any(|o| o == u))
                .collect();
        }
        for url in picked {
            relays
                .entry(url.clone())
                .or_default()
                .insert(author.as_str());
        }
    }
    Plan {
        relays: relays
            .into_iter()
            .map(|(url, authors)| (url, authors.into_iter().map(str::to_owned).collect()))
            .collect(),
        candidates: named.len(),
    }
}

/// `filters` narrowed to `authors`: a filter naming no authors is asked for these; one
/// naming some is asked for those of them among `authors`, and dropped if none is.
pub fn narrow(filters: &[FilterSettings], authors: &[String]) -> Vec<FilterSettings> {
    let set: BTreeSet<&str> = authors.iter().map(String::as_str).collect();
    filters
        .iter()
        .filter_map(|f| {
            let authors: Vec<String> = if f.authors.is_empty() {
                set.iter().map(|a| a.to_string()).collect()
            } else {
                f.authors
                    .iter()
                    .filter(|a| set.contains(a.as_str()))
                    .cloned()
                    .collect()
            };
            (!authors.is_empty()).then(|| FilterSettings {
                authors,
                ..f.clone()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;

//! The relay endpoint's rules, apart from any socket or database: what a client may
//! ask (NIP-01 messages within `[serve]`'s bounds), how a filter becomes a database
//! [`Query`], which NIP-45 COUNTs the aggregates answer, the relay's messages, its
//! NIP-11 document, the per-client rate limit and the live feed's view of the events
//! table. `actors::serve` only executes them.

pub mod count;
pub mod feed;
pub mod message;
pub mod rate;
#[cfg(test)]
mod tests;

use bitcoin::hex::FromHex;
use nostr_sdk::Filter;

use crate::config::ServeSettings;
use crate::storage::Query;

pub use count::{counter, Counter};
pub use message::{parse, Refusal, Request};

/// NIP-01 prefixes of machine-readable refusals.
pub const INVALID: &str = "invalid";
pub const BLOCKED: &str = "blocked";
pub const ERROR: &str = "error";
pub const RATE_LIMITED: &str = "rate-limited";

/// The NIPs the endpoint serves (NIP-11 `supported_nips`).
pub const SUPPORTED_NIPS: [u16; 6] = [1, 9, 11, 40, 45, 77];

/// `filter` as the database answers it, within `limits`: each field holds at most
/// `max_filter_values` values and `limit` is lowered to `max_limit`. `None` when the
/// filter asks for no stored event (`limit` 0: only what comes next).
pub fn query(filter: &Filter, limits: &ServeSettings) -> Result<Option<Query>, String> {
    if filter.search.is_some() {
        return Err(format!("{INVALID}: search (NIP-50) is not supported"));
    }
    let most = limits.max_filter_values;
    let too_many = |field: &str, n: usize| {
        (n > most).then(|| format!("{BLOCKED}: {field} holds {n} values, more than {most}"))
    };
    let ids: Vec<String> = filter.ids.iter().flatten().map(|id| id.to_hex()).collect();
    let authors: Vec<String> = filter
        .authors
        .iter()
        .flatten()
        .map(|a| a.to_hex())
        .collect();
    let kinds: Vec<i32> = filter
        .kinds
        .iter()
        .flatten()
        .map(|k| i32::from(k.as_u16()))
        .collect();
    let mut tags = Vec::new();
    for (letter, values) in filter.generic_tags.iter() {
        if let Some(why) = too_many(&format!("#{}", letter.as_char()), values.len()) {
            return Err(why);
        }
        tags.push((
            letter.as_char().to_string(),
            values.iter().cloned().collect(),
        ));
    }
    for (field, n) in [
        ("ids", ids.len()),
        ("authors", authors.len()),
        ("kinds", kinds.len()),
    ] {
        if let Some(why) = too_many(field, n) {
            return Err(why);
        }
    }
    let limit = filter
        .limit
        .unwrap_or(limits.max_limit)
        .min(limits.max_limit);
    if limit == 0 {
        return Ok(None);
    }
    let time = |t: nostr_sdk::Timestamp| i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    Ok(Some(Query {
        ids,
        authors,
        kinds,
        tags,
        since: filter.since.map(time),
        until: filter.until.map(time),
        limit: limit as i64,
    }))
}

/// A NIP-77 reconciliation this endpoint answers.
pub type Session = negentropy::Negentropy<'static, negentropy::NegentropyStorageVector>;

/// Largest NIP-77 message this endpoint sends, in bytes (before hex).
pub const NEG_FRAME_BYTES: u64 = 60_000;

/// Opens a reconciliation over `items` (`(id hex, created_at)`) and answers the
/// client's first message.
pub fn open_session(items: &[(String, i64)], first: &[u8]) -> Result<(Session, Vec<u8>), String> {
    let mut storage = negentropy::NegentropyStorageVector::with_capacity(items.len());
    for (id, created_at) in items {
        let bytes = <[u8; 32]>::from_hex(id)
            .map_err(|_| format!("{ERROR}: stored id {id:?} is not hex"))?;
        let at = u64::try_from(*created_at).unwrap_or(0);
        storage
            .insert(at, negentropy::Id::from_byte_array(bytes))
            .map_err(|e| format!("{ERROR}: {e}"))?;
    }
    storage.seal().map_err(|e| format!("{ERROR}: {e}"))?;
    let mut session =
        Session::owned(storage, NEG_FRAME_BYTES).map_err(|e| format!("{ERROR}: {e}"))?;
    let reply = session
        .reconcile(first)
        .map_err(|e| format!("{INVALID}: {e}"))?;
    Ok((session, reply))
}

/// The NIP-11 document.
pub fn document(limits: &ServeSettings) -> String {
    serde_json::json!({
        "name": limits.name,
        "description": limits.description,
        "software": "nostr-sync",
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": SUPPORTED_NIPS,
        "limitation": {
            "max_message_length": limits.max_message_bytes,
            "max_subscriptions": limits.max_subscriptions,
            "max_filters": limits.max_filters,
            "max_limit": limits.max_limit,
            "default_limit": limits.max_limit,
            "max_subid_length": message::MAX_SUBSCRIPTION_ID,
            "auth_required": false,
            "payment_required": false,
            "restricted_writes": true,
        },
    })
    .to_string()
}

/// The relay's messages (NIP-01, NIP-45, NIP-77), as JSON text.
pub mod reply {
    use serde_json::json;

    /// `["EVENT", sub, event]` around an event's JSON, as stored.
    pub fn event(sub: &str, event_json: &str) -> String {
        let sub = serde_json::Value::String(sub.to_owned());
        format!(r#"["EVENT",{sub},{event_json}]"#)
    }

    pub fn eose(sub: &str) -> String {
        json!(["EOSE", sub]).to_string()
    }

    pub fn closed(sub: &str, why: &str) -> String {
        json!(["CLOSED", sub, why]).to_string()
    }

    pub fn notice(why: &str) -> String {
        json!(["NOTICE", why]).to_string()
    }

    pub fn ok(id: &str, accepted: bool, why: &str) -> String {
        json!(["OK", id, accepted, why]).to_string()
    }

    pub fn count(sub: &str, n: i64) -> String {
        json!(["COUNT", sub, {"count": n}]).to_string()
    }

    pub fn neg_msg(sub: &str, message: &[u8]) -> String {
        json!(["NEG-MSG", sub, crate::nostr::hex(message)]).to_string()
    }

    pub fn neg_err(sub: &str, why: &str) -> String {
        json!(["NEG-ERR", sub, why]).to_string()
    }
}

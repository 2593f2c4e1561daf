//! Client messages (NIP-01, NIP-45, NIP-77) read within the endpoint's bounds.

use bitcoin::hex::FromHex;
use nostr_sdk::Filter;

use super::{BLOCKED, INVALID};
use crate::config::ServeSettings;

/// Longest subscription id (NIP-01).
pub const MAX_SUBSCRIPTION_ID: usize = 64;

/// What a client asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Req {
        sub: String,
        filters: Vec<Filter>,
    },
    /// NIP-45: the events of any of `filters`, counted.
    Count {
        sub: String,
        filters: Vec<Filter>,
    },
    Close {
        sub: String,
    },
    /// An event offered for publication: `id` as the client gave it (empty if none).
    Event {
        id: String,
    },
    /// NIP-77: a reconciliation over `filter`'s events, and its first message.
    NegOpen {
        sub: String,
        filter: Filter,
        message: Vec<u8>,
    },
    NegMsg {
        sub: String,
        message: Vec<u8>,
    },
    NegClose {
        sub: String,
    },
    /// NIP-42: this endpoint asks for no authentication.
    Auth,
}

/// A message refused: for a subscription (answered `CLOSED`, or `NEG-ERR` for a
/// reconciliation), or as a whole (answered `NOTICE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Sub { sub: String, neg: bool, why: String },
    Notice(String),
}

/// Reads one client message.
pub fn parse(text: &str, limits: &ServeSettings) -> Result<Request, Refusal> {
    let notice = |why: String| Refusal::Notice(format!("{INVALID}: {why}"));
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| notice(format!("not JSON: {e}")))?;
    let Some(array) = value.as_array() else {
        return Err(notice("a message is a JSON array".into()));
    };
    let Some(verb) = array.first().and_then(|v| v.as_str()) else {
        return Err(notice("a message starts with its type".into()));
    };
    if verb == "EVENT" {
        let id = array
            .get(1)
            .and_then(|e| e.get("id"))
            .and_then(|id| id.as_str())
            .unwrap_or_default();
        return Ok(Request::Event { id: id.to_owned() });
    }
    if verb == "AUTH" {
        return Ok(Request::Auth);
    }
    let neg = verb.starts_with("NEG-");
    let sub = match array.get(1).and_then(|s| s.as_str()) {
        Some(sub) if !sub.is_empty() && sub.len() <= MAX_SUBSCRIPTION_ID => sub.to_owned(),
        Some(sub) => {
            return Err(notice(format!(
                "a subscription id is 1 to {MAX_SUBSCRIPTION_ID} characters, got {}",
                sub.len()
            )))
        }
        None => return Err(notice(format!("{verb} needs a subscription id"))),
    };
    let refuse = |why: String| Refusal::Sub {
        sub: sub.clone(),
        neg,
        why,
    };
    let rest = &array[2..];
    let filters = |rest: &[serde_json::Value]| -> Result<Vec<Filter>, Refusal> {
        if rest.len() > limits.max_filters {
            return Err(refuse(format!(
                "{BLOCKED}: {} filters, more than {}",
                rest.len(),
                limits.max_filters
            )));
        }
        rest.iter()
            .map(|f| {
                serde_json::from_value::<Filter>(f.clone())
                    .map_err(|e| refuse(format!("{INVALID}: bad filter: {e}")))
            })
            .collect()
    };
    let hex = |v: Option<&serde_json::Value>| -> Result<Vec<u8>, Refusal> {
        let text = v
            .and_then(|m| m.as_str())
            .ok_or_else(|| refuse(format!("{INVALID}: {verb} needs a hex message")))?;
        Vec::<u8>::from_hex(text).map_err(|_| refuse(format!("{INVALID}: the message is not hex")))
    };
    match verb {
        "REQ" | "COUNT" => {
            let filters = filters(rest)?;
            if filters.is_empty() {
                return Err(refuse(format!("{INVALID}: {verb} needs a filter")));
            }
            Ok(if verb == "REQ" {
                Request::Req { sub, filters }
            } else {
                Request::Count { sub, filters }
            })
        }
        "CLOSE" => Ok(Request::Close { sub }),
        "NEG-OPEN" => {
            let filter = filters(rest.get(..1).unwrap_or_default())?
                .pop()
                .ok_or_else(|| refuse(format!("{INVALID}: NEG-OPEN needs a filter")))?;
            // NIP-77 leaves the message last; an older draft put an id size before it.
            let message = hex(rest.last().filter(|_| rest.len() >= 2))?;
            Ok(Request::NegOpen {
                sub,
                filter,
                message,
            })
        }
        "NEG-MSG" => Ok(Request::NegMsg {
            message: hex(rest.first())?,
            sub,
        }),
        "NEG-CLOSE" => Ok(Request::NegClose { sub }),
        _ => Err(notice(format!("unknown message type {verb:?}"))),
    }
}

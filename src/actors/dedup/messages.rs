//! The dedup actor's inbox.

use actix::Message;
use nostr_sdk::EventId;

use crate::actors::item::Item;

/// Keep the items seen for the first time (now in flight); drop or park the rest.
#[derive(Message)]
#[rtype(result = "Fresh")]
pub struct Check(pub Vec<Item>);

/// The items of a `Check` seen for the first time, now in flight, and the ids among
/// them that the committed-id filter may hold (to look up before verifying).
#[derive(Default)]
pub struct Fresh {
    pub items: Vec<Item>,
    pub maybe_stored: Vec<EventId>,
}

/// These ids are committed, each with the relay of the copy that was (0: none) and
/// its row (0: not known, as for a copy found stored).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Committed(pub Vec<(EventId, i32, i64)>);

/// These in-flight ids failed verification; returns the copies parked behind them.
#[derive(Message)]
#[rtype(result = "Vec<Item>")]
pub struct Release(pub Vec<EventId>);

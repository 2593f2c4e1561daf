//! The aggregator's inbox.

use actix::Message;

use crate::nostr::aggregate::Sourced;

/// Contributions of newly stored events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Contribute(pub Vec<Sourced>);

/// Commit everything accumulated now; answers how many contributions still wait
/// (non-zero only if the database refused).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct FlushNow;

/// A storage write queued retractions (removed events that had counted): the next
/// flush subtracts them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retracted;

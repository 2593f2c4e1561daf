//! The aggregator's inbox.

use actix::Message;

use super::deltas::Sourced;

/// Contributions of newly stored events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Contribute(pub Vec<Sourced>);

/// Commit everything accumulated now; answers how many contributions still wait
/// (non-zero only if the database refused).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct FlushNow;

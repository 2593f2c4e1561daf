//! The relay actor's inbox.

use actix::Message;

/// Run a sync cycle now (unless one is running).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunCycle;

/// Stop for good: the registry took the relay away. With `drain`, a running cycle may
/// finish first (its events committed, its cursor saved), for up to `DRAIN`. Answered
/// once the actor has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub drain: bool,
}

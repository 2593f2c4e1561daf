//! The relay actor's inbox.

use actix::Message;

/// Run a sync cycle now (unless one is running).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunCycle;

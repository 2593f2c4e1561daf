//! The registry actor's inbox.

use std::sync::Arc;

use actix::Message;

use crate::config::Settings;

/// The configuration file was read again (SIGHUP): its relays go into the registry,
/// and relays whose settings changed restart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload(pub Arc<Settings>);

/// The service stops: stop every relay actor and hand back every lease.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

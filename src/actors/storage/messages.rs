//! The storage actors' inbox.

use actix::Message;

use crate::actors::Item;

/// Commit these verified events (all routed here by author).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StoreBatch(pub Vec<Item>);

/// Whether nothing is queued or being written.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsIdle;

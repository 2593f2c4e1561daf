//! The storage actors' inbox.

use actix::Message;

use crate::actors::item::Item;

/// Commit these verified events (all routed here by author); `permit` holds their
/// places in the worker's admission semaphore until they are committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StoreBatch {
    pub items: Vec<Item>,
    pub permit: tokio::sync::OwnedSemaphorePermit,
}

/// Whether nothing is queued or being written.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsIdle;

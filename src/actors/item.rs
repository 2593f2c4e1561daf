//! What flows through the pipeline: one received event with its REQ's commit guard, and
//! the dedup actor's claim on its id while it is in flight.

use std::sync::Arc;

use actix::{Message, Recipient};
use nostr_sdk::{Event, EventId};

use crate::actors::ack::Pending;

/// One received event on its way to storage, with its REQ's commit guard.
pub struct Item {
    pub event: Event,
    pub ack: Pending,
    /// When its frame was taken off the socket (for receipt-to-commit latency).
    pub received: std::time::Instant,
    /// The relay it came from (`RelayConfig::source`; 0: not recorded).
    pub source: i32,
    /// Set by the dedup actor for the copy it let through: releases the id if this
    /// copy is dropped before it is committed.
    pub in_flight: Option<InFlight>,
}

impl Item {
    /// Done with: the event is committed, found stored, or rightly dropped (and the
    /// dedup actor told so, where it held the id).
    pub fn settle(self) {
        if let Some(token) = self.in_flight {
            token.settle();
        }
        self.ack.resolve(false);
    }
}

/// The claim of the one copy of an id that the dedup actor let through. Dropped
/// without [`InFlight::settle`], it releases the id (see the dedup actor's docs).
pub struct InFlight {
    pub(crate) id: EventId,
    /// Where a drop reports; `None` once settled.
    pub(crate) dedup: Option<Arc<Recipient<Abandon>>>,
}

impl InFlight {
    /// The copy is committed or released through `Committed`/`Release`.
    pub fn settle(mut self) {
        self.dedup = None;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(dedup) = self.dedup.take() {
            dedup.do_send(Abandon(self.id));
        }
    }
}

/// The copy that held this id in flight was dropped before it was committed (its relay
/// actor restarted, or an error path let go of it). Sent by [`InFlight`]'s drop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Abandon(pub EventId);

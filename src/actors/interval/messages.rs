//! The interval supervisor's inbox.

use actix::{Message, WeakRecipient};
use std::sync::Arc;
use std::time::Duration;

use super::policy::CycleStats;
use crate::metrics::RelayCounters;

/// A relay actor finished a cycle; answers how long to wait before the next.
#[derive(Message)]
#[rtype(result = "Duration")]
pub struct CycleDone {
    pub relay: String,
    pub stats: CycleStats,
}

/// What the watchdog tells a relay actor that shows no sign of life: drop the
/// connection and start over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restart;

/// A relay actor no longer to watch (it left this instance).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unwatch {
    pub relay: String,
}

/// A relay actor to watch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    pub relay: String,
    /// Weak: a relay the registry stops must not be kept alive (restarted by its
    /// actix `Supervisor`) by being watched.
    pub addr: WeakRecipient<Restart>,
    /// Its counters: `progress` moving keeps the watchdog quiet.
    pub counters: Arc<RelayCounters>,
}

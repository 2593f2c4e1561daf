//! The interval supervisor's inbox.

use actix::{Addr, Message};
use std::sync::Arc;
use std::time::Duration;

use super::policy::CycleStats;
use crate::actors::relay::RelayActor;
use crate::metrics::RelayCounters;

/// A relay actor finished a cycle; answers how long to wait before the next.
#[derive(Message)]
#[rtype(result = "Duration")]
pub struct CycleDone {
    pub relay: String,
    pub stats: CycleStats,
}

/// A relay actor to watch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    pub relay: String,
    pub addr: Addr<RelayActor>,
    /// Its counters: `progress` moving keeps the watchdog quiet.
    pub counters: Arc<RelayCounters>,
}

//! A cycle's live subscriptions (`sync.live`): opened with the connection, reopened
//! after the relay closes one, forgotten when the connection is lost.

use nostr_sdk::prelude::*;

use super::cycle::{Cycle, CycleError};
use crate::actors::ack::Pending;
use crate::sync::filter::to_filter;

impl Cycle {
    /// Opens each live subscription that is not open: on a new connection, and after
    /// the relay CLOSED one (say `auth-required:` before we authenticated). Each asks
    /// for what is newer than now; the polling cycles fill whatever a gap held.
    pub(super) async fn ensure_live(&self, relay: &Relay) -> Result<(), CycleError> {
        // A filter with an end follows nothing new.
        for (i, f) in self
            .filters
            .iter()
            .enumerate()
            .filter(|(_, f)| f.until == 0)
        {
            let id = SubscriptionId::new(format!("live-{i}"));
            if relay.subscription(&id).await.is_some() {
                continue;
            }
            // No one waits on a live subscription's completion: its receiver is dropped.
            let (root, _) = Pending::root(self.held.clone());
            self.subs.open(id.as_str(), root, None, false, None);
            let filter = to_filter(f).since(Timestamp::now());
            relay
                .subscribe_with_id(id, filter, SubscribeOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Forgets the live subscriptions of a lost connection, so that the SDK does not
    /// send them again on reconnecting with the `since` they were opened with (which
    /// would replay everything since then); `ensure_live` opens them anew.
    pub(super) async fn drop_live(&self, relay: &Relay) {
        for i in 0..self.filters.len() {
            let id = SubscriptionId::new(format!("live-{i}"));
            if relay.subscription(&id).await.is_some() {
                // Not connected: the CLOSE cannot be sent, the SDK forgets it anyway.
                let _ = relay.unsubscribe(&id).await;
            }
            self.subs.forget(id.as_str());
        }
    }
}

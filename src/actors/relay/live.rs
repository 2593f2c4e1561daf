//! A cycle's live subscriptions (`sync.live`): opened with the connection, reopened
//! after the relay closes one, forgotten when the connection is lost. What each has
//! covered since it opened spares the polling cycles re-reading it (`sync::live`).

use nostr_sdk::prelude::*;

use super::cycle::{Cycle, CycleError};
use super::subs::LiveSub;
use crate::actors::ack::Pending;
use crate::sync::filter::to_filter;

fn live_id(i: usize) -> SubscriptionId {
    SubscriptionId::new(format!("live-{i}"))
}

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
            let id = live_id(i);
            if relay.subscription(&id).await.is_some() {
                continue;
            }
            // No one waits on a live subscription's completion: its receiver is dropped.
            let (root, _) = Pending::root(self.held.clone());
            let opened = Timestamp::now();
            self.live.insert(
                i,
                LiveSub {
                    opened: opened.as_secs(),
                    watch: root.watch(),
                    whole_at: opened.as_secs(),
                },
            );
            self.subs.open(id.as_str(), root, None, false, None);
            let filter = to_filter(f).since(opened);
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
            let id = live_id(i);
            if relay.subscription(&id).await.is_some() {
                // Not connected: the CLOSE cannot be sent, the SDK forgets it anyway.
                let _ = relay.unsubscribe(&id).await;
            }
            self.subs.forget(id.as_str());
            self.live.remove(i);
        }
    }

    /// Filter `i`'s live subscription as this cycle finds it: `None` unless it is open.
    pub(super) async fn live_state(
        &self,
        relay: &Relay,
        i: usize,
    ) -> Option<crate::sync::live::Live> {
        if !self.settings.sync.live || relay.subscription(&live_id(i)).await.is_none() {
            return None;
        }
        self.live.state(i)
    }

    /// Closes filter `i`'s live subscription (an event of it was lost) and opens it
    /// anew.
    pub(super) async fn reopen_live(&self, relay: &Relay, i: usize) -> Result<(), CycleError> {
        let id = live_id(i);
        let _ = relay.unsubscribe(&id).await;
        self.subs.forget(id.as_str());
        self.live.remove(i);
        self.ensure_live(relay).await
    }
}

//! The store as relay actors use it: every call runs as a task of its own on the
//! actor's Arbiter, and the actor only awaits its result. A watchdog restart drops the
//! actor's futures mid-call; dropping a call's own future would cancel it, which
//! diesel-async's SQLite wrapper cannot take on a single-threaded runtime (it panics).
//! A dropped wait leaves the call to finish on its own.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use nostr_sdk::Event;

use crate::nostr::aggregate::{Sourced, StatsDelta};
use crate::nostr::fingerprint::IdSum;
use crate::storage::{
    EventStore, ItemQuery, Overview, Purged, Sighting, Source, StoreError, StoreResult, Written,
};

pub struct Detached(pub Arc<dyn EventStore>);

/// Runs `call` as a task of its own and awaits it.
pub(super) async fn spawned<T, Fut>(call: Fut) -> StoreResult<T>
where
    T: 'static,
    Fut: std::future::Future<Output = StoreResult<T>> + 'static,
{
    actix_rt::spawn(call)
        .await
        .unwrap_or_else(|e| Err(StoreError::Pool(format!("store call did not finish: {e}"))))
}

/// Runs `call` on the store as a task of its own and awaits it.
async fn detached<T, F, Fut>(store: &Arc<dyn EventStore>, call: F) -> StoreResult<T>
where
    T: 'static,
    F: FnOnce(Arc<dyn EventStore>) -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>> + 'static,
{
    spawned(call(store.clone())).await
}

#[async_trait]
impl EventStore for Detached {
    async fn write_batch(&self, events: &[Event], sightings: &[Sighting]) -> StoreResult<Written> {
        let (events, sightings) = (events.to_vec(), sightings.to_vec());
        detached(&self.0, |s| async move {
            s.write_batch(&events, &sightings).await
        })
        .await
    }

    async fn sources(&self, id: &str) -> StoreResult<Vec<Source>> {
        let id = id.to_owned();
        detached(&self.0, |s| async move { s.sources(&id).await }).await
    }

    async fn apply_retractions(&self, limit: i64) -> StoreResult<usize> {
        detached(&self.0, |s| async move { s.apply_retractions(limit).await }).await
    }

    async fn purge(&self, now: i64, max_unseen: u64) -> StoreResult<Purged> {
        detached(&self.0, |s| async move { s.purge(now, max_unseen).await }).await
    }

    async fn apply_contributions(&self, items: &[Sourced]) -> StoreResult<usize> {
        let items = items.to_vec();
        detached(
            &self.0,
            |s| async move { s.apply_contributions(&items).await },
        )
        .await
    }

    async fn unaggregated(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, Event)>> {
        detached(&self.0, |s| async move {
            s.unaggregated(after_seq, limit).await
        })
        .await
    }

    async fn events_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, Event)>> {
        detached(&self.0, |s| async move {
            s.events_after(after_seq, limit).await
        })
        .await
    }

    fn zap_store(&self) -> Arc<dyn crate::storage::ZapStore> {
        self.0.zap_store()
    }

    async fn profile(&self, pubkey: &str) -> StoreResult<Option<Event>> {
        let pubkey = pubkey.to_owned();
        detached(&self.0, |s| async move { s.profile(&pubkey).await }).await
    }

    async fn relay_lists(&self, authors: &[String], limit: i64) -> StoreResult<Vec<Event>> {
        let authors = authors.to_vec();
        detached(
            &self.0,
            |s| async move { s.relay_lists(&authors, limit).await },
        )
        .await
    }

    async fn count_events(&self) -> StoreResult<i64> {
        detached(&self.0, |s| async move { s.count_events().await }).await
    }

    async fn footprint(&self) -> StoreResult<crate::storage::Footprint> {
        detached(&self.0, |s| async move { s.footprint().await }).await
    }

    async fn stored_among(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        let ids = ids.to_vec();
        detached(&self.0, |s| async move { s.stored_among(&ids).await }).await
    }

    async fn fingerprint_sums(
        &self,
        relay: i32,
        kinds: &[i32],
        spans: &[(i64, i64)],
    ) -> StoreResult<Vec<IdSum>> {
        let (kinds, spans) = (kinds.to_vec(), spans.to_vec());
        detached(&self.0, |s| async move {
            s.fingerprint_sums(relay, &kinds, &spans).await
        })
        .await
    }

    async fn fingerprint_seconds(
        &self,
        relay: i32,
        kinds: &[i32],
        from: i64,
        to: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, IdSum)>> {
        let kinds = kinds.to_vec();
        detached(&self.0, |s| async move {
            s.fingerprint_seconds(relay, &kinds, from, to, limit).await
        })
        .await
    }

    async fn ids_in_spans(
        &self,
        relay: i32,
        kinds: &[i32],
        spans: &[(i64, i64)],
    ) -> StoreResult<Vec<(i64, String)>> {
        let (kinds, spans) = (kinds.to_vec(), spans.to_vec());
        detached(&self.0, |s| async move {
            s.ids_in_spans(relay, &kinds, &spans).await
        })
        .await
    }

    async fn check_fingerprints(&self, repair: bool) -> StoreResult<(u64, u64)> {
        detached(
            &self.0,
            |s| async move { s.check_fingerprints(repair).await },
        )
        .await
    }

    async fn id_heads_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, String)>> {
        detached(&self.0, |s| async move {
            s.id_heads_after(after_seq, limit).await
        })
        .await
    }

    async fn stats_of(&self, event_id: &str) -> StoreResult<Option<StatsDelta>> {
        let id = event_id.to_owned();
        detached(&self.0, |s| async move { s.stats_of(&id).await }).await
    }

    async fn overview(&self) -> StoreResult<Overview> {
        detached(&self.0, |s| async move { s.overview().await }).await
    }

    async fn items(&self, q: &ItemQuery) -> StoreResult<Vec<(String, i64)>> {
        let q = q.clone();
        detached(&self.0, |s| async move { s.items(&q).await }).await
    }

    async fn probe_write(&self) -> StoreResult<()> {
        detached(&self.0, |s| async move { s.probe_write().await }).await
    }

    async fn stats(&self) -> StoreResult<HashMap<String, StatsDelta>> {
        detached(&self.0, |s| async move { s.stats().await }).await
    }

    async fn replace_stats(&self, stats: &HashMap<String, StatsDelta>) -> StoreResult<()> {
        let stats = stats.clone();
        detached(&self.0, |s| async move { s.replace_stats(&stats).await }).await
    }

    fn registry(&self) -> Arc<dyn crate::storage::Registry> {
        self.0.registry()
    }
}

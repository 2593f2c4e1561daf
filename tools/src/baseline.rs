//! The benchmark's yardstick: the Go predecessor's write path, around the real store.
//!
//! Its design: before each event is written, one query asks whether the database
//! already holds it; events are written one at a time; the aggregates of each are
//! updated in the same call, before the next event. [`Baseline`] wraps the store the
//! pipeline writes through and does exactly that, so the service itself carries no
//! trace of it. The benchmark pairs it with one-event batches, one writer and an LRU
//! of one entry (the predecessor had none), and judges zap receipts by the rules alone,
//! as the benchmark's service does (`aggregates.zap_verification = "none"`).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use nostr_sdk::Event;

use nostr_sync::nostr::aggregate::{contribution, Sourced, StatsDelta};
use nostr_sync::nostr::fingerprint::IdSum;
use nostr_sync::storage::{
    EventStore, ItemQuery, Overview, Purged, Removals, Sighting, Source, StoreResult, Written,
};

pub struct Baseline(pub Arc<dyn EventStore>);

impl Baseline {
    /// The predecessor's existence query: the stored events of the event's author and
    /// kind at its second (an index lookup on `events`), searched for its id.
    async fn is_stored(&self, event: &Event) -> StoreResult<bool> {
        let q = ItemQuery {
            kinds: vec![i32::from(event.kind.as_u16())],
            authors: vec![event.pubkey.to_hex()],
            since: event.created_at.as_secs() as i64,
            until: event.created_at.as_secs() as i64,
            limit: 1_000,
        };
        let id = event.id.to_hex();
        Ok(self
            .0
            .items(&q)
            .await?
            .iter()
            .any(|(stored, _)| *stored == id))
    }
}

#[async_trait]
impl EventStore for Baseline {
    /// The predecessor kept no provenance: `sightings` are not written.
    async fn write_batch(&self, events: &[Event], _: &[Sighting]) -> StoreResult<Written> {
        let mut written = Written {
            rows: Vec::with_capacity(events.len()),
            removals: Removals::default(),
        };
        for event in events {
            if self.is_stored(event).await? {
                written.rows.push(None);
                continue;
            }
            let one = self.0.insert_events(std::slice::from_ref(event)).await?;
            let row = one.rows.first().copied().flatten();
            if let (Some(seq), Some(contribution)) = (row, contribution(event)) {
                self.0
                    .apply_contributions(&[Sourced { seq, contribution }])
                    .await?;
            }
            written.rows.push(row);
            let (sum, one) = (&mut written.removals, one.removals);
            sum.superseded += one.superseded;
            sum.deleted += one.deleted;
            sum.retractions += one.retractions;
            sum.kept_out += one.kept_out;
        }
        Ok(written)
    }

    /// Applied inline above: the aggregator's flush has nothing left to do.
    async fn apply_contributions(&self, items: &[Sourced]) -> StoreResult<usize> {
        Ok(items.len())
    }

    async fn apply_retractions(&self, limit: i64) -> StoreResult<usize> {
        self.0.apply_retractions(limit).await
    }

    async fn sources(&self, id: &str) -> StoreResult<Vec<Source>> {
        self.0.sources(id).await
    }

    async fn purge(&self, now: i64, max_unseen: u64) -> StoreResult<Purged> {
        self.0.purge(now, max_unseen).await
    }

    async fn unaggregated(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, Event)>> {
        self.0.unaggregated(after_seq, limit).await
    }

    fn zap_store(&self) -> Arc<dyn nostr_sync::storage::ZapStore> {
        self.0.zap_store()
    }

    fn registry(&self) -> Arc<dyn nostr_sync::storage::Registry> {
        self.0.registry()
    }

    async fn profile(&self, pubkey: &str) -> StoreResult<Option<Event>> {
        self.0.profile(pubkey).await
    }

    async fn relay_lists(&self, authors: &[String], limit: i64) -> StoreResult<Vec<Event>> {
        self.0.relay_lists(authors, limit).await
    }

    async fn events_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, Event)>> {
        self.0.events_after(after_seq, limit).await
    }

    async fn count_events(&self) -> StoreResult<i64> {
        self.0.count_events().await
    }

    async fn footprint(&self) -> StoreResult<nostr_sync::storage::Footprint> {
        self.0.footprint().await
    }

    async fn stored_among(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        self.0.stored_among(ids).await
    }

    async fn id_heads_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<(i64, String)>> {
        self.0.id_heads_after(after_seq, limit).await
    }

    async fn fingerprint_sums(
        &self,
        relay: i32,
        kinds: &[i32],
        spans: &[(i64, i64)],
    ) -> StoreResult<Vec<IdSum>> {
        self.0.fingerprint_sums(relay, kinds, spans).await
    }

    async fn fingerprint_seconds(
        &self,
        relay: i32,
        kinds: &[i32],
        from: i64,
        to: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, IdSum)>> {
        self.0
            .fingerprint_seconds(relay, kinds, from, to, limit)
            .await
    }

    async fn ids_in_spans(
        &self,
        relay: i32,
        kinds: &[i32],
        spans: &[(i64, i64)],
    ) -> StoreResult<Vec<(i64, String)>> {
        self.0.ids_in_spans(relay, kinds, spans).await
    }

    async fn check_fingerprints(&self, repair: bool) -> StoreResult<(u64, u64)> {
        self.0.check_fingerprints(repair).await
    }

    async fn stats_of(&self, event_id: &str) -> StoreResult<Option<StatsDelta>> {
        self.0.stats_of(event_id).await
    }

    async fn overview(&self) -> StoreResult<Overview> {
        self.0.overview().await
    }

    async fn items(&self, q: &ItemQuery) -> StoreResult<Vec<(String, i64)>> {
        self.0.items(q).await
    }

    async fn probe_write(&self) -> StoreResult<()> {
        self.0.probe_write().await
    }

    async fn stats(&self) -> StoreResult<HashMap<String, StatsDelta>> {
        self.0.stats().await
    }

    async fn replace_stats(&self, stats: &HashMap<String, StatsDelta>) -> StoreResult<()> {
        self.0.replace_stats(stats).await
    }
}

//! A relay actor's own rows: its cursors and window outcomes, written only while it
//! holds the relay's lease (each write checks the lease's token in its transaction).
//! Calls run detached, as the store's do (`detached::spawned`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::detached::spawned as detached;
use crate::metrics::Counters;
use crate::storage::{Fence, Registry, StoreError, StoreResult};
use crate::sync::cursor::CursorKey;

#[derive(Clone)]
pub struct SyncState {
    registry: Arc<dyn Registry>,
    fence: Arc<Fence>,
    counters: Arc<Counters>,
}

impl SyncState {
    pub fn new(registry: Arc<dyn Registry>, fence: Fence, counters: Arc<Counters>) -> Self {
        Self {
            registry,
            fence: Arc::new(fence),
            counters,
        }
    }

    pub async fn cursor(&self, key: &CursorKey) -> StoreResult<Option<i64>> {
        let (registry, relay, key) = (self.registry.clone(), self.fence.relay.clone(), key.key());
        detached(async move { registry.cursor(&relay, &key).await }).await
    }

    pub async fn save_cursor(&self, key: &CursorKey, created_at: i64) -> StoreResult<()> {
        let (registry, fence, key) = (self.registry.clone(), self.fence.clone(), key.key());
        let done = detached(async move { registry.save_cursor(&fence, &key, created_at).await });
        self.fenced(done.await?)
    }

    pub async fn delete_cursor(&self, key: &CursorKey) -> StoreResult<()> {
        let (registry, fence, key) = (self.registry.clone(), self.fence.clone(), key.key());
        let done = detached(async move { registry.delete_cursor(&fence, &key).await });
        self.fenced(done.await?)
    }

    /// How a window of the filter `key` ended (`error` is `None` on success).
    pub async fn record_window(&self, key: &str, error: Option<String>) -> StoreResult<()> {
        let (registry, fence, key) = (self.registry.clone(), self.fence.clone(), key.to_owned());
        let done =
            detached(async move { registry.record_window(&fence, &key, error.as_deref()).await });
        self.fenced(done.await?)
    }

    /// A write the lease's successor made impossible: counted, and an error that ends
    /// the cycle (the registry actor stops this relay's actor at its next round).
    fn fenced(&self, written: bool) -> StoreResult<()> {
        if written {
            return Ok(());
        }
        self.counters
            .lease_writes_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(relay = %self.fence.relay, token = self.fence.token, "write refused: the lease moved on to another instance");
        Err(StoreError::LeaseLost(self.fence.relay.clone()))
    }
}

//! Where an interrupted cycle stopped, kept in the cursor table.

use crate::storage::{EventStore, StoreResult};

/// The progress of an interrupted cycle, kept next to the cursor: every event from
/// `floor` to `top` (the cycle's start) is committed. The next cycle reads what is
/// newer than `top`, then carries on down from `floor`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backfill {
    pub(super) top: u64,
    pub(super) floor: u64,
}

/// The cursor-table keys a filter's `Backfill` is kept under.
pub(super) struct BackfillKeys {
    pub(super) top: String,
    pub(super) floor: String,
}

impl Backfill {
    pub(super) fn keys(filter_key: &str) -> BackfillKeys {
        BackfillKeys {
            top: format!("{filter_key}#backfill-top"),
            floor: format!("{filter_key}#backfill-floor"),
        }
    }

    pub(super) async fn load(
        store: &dyn EventStore,
        relay: &str,
        keys: &BackfillKeys,
    ) -> StoreResult<Option<Backfill>> {
        let top = store.cursor(relay, &keys.top).await?;
        let floor = store.cursor(relay, &keys.floor).await?;
        Ok(match (top, floor) {
            (Some(top), Some(floor)) if floor <= top => Some(Backfill {
                top: top as u64,
                floor: floor as u64,
            }),
            _ => None,
        })
    }
}

//! Where an interrupted cycle stopped, kept in the cursor table.

use super::state::SyncState;
use crate::storage::StoreResult;
use crate::sync::cursor::{CursorKey, Part};

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
    pub(super) top: CursorKey,
    pub(super) floor: CursorKey,
}

impl Backfill {
    pub(super) fn keys(filter_key: &str) -> BackfillKeys {
        BackfillKeys {
            top: CursorKey::new(filter_key, Part::BackfillTop),
            floor: CursorKey::new(filter_key, Part::BackfillFloor),
        }
    }

    pub(super) async fn load(
        state: &SyncState,
        keys: &BackfillKeys,
    ) -> StoreResult<Option<Backfill>> {
        let top = state.cursor(&keys.top).await?;
        let floor = state.cursor(&keys.floor).await?;
        Ok(match (top, floor) {
            (Some(top), Some(floor)) if floor <= top => Some(Backfill {
                top: top as u64,
                floor: floor as u64,
            }),
            _ => None,
        })
    }
}

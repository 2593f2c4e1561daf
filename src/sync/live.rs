//! What a polling cycle reads of a filter that a live subscription follows.
//!
//! A live subscription asks for events dated from the second it was opened; while it
//! stays open on one connection and none of its events is lost on our side, every
//! event the relay accepts from then on, whenever it arrives there, reaches us live.
//! A cycle then reads only what is dated before that second (events that reached the
//! relay late), not the whole overlap window again. Once per `overlap` the window is
//! checked: read whole but for its last [`SETTLE_SECS`] (what the relay stored just
//! before the check may still be on its way to us live; the next check reads it). A
//! check of a window dated entirely after the opening that finds new events shows a
//! relay that does not deliver live what it stores, and its live delivery is not
//! trusted again.

/// What the cycle reads of `[since, now]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveRead {
    /// All of it, as without a live subscription.
    Whole,
    /// The periodic check: `[since, top]`, all but the last seconds.
    Check(u64),
    /// Only `[since, top]`: the live subscription brought what is dated after (from
    /// the second it opened: `since` is inclusive).
    Below(u64),
    /// Nothing: the live subscription covers the whole window.
    Nothing,
}

/// Seconds below its start a check stops reading.
pub const SETTLE_SECS: u64 = 5;

/// The live subscription of a filter, as a cycle finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    /// The second it was opened with (its `since`).
    pub opened: u64,
    /// An event it brought was dropped before its commit.
    pub lost: bool,
    /// When a cycle last read the window whole.
    pub whole_at: u64,
}

/// What a cycle starting at `started` reads of the window from `since`. `live`: the
/// filter's live subscription, if one is open on this connection; `lossy`: the relay
/// once failed to deliver live what it stored.
pub fn read(live: Option<Live>, lossy: bool, since: u64, started: u64, overlap: u64) -> LiveRead {
    let Some(live) = live.filter(|l| !l.lost && !lossy) else {
        return LiveRead::Whole;
    };
    if started >= live.whole_at.saturating_add(overlap) {
        return LiveRead::Check(started.saturating_sub(SETTLE_SECS).max(since));
    }
    if live.opened <= since {
        LiveRead::Nothing
    } else {
        LiveRead::Below((live.opened - 1).min(started))
    }
}

/// Whether a check of `[since, …]` that stored `new_rows` events shows the
/// relay's live delivery lossy: the window was dated entirely after the opening, so
/// the subscription should have brought every one of them.
pub fn shows_loss(live: Option<Live>, since: u64, new_rows: u64) -> bool {
    new_rows > 0 && live.is_some_and(|l| !l.lost && since >= l.opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERLAP: u64 = 600;

    fn live(opened: u64, whole_at: u64) -> Option<Live> {
        Some(Live {
            opened,
            lost: false,
            whole_at,
        })
    }

    #[test]
    fn live_subscriptions_spare_what_they_brought() {
        let lost = Some(Live {
            opened: 1_000,
            lost: true,
            whole_at: 1_000,
        });
        // (live, lossy, since, started, read)
        let cases = [
            (None, false, 400, 1_000, LiveRead::Whole),
            // Opened by this cycle: the window below the opening is the whole window
            // (the opening's own second came live).
            (live(1_000, 1_000), false, 400, 1_000, LiveRead::Below(999)),
            (live(1_000, 1_000), false, 700, 1_300, LiveRead::Below(999)),
            (live(1_000, 1_000), false, 999, 1_300, LiveRead::Below(999)),
            (live(1_000, 1_000), false, 1_000, 1_500, LiveRead::Nothing),
            (live(1_000, 1_000), false, 1_200, 1_599, LiveRead::Nothing),
            // Once per overlap, a check: all but the last seconds.
            (
                live(1_000, 1_000),
                false,
                1_200,
                1_600,
                LiveRead::Check(1_595),
            ),
            (
                live(1_000, 1_000),
                false,
                1_598,
                1_600,
                LiveRead::Check(1_598),
            ),
            (live(1_000, 1_600), false, 1_700, 1_900, LiveRead::Nothing),
            // A lost event, or a relay that did not deliver live: whole.
            (lost, false, 1_200, 1_300, LiveRead::Whole),
            (live(1_000, 1_000), true, 1_200, 1_300, LiveRead::Whole),
            // A clock that went back: never above the cycle's start.
            (live(1_000, 1_000), false, 400, 900, LiveRead::Below(900)),
        ];
        for (live, lossy, since, started, want) in cases {
            assert_eq!(
                read(live, lossy, since, started, OVERLAP),
                want,
                "{live:?} lossy {lossy}, [{since}, {started}]"
            );
        }
    }

    #[test]
    fn new_events_after_the_opening_show_a_lossy_relay() {
        // (live, since, new rows, lossy)
        let cases = [
            (live(1_000, 1_000), 1_000, 1, true),
            (live(1_000, 1_000), 1_500, 3, true),
            (live(1_000, 1_000), 1_500, 0, false),
            // Part of the window predates the opening: late events, not a loss.
            (live(1_000, 1_000), 999, 5, false),
            (None, 1_500, 5, false),
        ];
        for (live, since, new_rows, lossy) in cases {
            assert_eq!(
                shows_loss(live, since, new_rows),
                lossy,
                "{live:?} {since} {new_rows}"
            );
        }
    }
}

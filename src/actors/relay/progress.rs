//! A window's pages, as they commit: progress recorded page by page (`Backfill`), so an
//! interrupted cycle resumes where it stopped; long windows log their progress; what a
//! window could not read is counted and logged.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::backfill::BackfillKeys;
use super::cycle::{Cycle, CycleError, PageDone};
use crate::actors::ack::AckOutcome;
use crate::sync::plan::Shortfall;

/// How often a long window logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl Cycle {
    /// Runs a window's `read` while awaiting its pages' commits in order (recording
    /// progress where pages name a floor), then reports its shortfalls. Fails unless
    /// every event read was committed.
    pub(super) async fn settle(
        &self,
        read: impl std::future::Future<Output = Result<Vec<Shortfall>, CycleError>>,
        pages: mpsc::UnboundedReceiver<PageDone>,
        window: (u64, u64),
        keys: Option<&BackfillKeys>,
        key: &str,
    ) -> Result<AckOutcome, CycleError> {
        let keep = self.keep_progress(pages, window, keys);
        let (read, kept) = futures::join!(read, keep);
        let shortfalls = read?;
        let outcome = kept?;
        if !outcome.complete {
            return Err(CycleError::Incomplete);
        }
        self.report(key, &shortfalls);
        Ok(outcome)
    }

    /// Counts and logs what a window could not read.
    fn report(&self, key: &str, shortfalls: &[Shortfall]) {
        if shortfalls.is_empty() {
            return;
        }
        self.counters
            .shortfalls
            .fetch_add(shortfalls.len() as u64, Ordering::Relaxed);
        let mut by_reason: std::collections::BTreeMap<&str, usize> = Default::default();
        for s in shortfalls {
            *by_reason.entry(s.reason()).or_default() += 1;
        }
        tracing::warn!(relay = %self.url, filter = %key, ?by_reason, first = ?shortfalls[0], "some events of this window may be missing: the relay could not be paged completely");
    }

    /// Awaits each page's commit in order and records how far down the cycle is
    /// committed. Returns the cycle's outcome once `pages` closes.
    async fn keep_progress(
        &self,
        mut pages: mpsc::UnboundedReceiver<PageDone>,
        (since, started): (u64, u64),
        keys: Option<&BackfillKeys>,
    ) -> Result<AckOutcome, CycleError> {
        let mut outcome = AckOutcome {
            complete: true,
            new_rows: 0,
        };
        let mut top_saved = false;
        let began = Instant::now();
        let mut logged = began;
        while let Some(page) = pages.recv().await {
            if let Some(done) = page.done {
                match done.await {
                    Ok(o) => {
                        outcome.complete &= o.complete;
                        outcome.new_rows += o.new_rows;
                    }
                    Err(_) => outcome.complete = false,
                }
            }
            let (Some(floor), Some(keys)) = (page.floor.filter(|_| outcome.complete), keys) else {
                continue;
            };
            if !top_saved {
                self.state.save_cursor(&keys.top, started as i64).await?;
                top_saved = true;
            }
            self.state.save_cursor(&keys.floor, floor as i64).await?;
            self.counters.progress.fetch_add(1, Ordering::Relaxed);
            if logged.elapsed() >= PROGRESS_EVERY {
                logged = Instant::now();
                self.log_progress(since, floor, started, outcome.new_rows, began.elapsed());
            }
        }
        Ok(outcome)
    }

    /// A long window's progress line: what it covers, how fast, and how long to go.
    /// A window that starts at the beginning of time (`since` 0) ends at the relay's
    /// oldest event, which nobody knows: its line has no `eta_secs` (it used to say
    /// decades, then `eta=None`).
    fn log_progress(&self, since: u64, floor: u64, top: u64, stored: u64, took: Duration) {
        let secs = took.as_secs_f64().max(0.001);
        let covered = top.saturating_sub(floor) as f64;
        // Left out of the line when `None`.
        let eta_secs = (covered > 0.0 && since > 0)
            .then(|| (floor.saturating_sub(since) as f64 * secs / covered).round());
        tracing::info!(
            relay = %self.url,
            from = %crate::status::time(Some(floor as i64)),
            to = %crate::status::time(Some(top as i64)),
            stored,
            per_sec = (stored as f64 / secs).round(),
            eta_secs,
            "backfill progress"
        );
    }
}

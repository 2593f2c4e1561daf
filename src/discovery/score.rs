//! A relay's score over a sliding window, from samples of its counters: what it
//! delivered first (novel events), what it delivered that another relay had already
//! (duplicates), its failed cycles and its uptime.

use std::collections::VecDeque;

/// A relay's counters at one moment (totals since its actor started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    /// Events first stored from it.
    pub novel: u64,
    /// Events it delivered (valid or not).
    pub received: u64,
    /// Of those, refused (invalid, too large, unknown subscription…).
    pub rejected: u64,
    pub cycles_failed: u64,
    /// Connected when sampled.
    pub connected: bool,
}

/// What a window of samples adds up to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Windowed {
    pub novel: u64,
    pub duplicates: u64,
    pub failures: u64,
    /// Share of samples that found it connected.
    pub uptime: f64,
}

/// The samples of one relay within the window.
#[derive(Debug, Clone, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Adds `sample`, and forgets those older than `window` seconds before it (the
    /// newest of those stays, as the window's start).
    pub fn record(&mut self, sample: Sample, window: u64) {
        self.samples.push_back(sample);
        let start = sample.at.saturating_sub(window);
        while self.samples.len() > 2 && self.samples[1].at <= start {
            self.samples.pop_front();
        }
    }

    /// The window's totals: counters are differenced from its first sample (or from
    /// zero, for a relay whose counters began within the window).
    pub fn windowed(&self) -> Windowed {
        let Some(last) = self.samples.back() else {
            return Windowed::default();
        };
        let first = if self.samples.len() > 1 {
            self.samples[0]
        } else {
            Sample::default()
        };
        let novel = last.novel.saturating_sub(first.novel);
        let received = last.received.saturating_sub(first.received);
        let rejected = last.rejected.saturating_sub(first.rejected);
        let up = self.samples.iter().filter(|s| s.connected).count();
        Windowed {
            novel,
            duplicates: received.saturating_sub(rejected).saturating_sub(novel),
            failures: last.cycles_failed.saturating_sub(first.cycles_failed),
            uptime: up as f64 / self.samples.len() as f64,
        }
    }
}

/// A relay's score in [0, 1]: the share of what it delivered that was novel (with one
/// novel and one duplicate event assumed, so a relay with nothing yet scores one
/// half), times its uptime.
pub fn score(w: &Windowed) -> f64 {
    let novelty = (w.novel as f64 + 1.0) / ((w.novel + w.duplicates) as f64 + 2.0);
    novelty * w.uptime
}

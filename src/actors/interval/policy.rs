//! Pure interval policy: how long a relay waits before its next sync cycle.

use std::time::Duration;

/// What a finished cycle reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleStats {
    /// Completed, with this many events that were new rows.
    Done { new_events: u64 },
    /// Failed; `consecutive` failures so far (1 for the first).
    Failed { consecutive: u32 },
}

/// The thresholds, from `[interval]` and `[sync]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub idle: Duration,
    pub normal: Duration,
    pub busy: Duration,
    pub busy_threshold: u64,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// The seed's rule: idle after nothing new, normal under `busy_threshold` new events,
/// busy above; failures back off exponentially from `backoff_min` to `backoff_max`.
pub fn next_interval(stats: CycleStats, b: &Bounds) -> Duration {
    match stats {
        CycleStats::Done { new_events: 0 } => b.idle,
        CycleStats::Done { new_events } if new_events < b.busy_threshold => b.normal,
        CycleStats::Done { .. } => b.busy,
        CycleStats::Failed { consecutive } => {
            let factor = 1u32 << consecutive.saturating_sub(1).min(20);
            b.backoff_min.saturating_mul(factor).min(b.backoff_max)
        }
    }
}

/// `delay` with up to a quarter of it added at random, so relays that failed together
/// do not retry together.
pub fn jitter(delay: Duration) -> Duration {
    let extra = delay.as_millis() as u64 / 4;
    if extra == 0 {
        return delay;
    }
    delay + Duration::from_millis(rand::random::<u64>() % extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_interval_table() {
        let s = Duration::from_secs;
        let b = Bounds {
            idle: s(30),
            normal: s(10),
            busy: s(5),
            busy_threshold: 100,
            backoff_min: Duration::from_millis(500),
            backoff_max: s(60),
        };
        let cases = [
            (CycleStats::Done { new_events: 0 }, s(30)),
            (CycleStats::Done { new_events: 1 }, s(10)),
            (CycleStats::Done { new_events: 99 }, s(10)),
            (CycleStats::Done { new_events: 100 }, s(5)),
            (
                CycleStats::Done {
                    new_events: 1_000_000,
                },
                s(5),
            ),
            (
                CycleStats::Failed { consecutive: 1 },
                Duration::from_millis(500),
            ),
            (CycleStats::Failed { consecutive: 2 }, s(1)),
            (CycleStats::Failed { consecutive: 4 }, s(4)),
            (CycleStats::Failed { consecutive: 8 }, s(60)),
            (CycleStats::Failed { consecutive: 1000 }, s(60)),
        ];
        for (stats, want) in cases {
            assert_eq!(next_interval(stats, &b), want, "{stats:?}");
        }
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(1000) && d < Duration::from_millis(1250));
        }
    }
}

//! The per-client rate limit: a token bucket of `messages_burst` tokens refilled at
//! `messages_per_sec`. A client that keeps sending once it is empty is cut off.

use std::time::Instant;

/// What to do with a client's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// Answer it with a `rate-limited:` refusal.
    Refuse,
    /// It sent another burst's worth past its limit: disconnect it.
    Disconnect,
}

#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    per_sec: f64,
    burst: f64,
    /// Messages refused in a row since the last one served.
    refused: u32,
    at: Instant,
}

impl Bucket {
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            per_sec: f64::from(per_sec),
            burst: f64::from(burst),
            refused: 0,
            at: now,
        }
    }

    /// Takes a token for a message that arrived at `now`.
    pub fn take(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            return Verdict::Serve;
        }
        self.refused += 1;
        if f64::from(self.refused) > self.burst {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

//! What a relay has shown of itself (limits, NIP-77, refusals), kept across cycles and
//! restarts of its actor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// What a relay showed of NIP-77.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Nip77 {
    /// Not tried yet.
    Unknown = 0,
    Works = 1,
    Refused = 2,
    /// A first attempt is under way. Still so when the next is considered, it was cut
    /// short (the watchdog restarted a relay that never answered): taken as a refusal.
    Trying = 3,
}

/// [`Nip77`], shared by a relay's cycles.
#[derive(Debug, Default)]
pub struct Nip77State(AtomicU8);

impl Nip77State {
    pub fn get(&self) -> Nip77 {
        match self.0.load(Ordering::Relaxed) {
            1 => Nip77::Works,
            2 => Nip77::Refused,
            3 => Nip77::Trying,
            _ => Nip77::Unknown,
        }
    }

    pub fn set(&self, to: Nip77) {
        self.0.store(to as u8, Ordering::Relaxed);
    }

    /// `Trying`, unless something is known already.
    pub fn first_attempt(&self) {
        let _ = self.0.compare_exchange(
            Nip77::Unknown as u8,
            Nip77::Trying as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// What a relay has shown of itself, kept across cycles and restarts.
#[derive(Debug, Default)]
pub struct Known {
    /// `limitation.max_limit` of its NIP-11 document (0: none).
    pub max_limit: AtomicUsize,
    /// Configured `limit` for this relay (0: none), over NIP-11 and `sync.page_limit`.
    pub configured_limit: usize,
    /// The largest page it answered with.
    pub largest: AtomicUsize,
    /// Whether it reconciles (NIP-77).
    pub negentropy: Nip77State,
    /// Filters it refused: filter key → when to ask again.
    refused: Mutex<HashMap<String, Instant>>,
    /// It stored events a live subscription of ours should have brought and did not:
    /// its windows are read whole (`sync::live`).
    pub live_lossy: std::sync::atomic::AtomicBool,
}

impl Known {
    /// Nothing known yet but the configured `limit` (0: none).
    pub fn with_limit(configured_limit: usize) -> Self {
        Self {
            configured_limit,
            ..Default::default()
        }
    }

    /// The `limit` to send.
    pub fn page_limit(&self, default: usize) -> usize {
        if self.configured_limit > 0 {
            return self.configured_limit;
        }
        match self.max_limit.load(Ordering::Relaxed) {
            0 => default,
            max => default.min(max),
        }
    }

    pub(super) fn refused_until(&self, key: &str) -> Option<Instant> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.get(key).copied().filter(|t| *t > Instant::now())
    }

    pub(super) fn refuse(&self, key: &str, until: Instant) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.insert(key.to_owned(), until);
    }
}

//! nostr-sync keeps a SQL database in step with many Nostr relays.

// Nothing on the service's paths may panic on bad input: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod actors;
pub mod app;
pub mod config;
pub mod dedup_filter;
pub mod discovery;
pub mod fetch;
pub mod fleet;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod nostr;
pub mod serve;
pub mod status;
pub mod storage;
pub mod sync;

/// jemalloc instead of glibc's malloc, for the service and everything that measures
/// it: events are allocated on the relay threads and freed on the storage thread, and
/// glibc spent about 5% of the syncer's CPU in malloc and free. Measured with `bench`
/// (docs/performance.md): less CPU per event, a few MB more peak memory; mimalloc
/// doubled the peak. (Not in the crate's own unit tests: they link this crate's
/// library too, through the tools, which brings this allocator.)
#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Two arenas (jemalloc's default is four per core): the hot paths allocate on a few
/// threads only, and each arena holds memory of its own.
#[cfg(not(test))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"narenas:2\0";

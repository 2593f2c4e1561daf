//! The settings tree. Sources in order: built-in defaults, the file (`--config`), then
//! environment variables `NOSTR_SYNC__SECTION__KEY`, so later sources win.
//! `config/default.toml` mirrors `Settings::default()`; a test keeps them equal.

mod defaults;
mod secrets;
mod validate;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Relay websocket URLs (ws:// or wss://), one `RelayActor` each.
    pub relays: Vec<String>,
    /// Relays with settings of their own (`[[relay]]`), beside the plain list.
    pub relay: Vec<RelaySettings>,
    /// REQ filters; each is synced separately with a cursor of its own per relay.
    pub filters: Vec<FilterSettings>,
    pub sync: SyncSettings,
    pub database: DatabaseSettings,
    pub dedup: DedupSettings,
    pub storage: StorageSettings,
    pub verify: VerifySettings,
    pub aggregates: AggregateSettings,
    pub retention: RetentionSettings,
    pub interval: IntervalSettings,
    pub mailbox: MailboxSettings,
    pub limits: LimitSettings,
    pub shutdown: ShutdownSettings,
    pub auth: AuthSettings,
    pub http: HttpSettings,
    pub fleet: FleetSettings,
    pub discovery: DiscoverySettings,
    pub serve: ServeSettings,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterSettings {
    /// Event kinds; empty means every kind.
    pub kinds: Vec<u16>,
    /// Author pubkeys (hex); empty means every author. A list longer than
    /// `sync.max_authors_per_req` is synced as several filters.
    pub authors: Vec<String>,
    /// Tag filters (NIP-01 `#e`, `#p`, `#t`, `#a`, `#d`); empty means any.
    #[serde(rename = "#e")]
    pub e: Vec<String>,
    #[serde(rename = "#p")]
    pub p: Vec<String>,
    #[serde(rename = "#t")]
    pub t: Vec<String>,
    #[serde(rename = "#a")]
    pub a: Vec<String>,
    #[serde(rename = "#d")]
    pub d: Vec<String>,
    /// Unix time before which nothing is synced.
    pub since: u64,
    /// Unix time after which nothing is synced; 0: no end (and new events are followed
    /// live). A filter with an end is done once synced up to it.
    pub until: u64,
}

impl FilterSettings {
    /// The tag filters that are set, by letter.
    pub fn tags(&self) -> Vec<(char, &[String])> {
        [
            ('e', &self.e),
            ('p', &self.p),
            ('t', &self.t),
            ('a', &self.a),
            ('d', &self.d),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(c, v)| (c, v.as_slice()))
        .collect()
    }

    /// This filter as REQs may carry it: one filter per `max_authors` authors.
    pub fn split(&self, max_authors: usize) -> Vec<FilterSettings> {
        if self.authors.len() <= max_authors.max(1) {
            return vec![self.clone()];
        }
        self.authors
            .chunks(max_authors.max(1))
            .map(|chunk| FilterSettings {
                authors: chunk.to_vec(),
                ..self.clone()
            })
            .collect()
    }
}

/// A relay with settings of its own (`[[relay]]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    pub url: String,
    /// Its own filters; empty: the global `filters`.
    pub filters: Vec<FilterSettings>,
    /// Its `limit`, overriding `sync.page_limit` and NIP-11 (0: those).
    pub page_limit: usize,
    /// NIP-42 key for this relay (nsec or hex, or the path of a file holding one),
    /// overriding `[auth]`.
    pub auth_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// Keep a subscription open after EOSE so new events arrive at once.
    pub live: bool,
    /// Seconds each cycle re-reads before the stored cursor (late or clock-skewed events).
    pub overlap_secs: u64,
    /// `limit` of each REQ, lowered to a relay's NIP-11 `limitation.max_limit`. Pages
    /// are read back with `until` until one brings nothing older, however short.
    pub page_limit: usize,
    /// Per-relay `limit`, overriding `page_limit` and NIP-11.
    pub relay_page_limits: Vec<RelayPageLimit>,
    /// Most authors in one REQ filter; longer author lists are split.
    pub max_authors_per_req: usize,
    /// Most REQs for one window of one filter; beyond, the window fails (the relay
    /// cannot be paged).
    pub max_reqs_per_window: usize,
    /// A REQ that receives no frame (EVENT, EOSE or CLOSED) for this long fails.
    pub eose_timeout_secs: u64,
    /// Longest time one NIP-77 reconciliation may take, however busy the relay looks.
    pub reconcile_timeout_secs: u64,
    /// A filter a relay refuses (`auth-required:` without a key, `restricted:`,
    /// `blocked:`) is not asked for again on that relay for this long.
    pub refused_retry_secs: u64,
    /// NIP-77 reconciliation with relays that serve it: for crowded seconds, for
    /// windows older than twice `overlap_secs` (catch-up), and for the repair pass.
    pub negentropy: Negentropy,
    /// Where our side of a reconciliation comes from, for filters without authors or
    /// tags: the events' items, or the per-second fingerprints (the relay's own, with
    /// provenance).
    pub reconcile_from: ReconcileFrom,
    /// How often each filter's whole synced range is reconciled with each relay, which
    /// finds events that arrived with old timestamps (0: never).
    pub repair_interval_secs: u64,
    /// The same for relays without NIP-77, which re-page the whole range.
    pub repair_paging_interval_secs: u64,
    /// Connection attempt timeout.
    pub connect_timeout_secs: u64,
    /// Reconnect backoff: first delay, doubled (with jitter) up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub performance: PerformanceSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Negentropy {
    /// Used where the relay serves it; a refusal is remembered per relay.
    #[default]
    Auto,
    /// Never: paging only.
    Off,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconcileFrom {
    /// `Fingerprints` for a relay that provenance records, else `Items`.
    #[default]
    Auto,
    /// Our `(id, created_at)` items of the window, read from the events, reconciled by
    /// the SDK: costs what we hold, in few database reads.
    Items,
    /// The per-second fingerprints (`crate::sync::negentropy`), a round of database
    /// reads per message: of what the relay delivered (provenance), which costs what
    /// differs from it; without provenance, of every stored event, which costs what
    /// differs only from a relay holding all we hold.
    Fingerprints,
}

impl ReconcileFrom {
    /// Whether a relay with provenance id `source` (0: none) reconciles a filter the
    /// fingerprints can answer from them.
    pub fn by_sums(self, source: i32) -> bool {
        match self {
            ReconcileFrom::Auto => source > 0,
            ReconcileFrom::Items => false,
            ReconcileFrom::Fingerprints => true,
        }
    }
}

impl Negentropy {
    pub fn is_on(self) -> bool {
        self == Negentropy::Auto
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayPageLimit {
    pub url: String,
    pub page_limit: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerformanceSettings {
    /// Rows a storage worker waits for before committing; 1 never waits. Whatever is
    /// already queued goes into the same transaction regardless.
    pub batch_size: usize,
    /// Longest wait for `batch_size` rows.
    pub batch_timeout_ms: u64,
    /// Most rows in one transaction.
    pub max_batch_rows: usize,
    /// Shortest time between the starts of two commits of one storage worker. An event
    /// arriving after a quiet spell commits at once; under load, everything that
    /// arrives within this window shares one transaction.
    pub min_commit_interval_ms: u64,
    /// Longest a relay's short batch of events waits for more before it is handed on
    /// (live events arrive one at a time, and each batch wakes every stage); 0 never
    /// waits.
    pub linger_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path` (embedded default) or `postgres://user@host/db`.
    pub url: String,
    /// Size of the shared connection pool.
    pub max_connections: usize,
    /// Retry delay after a failed write: first delay, doubled up to `retry_max_ms`.
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// `run` applies pending migrations at start (under an advisory lock on
    /// PostgreSQL); false leaves them to `nostr-sync migrate` as a deployment step.
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupSettings {
    /// Recently committed event ids kept in memory; hits skip verification and storage.
    pub lru_capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Storage actors; events are routed by author so one author's events stay in order.
    /// SQLite allows one writer at a time, so it always uses one.
    pub workers: usize,
    /// Record which relays delivered each stored event (`event_relays`), duplicate
    /// copies included.
    pub provenance: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySettings {
    /// Signature-checking threads; 0 uses every core.
    pub threads: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateSettings {
    /// How often accumulated aggregate deltas are committed.
    pub flush_interval_ms: u64,
    /// Pubkeys (hex or npub) of zapper services whose receipts count for any recipient:
    /// an offline allowlist.
    pub zap_signers: Vec<String>,
    /// Whose zap receipts count (NIP-57 appendix F).
    pub zap_verification: ZapVerification,
    /// How often receipts waiting for their recipient's LNURL server are looked at.
    pub lnurl_check_secs: u64,
    /// A server that answered is asked again, when a receipt it may not know of waits
    /// (a recipient who changed provider), at most this often.
    pub lnurl_recheck_secs: u64,
    /// Whether LNURL servers may be reached on loopback, private and other non-public
    /// addresses, and over plain HTTP. Off: a stranger's profile cannot aim the
    /// service at its operator's network. For tests and private deployments only.
    pub lnurl_allow_private: bool,
    /// LNURL documents fetched per second at most, one at a time.
    pub lnurl_fetches_per_sec: u32,
    /// Of those, per host (many recipients share a provider).
    pub lnurl_host_fetches_per_sec: u32,
}

/// Whose zap receipts count, of those that hold together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZapVerification {
    /// Receipts signed by the recipient's LNURL server (its `nostrPubkey`, found from
    /// the recipient's kind 0 over HTTPS), or by an allowlisted zapper.
    #[default]
    Lnurl,
    /// Receipts signed by an allowlisted zapper only; no HTTP.
    Allowlist,
    /// Any receipt that holds together, whoever signed it: anyone can then add any
    /// amount to any note. Only for relays that check receipts themselves.
    None,
}

impl AggregateSettings {
    /// Whose zap receipts count.
    pub fn zap_policy(&self) -> crate::nostr::zap::ZapPolicy {
        crate::nostr::zap::ZapPolicy {
            any: self.zap_verification == ZapVerification::None,
            allow: self.zap_signer_keys(),
            lnurl: self.zap_verification == ZapVerification::Lnurl,
        }
    }

    /// `zap_signers` as keys; `validate` has refused any that does not parse.
    pub fn zap_signer_keys(&self) -> Vec<nostr_sdk::PublicKey> {
        self.zap_signers
            .iter()
            .filter_map(|k| nostr_sdk::PublicKey::parse(k.trim()).ok())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// How often stored events whose NIP-40 expiration has passed are removed (and
    /// their aggregate contributions retracted); 0: never. The same check sweeps the
    /// tombstones added since the last one.
    pub expiry_check_secs: u64,
    /// Most tombstones kept for ids whose event was never stored when their deletion
    /// came (each deletion records at most 1,000 such); past it, the oldest go.
    pub max_unseen_tombstones: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntervalSettings {
    /// Polling interval after a cycle that brought nothing new.
    pub idle_secs: u64,
    /// Interval after a cycle with fewer than `busy_threshold` new events.
    pub normal_secs: u64,
    /// Interval after a busier cycle.
    pub busy_secs: u64,
    pub busy_threshold: u64,
    /// A relay actor that shows no progress (a finished cycle, a batch of new events, a
    /// page read or committed) for this long beyond its polling interval is restarted.
    pub watchdog_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailboxSettings {
    /// Raw relay frames buffered between a websocket and its relay actor.
    pub relay_frames: usize,
    /// Bytes of those frames one relay may hold at once (at least one frame passes);
    /// its socket is not read meanwhile.
    pub relay_frame_bytes: usize,
    /// Bytes of raw frames all relays together may hold at once.
    pub frame_bytes_total: usize,
    /// Batches queued for the dedup actor.
    pub dedup: usize,
    /// Events each storage actor may hold: queued, gathering and being written. Relay
    /// actors wait while a worker holds this many.
    pub storage: usize,
    /// Batches queued for the aggregator.
    pub aggregator: usize,
    /// Most events a relay actor hands on in one batch.
    pub max_batch_events: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Larger events (serialized) are rejected.
    pub max_event_bytes: usize,
    /// Events with more tags are rejected.
    pub max_tags: usize,
    /// Events dated further than this into the future are rejected.
    pub max_future_secs: u64,
    /// Most EVENT frames one REQ may bring (or twice its `limit`, if more); a relay that
    /// sends more (one that never stops) fails that window, counted and logged.
    pub max_frames_per_req: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Longest time to commit what was received before exiting.
    pub timeout_secs: u64,
}

/// The operator's endpoint: `/metrics` (Prometheus text), `/livez`, `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// `host:port` to listen on; empty turns the endpoint off.
    pub listen: String,
}

/// The read-only relay endpoint (`crate::actors::serve`): the database served as a
/// Nostr relay (NIP-01, NIP-11, NIP-45, NIP-77). Every bound protects the sync from
/// the endpoint's clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSettings {
    /// `host:port` of the websocket endpoint; empty (the default) turns it off.
    pub listen: String,
    /// NIP-11 `name` and `description`.
    pub name: String,
    pub description: String,
    /// Clients connected at once; more are answered 503.
    pub max_connections: usize,
    /// Open subscriptions per connection.
    pub max_subscriptions: usize,
    /// Filters per REQ.
    pub max_filters: usize,
    /// Most events one filter returns (a larger `limit` is lowered to it).
    pub max_limit: usize,
    /// Values per filter field: `ids`, `authors`, `kinds`, and each tag filter.
    pub max_filter_values: usize,
    /// Largest message a client may send, in bytes; a larger one ends its connection.
    pub max_message_bytes: usize,
    /// Messages a client may send per second, and in a burst; past them, requests are
    /// refused (`rate-limited:`), and a client that keeps on is disconnected.
    pub messages_per_sec: u32,
    pub messages_burst: u32,
    /// Bytes waiting for a client that does not read before it is disconnected.
    pub max_outbound_bytes: usize,
    /// Longest a query may run; past it the request gets `CLOSED "error: ..."`.
    pub query_timeout_ms: u64,
    /// Most events a NIP-77 session compares; above it: `NEG-ERR "blocked: ..."`.
    pub max_sync_events: usize,
    /// The endpoint's own database connections (the writers never wait for them).
    pub database_connections: usize,
    /// How often the events table is read for live subscriptions.
    pub poll_ms: u64,
}

/// What one relay actor syncs: its URL, filters, `limit` and NIP-42 key.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    pub url: String,
    /// REQ filters, author lists already split (`FilterSettings::split`).
    pub filters: Vec<FilterSettings>,
    /// Its own `limit` (0: `sync.page_limit` and NIP-11 decide).
    pub page_limit: usize,
    pub auth: Option<nostr_sdk::Keys>,
    /// Its id (`relay_ids`) in the provenance of what it delivers; 0 records none.
    pub source: i32,
}

/// Instances sharing one database share its relay registry: each holds leases on
/// its share of the relays (`crate::fleet`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSettings {
    /// This instance's name in the registry; empty: host name and process id.
    pub instance_id: String,
    /// How long a relay's lease lasts unless renewed (every third of it). An
    /// instance that dies leaves its relays unsynced this long, plus one round.
    pub lease_secs: u64,
    /// How often the registry is read for relays added, removed, paused or freed.
    pub poll_secs: u64,
}

/// Outbox discovery (NIP-65): the write relays the selected authors' relay lists
/// name are added to the registry (source `discovered`), each asked only for the
/// authors that list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverySettings {
    pub enabled: bool,
    /// Write relays taken per author.
    pub per_author: usize,
    /// Discovered relays synced at most (configured ones are not counted).
    pub max_relays: usize,
    /// Authors read at most when the filters name none (all authors with a stored
    /// relay list).
    pub max_authors: usize,
    /// How often the relay lists are read again and the discovered relays adjusted.
    pub refresh_secs: u64,
    /// Relays asked for the relay lists only (beside the configured relays).
    pub indexers: Vec<String>,
    /// Loopback, private and link-local addresses allowed (tests, private networks).
    pub allow_private: bool,
    /// Hosts or relay URLs never added.
    pub blocklist: Vec<String>,
    /// A discovered relay whose cycles failed this many times in a row is blocked.
    pub block_after_failures: u64,
    /// For this long; the next candidate takes its place meanwhile.
    pub block_secs: u64,
    /// Scores (novel events, duplicates, failures, uptime) are over this window.
    pub score_window_secs: u64,
}

impl FleetSettings {
    /// This instance's registry name.
    pub fn instance(&self) -> String {
        match self.instance_id.trim() {
            "" => crate::fleet::default_instance_id(),
            id => id.to_owned(),
        }
    }

    /// How often leases are renewed and the registry read.
    pub fn round(&self) -> Duration {
        Duration::from_secs(self.poll_secs.min(self.lease_secs / 3).max(1))
    }
}

/// NIP-42: the key the service authenticates to relays with, when they ask. The key
/// itself never enters the settings (nor any log): it is read from the environment
/// variable [`AUTH_KEY_ENV`] or from `secret_key_file`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// A file holding the secret key (nsec or hex); empty for none.
    pub secret_key_file: String,
}

pub use self::secrets::AUTH_KEY_ENV;

/// Every key of `built` that does not fit the settings, not only the first: each
/// misfit found is taken out and the rest read again. `first` is what the plain read
/// said, kept if this finds nothing.
fn every_problem(built: config::Config, first: config::ConfigError) -> Vec<String> {
    const MOST: usize = 50;
    let Ok(mut value) = built.try_deserialize::<serde_json::Value>() else {
        return vec![first.to_string()];
    };
    let mut problems = Vec::new();
    // Array elements taken out, by array (original positions): later elements moved
    // up, and are named where the file has them.
    let mut removed: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    while problems.len() < MOST {
        let Err(e) = serde_path_to_error::deserialize::<_, Settings>(value.clone()) else {
            break;
        };
        let path = e.path().to_string();
        let error = e.into_inner().to_string();
        // An unknown key names itself; its path may end at its parent.
        let unknown = error
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .map(str::to_owned);
        let key = match (&unknown, path.as_str()) {
            (Some(field), "." | "") => field.clone(),
            (Some(field), path) if !path.ends_with(field.as_str()) => format!("{path}.{field}"),
            (_, path) => path.to_owned(),
        };
        let (named, element) = original_path(&key, &removed);
        problems.push(format!("`{named}`: {error}"));
        if !remove_path(&mut value, &key) {
            break;
        }
        if let Some((array, i)) = element {
            let taken = removed.entry(array).or_default();
            taken.push(i);
            taken.sort_unstable();
        }
    }
    if problems.is_empty() {
        problems.push(first.to_string());
    }
    problems
}

/// `path` (`a.b[2].c`) in the file's positions, given the array elements `removed`;
/// and, when it names an array element, that array's path and the element's position.
fn original_path(
    path: &str,
    removed: &std::collections::BTreeMap<String, Vec<usize>>,
) -> (String, Option<(String, usize)>) {
    let mut out = String::new();
    let mut element = None;
    for piece in path.split('.') {
        let mut parts = piece.split('[');
        let name = parts.next().unwrap_or("");
        if !name.is_empty() {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(name);
            element = None;
        }
        for index in parts {
            let Ok(mut i) = index.trim_end_matches(']').parse::<usize>() else {
                continue;
            };
            // Positions taken out before this one moved it up.
            for r in removed.get(&out).map_or(&[][..], Vec::as_slice) {
                if *r <= i {
                    i += 1;
                }
            }
            element = Some((out.clone(), i));
            out.push_str(&format!("[{i}]"));
        }
    }
    (out, element)
}

/// Removes the value at a dotted `path` (`a.b[2].c`); whether it was there.
fn remove_path(value: &mut serde_json::Value, path: &str) -> bool {
    let mut parts: Vec<&str> = path
        .split(['.', '[', ']'])
        .filter(|p| !p.is_empty())
        .collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut at = value;
    for p in parts {
        let next = match at {
            serde_json::Value::Object(m) => m.get_mut(p),
            serde_json::Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => return false,
        }
    }
    match at {
        serde_json::Value::Object(m) => m.remove(last).is_some(),
        serde_json::Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Problems found while loading or validating settings, reported all at once.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl Settings {
    /// Defaults, then `file` (if given), then `NOSTR_SYNC__*` environment variables;
    /// validated.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())
            .map_err(|e| ConfigError(vec![e.to_string()]))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(vec![format!(
                    "config file {} does not exist",
                    path.display()
                )]));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("NOSTR_SYNC")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("relays")
                .with_list_parse_key("aggregates.zap_signers")
                .try_parsing(true),
        );
        let built = builder
            .build()
            .map_err(|e| ConfigError(vec![e.to_string()]))?;
        let mut settings: Settings = match built.clone().try_deserialize() {
            Ok(s) => s,
            Err(first) => return Err(ConfigError(every_problem(built, first))),
        };
        settings.normalize();
        settings.validate()?;
        Ok(settings)
    }

    /// `read` applied to a running service: its relays and filters apply live; every
    /// other key keeps its running value. Returns the settings to run with, and the
    /// keys `read` changes that need a restart.
    pub fn live_update(&self, read: Settings) -> (Settings, Vec<String>) {
        let mut applied = self.clone();
        applied.relays = read.relays.clone();
        applied.relay = read.relay.clone();
        applied.filters = read.filters.clone();
        let as_map = |s: &Settings| match serde_json::to_value(s) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let (running, read) = (as_map(&applied), as_map(&read));
        let mut ignored = Vec::new();
        for (section, value) in &read {
            let old = running.get(section);
            match (value, old) {
                (serde_json::Value::Object(keys), Some(serde_json::Value::Object(old))) => {
                    for (key, v) in keys {
                        if old.get(key) != Some(v) {
                            ignored.push(format!("{section}.{key}"));
                        }
                    }
                }
                (v, old) if old != Some(v) => ignored.push(section.clone()),
                _ => {}
            }
        }
        (applied, ignored)
    }

    /// Every relay to sync: the plain list, then `[[relay]]` tables not in it.
    pub fn relay_urls(&self) -> Vec<String> {
        let mut urls = self.relays.clone();
        for r in &self.relay {
            if !urls.contains(&r.url) {
                urls.push(r.url.clone());
            }
        }
        urls
    }

    /// The configuration's relays as the registry holds them (source `config`), each
    /// with the settings of its `[[relay]]` table, if any. An inline `auth_key` stays
    /// out of the database: only a key file's path is written.
    pub fn registry_entries(&self) -> Vec<crate::storage::registry::NewRelay> {
        self.relay_urls()
            .into_iter()
            .map(|url| {
                let settings = self.relay_table(&url).map_or(String::new(), |r| {
                    let file = nostr_sdk::Keys::parse(r.auth_key.trim()).is_err();
                    let own = RelaySettings {
                        url: String::new(),
                        auth_key: if file {
                            r.auth_key.clone()
                        } else {
                            String::new()
                        },
                        ..r.clone()
                    };
                    serde_json::to_string(&own).unwrap_or_default()
                });
                crate::storage::registry::NewRelay {
                    url,
                    source: "config",
                    settings,
                }
            })
            .chain(self.indexer_entries())
            .collect()
    }

    /// The indexers, asked only for relay lists (with discovery on).
    fn indexer_entries(&self) -> Vec<crate::storage::registry::NewRelay> {
        let Some(filter) = self.relay_list_filter() else {
            return Vec::new();
        };
        let own = RelaySettings {
            filters: vec![filter],
            ..Default::default()
        };
        let settings = serde_json::to_string(&own).unwrap_or_default();
        let listed = self.relay_urls();
        self.discovery
            .indexers
            .iter()
            .filter_map(|u| crate::fleet::normalise(u).ok())
            .filter(|u| !listed.contains(u))
            .map(|url| crate::storage::registry::NewRelay {
                url,
                source: "config",
                settings: settings.clone(),
            })
            .collect()
    }

    /// What a relay actor of `url` syncs with: this configuration's `[[relay]]` table
    /// for it, else the settings the registry holds for it (`stored`, JSON), else
    /// the global filters and key.
    pub fn relay_config(&self, url: &str, stored: &str) -> Result<RelayConfig, String> {
        if self.relay_urls().iter().any(|u| u == url) || stored.trim().is_empty() {
            return Ok(RelayConfig {
                url: url.to_owned(),
                filters: self.filters_for(url),
                page_limit: self.page_limit_for(url),
                auth: self.auth_for(url)?,
                source: 0,
            });
        }
        let own: RelaySettings = serde_json::from_str(stored)
            .map_err(|e| format!("registry settings of {url} do not parse: {e}"))?;
        let filters = if own.filters.is_empty() {
            &self.filters
        } else {
            &own.filters
        };
        let auth = match own.keys(0)? {
            Some(keys) => Some(keys),
            None => self.auth.keys()?,
        };
        Ok(RelayConfig {
            url: url.to_owned(),
            filters: filters
                .iter()
                .flat_map(|f| f.split(self.sync.max_authors_per_req))
                .collect(),
            page_limit: own.page_limit,
            auth,
            source: 0,
        })
    }

    fn relay_table(&self, url: &str) -> Option<&RelaySettings> {
        self.relay.iter().find(|r| r.url == url)
    }

    /// The filters synced from `url`, each as REQs may carry it (author lists split).
    pub fn filters_for(&self, url: &str) -> Vec<FilterSettings> {
        let own = self.relay_table(url).map(|r| &r.filters);
        let filters = match own {
            Some(f) if !f.is_empty() => f,
            _ => &self.filters,
        };
        filters
            .iter()
            .chain(self.relay_list_filter().as_ref())
            .flat_map(|f| f.split(self.sync.max_authors_per_req))
            .collect()
    }

    /// With discovery on, the filter that asks the configured relays and the
    /// indexers for the selected authors' relay lists (NIP-65), unless the filters
    /// ask every author's already.
    pub fn relay_list_filter(&self) -> Option<FilterSettings> {
        if !self.discovery.enabled {
            return None;
        }
        let kind = crate::nostr::RELAY_LIST_KIND;
        let covered = self.filters.iter().any(|f| {
            f.authors.is_empty()
                && (f.kinds.is_empty() || f.kinds.contains(&kind))
                && f.since == 0
                && f.until == 0
                && f.e.is_empty()
                && f.p.is_empty()
                && f.t.is_empty()
                && f.a.is_empty()
                && f.d.is_empty()
        });
        if covered {
            return None;
        }
        Some(FilterSettings {
            kinds: vec![kind],
            authors: self.selected_authors(),
            ..Default::default()
        })
    }

    /// The authors the filters select (hex, sorted; at most `discovery.max_authors`);
    /// empty when one of them selects every author.
    pub fn selected_authors(&self) -> Vec<String> {
        let f = &self.filters;
        if f.is_empty() || f.iter().any(|f| f.authors.is_empty()) {
            return Vec::new();
        }
        let set: std::collections::BTreeSet<&String> = f.iter().flat_map(|f| &f.authors).collect();
        set.into_iter()
            .take(self.discovery.max_authors)
            .cloned()
            .collect()
    }

    /// The `limit` configured for `url` (0: none; NIP-11 and `sync.page_limit` decide).
    pub fn page_limit_for(&self, url: &str) -> usize {
        match self.relay_table(url) {
            Some(r) if r.page_limit > 0 => r.page_limit,
            _ => self
                .sync
                .relay_page_limits
                .iter()
                .find(|r| r.url == url)
                .map_or(0, |r| r.page_limit),
        }
    }

    /// The NIP-42 key for `url`: its `[[relay]]` key, else `[auth]`'s.
    pub fn auth_for(&self, url: &str) -> Result<Option<nostr_sdk::Keys>, String> {
        if let Some((i, r)) = self
            .relay
            .iter()
            .enumerate()
            .find(|(_, r)| r.url == url && !r.auth_key.trim().is_empty())
        {
            return r.keys(i);
        }
        self.auth.keys()
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.aggregates.flush_interval_ms)
    }

    /// The most events the pipeline can hold between the relays' sockets and their
    /// commit. Distinct events: per relay (every configured one, `relays` and
    /// `[[relay]]`), one batch being read, one handed over, one in dedup, two in
    /// verification (`VERIFY_DEPTH`) and one waiting for storage admission; and what
    /// each storage worker admits (`mailbox.storage`). Behind each of those the dedup
    /// actor may park one copy from each other relay (one per REQ, and a relay's REQs
    /// follow each other), so the whole is the number of relays times the distinct
    /// ones. Raw frames (`mailbox.relay_frame_bytes`) come on top.
    pub fn max_held_events(&self) -> usize {
        let relays = self.relay_urls().len().max(1);
        let distinct = relays * 6 * self.mailbox.max_batch_events
            + self.storage.workers * self.mailbox.storage;
        relays * distinct
    }

    pub fn verify_threads(&self) -> usize {
        match self.verify.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests;

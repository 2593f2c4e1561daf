//! The built-in defaults of the settings tree (`config/default.toml` lists the same,
//! and a test keeps the two equal).

use super::*;

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            expiry_check_secs: 60,
            max_unseen_tombstones: 1_000_000,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            listen: String::new(),
            name: "nostr-sync".into(),
            description: "A read-only copy of what nostr-sync synced".into(),
            max_connections: 256,
            max_subscriptions: 20,
            max_filters: 10,
            max_limit: 500,
            max_filter_values: 1_000,
            max_message_bytes: 131_072,
            messages_per_sec: 20,
            messages_burst: 100,
            max_outbound_bytes: 4 << 20,
            query_timeout_ms: 2_000,
            max_sync_events: 500_000,
            database_connections: 4,
            poll_ms: 20,
        }
    }
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            enabled: false,
            per_author: 3,
            max_relays: 100,
            max_authors: 5_000,
            refresh_secs: 600,
            indexers: Vec::new(),
            allow_private: false,
            blocklist: Vec::new(),
            block_after_failures: 5,
            block_secs: 3_600,
            score_window_secs: 3_600,
        }
    }
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            instance_id: String::new(),
            lease_secs: 30,
            poll_secs: 5,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            relays: Vec::new(),
            relay: Vec::new(),
            filters: vec![FilterSettings::default()],
            sync: SyncSettings::default(),
            database: DatabaseSettings::default(),
            dedup: DedupSettings::default(),
            storage: StorageSettings::default(),
            verify: VerifySettings::default(),
            aggregates: AggregateSettings::default(),
            retention: RetentionSettings::default(),
            interval: IntervalSettings::default(),
            mailbox: MailboxSettings::default(),
            limits: LimitSettings::default(),
            shutdown: ShutdownSettings::default(),
            auth: AuthSettings::default(),
            http: HttpSettings::default(),
            fleet: FleetSettings::default(),
            discovery: DiscoverySettings::default(),
            serve: ServeSettings::default(),
        }
    }
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            live: true,
            overlap_secs: 600,
            page_limit: 500,
            relay_page_limits: Vec::new(),
            max_authors_per_req: 256,
            max_reqs_per_window: 100_000,
            eose_timeout_secs: 30,
            reconcile_timeout_secs: 300,
            refused_retry_secs: 3_600,
            negentropy: Negentropy::Auto,
            reconcile_from: ReconcileFrom::Auto,
            repair_interval_secs: 14_400,
            repair_paging_interval_secs: 86_400,
            connect_timeout_secs: 10,
            backoff_min_ms: 500,
            backoff_max_ms: 60_000,
            performance: PerformanceSettings::default(),
        }
    }
}

impl Default for PerformanceSettings {
    fn default() -> Self {
        Self {
            batch_size: 1,
            batch_timeout_ms: 100,
            max_batch_rows: 2_000,
            min_commit_interval_ms: 20,
            linger_ms: 10,
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://nostr-sync.db".into(),
            max_connections: 8,
            retry_min_ms: 100,
            retry_max_ms: 10_000,
            migrate_on_start: true,
        }
    }
}

impl Default for DedupSettings {
    fn default() -> Self {
        Self {
            lru_capacity: 100_000,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            workers: 1,
            provenance: true,
        }
    }
}

impl Default for AggregateSettings {
    fn default() -> Self {
        Self {
            flush_interval_ms: 200,
            zap_signers: Vec::new(),
            zap_verification: ZapVerification::Lnurl,
            lnurl_check_secs: 10,
            lnurl_recheck_secs: 86_400,
            lnurl_allow_private: false,
            lnurl_fetches_per_sec: 5,
            lnurl_host_fetches_per_sec: 2,
        }
    }
}

impl Default for IntervalSettings {
    fn default() -> Self {
        Self {
            idle_secs: 30,
            normal_secs: 10,
            busy_secs: 5,
            busy_threshold: 100,
            watchdog_secs: 300,
        }
    }
}

impl Default for MailboxSettings {
    fn default() -> Self {
        Self {
            relay_frames: 1_024,
            relay_frame_bytes: 4 << 20,
            frame_bytes_total: 64 << 20,
            dedup: 16,
            storage: 5_000,
            aggregator: 64,
            max_batch_events: 500,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_event_bytes: 256 * 1024,
            max_tags: 2_000,
            max_future_secs: 900,
            max_frames_per_req: 100_000,
        }
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { timeout_secs: 30 }
    }
}

//! Validation of the settings tree: every problem at once, each naming its key, and
//! hex written as events carry it.

use super::{ConfigError, FilterSettings, Settings};

impl Settings {
    /// Writes hex the way events carry it: pubkeys and ids are compared with stored,
    /// lowercase keys, so `ABC…` in a filter would match nothing.
    pub fn normalize(&mut self) {
        // Relay URLs as the registry keys them; one it cannot read stays for
        // `validate` to name.
        let urls = self
            .relays
            .iter_mut()
            .chain(self.relay.iter_mut().map(|r| &mut r.url))
            .chain(self.sync.relay_page_limits.iter_mut().map(|r| &mut r.url));
        for url in urls {
            if let Ok(n) = crate::fleet::normalise(url) {
                *url = n;
            }
        }
        self.relays.dedup();
        let filters = self
            .filters
            .iter_mut()
            .chain(self.relay.iter_mut().flat_map(|r| r.filters.iter_mut()));
        for f in filters {
            for list in [&mut f.authors, &mut f.e, &mut f.p] {
                list.iter_mut().for_each(|v| v.make_ascii_lowercase());
            }
        }
    }

    /// Every problem at once, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        if let Err(e) = self.auth.keys() {
            errors.push(e);
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            errors.push(format!(
                "`http.listen` must be host:port (an IP address) or empty, got {:?}",
                self.http.listen
            ));
        }
        if !self.serve.listen.is_empty()
            && self.serve.listen.parse::<std::net::SocketAddr>().is_err()
        {
            errors.push(format!(
                "`serve.listen` must be host:port (an IP address) or empty, got {:?}",
                self.serve.listen
            ));
        }
        let relay_tables = self.relay.iter().map(|r| &r.url);
        for (key, relay) in self
            .relays
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("relays[{i}]"), r))
            .chain(
                relay_tables
                    .enumerate()
                    .map(|(i, r)| (format!("relay[{i}].url"), r)),
            )
        {
            if let Err(e) = crate::fleet::normalise(relay) {
                errors.push(format!("`{key}` must be a ws:// or wss:// url: {e}"));
            }
        }
        for (i, url) in self.discovery.indexers.iter().enumerate() {
            if let Err(e) = crate::fleet::normalise(url) {
                errors.push(format!(
                    "`discovery.indexers[{i}]` must be a ws:// or wss:// url: {e}"
                ));
            }
        }
        if self.fleet.lease_secs < 3 {
            errors.push(format!(
                "`fleet.lease_secs` must be at least 3 (renewed every third), got {}",
                self.fleet.lease_secs
            ));
        }
        if self.filters.is_empty() {
            errors.push("`filters` must hold at least one filter".into());
        }
        let own = self.relay.iter().enumerate().flat_map(|(r, relay)| {
            relay
                .filters
                .iter()
                .enumerate()
                .map(move |(i, f)| (format!("relay[{r}].filters[{i}]"), f))
        });
        for (key, f) in self
            .filters
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("filters[{i}]"), f))
            .chain(own)
        {
            errors.extend(f.problems(&key));
        }
        for (i, r) in self.relay.iter().enumerate() {
            if let Err(e) = r.keys(i) {
                errors.push(e);
            }
        }
        for (i, k) in self.aggregates.zap_signers.iter().enumerate() {
            if nostr_sdk::PublicKey::parse(k.trim()).is_err() {
                errors.push(format!(
                    "`aggregates.zap_signers[{i}]` holds {k:?}, not a pubkey (hex or npub)"
                ));
            }
        }
        if crate::storage::Backend::of_url(&self.database.url).is_none() {
            errors.push(format!(
                "`database.url` must start with sqlite:// or postgres://, got {:?}",
                crate::storage::migrate::redacted(&self.database.url)
            ));
        }
        let mut positive = |key: &str, v: u64| {
            if v == 0 {
                errors.push(format!("`{key}` must be at least 1, got 0"));
            }
        };
        positive("sync.page_limit", self.sync.page_limit as u64);
        positive("fleet.poll_secs", self.fleet.poll_secs);
        positive("discovery.per_author", self.discovery.per_author as u64);
        let serve = &self.serve;
        for (key, v) in [
            ("serve.max_connections", serve.max_connections as u64),
            ("serve.max_subscriptions", serve.max_subscriptions as u64),
            ("serve.max_filters", serve.max_filters as u64),
            ("serve.max_limit", serve.max_limit as u64),
            ("serve.max_filter_values", serve.max_filter_values as u64),
            ("serve.max_message_bytes", serve.max_message_bytes as u64),
            ("serve.messages_per_sec", u64::from(serve.messages_per_sec)),
            ("serve.messages_burst", u64::from(serve.messages_burst)),
            ("serve.max_outbound_bytes", serve.max_outbound_bytes as u64),
            ("serve.query_timeout_ms", serve.query_timeout_ms),
            (
                "serve.database_connections",
                serve.database_connections as u64,
            ),
            ("serve.poll_ms", serve.poll_ms),
        ] {
            positive(key, v);
        }
        positive("discovery.refresh_secs", self.discovery.refresh_secs);
        positive(
            "discovery.block_after_failures",
            self.discovery.block_after_failures,
        );
        positive(
            "discovery.score_window_secs",
            self.discovery.score_window_secs,
        );
        positive(
            "sync.max_reqs_per_window",
            self.sync.max_reqs_per_window as u64,
        );
        positive(
            "sync.max_authors_per_req",
            self.sync.max_authors_per_req as u64,
        );
        for (i, r) in self.sync.relay_page_limits.iter().enumerate() {
            positive(
                &format!("sync.relay_page_limits[{i}].page_limit"),
                r.page_limit as u64,
            );
        }
        positive("sync.eose_timeout_secs", self.sync.eose_timeout_secs);
        positive(
            "sync.reconcile_timeout_secs",
            self.sync.reconcile_timeout_secs,
        );
        positive("sync.connect_timeout_secs", self.sync.connect_timeout_secs);
        positive("sync.backoff_min_ms", self.sync.backoff_min_ms);
        positive(
            "sync.performance.batch_size",
            self.sync.performance.batch_size as u64,
        );
        positive(
            "sync.performance.max_batch_rows",
            self.sync.performance.max_batch_rows as u64,
        );
        positive(
            "database.max_connections",
            self.database.max_connections as u64,
        );
        positive("database.retry_min_ms", self.database.retry_min_ms);
        positive("dedup.lru_capacity", self.dedup.lru_capacity as u64);
        positive("storage.workers", self.storage.workers as u64);
        positive(
            "aggregates.flush_interval_ms",
            self.aggregates.flush_interval_ms,
        );
        positive("interval.idle_secs", self.interval.idle_secs);
        positive("interval.normal_secs", self.interval.normal_secs);
        positive("interval.busy_secs", self.interval.busy_secs);
        positive("interval.watchdog_secs", self.interval.watchdog_secs);
        positive("mailbox.relay_frames", self.mailbox.relay_frames as u64);
        positive(
            "mailbox.relay_frame_bytes",
            self.mailbox.relay_frame_bytes as u64,
        );
        positive(
            "mailbox.frame_bytes_total",
            self.mailbox.frame_bytes_total as u64,
        );
        positive("mailbox.dedup", self.mailbox.dedup as u64);
        positive("mailbox.storage", self.mailbox.storage as u64);
        positive("mailbox.aggregator", self.mailbox.aggregator as u64);
        positive(
            "mailbox.max_batch_events",
            self.mailbox.max_batch_events as u64,
        );
        positive("limits.max_event_bytes", self.limits.max_event_bytes as u64);
        positive(
            "limits.max_frames_per_req",
            self.limits.max_frames_per_req as u64,
        );
        positive("shutdown.timeout_secs", self.shutdown.timeout_secs);
        positive(
            "aggregates.lnurl_check_secs",
            self.aggregates.lnurl_check_secs,
        );
        positive(
            "aggregates.lnurl_recheck_secs",
            self.aggregates.lnurl_recheck_secs,
        );
        positive(
            "aggregates.lnurl_fetches_per_sec",
            u64::from(self.aggregates.lnurl_fetches_per_sec),
        );
        positive(
            "aggregates.lnurl_host_fetches_per_sec",
            u64::from(self.aggregates.lnurl_host_fetches_per_sec),
        );
        if self.sync.backoff_max_ms < self.sync.backoff_min_ms {
            errors.push(format!(
                "`sync.backoff_max_ms` ({}) must not be below `sync.backoff_min_ms` ({})",
                self.sync.backoff_max_ms, self.sync.backoff_min_ms
            ));
        }
        if self.database.retry_max_ms < self.database.retry_min_ms {
            errors.push(format!(
                "`database.retry_max_ms` ({}) must not be below `database.retry_min_ms` ({})",
                self.database.retry_max_ms, self.database.retry_min_ms
            ));
        }
        if self.sync.performance.batch_size > self.sync.performance.max_batch_rows {
            errors.push(format!(
                "`sync.performance.batch_size` ({}) must not exceed `sync.performance.max_batch_rows` ({})",
                self.sync.performance.batch_size, self.sync.performance.max_batch_rows
            ));
        }
        if self.mailbox.storage < self.mailbox.max_batch_events {
            errors.push(format!(
                "`mailbox.storage` ({}) must be at least `mailbox.max_batch_events` ({})",
                self.mailbox.storage, self.mailbox.max_batch_events
            ));
        }
        if self.storage.workers > self.database.max_connections {
            errors.push(format!(
                "`storage.workers` ({}) must not exceed `database.max_connections` ({})",
                self.storage.workers, self.database.max_connections
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errors))
        }
    }
}

impl FilterSettings {
    /// What is wrong with this filter, each naming its key (`key` is where it is).
    pub(super) fn problems(&self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        let hex =
            |v: &str| v.len() == 64 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        for a in &self.authors {
            if nostr_sdk::PublicKey::from_hex(a).is_err() {
                out.push(format!("`{key}.authors` holds {a:?}, not a hex pubkey"));
            }
        }
        // NIP-01: `#e` and `#p` values are lowercase hex ids and pubkeys.
        for (name, values) in [("#e", &self.e), ("#p", &self.p)] {
            for v in values {
                if !hex(v) {
                    out.push(format!(
                        "`{key}.{name}` holds {v:?}, not 64 lowercase hex digits"
                    ));
                }
            }
        }
        for v in &self.a {
            if crate::nostr::parse_address(v).is_none() {
                out.push(format!(
                    "`{key}.#a` holds {v:?}, not an address kind:pubkey:d"
                ));
            }
        }
        if self.until > 0 && self.until < self.since {
            out.push(format!(
                "`{key}.until` ({}) must not be below `{key}.since` ({})",
                self.until, self.since
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::RelaySettings;
    use super::*;

    const PK: &str = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    #[test]
    fn validation_reports_every_problem_with_its_key() {
        let mut s = Settings {
            relays: vec!["http://example.com".into(), "not a url".into()],
            ..Default::default()
        };
        s.storage.workers = 0;
        s.database.url = "mysql://x".into();
        let err = s.validate().unwrap_err().0;
        let joined = err.join("\n");
        for key in ["relays[0]", "relays[1]", "storage.workers", "database.url"] {
            assert!(joined.contains(key), "{key} missing from {joined}");
        }
        assert_eq!(err.len(), 4, "{joined}");
    }

    #[test]
    fn hex_in_filters_is_written_as_events_carry_it() {
        let mut s = Settings::default();
        s.filters[0].authors = vec![PK.to_uppercase()];
        s.filters[0].p = vec![PK.to_uppercase()];
        s.relay = vec![RelaySettings {
            url: "wss://r.example".into(),
            filters: vec![FilterSettings {
                e: vec!["AB".repeat(32)],
                ..Default::default()
            }],
            ..Default::default()
        }];
        s.normalize();
        s.validate().unwrap();
        assert_eq!(s.filters[0].authors, vec![PK.to_owned()]);
        assert_eq!(s.filters[0].p, vec![PK.to_owned()]);
        assert_eq!(s.relay[0].filters[0].e, vec!["ab".repeat(32)]);
    }

    #[test]
    fn bad_filters_name_their_keys() {
        let mut s = Settings::default();
        s.filters[0].e = vec!["not hex".into()];
        s.filters[0].a = vec!["1:x:y".into()];
        s.filters[0].since = 10;
        s.filters[0].until = 5;
        s.relay.push(RelaySettings {
            url: "https://nope".into(),
            filters: vec![FilterSettings {
                p: vec![PK.to_uppercase()],
                ..Default::default()
            }],
            auth_key: "/no/such/key".into(),
            ..Default::default()
        });
        s.sync.max_authors_per_req = 0;
        s.aggregates.zap_signers = vec![PK.into(), "nope".into()];
        let err = s.validate().unwrap_err().0.join("\n");
        for key in [
            "filters[0].#e",
            "filters[0].#a",
            "filters[0].until",
            "relay[0].url",
            "relay[0].filters[0].#p",
            "relay[0].auth_key",
            "sync.max_authors_per_req",
            "aggregates.zap_signers[1]",
        ] {
            assert!(err.contains(&format!("`{key}")), "{key} missing from {err}");
        }
    }
}

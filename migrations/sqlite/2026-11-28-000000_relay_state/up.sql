-- How each relay's windows went, per filter: what `nostr-sync status` shows.
CREATE TABLE relay_state (
    relay TEXT NOT NULL,
    filter TEXT NOT NULL,
    last_success BIGINT,
    last_failure BIGINT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (relay, filter)
);

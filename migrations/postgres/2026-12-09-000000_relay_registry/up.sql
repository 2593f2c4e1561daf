-- The relay registry: which relays the fleet syncs, and which instance holds each.
-- `url` is normalised (`nostr::url`); `source` is where it came from (`config`,
-- `cli`, `discovered`); `enabled` says its source still lists it, `paused` that an
-- operator paused it; it is synced when enabled and not paused. `settings` holds its
-- own filters, page limit and auth key file (JSON; empty: the configuration's).
-- `holder` holds the lease until `lease_until`; `token` grows with every new holder
-- and fences the holder's writes (cursor, window outcome).
CREATE TABLE relays (
    url TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    settings TEXT NOT NULL DEFAULT '',
    added_at BIGINT NOT NULL,
    holder TEXT,
    token BIGINT NOT NULL DEFAULT 0,
    lease_until BIGINT NOT NULL DEFAULT 0
);

-- Running instances: each writes its heartbeat every lease renewal; one whose
-- heartbeat is older than its lease is gone.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Events in arrival order; `id` is the final arbiter of uniqueness.
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    pubkey TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    kind INTEGER NOT NULL,
    tags TEXT NOT NULL,
    content TEXT NOT NULL,
    sig TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    aggregated BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_pubkey_created_at ON events (pubkey, created_at);
CREATE INDEX events_kind_created_at ON events (kind, created_at);
-- The aggregation watermark: committed events whose deltas are not yet in event_stats.
CREATE INDEX events_unaggregated ON events (seq) WHERE NOT aggregated;

CREATE TABLE event_tags (
    event_seq BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (event_seq, name, value)
);
CREATE INDEX event_tags_name_value ON event_tags (name, value);

CREATE TABLE event_stats (
    event_id TEXT PRIMARY KEY,
    reactions BIGINT NOT NULL DEFAULT 0,
    replies BIGINT NOT NULL DEFAULT 0,
    reposts BIGINT NOT NULL DEFAULT 0,
    zaps BIGINT NOT NULL DEFAULT 0,
    zap_msats BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE relay_cursors (
    relay TEXT NOT NULL,
    filter TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (relay, filter)
);

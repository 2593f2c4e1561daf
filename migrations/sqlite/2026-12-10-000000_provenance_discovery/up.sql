-- A relay's id for good: given the first time an instance holds its lease, and kept
-- when its registry row is removed, so that provenance keeps naming it.
CREATE TABLE relay_ids (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL UNIQUE
);

-- Provenance: which relays delivered each stored event (`relay_ids`), and when each
-- first did (unix seconds). Written in the batches that store the events; duplicate
-- copies add their relay too. Removed with the event, by the transaction that removes
-- it (no foreign key: PostgreSQL's check locks the event's row for every row written).
CREATE TABLE event_relays (
    event_seq BIGINT NOT NULL,
    relay_id INTEGER NOT NULL,
    first_seen BIGINT NOT NULL,
    PRIMARY KEY (event_seq, relay_id)
) WITHOUT ROWID;

-- What the lease holder of each relay measured over discovery's window (novel events,
-- duplicates, failed cycles, failures in a row, uptime), the score discovery ranks
-- relays by, and until when a failing relay is blocked.
CREATE TABLE relay_scores (
    url TEXT PRIMARY KEY,
    novel BIGINT NOT NULL DEFAULT 0,
    duplicates BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    failures_in_row BIGINT NOT NULL DEFAULT 0,
    uptime DOUBLE NOT NULL DEFAULT 1,
    score DOUBLE NOT NULL DEFAULT 0,
    blocked_until BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL DEFAULT 0
);

-- Tombstones carry the database time they were added (unix seconds): the sweep that
-- removes events a concurrent writer stored beside a deletion reads only tombstones
-- added since it last ran (`tombstone_sweep.swept_to`). Rows from before are dated 0
-- and swept once. (SQLite adds no column with a computed default: the tables are
-- rebuilt.)
CREATE TABLE deleted_events_dated (
    id TEXT NOT NULL,
    pubkey TEXT NOT NULL,
    added_at BIGINT NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)),
    -- Whether the event it names was stored when the deletion arrived. Tombstones for
    -- ids never seen are bounded: the oldest go past `retention.max_unseen_tombstones`.
    seen BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (id, pubkey)
);
INSERT INTO deleted_events_dated (id, pubkey, added_at, seen)
SELECT id, pubkey, 0, TRUE FROM deleted_events;
DROP TABLE deleted_events;
ALTER TABLE deleted_events_dated RENAME TO deleted_events;
CREATE INDEX deleted_events_added ON deleted_events (added_at);
CREATE INDEX deleted_events_unseen ON deleted_events (added_at) WHERE NOT seen;
CREATE TABLE deleted_addresses_dated (
    address TEXT PRIMARY KEY,
    until BIGINT NOT NULL,
    added_at BIGINT NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER))
);
INSERT INTO deleted_addresses_dated (address, until, added_at)
SELECT address, until, 0 FROM deleted_addresses;
DROP TABLE deleted_addresses;
ALTER TABLE deleted_addresses_dated RENAME TO deleted_addresses;
CREATE INDEX deleted_addresses_added ON deleted_addresses (added_at);
-- One row: tombstones added before `swept_to` have been swept, and `unseen` of them
-- name ids never seen.
CREATE TABLE tombstone_sweep (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    swept_to BIGINT NOT NULL,
    unseen BIGINT NOT NULL
);
INSERT INTO tombstone_sweep (id, swept_to, unseen) VALUES (1, 0, 0);

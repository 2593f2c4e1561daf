-- Tombstones carry the database time they were added (unix seconds): the sweep that
-- removes events a concurrent writer stored beside a deletion reads only tombstones
-- added since it last ran (`tombstone_sweep.swept_to`). Rows from before are dated 0
-- and swept once.
ALTER TABLE deleted_events ADD COLUMN added_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deleted_events ALTER COLUMN added_at SET DEFAULT (extract(epoch from now())::BIGINT);
-- Whether the event it names was stored when the deletion arrived. Tombstones for ids
-- never seen are bounded: the oldest go past `retention.max_unseen_tombstones`.
ALTER TABLE deleted_events ADD COLUMN seen BOOLEAN NOT NULL DEFAULT TRUE;
CREATE INDEX deleted_events_added ON deleted_events (added_at);
CREATE INDEX deleted_events_unseen ON deleted_events (added_at) WHERE NOT seen;
ALTER TABLE deleted_addresses ADD COLUMN added_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deleted_addresses ALTER COLUMN added_at SET DEFAULT (extract(epoch from now())::BIGINT);
CREATE INDEX deleted_addresses_added ON deleted_addresses (added_at);
-- One row: tombstones added before `swept_to` have been swept, and `unseen` of them
-- name ids never seen. Each sweep updates it in its own transaction (its row lock
-- keeps two instances' sweeps apart).
CREATE TABLE tombstone_sweep (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    swept_to BIGINT NOT NULL,
    unseen BIGINT NOT NULL
);
INSERT INTO tombstone_sweep (id, swept_to, unseen) VALUES (1, 0, 0);

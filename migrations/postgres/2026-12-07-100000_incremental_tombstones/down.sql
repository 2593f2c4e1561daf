DROP TABLE tombstone_sweep;
DROP INDEX deleted_addresses_added;
ALTER TABLE deleted_addresses DROP COLUMN added_at;
DROP INDEX deleted_events_unseen;
DROP INDEX deleted_events_added;
ALTER TABLE deleted_events DROP COLUMN seen;
ALTER TABLE deleted_events DROP COLUMN added_at;

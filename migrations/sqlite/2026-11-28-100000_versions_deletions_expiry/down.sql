DROP TABLE retractions;
DROP TABLE deleted_addresses;
DROP TABLE deleted_events;
DROP TABLE replaceable_heads;
DROP INDEX events_expires_at;
DROP INDEX events_address;
ALTER TABLE events DROP COLUMN expires_at;
ALTER TABLE events DROP COLUMN address;

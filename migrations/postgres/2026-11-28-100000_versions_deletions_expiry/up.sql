-- Versions, deletions and expiry (NIP-01 replaceable and addressable events, NIP-09 deletions,
-- NIP-40 expiration); the rules themselves are in src/nostr/.

-- `kind:pubkey:d` of a replaceable (0, 3, 10000-19999; d is "") or addressable
-- (30000-39999; d is the first `d` tag's value) event; NULL for other kinds.
ALTER TABLE events ADD COLUMN address TEXT;
-- NIP-40: when the event expires; NULL when it never does.
ALTER TABLE events ADD COLUMN expires_at BIGINT;
CREATE INDEX events_address ON events (address, created_at) WHERE address IS NOT NULL;
CREATE INDEX events_expires_at ON events (expires_at) WHERE expires_at IS NOT NULL;

-- The newest version seen of each address (lowest id on equal created_at): the only
-- one stored. A version that loses against it is not stored.
CREATE TABLE replaceable_heads (
    address TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    id TEXT NOT NULL
);
-- Ids named by a kind 5 of `pubkey`: the event with this id and pubkey is removed
-- and never stored again.
CREATE TABLE deleted_events (
    id TEXT NOT NULL,
    pubkey TEXT NOT NULL,
    PRIMARY KEY (id, pubkey)
);
-- Addresses named by a kind 5 of their own author: versions up to `until` are removed
-- and never stored again.
CREATE TABLE deleted_addresses (
    address TEXT PRIMARY KEY,
    until BIGINT NOT NULL
);
-- What removed events had added to event_stats, waiting for the aggregator's flush
-- to subtract it (claimed by deleting the row in the flush's transaction).
CREATE TABLE retractions (
    seq BIGSERIAL PRIMARY KEY,
    target TEXT NOT NULL,
    reactions BIGINT NOT NULL,
    replies BIGINT NOT NULL,
    reposts BIGINT NOT NULL,
    zaps BIGINT NOT NULL,
    zap_msats BIGINT NOT NULL
);

-- Events stored by earlier versions: their addresses and expiry, from their tags.
UPDATE events SET address = kind || ':' || pubkey || ':'
WHERE kind IN (0, 3) OR kind BETWEEN 10000 AND 19999;
-- (json, not jsonb: tags are stored as written, and jsonb refuses some valid JSON.)
UPDATE events SET address = kind || ':' || pubkey || ':' || COALESCE((
    SELECT t ->> 1 FROM json_array_elements(events.tags::json) WITH ORDINALITY AS x (t, n)
    WHERE t ->> 0 = 'd' AND json_array_length(t) >= 2 ORDER BY n LIMIT 1), '')
WHERE kind BETWEEN 30000 AND 39999;
UPDATE events SET expires_at = (
    SELECT CASE WHEN trim(t ->> 1) ~ '^[0-9]{1,18}$' THEN trim(t ->> 1)::BIGINT END
    FROM json_array_elements(events.tags::json) WITH ORDINALITY AS x (t, n)
    WHERE t ->> 0 = 'expiration' AND json_array_length(t) >= 2 ORDER BY n LIMIT 1)
WHERE tags LIKE '%"expiration"%';
-- A generic repost of an address only counted nothing before; it counts now: leave it
-- to the start-up backlog, like any event whose contribution is not applied yet.
UPDATE events SET aggregated = FALSE
WHERE kind = 16 AND tags LIKE '%["a",%' AND NOT EXISTS (
    SELECT 1 FROM json_array_elements(events.tags::json) AS t
    WHERE t ->> 0 = 'e' AND json_array_length(t) >= 2 AND t ->> 1 ~ '^[0-9a-fA-F]{64}$');
-- Superseded versions go (none of these kinds counts toward an aggregate).
INSERT INTO replaceable_heads (address, created_at, id)
SELECT DISTINCT ON (address) address, created_at, id FROM events
WHERE address IS NOT NULL ORDER BY address, created_at DESC, id;
DELETE FROM events e WHERE e.address IS NOT NULL
AND NOT EXISTS (SELECT 1 FROM replaceable_heads h WHERE h.address = e.address AND h.id = e.id);
-- Stored deletions become tombstones; the start-up sweep removes their targets and
-- retracts what those counted.
INSERT INTO deleted_events (id, pubkey)
SELECT DISTINCT lower(t ->> 1), e.pubkey FROM events e, json_array_elements(e.tags::json) AS t
WHERE e.kind = 5 AND t ->> 0 = 'e' AND json_array_length(t) >= 2 AND t ->> 1 ~ '^[0-9a-fA-F]{64}$';
INSERT INTO deleted_addresses (address, until)
SELECT a.address, max(a.created_at) FROM (
    SELECT split_part(t ->> 1, ':', 1)::INTEGER || ':' || e.pubkey || ':'
        || substr(t ->> 1, length(split_part(t ->> 1, ':', 1)) + 67) AS address, e.created_at
    FROM events e, json_array_elements(e.tags::json) AS t
    WHERE e.kind = 5 AND t ->> 0 = 'a' AND json_array_length(t) >= 2
    AND lower(split_part(t ->> 1, ':', 2)) = e.pubkey
    AND split_part(t ->> 1, ':', 1) ~ '^[0-9]{1,5}$'
    AND split_part(t ->> 1, ':', 1)::INTEGER BETWEEN 0 AND 65535
    AND substr(t ->> 1, length(split_part(t ->> 1, ':', 1)) + 66, 1) = ':') AS a
GROUP BY a.address;

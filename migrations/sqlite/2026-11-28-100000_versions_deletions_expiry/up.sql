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
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
UPDATE events SET address = kind || ':' || pubkey || ':' || COALESCE((
    SELECT json_extract(value, '$[1]') FROM json_each(events.tags)
    WHERE json_extract(value, '$[0]') = 'd' AND json_array_length(value) >= 2
    ORDER BY key LIMIT 1), '')
WHERE kind BETWEEN 30000 AND 39999;
UPDATE events SET expires_at = (
    SELECT CASE WHEN trim(json_extract(value, '$[1]')) NOT GLOB '*[^0-9]*'
        AND length(trim(json_extract(value, '$[1]'))) BETWEEN 1 AND 18
        THEN CAST(trim(json_extract(value, '$[1]')) AS INTEGER) END
    FROM json_each(events.tags)
    WHERE json_extract(value, '$[0]') = 'expiration' AND json_array_length(value) >= 2
    ORDER BY key LIMIT 1)
WHERE tags LIKE '%"expiration"%';
-- A generic repost of an address only counted nothing before; it counts now: leave it
-- to the start-up backlog, like any event whose contribution is not applied yet.
UPDATE events SET aggregated = 0
WHERE kind = 16 AND tags LIKE '%["a",%' AND NOT EXISTS (
    SELECT 1 FROM json_each(events.tags) AS t
    WHERE json_extract(t.value, '$[0]') = 'e' AND json_array_length(t.value) >= 2
    AND length(json_extract(t.value, '$[1]')) = 64
    AND json_extract(t.value, '$[1]') NOT GLOB '*[^0-9a-fA-F]*');
-- Superseded versions go (none of these kinds counts toward an aggregate).
INSERT INTO replaceable_heads (address, created_at, id)
SELECT address, created_at, id FROM (
    SELECT address, created_at, id,
        row_number() OVER (PARTITION BY address ORDER BY created_at DESC, id) AS r
    FROM events WHERE address IS NOT NULL)
WHERE r = 1;
DELETE FROM events WHERE address IS NOT NULL
AND NOT EXISTS (SELECT 1 FROM replaceable_heads h WHERE h.address = events.address AND h.id = events.id);
-- Stored deletions become tombstones; the start-up sweep removes their targets and
-- retracts what those counted.
INSERT OR IGNORE INTO deleted_events (id, pubkey)
SELECT lower(json_extract(t.value, '$[1]')), e.pubkey FROM events e, json_each(e.tags) AS t
WHERE e.kind = 5 AND json_extract(t.value, '$[0]') = 'e' AND json_array_length(t.value) >= 2
AND length(json_extract(t.value, '$[1]')) = 64;
INSERT INTO deleted_addresses (address, until)
SELECT address, max(created_at) FROM (
    SELECT CAST(substr(v, 1, instr(v, ':') - 1) AS INTEGER) || ':' || e.pubkey || ':'
        || substr(v, instr(v, ':') + 66) AS address, e.created_at AS created_at
    FROM events e, (SELECT json_extract(value, '$[1]') AS v, json_extract(value, '$[0]') AS name,
                    json_array_length(value) AS n, events.seq AS seq
                    FROM events, json_each(events.tags) WHERE events.kind = 5) AS t
    WHERE e.seq = t.seq AND t.name = 'a' AND t.n >= 2
    AND instr(v, ':') BETWEEN 2 AND 6 AND substr(v, 1, instr(v, ':') - 1) NOT GLOB '*[^0-9]*'
    AND lower(substr(v, instr(v, ':') + 1, 65)) = e.pubkey || ':')
GROUP BY address;

-- Per second of `created_at` and kind: how many events are stored and the sum of
-- their ids, as eight 32-bit limbs whose carries are left pending (each id read as a
-- little-endian 256-bit number: src/nostr/fingerprint.rs). Every write transaction
-- that inserts or removes events adds or subtracts its own, so NIP-77 reconciliation
-- takes the fingerprint of whole seconds from here instead of reading the events.
CREATE TABLE fingerprints (
    second BIGINT NOT NULL,
    kind INTEGER NOT NULL,
    n BIGINT NOT NULL,
    l0 BIGINT NOT NULL,
    l1 BIGINT NOT NULL,
    l2 BIGINT NOT NULL,
    l3 BIGINT NOT NULL,
    l4 BIGINT NOT NULL,
    l5 BIGINT NOT NULL,
    l6 BIGINT NOT NULL,
    l7 BIGINT NOT NULL,
    PRIMARY KEY (second, kind)
);
-- The events stored before.
INSERT INTO fingerprints (second, kind, n, l0, l1, l2, l3, l4, l5, l6, l7)
SELECT created_at, kind, count(*), sum(l0), sum(l1), sum(l2), sum(l3), sum(l4), sum(l5), sum(l6), sum(l7)
FROM (SELECT created_at, kind,
        ((instr('0123456789abcdef', substr(id, 1, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 2, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(id, 3, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 4, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(id, 5, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 6, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(id, 7, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 8, 1)) - 1)) * 16777216 AS l0,
        ((instr('0123456789abcdef', substr(id, 9, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 10, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(id, 11, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 12, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(id, 13, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 14, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(id, 15, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 16, 1)) - 1)) * 16777216 AS l1,
        ((instr('0123456789abcdef', substr(id, 17, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 18, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(id, 19, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 20, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(id, 21, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 22, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(id, 23, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 24, 1)) - 1)) * 16777216 AS l2,
        ((instr('0123456789abcdef', substr(id, 25, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 26, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(id, 27, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 28, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(id, 29, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 30, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(id, 31, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 32, 1)) - 1)) * 16777216 AS l3,
        ((instr('0123456789abcdef', substr(id, 33, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 34, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(id, 35, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 36, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(id, 37, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 38, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(id, 39, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 40, 1)) - 1)) * 16777216 AS l4,
        ((instr('0123456789abcdef', substr(id, 41, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 42, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(id, 43, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 44, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(id, 45, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 46, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(id, 47, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 48, 1)) - 1)) * 16777216 AS l5,
        ((instr('0123456789abcdef', substr(id, 49, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 50, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(id, 51, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 52, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(id, 53, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 54, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(id, 55, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 56, 1)) - 1)) * 16777216 AS l6,
        ((instr('0123456789abcdef', substr(id, 57, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 58, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(id, 59, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 60, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(id, 61, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 62, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(id, 63, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 64, 1)) - 1)) * 16777216 AS l7
      FROM events) AS limbs
GROUP BY created_at, kind;

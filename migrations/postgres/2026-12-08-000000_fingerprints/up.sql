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
        ('x' || substr(id, 7, 2) || substr(id, 5, 2) || substr(id, 3, 2) || substr(id, 1, 2))::bit(32)::bigint AS l0,
        ('x' || substr(id, 15, 2) || substr(id, 13, 2) || substr(id, 11, 2) || substr(id, 9, 2))::bit(32)::bigint AS l1,
        ('x' || substr(id, 23, 2) || substr(id, 21, 2) || substr(id, 19, 2) || substr(id, 17, 2))::bit(32)::bigint AS l2,
        ('x' || substr(id, 31, 2) || substr(id, 29, 2) || substr(id, 27, 2) || substr(id, 25, 2))::bit(32)::bigint AS l3,
        ('x' || substr(id, 39, 2) || substr(id, 37, 2) || substr(id, 35, 2) || substr(id, 33, 2))::bit(32)::bigint AS l4,
        ('x' || substr(id, 47, 2) || substr(id, 45, 2) || substr(id, 43, 2) || substr(id, 41, 2))::bit(32)::bigint AS l5,
        ('x' || substr(id, 55, 2) || substr(id, 53, 2) || substr(id, 51, 2) || substr(id, 49, 2))::bit(32)::bigint AS l6,
        ('x' || substr(id, 63, 2) || substr(id, 61, 2) || substr(id, 59, 2) || substr(id, 57, 2))::bit(32)::bigint AS l7
      FROM events) AS limbs
GROUP BY created_at, kind;

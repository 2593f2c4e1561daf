-- The fingerprints of what each relay is known to hold: the rows of relay 0 are, as
-- before, those of every stored event; the rows of a relay (`relay_ids`) are those
-- of the stored events it delivered (`event_relays`). Kept in the same transactions,
-- so a reconciliation with a relay answers from what that relay sent us and costs
-- what differs, not what other relays gave us.
CREATE TABLE relay_fingerprints (
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
    relay_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (relay_id, second, kind)
);
INSERT INTO relay_fingerprints (relay_id, second, kind, n, l0, l1, l2, l3, l4, l5, l6, l7)
SELECT 0, second, kind, n, l0, l1, l2, l3, l4, l5, l6, l7 FROM fingerprints;
DROP TABLE fingerprints;
ALTER TABLE relay_fingerprints RENAME TO fingerprints;
-- The events each relay delivered before.
INSERT INTO fingerprints (relay_id, second, kind, n, l0, l1, l2, l3, l4, l5, l6, l7)
SELECT relay_id, created_at, kind, count(*), sum(l0), sum(l1), sum(l2), sum(l3), sum(l4), sum(l5), sum(l6), sum(l7)
FROM (SELECT er.relay_id, e.created_at, e.kind,
        ((instr('0123456789abcdef', substr(e.id, 1, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 2, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(e.id, 3, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 4, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(e.id, 5, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 6, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(e.id, 7, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 8, 1)) - 1)) * 16777216 AS l0,
        ((instr('0123456789abcdef', substr(e.id, 9, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 10, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(e.id, 11, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 12, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(e.id, 13, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 14, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(e.id, 15, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 16, 1)) - 1)) * 16777216 AS l1,
        ((instr('0123456789abcdef', substr(e.id, 17, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 18, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(e.id, 19, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 20, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(e.id, 21, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 22, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(e.id, 23, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 24, 1)) - 1)) * 16777216 AS l2,
        ((instr('0123456789abcdef', substr(e.id, 25, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 26, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(e.id, 27, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 28, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(e.id, 29, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 30, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(e.id, 31, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 32, 1)) - 1)) * 16777216 AS l3,
        ((instr('0123456789abcdef', substr(e.id, 33, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 34, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(e.id, 35, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 36, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(e.id, 37, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 38, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(e.id, 39, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 40, 1)) - 1)) * 16777216 AS l4,
        ((instr('0123456789abcdef', substr(e.id, 41, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 42, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(e.id, 43, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 44, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(e.id, 45, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 46, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(e.id, 47, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 48, 1)) - 1)) * 16777216 AS l5,
        ((instr('0123456789abcdef', substr(e.id, 49, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 50, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(e.id, 51, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 52, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(e.id, 53, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 54, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(e.id, 55, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 56, 1)) - 1)) * 16777216 AS l6,
        ((instr('0123456789abcdef', substr(e.id, 57, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 58, 1)) - 1)) * 1 + ((instr('0123456789abcdef', substr(e.id, 59, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 60, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(e.id, 61, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 62, 1)) - 1)) * 65536 + ((instr('0123456789abcdef', substr(e.id, 63, 1)) - 1) * 16 + (instr('0123456789abcdef', substr(e.id, 64, 1)) - 1)) * 16777216 AS l7
      FROM events e JOIN event_relays er ON er.event_seq = e.seq) AS limbs
GROUP BY relay_id, created_at, kind;

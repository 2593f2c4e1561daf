-- The fingerprints of what each relay is known to hold: the rows of relay 0 are, as
-- before, those of every stored event; the rows of a relay (`relay_ids`) are those
-- of the stored events it delivered (`event_relays`). Kept in the same transactions,
-- so a reconciliation with a relay answers from what that relay sent us and costs
-- what differs, not what other relays gave us.
ALTER TABLE fingerprints ADD COLUMN relay_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE fingerprints DROP CONSTRAINT fingerprints_pkey;
ALTER TABLE fingerprints ADD PRIMARY KEY (relay_id, second, kind);
-- The events each relay delivered before.
INSERT INTO fingerprints (relay_id, second, kind, n, l0, l1, l2, l3, l4, l5, l6, l7)
SELECT relay_id, created_at, kind, count(*), sum(l0), sum(l1), sum(l2), sum(l3), sum(l4), sum(l5), sum(l6), sum(l7)
FROM (SELECT er.relay_id, e.created_at, e.kind,
        ('x' || substr(e.id, 7, 2) || substr(e.id, 5, 2) || substr(e.id, 3, 2) || substr(e.id, 1, 2))::bit(32)::bigint AS l0,
        ('x' || substr(e.id, 15, 2) || substr(e.id, 13, 2) || substr(e.id, 11, 2) || substr(e.id, 9, 2))::bit(32)::bigint AS l1,
        ('x' || substr(e.id, 23, 2) || substr(e.id, 21, 2) || substr(e.id, 19, 2) || substr(e.id, 17, 2))::bit(32)::bigint AS l2,
        ('x' || substr(e.id, 31, 2) || substr(e.id, 29, 2) || substr(e.id, 27, 2) || substr(e.id, 25, 2))::bit(32)::bigint AS l3,
        ('x' || substr(e.id, 39, 2) || substr(e.id, 37, 2) || substr(e.id, 35, 2) || substr(e.id, 33, 2))::bit(32)::bigint AS l4,
        ('x' || substr(e.id, 47, 2) || substr(e.id, 45, 2) || substr(e.id, 43, 2) || substr(e.id, 41, 2))::bit(32)::bigint AS l5,
        ('x' || substr(e.id, 55, 2) || substr(e.id, 53, 2) || substr(e.id, 51, 2) || substr(e.id, 49, 2))::bit(32)::bigint AS l6,
        ('x' || substr(e.id, 63, 2) || substr(e.id, 61, 2) || substr(e.id, 59, 2) || substr(e.id, 57, 2))::bit(32)::bigint AS l7
      FROM events e JOIN event_relays er ON er.event_seq = e.seq) AS limbs
GROUP BY relay_id, created_at, kind;

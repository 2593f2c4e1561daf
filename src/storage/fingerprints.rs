//! The `fingerprints` table's queries (see its migration and
//! `crate::nostr::fingerprint`): sums over spans of seconds for reconciliation, and
//! the recount from the events that checks and repairs it. The id's limbs are read
//! from its hex in SQL, so a recount moves no event through the service.

use diesel::sql_types::BigInt;

use crate::nostr::fingerprint::IdSum;

/// Spans per statement of [`PG_SPAN_SUMS`] and [`SQLITE_SPAN_SUMS`].
pub(crate) const SPANS_PER_QUERY: usize = 1_000;

/// Per span `[$1[i], $2[i])` of seconds, the sums of relay `$4`'s rows (0: every
/// stored event) of kinds `$3` (all when empty), one row per span in order. Each span is its own range scan of the
/// primary key (`LATERAL`): as a join, the planner scanned the table once per span.
pub(crate) const PG_SPAN_SUMS: &str =
    "SELECT r.i, s.* FROM unnest($1::BIGINT[], $2::BIGINT[]) WITH ORDINALITY AS r(lo, \
     hi, i) CROSS JOIN LATERAL (SELECT COALESCE(sum(f.n), 0)::BIGINT AS n, \
     COALESCE(sum(f.l0), 0)::BIGINT AS l0, COALESCE(sum(f.l1), 0)::BIGINT AS l1, \
     COALESCE(sum(f.l2), 0)::BIGINT AS l2, COALESCE(sum(f.l3), 0)::BIGINT AS l3, \
     COALESCE(sum(f.l4), 0)::BIGINT AS l4, COALESCE(sum(f.l5), 0)::BIGINT AS l5, \
     COALESCE(sum(f.l6), 0)::BIGINT AS l6, COALESCE(sum(f.l7), 0)::BIGINT AS l7 FROM \
     fingerprints f WHERE f.relay_id = $4 AND f.second >= r.lo AND f.second < r.hi AND \
     (cardinality($3::INT[]) = 0 OR f.kind = ANY($3)) OFFSET 0) AS s ORDER BY r.i";

/// As [`PG_SPAN_SUMS`]; the spans are a JSON array of `[from, to]`, the kinds one of
/// numbers, the relay `?3`.
pub(crate) const SQLITE_SPAN_SUMS: &str =
    "WITH r(i, lo, hi) AS (SELECT key, json_extract(value, '$[0]'), \
     json_extract(value, '$[1]') FROM json_each(?1)) SELECT r.i AS i, \
     COALESCE(sum(f.n), 0) AS n, COALESCE(sum(f.l0), 0) AS l0, COALESCE(sum(f.l1), 0) \
     AS l1, COALESCE(sum(f.l2), 0) AS l2, COALESCE(sum(f.l3), 0) AS l3, \
     COALESCE(sum(f.l4), 0) AS l4, COALESCE(sum(f.l5), 0) AS l5, COALESCE(sum(f.l6), \
     0) AS l6, COALESCE(sum(f.l7), 0) AS l7 FROM r LEFT JOIN fingerprints f ON \
     f.relay_id = ?3 AND f.second >= r.lo AND f.second < r.hi AND (?2 = '[]' OR f.kind IN (SELECT value \
     FROM json_each(?2))) GROUP BY r.i ORDER BY r.i";

/// `(created_at, id)` of the events of kinds `$3` (all when empty) dated within any
/// span `[$1[i], $2[i])` that relay `$4` delivered (0: every stored event): through
/// the fingerprint rows of those seconds and kinds, so that each is a lookup of
/// `events (kind, created_at)`, with or without kinds.
/// (`LATERAL … OFFSET 0`, which the planner cannot flatten: as a join, the prepared
/// statement's generic plan scanned `events` whole, 500 ms for 200k events.)
pub(crate) const PG_SPAN_IDS: &str = "SELECT e.created_at, e.id \
     FROM unnest($1::BIGINT[], $2::BIGINT[]) AS r(lo, hi) \
     CROSS JOIN LATERAL (SELECT f.second, f.kind FROM fingerprints f \
     WHERE f.relay_id = $4 AND f.second >= r.lo AND f.second < r.hi AND f.n > 0 \
     AND (cardinality($3::INT[]) = 0 OR f.kind = ANY($3)) OFFSET 0) AS f \
     CROSS JOIN LATERAL (SELECT e.created_at, e.id FROM events e \
     WHERE e.kind = f.kind AND e.created_at = f.second AND ($4 = 0 OR EXISTS \
     (SELECT 1 FROM event_relays er WHERE er.event_seq = e.seq AND er.relay_id = $4)) \
     OFFSET 0) AS e";

/// Per second within `[$1, $2)` with relay `$5`'s rows (0: every stored event) of
/// kinds `$3` (all when empty), in order, at most `$4`: the sums of its rows, packed
/// in one value ([`PackedSecond`]).
pub(crate) const PG_SECONDS: &str = "SELECT f.second AS i, int8send(sum(f.n)::BIGINT) \
     || int8send(sum(f.l0)::BIGINT) || int8send(sum(f.l1)::BIGINT) \
     || int8send(sum(f.l2)::BIGINT) || int8send(sum(f.l3)::BIGINT) \
     || int8send(sum(f.l4)::BIGINT) || int8send(sum(f.l5)::BIGINT) \
     || int8send(sum(f.l6)::BIGINT) || int8send(sum(f.l7)::BIGINT) AS sums \
     FROM fingerprints f WHERE f.relay_id = $5 AND f.second >= $1 AND f.second < $2 \
     AND f.n > 0 AND (cardinality($3::INT[]) = 0 OR f.kind = ANY($3)) \
     GROUP BY f.second ORDER BY f.second LIMIT $4";

/// As [`PG_SECONDS`], the kinds a JSON array.
pub(crate) const SQLITE_SECONDS: &str = "SELECT f.second AS i, COALESCE(sum(f.n), 0) AS n, \
     COALESCE(sum(f.l0), 0) AS l0, COALESCE(sum(f.l1), 0) AS l1, \
     COALESCE(sum(f.l2), 0) AS l2, COALESCE(sum(f.l3), 0) AS l3, \
     COALESCE(sum(f.l4), 0) AS l4, COALESCE(sum(f.l5), 0) AS l5, \
     COALESCE(sum(f.l6), 0) AS l6, COALESCE(sum(f.l7), 0) AS l7 \
     FROM fingerprints f WHERE f.relay_id = ?5 AND f.second >= ?1 AND f.second < ?2 \
     AND f.n > 0 AND (?3 = '[]' OR f.kind IN (SELECT value FROM json_each(?3))) \
     GROUP BY f.second ORDER BY f.second LIMIT ?4";

/// As [`PG_SPAN_IDS`], with the spans and kinds as JSON arrays, the relay `?3`.
pub(crate) const SQLITE_SPAN_IDS: &str = "WITH r(lo, hi) AS (SELECT json_extract(value, '$[0]'), \
     json_extract(value, '$[1]') FROM json_each(?1)) \
     SELECT e.created_at, e.id FROM r \
     JOIN fingerprints f ON f.relay_id = ?3 AND f.second >= r.lo AND f.second < r.hi \
     AND f.n > 0 AND (?2 = '[]' OR f.kind IN (SELECT value FROM json_each(?2))) \
     JOIN events e ON e.kind = f.kind AND e.created_at = f.second \
     WHERE ?3 = 0 OR EXISTS (SELECT 1 FROM event_relays er \
     WHERE er.event_seq = e.seq AND er.relay_id = ?3)";

/// One event's `(created_at, id)`, for `sql_query`.
#[derive(Debug, diesel::QueryableByName)]
pub(crate) struct Dated {
    #[diesel(sql_type = BigInt)]
    pub(crate) created_at: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub(crate) id: String,
}

/// The rows of relay `$relay` recounted from `$from` (the events, or the events joined
/// to the provenance rows), as PostgreSQL reads the limbs from an id's hex (the same as
/// the migrations').
macro_rules! pg_recount {
    ($relay:literal, $from:literal) => {
        concat!("SELECT relay_id, created_at AS second, kind, count(*)::BIGINT AS n, sum(l0)::BIGINT AS l0, \
         sum(l1)::BIGINT AS l1, sum(l2)::BIGINT AS l2, sum(l3)::BIGINT AS l3, sum(l4)::BIGINT \
         AS l4, sum(l5)::BIGINT AS l5, sum(l6)::BIGINT AS l6, sum(l7)::BIGINT AS l7 FROM \
         (SELECT ", $relay, " AS relay_id, created_at, kind, ('x' || substr(id, 7, 2) || substr(id, 5, 2) || substr(id, \
         3, 2) || substr(id, 1, 2))::bit(32)::bigint AS l0, ('x' || substr(id, 15, 2) || \
         substr(id, 13, 2) || substr(id, 11, 2) || substr(id, 9, 2))::bit(32)::bigint AS l1, \
         ('x' || substr(id, 23, 2) || substr(id, 21, 2) || substr(id, 19, 2) || substr(id, \
         17, 2))::bit(32)::bigint AS l2, ('x' || substr(id, 31, 2) || substr(id, 29, 2) || \
         substr(id, 27, 2) || substr(id, 25, 2))::bit(32)::bigint AS l3, ('x' || substr(id, \
         39, 2) || substr(id, 37, 2) || substr(id, 35, 2) || substr(id, 33, \
         2))::bit(32)::bigint AS l4, ('x' || substr(id, 47, 2) || substr(id, 45, 2) || \
         substr(id, 43, 2) || substr(id, 41, 2))::bit(32)::bigint AS l5, ('x' || substr(id, \
         55, 2) || substr(id, 53, 2) || substr(id, 51, 2) || substr(id, 49, \
         2))::bit(32)::bigint AS l6, ('x' || substr(id, 63, 2) || substr(id, 61, 2) || \
         substr(id, 59, 2) || substr(id, 57, 2))::bit(32)::bigint AS l7 FROM ", $from, ") AS limbs \
         GROUP BY relay_id, created_at, kind")
    };
}

/// As `pg_recount!`: SQLite has no hex parsing, so each digit is looked up.
macro_rules! sqlite_recount {
    ($relay:literal, $from:literal) => {
        concat!("SELECT relay_id, created_at AS second, kind, count(*) AS n, sum(l0) AS l0, sum(l1) AS l1, \
         sum(l2) AS l2, sum(l3) AS l3, sum(l4) AS l4, sum(l5) AS l5, sum(l6) AS l6, sum(l7) \
         AS l7 FROM (SELECT ", $relay, " AS relay_id, created_at, kind, ((instr('0123456789abcdef', substr(id, 1, 1)) - \
         1) * 16 + (instr('0123456789abcdef', substr(id, 2, 1)) - 1)) * 1 + \
         ((instr('0123456789abcdef', substr(id, 3, 1)) - 1) * 16 + (instr('0123456789abcdef', \
         substr(id, 4, 1)) - 1)) * 256 + ((instr('0123456789abcdef', substr(id, 5, 1)) - 1) * \
         16 + (instr('0123456789abcdef', substr(id, 6, 1)) - 1)) * 65536 + \
         ((instr('0123456789abcdef', substr(id, 7, 1)) - 1) * 16 + (instr('0123456789abcdef', \
         substr(id, 8, 1)) - 1)) * 16777216 AS l0, ((instr('0123456789abcdef', substr(id, 9, \
         1)) - 1) * 16 + (instr('0123456789abcdef', substr(id, 10, 1)) - 1)) * 1 + \
         ((instr('0123456789abcdef', substr(id, 11, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 12, 1)) - 1)) * 256 + \
         ((instr('0123456789abcdef', substr(id, 13, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 14, 1)) - 1)) * 65536 + \
         ((instr('0123456789abcdef', substr(id, 15, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 16, 1)) - 1)) * 16777216 AS l1, \
         ((instr('0123456789abcdef', substr(id, 17, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 18, 1)) - 1)) * 1 + \
         ((instr('0123456789abcdef', substr(id, 19, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 20, 1)) - 1)) * 256 + \
         ((instr('0123456789abcdef', substr(id, 21, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 22, 1)) - 1)) * 65536 + \
         ((instr('0123456789abcdef', substr(id, 23, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 24, 1)) - 1)) * 16777216 AS l2, \
         ((instr('0123456789abcdef', substr(id, 25, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 26, 1)) - 1)) * 1 + \
         ((instr('0123456789abcdef', substr(id, 27, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 28, 1)) - 1)) * 256 + \
         ((instr('0123456789abcdef', substr(id, 29, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 30, 1)) - 1)) * 65536 + \
         ((instr('0123456789abcdef', substr(id, 31, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 32, 1)) - 1)) * 16777216 AS l3, \
         ((instr('0123456789abcdef', substr(id, 33, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 34, 1)) - 1)) * 1 + \
         ((instr('0123456789abcdef', substr(id, 35, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 36, 1)) - 1)) * 256 + \
         ((instr('0123456789abcdef', substr(id, 37, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 38, 1)) - 1)) * 65536 + \
         ((instr('0123456789abcdef', substr(id, 39, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 40, 1)) - 1)) * 16777216 AS l4, \
         ((instr('0123456789abcdef', substr(id, 41, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 42, 1)) - 1)) * 1 + \
         ((instr('0123456789abcdef', substr(id, 43, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 44, 1)) - 1)) * 256 + \
         ((instr('0123456789abcdef', substr(id, 45, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 46, 1)) - 1)) * 65536 + \
         ((instr('0123456789abcdef', substr(id, 47, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 48, 1)) - 1)) * 16777216 AS l5, \
         ((instr('0123456789abcdef', substr(id, 49, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 50, 1)) - 1)) * 1 + \
         ((instr('0123456789abcdef', substr(id, 51, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 52, 1)) - 1)) * 256 + \
         ((instr('0123456789abcdef', substr(id, 53, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 54, 1)) - 1)) * 65536 + \
         ((instr('0123456789abcdef', substr(id, 55, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 56, 1)) - 1)) * 16777216 AS l6, \
         ((instr('0123456789abcdef', substr(id, 57, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 58, 1)) - 1)) * 1 + \
         ((instr('0123456789abcdef', substr(id, 59, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 60, 1)) - 1)) * 256 + \
         ((instr('0123456789abcdef', substr(id, 61, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 62, 1)) - 1)) * 65536 + \
         ((instr('0123456789abcdef', substr(id, 63, 1)) - 1) * 16 + \
         (instr('0123456789abcdef', substr(id, 64, 1)) - 1)) * 16777216 AS l7 FROM ", $from, ") AS \
         limbs GROUP BY relay_id, created_at, kind")
    };
}

/// Every relay's rows: 0's from the events, the others' from the provenance rows of
/// stored events.
macro_rules! all_recounted {
    ($recount:ident) => {
        concat!(
            $recount!("0", "events"),
            " UNION ALL ",
            $recount!("relay_id", "events JOIN event_relays ON event_seq = seq")
        )
    };
}

/// Over a recount `r`: how many rows it has, and how many rows of the table differ
/// from it (a row of zeros counts as absent).
macro_rules! check_against_recount {
    () => {
        "SELECT (SELECT count(*) FROM r) AS recounted, (SELECT count(*) FROM r FULL OUTER \
         JOIN fingerprints f ON f.relay_id = r.relay_id AND f.second = r.second AND f.kind = \
         r.kind WHERE COALESCE(r.n, \
         0) <> COALESCE(f.n, 0) OR COALESCE(r.l0, 0) <> COALESCE(f.l0, 0) OR COALESCE(r.l1, \
         0) <> COALESCE(f.l1, 0) OR COALESCE(r.l2, 0) <> COALESCE(f.l2, 0) OR COALESCE(r.l3, \
         0) <> COALESCE(f.l3, 0) OR COALESCE(r.l4, 0) <> COALESCE(f.l4, 0) OR COALESCE(r.l5, \
         0) <> COALESCE(f.l5, 0) OR COALESCE(r.l6, 0) <> COALESCE(f.l6, 0) OR COALESCE(r.l7, \
         0) <> COALESCE(f.l7, 0)) AS differing"
    };
}

pub(crate) const PG_CHECK: &str = concat!(
    "WITH r AS (",
    all_recounted!(pg_recount),
    ") ",
    check_against_recount!()
);

pub(crate) const SQLITE_CHECK: &str = concat!(
    "WITH r AS (",
    all_recounted!(sqlite_recount),
    ") ",
    check_against_recount!()
);

/// The table rewritten from the recount (emptied first by the caller).
pub(crate) const PG_RECOUNT: &str = concat!(
    "INSERT INTO fingerprints (relay_id, second, kind, n, l0, l1, l2, l3, l4, l5, l6, l7) ",
    all_recounted!(pg_recount)
);

pub(crate) const SQLITE_RECOUNT: &str = concat!(
    "INSERT INTO fingerprints (relay_id, second, kind, n, l0, l1, l2, l3, l4, l5, l6, l7) ",
    all_recounted!(sqlite_recount)
);

/// One span's (or second's, `i`) sums.
#[derive(Debug, diesel::QueryableByName)]
pub(crate) struct SpanSum {
    #[diesel(sql_type = BigInt)]
    pub(crate) i: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    l0: i64,
    #[diesel(sql_type = BigInt)]
    l1: i64,
    #[diesel(sql_type = BigInt)]
    l2: i64,
    #[diesel(sql_type = BigInt)]
    l3: i64,
    #[diesel(sql_type = BigInt)]
    l4: i64,
    #[diesel(sql_type = BigInt)]
    l5: i64,
    #[diesel(sql_type = BigInt)]
    l6: i64,
    #[diesel(sql_type = BigInt)]
    l7: i64,
}

/// One second's sums as [`PG_SECONDS`] packs them: the count and the eight limbs, each
/// a big-endian BIGINT, in one value. A reconciliation's first read takes up to 200,000
/// such rows; ten columns, each found by name, cost twice as much to decode.
#[derive(Debug, diesel::QueryableByName)]
pub(crate) struct PackedSecond {
    #[diesel(sql_type = BigInt)]
    pub(crate) i: i64,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    sums: Vec<u8>,
}

impl PackedSecond {
    pub(crate) fn sum(&self) -> Result<IdSum, diesel::result::Error> {
        let mut values = [0i64; 9];
        if self.sums.len() != 8 * values.len() {
            return Err(diesel::result::Error::DeserializationError(
                format!("{} bytes of packed sums, not 72", self.sums.len()).into(),
            ));
        }
        for (value, bytes) in values.iter_mut().zip(self.sums.chunks_exact(8)) {
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            *value = i64::from_be_bytes(be);
        }
        let [count, limbs @ ..] = values;
        Ok(IdSum { count, limbs })
    }
}

impl SpanSum {
    pub(crate) fn sum(&self) -> IdSum {
        IdSum {
            count: self.n,
            limbs: [
                self.l0, self.l1, self.l2, self.l3, self.l4, self.l5, self.l6, self.l7,
            ],
        }
    }
}

/// The recount's and the check's two numbers.
#[derive(Debug, diesel::QueryableByName)]
pub(crate) struct Checked {
    #[diesel(sql_type = BigInt)]
    pub(crate) recounted: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) differing: i64,
}

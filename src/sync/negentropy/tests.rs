//! Our initiator against the protocol's reference responder (the `negentropy` crate,
//! as relays run it); the expected result is the plain set difference.

use std::collections::{BTreeSet, HashSet};

use negentropy::{Id as RefId, Negentropy, NegentropyStorageVector};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;

/// Our items in memory, answering as the database would, counting what it reads.
struct Memory {
    items: BTreeSet<(u64, Id)>,
    rows: u64,
    /// Of those, ids looked up.
    looked_up: u64,
    /// Whether it answers `seconds` (as for a window of few seconds) or not (as for
    /// one of too many).
    keep_seconds: bool,
}

impl Source for Memory {
    type Error = std::convert::Infallible;

    async fn sums(&mut self, spans: &[(u64, u64)]) -> Result<Vec<IdSum>, Self::Error> {
        Ok(spans
            .iter()
            .map(|&(from, to)| {
                let mut sum = IdSum::default();
                self.items
                    .range((from, [0; 32])..(to, [0; 32]))
                    .for_each(|(_, id)| sum.add(&IdSum::of(id)));
                sum
            })
            .collect())
    }

    async fn ids(&mut self, spans: &[(u64, u64)]) -> Result<Vec<(u64, Id)>, Self::Error> {
        let found: Vec<(u64, Id)> = spans
            .iter()
            .flat_map(|&(from, to)| self.items.range((from, [0; 32])..(to, [0; 32])))
            .copied()
            .collect();
        self.rows += found.len() as u64;
        Ok(found)
    }

    async fn seconds(
        &mut self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Option<Vec<(u64, IdSum)>>, Self::Error> {
        if !self.keep_seconds {
            return Ok(None);
        }
        let mut rows: Vec<(u64, IdSum)> = Vec::new();
        for (at, id) in self.items.range((from, [0; 32])..(to, [0; 32])) {
            match rows.last_mut() {
                Some((last, sum)) if last == at => sum.add(&IdSum::of(id)),
                _ => rows.push((*at, IdSum::of(id))),
            }
        }
        Ok((rows.len() <= limit).then_some(rows))
    }

    async fn held(&mut self, ids: &[Id]) -> Result<HashSet<Id>, Self::Error> {
        self.rows += ids.len() as u64;
        self.looked_up += ids.len() as u64;
        let held: HashSet<&Id> = self.items.iter().map(|(_, id)| id).collect();
        Ok(ids.iter().filter(|id| held.contains(id)).copied().collect())
    }
}

struct Outcome {
    need: HashSet<Id>,
    rows: u64,
    looked_up: u64,
    rounds: usize,
}

/// Reconciles `ours` (the database's items, some outside the window) with a relay
/// holding `theirs`, over the window `[since, until]`.
fn reconcile(
    ours: &BTreeSet<(u64, Id)>,
    theirs: &BTreeSet<(u64, Id)>,
    (since, until): (u64, u64),
    frame_limit: u64,
    keep_seconds: bool,
) -> Outcome {
    // The relay applies the filter's window to what it holds.
    let mut storage = NegentropyStorageVector::new();
    for (at, id) in theirs.iter().filter(|(at, _)| (since..=until).contains(at)) {
        storage.insert(*at, RefId::from_byte_array(*id)).unwrap();
    }
    storage.seal().unwrap();
    let mut relay = Negentropy::owned(storage, frame_limit).unwrap();
    let mut src = Memory {
        items: ours.clone(),
        rows: 0,
        looked_up: 0,
        keep_seconds,
    };
    let mut us = Initiator::new(since, until);
    futures::executor::block_on(async {
        let mut msg = us.open(&mut src).await.unwrap();
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 100, "no end in sight");
            assert!(msg.len() <= FRAME_LIMIT, "{} bytes", msg.len());
            let reply = relay.reconcile(&msg).unwrap();
            let answered = us.answer(&mut src, &reply).await.unwrap();
            match answered {
                Some(next) => msg = next,
                None => break,
            }
        }
        let need: Vec<Id> = us.take_need();
        let unique: HashSet<Id> = need.iter().copied().collect();
        assert_eq!(unique.len(), need.len(), "an id needed twice");
        Outcome {
            need: unique,
            rows: src.rows,
            looked_up: src.looked_up,
            rounds,
        }
    })
}

/// What the relay holds within the window and we do not: the oracle.
fn lacking(ours: &BTreeSet<(u64, Id)>, theirs: &BTreeSet<(u64, Id)>, w: (u64, u64)) -> HashSet<Id> {
    let held: HashSet<Id> = ours.iter().map(|(_, id)| *id).collect();
    theirs
        .iter()
        .filter(|(at, id)| (w.0..=w.1).contains(at) && !held.contains(id))
        .map(|(_, id)| *id)
        .collect()
}

/// `n` items dated from `start`, `per_second` to a second.
fn items(rng: &mut StdRng, n: usize, start: u64, per_second: usize) -> Vec<(u64, Id)> {
    (0..n)
        .map(|i| (start + (i / per_second) as u64, rng.random()))
        .collect()
}

#[test]
fn finds_exactly_what_the_relay_holds_and_we_lack() {
    let mut rng = StdRng::seed_from_u64(77);
    let base = items(&mut rng, 3_000, 1_000, 2);
    let dense = items(&mut rng, 2_000, 9_000, 400);
    let set = |v: &[(u64, Id)]| v.iter().copied().collect::<BTreeSet<_>>();
    let window = (0, 1_000_000);
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, BTreeSet<(u64, Id)>, BTreeSet<(u64, Id)>, (u64, u64))> = vec![
        ("the same", set(&base), set(&base), window),
        ("both empty", BTreeSet::new(), BTreeSet::new(), window),
        ("we hold nothing", BTreeSet::new(), set(&base), window),
        (
            "the relay holds nothing",
            set(&base),
            BTreeSet::new(),
            window,
        ),
        ("one missing, old", set(&base[1..]), set(&base), window),
        (
            "one missing, newest",
            set(&base[..2_999]),
            set(&base),
            window,
        ),
        (
            "every tenth missing",
            base.iter()
                .enumerate()
                .filter(|(i, _)| i % 10 != 0)
                .map(|(_, x)| *x)
                .collect(),
            set(&base),
            window,
        ),
        (
            "the relay holds half of ours",
            set(&base),
            base.iter().step_by(2).copied().collect(),
            window,
        ),
        (
            "each holds half",
            base.iter().step_by(2).copied().collect(),
            base.iter().skip(1).step_by(3).copied().collect(),
            window,
        ),
        (
            "400 to a second, some missing",
            dense.iter().step_by(3).copied().collect(),
            set(&dense),
            window,
        ),
        (
            "400 to a second, one missing",
            set(&dense[1..]),
            set(&dense),
            window,
        ),
        (
            "a window inside both",
            base.iter().step_by(2).copied().collect(),
            set(&base),
            (1_200, 1_900),
        ),
        (
            "a window of one second",
            set(&dense[..1_999]),
            set(&dense),
            (9_004, 9_004),
        ),
    ];
    for (name, ours, theirs, w) in cases {
        for (limit, keep) in [(0, true), (0, false), (4_096, true)] {
            let got = reconcile(&ours, &theirs, w, limit, keep);
            assert_eq!(
                got.need,
                lacking(&ours, &theirs, w),
                "{name}, frame limit {limit}, seconds kept: {keep}"
            );
        }
    }
}

#[test]
fn random_sets_reconcile_to_their_difference() {
    let mut rng = StdRng::seed_from_u64(5);
    for round in 0..40 {
        let span = rng.random_range(1..2_000u64);
        let n = rng.random_range(0..1_500usize);
        let all: Vec<(u64, Id)> = (0..n)
            .map(|_| (rng.random_range(0..span), rng.random()))
            .collect();
        let (p, q) = (rng.random_range(0.0..1.0), rng.random_range(0.0..1.0));
        let ours: BTreeSet<_> = all.iter().filter(|_| rng.random_bool(p)).copied().collect();
        let theirs: BTreeSet<_> = all.iter().filter(|_| rng.random_bool(q)).copied().collect();
        let lo = rng.random_range(0..span);
        let w = (lo, rng.random_range(lo..span + 10));
        let got = reconcile(&ours, &theirs, w, 0, round % 2 == 0);
        assert_eq!(got.need, lacking(&ours, &theirs, w), "round {round}");
    }
}

#[test]
fn one_old_event_costs_one_lookup_not_the_rest() {
    let mut rng = StdRng::seed_from_u64(9);
    // 200,000 items, two to a second; the relay holds one more, in an old second.
    let ours: BTreeSet<(u64, Id)> = items(&mut rng, 200_000, 1_000_000, 2).into_iter().collect();
    let extra = (1_000_500, rng.random());
    let mut theirs = ours.clone();
    theirs.insert(extra);
    let got = reconcile(&ours, &theirs, (0, 2_000_000), 0, false);
    assert_eq!(got.need, HashSet::from([extra.1]));
    // The sums name it: one id looked up, nothing else read.
    assert_eq!(
        (got.rows, got.looked_up),
        (1, 1),
        "rows read, ids looked up"
    );
    assert!(got.rounds <= 6, "{} rounds", got.rounds);
}

#[test]
fn an_opened_initiator_knows_whether_our_side_is_empty_in_the_window() {
    let mut rng = StdRng::seed_from_u64(10);
    let ours: BTreeSet<(u64, Id)> = items(&mut rng, 100, 1_000, 1).into_iter().collect();
    // (window, whether ours holds nothing in it), with and without kept seconds.
    for (window, empty) in [
        ((0, 999), true),
        ((1_000, 1_099), false),
        ((1_050, 1_050), false),
        ((1_100, 5_000), true),
    ] {
        for keep_seconds in [true, false] {
            let mut src = Memory {
                items: ours.clone(),
                rows: 0,
                looked_up: 0,
                keep_seconds,
            };
            let mut us = Initiator::new(window.0, window.1);
            futures::executor::block_on(us.open(&mut src)).unwrap();
            assert_eq!(us.holds_none(), empty, "{window:?}, kept {keep_seconds}");
        }
    }
}

/// A whole message of `ranges`, as the relay would read it.
fn encode(ranges: &[Range]) -> Vec<u8> {
    [vec![PROTOCOL_VERSION], encoded(0, ranges.iter()).0].concat()
}

#[test]
fn messages_round_trip() {
    let ranges = vec![
        Range {
            upper: Bound::second(1_700_000_000),
            body: Body::Skip,
        },
        Range {
            upper: Bound {
                at: 1_700_000_000,
                prefix: vec![0xab, 0x01],
            },
            body: Body::Fingerprint([7; 16]),
        },
        Range {
            upper: Bound::second(1_700_000_090),
            body: Body::IdList(vec![[1; 32], [2; 32]]),
        },
        Range {
            upper: Bound::second(u64::MAX),
            body: Body::IdList(Vec::new()),
        },
    ];
    assert_eq!(decode(&encode(&ranges)).unwrap(), ranges);
}

#[test]
fn malformed_messages_are_refused_not_followed() {
    let good = encode(&[Range {
        upper: Bound::second(5),
        body: Body::IdList(vec![[1; 32]]),
    }]);
    for (name, msg) in [
        ("empty", vec![]),
        ("another version", vec![0x62]),
        ("cut short", good[..good.len() - 1].to_vec()),
        ("unknown mode", vec![PROTOCOL_VERSION, 1, 0, 3]),
        ("a long prefix", vec![PROTOCOL_VERSION, 1, 33]),
        (
            "a huge count",
            vec![PROTOCOL_VERSION, 1, 0, 2, 0xff, 0xff, 0x7f],
        ),
        (
            "an endless varint",
            [vec![PROTOCOL_VERSION], vec![0xff; 20]].concat(),
        ),
    ] {
        assert!(decode(&msg).is_err(), "{name}");
    }
    assert!(decode(&good).is_ok());
}

#[test]
fn one_in_a_hundred_missing_costs_a_lookup_each() {
    let mut rng = StdRng::seed_from_u64(11);
    // A relay's share of the bench's 1M: about seven events to a second; we lack one
    // in a hundred, spread evenly.
    let theirs: BTreeSet<(u64, Id)> = (0..70_000u64)
        .map(|i| (1_000_000 + i * 10 / 73, rng.random()))
        .collect();
    let ours: BTreeSet<(u64, Id)> = theirs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 100 != 50)
        .map(|(_, x)| *x)
        .collect();
    let w = (0, 2_000_000);
    let got = reconcile(&ours, &theirs, w, 60_000, true);
    assert_eq!(got.need, lacking(&ours, &theirs, w));
    // 700 missing: each looked up once, and few items read besides (comparing the
    // relay's parts one by one read 60,271 rows of the 69,300).
    assert_eq!(got.looked_up, 700);
    assert!(got.rows <= 2_100, "read {} rows", got.rows);
    assert!(got.rounds <= 20, "{} rounds", got.rounds);
}

use super::*;

#[derive(Debug, Clone)]
struct Ev {
    id: usize,
    at: u64,
    kind: u16,
    author: String,
}

/// How the simulated relay misbehaves.
#[derive(Debug, Clone, Copy, Default)]
struct Quirks {
    cap: usize,
    ignores_limit: bool,
    ignores_until: bool,
    ignores_since: bool,
    shuffles: bool,
}

/// A relay as NIP-01 describes it, with quirks: newest first, ties by id.
fn answer(events: &[Ev], q: &Query, filter_kinds: &[u16], quirks: Quirks) -> Vec<Ev> {
    let kinds = q.kinds.as_deref().unwrap_or(filter_kinds);
    let mut out: Vec<Ev> = events
        .iter()
        .filter(|e| quirks.ignores_since || e.at >= q.since)
        .filter(|e| quirks.ignores_until || q.until.is_none_or(|u| e.at <= u))
        .filter(|e| kinds.is_empty() || kinds.contains(&e.kind))
        .filter(|e| q.authors.as_ref().is_none_or(|a| a.contains(&e.author)))
        .cloned()
        .collect();
    out.sort_by(|a, b| b.at.cmp(&a.at).then(a.id.cmp(&b.id)));
    if !quirks.ignores_limit {
        out.truncate(q.limit.min(quirks.cap));
    }
    if quirks.shuffles {
        out.reverse();
        let half = out.len() / 2;
        out.rotate_left(half);
    }
    out
}

struct Run {
    got: BTreeSet<usize>,
    reqs: usize,
    shortfalls: Vec<Shortfall>,
    failed: bool,
}

fn sync(events: &[Ev], since: u64, kinds: &[u16], quirks: Quirks, negentropy: bool) -> Run {
    let relay = Relay {
        limit: 500,
        largest: 0,
        negentropy,
        max_reqs: 100_000,
        kinds: kinds.to_vec(),
    };
    let mut planner = Planner::new(since, None, relay);
    let mut got = BTreeSet::new();
    let mut step = planner.start();
    let mut failed = false;
    loop {
        step = match step {
            Step::Fetch(q) => {
                let mut page = PageSummary::default();
                for e in answer(events, &q, kinds, quirks) {
                    page.add(e.at, e.kind, &e.author);
                    got.insert(e.id);
                }
                planner.on_page(&page)
            }
            Step::Reconcile { second } => {
                got.extend(
                    events
                        .iter()
                        .filter(|e| e.at == second)
                        .filter(|e| kinds.is_empty() || kinds.contains(&e.kind))
                        .map(|e| e.id),
                );
                planner.on_reconciled(true)
            }
            Step::Done => break,
            Step::Fail(_) => {
                failed = true;
                break;
            }
        };
    }
    Run {
        got,
        reqs: planner.requests(),
        shortfalls: planner.shortfalls().to_vec(),
        failed,
    }
}

/// `n` events over `seconds` seconds from 1,000, by 7 authors, of 5 kinds, two of
/// them outside any list of common kinds.
fn spread(n: usize, seconds: u64) -> Vec<Ev> {
    let kinds = [1, 7, 1111, 30023, 10002];
    (0..n)
        .map(|id| Ev {
            id,
            at: 1_000 + (id as u64 * 7919) % seconds,
            kind: kinds[id % kinds.len()],
            author: format!("author{}", id % 7),
        })
        .collect()
}

fn all(events: &[Ev], since: u64) -> BTreeSet<usize> {
    events
        .iter()
        .filter(|e| e.at >= since)
        .map(|e| e.id)
        .collect()
}

#[test]
fn clamped_relays_are_read_completely() {
    // (cap, events, seconds they span)
    let cases = [
        (1, 300, 1_000),
        (100, 5_000, 20_000),
        (500, 5_000, 3_000),
        (5_000, 5_000, 20_000),
        (100, 3_000, 50),
    ];
    for (cap, n, seconds) in cases {
        let events = spread(n, seconds);
        for shuffles in [false, true] {
            let quirks = Quirks {
                cap,
                shuffles,
                ..Default::default()
            };
            let run = sync(&events, 0, &[], quirks, true);
            assert_eq!(
                run.got,
                all(&events, 0),
                "cap {cap}, {n} events, shuffled {shuffles}"
            );
            assert!(!run.failed);
            assert!(
                run.reqs <= 2 * n / cap.min(n) + 2 * seconds as usize + 4,
                "cap {cap}: {} REQs",
                run.reqs
            );
        }
    }
}

#[test]
fn a_window_is_never_complete_because_a_page_was_short() {
    // The relay clamps at 37 while we ask for 500.
    let events = spread(3_347, 100_000);
    let run = sync(
        &events,
        0,
        &[],
        Quirks {
            cap: 37,
            ..Default::default()
        },
        false,
    );
    assert_eq!(run.got, all(&events, 0));
    assert!(run.shortfalls.is_empty(), "{:?}", run.shortfalls);
}

#[test]
fn relays_that_ignore_limit_or_since_are_read_in_few_requests() {
    let events = spread(5_000, 20_000);
    let quirks = Quirks {
        cap: 0,
        ignores_limit: true,
        ..Default::default()
    };
    let run = sync(&events, 0, &[], quirks, false);
    assert_eq!(run.got, all(&events, 0));
    assert!(run.reqs <= 3, "{} REQs", run.reqs);

    let quirks = Quirks {
        cap: 100,
        ignores_since: true,
        ..Default::default()
    };
    let run = sync(&events, 10_000, &[], quirks, false);
    assert!(run.got.is_superset(&all(&events, 10_000)));
}

#[test]
fn a_relay_that_ignores_until_ends_with_a_shortfall_not_a_loop() {
    let events = spread(1_000, 20_000);
    let quirks = Quirks {
        cap: 100,
        ignores_until: true,
        ..Default::default()
    };
    let run = sync(&events, 0, &[], quirks, false);
    assert!(!run.failed);
    assert!(run.reqs <= 2, "{} REQs", run.reqs);
    assert!(matches!(
        run.shortfalls[..],
        [Shortfall::UntilIgnored { .. }]
    ));
    // Unclamped, ignoring `until` loses nothing and is no shortfall.
    let quirks = Quirks {
        ignores_limit: true,
        ignores_until: true,
        ..Default::default()
    };
    let run = sync(&events, 0, &[], quirks, false);
    assert_eq!(run.got, all(&events, 0));
    assert!(run.shortfalls.is_empty());
}

#[test]
fn a_crowded_second_of_mixed_kinds_is_read_whole() {
    // 2,000 events in one second, 5 kinds, 7 authors, on a relay clamped at 500,
    // next to sparse events before and after.
    let mut events = spread(2_000, 1);
    events.extend(spread(600, 5_000).into_iter().map(|mut e| {
        e.id += 10_000;
        e
    }));
    let quirks = Quirks {
        cap: 500,
        ..Default::default()
    };
    for negentropy in [true, false] {
        let run = sync(&events, 0, &[], quirks, negentropy);
        assert_eq!(run.got, all(&events, 0), "negentropy {negentropy}");
        if negentropy {
            assert!(run.shortfalls.is_empty());
        }
    }
    // With the filter's kinds known, splitting reaches every kind: no shortfall.
    let kinds = [1, 7, 1111, 30023, 10002];
    let run = sync(&events, 0, &kinds, quirks, false);
    assert_eq!(run.got, all(&events, 0));
    assert!(run.shortfalls.is_empty(), "{:?}", run.shortfalls);
}

#[test]
fn one_author_beyond_a_page_in_one_second_is_a_shortfall() {
    let events: Vec<Ev> = (0..50)
        .map(|id| Ev {
            id,
            at: 5,
            kind: 1,
            author: "a".into(),
        })
        .collect();
    let run = sync(
        &events,
        0,
        &[1],
        Quirks {
            cap: 10,
            ..Default::default()
        },
        false,
    );
    assert!(!run.failed);
    assert!(run.shortfalls.iter().any(|s| matches!(
        s,
        Shortfall::CrowdedSecond {
            second: 5,
            kind: 1,
            ..
        }
    )));
}

/// What a relay capped at `cap` answers to `q`, as a summary.
fn page_of(events: &[Ev], q: &Query, cap: usize) -> PageSummary {
    let quirks = Quirks {
        cap,
        ..Default::default()
    };
    let mut page = PageSummary::default();
    for e in answer(events, q, &[], quirks) {
        page.add(e.at, e.kind, &e.author);
    }
    page
}

#[test]
fn a_page_of_unplaceable_frames_is_a_shortfall_not_the_end() {
    let relay = Relay {
        limit: 500,
        max_reqs: 10,
        ..Default::default()
    };
    let mut planner = Planner::new(0, None, relay.clone());
    assert!(matches!(planner.start(), Step::Fetch(_)));
    let mut page = PageSummary::default();
    for _ in 0..500 {
        page.add_unreadable();
    }
    assert_eq!(planner.on_page(&page), Step::Done);
    assert_eq!(
        planner.shortfalls(),
        &[Shortfall::Unreadable {
            until: None,
            frames: 500
        }]
    );
    // An empty page is the end, and no shortfall.
    let mut planner = Planner::new(0, Some(10), relay);
    planner.start();
    assert_eq!(planner.on_page(&PageSummary::default()), Step::Done);
    assert!(planner.shortfalls().is_empty());
}

#[test]
fn the_request_budget_fails_the_window() {
    let events = spread(1_000, 1_000);
    let relay = Relay {
        limit: 10,
        largest: 0,
        negentropy: false,
        max_reqs: 5,
        kinds: vec![],
    };
    let mut planner = Planner::new(0, None, relay);
    let mut step = planner.start();
    for _ in 0..10 {
        step = match step {
            Step::Fetch(q) => planner.on_page(&page_of(&events, &q, 10)),
            other => other,
        };
    }
    assert_eq!(step, Step::Fail(Failure::TooManyRequests(5)));
}

#[test]
fn covered_moves_down_as_pages_come() {
    let events = spread(1_000, 10_000);
    let relay = Relay {
        limit: 100,
        largest: 0,
        negentropy: false,
        max_reqs: 1_000,
        kinds: vec![],
    };
    let mut planner = Planner::new(0, None, relay);
    let mut step = planner.start();
    let mut last = u64::MAX;
    while let Step::Fetch(q) = step {
        let page = page_of(&events, &q, 100);
        step = planner.on_page(&page);
        if let Some(c) = planner.covered() {
            assert!(c <= last);
            last = c;
        }
    }
    assert_eq!(step, Step::Done);
    assert_eq!(planner.covered(), Some(0));
}

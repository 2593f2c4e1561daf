//! The paging planner: which REQ to send next to read one window of one filter from one
//! relay completely, and when the window is complete. No I/O and no actix: the relay
//! actor sends the REQs it asks for and feeds back what each one brought.
//!
//! Relays clamp `limit` to their own size (100, 150, 300, 500, 1000, 5000…) without
//! saying so, some ignore it altogether, some ignore `until`, and frames of one answer
//! need not be ordered. So a short page proves nothing. The planner pages back with
//! `until` = the oldest second seen (inclusive: more events may share it) until a page
//! brings nothing older than what was already seen, or nothing at all.
//!
//! A page that lies entirely within its `until` second says that second may hold more
//! events than one page: it is read on its own, by negentropy where the relay serves
//! NIP-77, else split by kind (every kind seen there) and a kind that still fills a
//! page by author (every author seen there), halving author lists until each page is
//! short. What splitting cannot reach (one author publishing more events of one kind
//! in one second than a page holds, or kinds and authors never seen in a full page) is
//! reported as a [`Shortfall`], never dropped silently; the repair pass (negentropy)
//! is what closes it.
//!
//! "Full" is judged against the relay's real page size as far as it is known: the
//! `limit` sent, and the largest page this relay has answered with. A page is full
//! when it is as large as either.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Authors per REQ when a second is split by author.
const AUTHOR_CHUNK: usize = 64;

/// What one REQ brought, as far as planning needs it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageSummary {
    /// EVENT frames answered (valid or not).
    pub count: usize,
    /// Oldest and newest `created_at` among them.
    pub oldest: Option<u64>,
    pub newest: Option<u64>,
    /// Per kind, the authors (hex) of the events dated `oldest`.
    pub oldest_second: BTreeMap<u16, BTreeSet<String>>,
}

impl PageSummary {
    /// Adds one event.
    pub fn add(&mut self, created_at: u64, kind: u16, author: &str) {
        self.add_with(created_at, kind, || author.to_owned());
    }

    /// Adds one event; `author` is asked for only if the event is in the oldest second.
    pub fn add_with(&mut self, created_at: u64, kind: u16, author: impl FnOnce() -> String) {
        self.count += 1;
        self.newest = Some(self.newest.map_or(created_at, |n| n.max(created_at)));
        match self.oldest {
            Some(o) if created_at > o => {}
            Some(o) if created_at == o => {
                self.oldest_second.entry(kind).or_default().insert(author());
            }
            _ => {
                self.oldest = Some(created_at);
                self.oldest_second.clear();
                self.oldest_second.entry(kind).or_default().insert(author());
            }
        }
    }

    /// Adds a frame whose event could not be read at all: it counts toward the page's
    /// size, but says nothing of where the page ends.
    pub fn add_unreadable(&mut self) {
        self.count += 1;
    }
}

/// One REQ to send: the filter's own fields, narrowed as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub since: u64,
    pub until: Option<u64>,
    /// `None`: the filter's kinds.
    pub kinds: Option<Vec<u16>>,
    /// `None`: the filter's authors.
    pub authors: Option<Vec<String>>,
    pub limit: usize,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this REQ, read it to its end, and report with [`Planner::on_page`].
    Fetch(Query),
    /// Reconcile this one second with NIP-77 (the filter's own kinds and authors), fetch
    /// what we lack, and report with [`Planner::on_reconciled`].
    Reconcile { second: u64 },
    /// The window is read; `shortfalls` lists what could not be.
    Done,
    /// The relay cannot be paged within the REQ budget.
    Fail(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("more than {0} REQs for one window")]
    TooManyRequests(usize),
}

/// Something the planner knows it could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    /// The relay answered `until` with newer events: paging back is impossible, and
    /// the page was full, so older events may be missing.
    UntilIgnored { until: u64 },
    /// A full page within one second was split by the kinds seen in it; with a filter
    /// of every kind, kinds that no page showed cannot be asked for.
    UnseenKinds { second: u64 },
    /// Ids a reconciliation found were asked for and not served.
    NotServed { ids: usize },
    /// A page held only frames whose events could not be read, so nothing says how
    /// far down it reached: paging stops there.
    Unreadable { until: Option<u64>, frames: usize },
    /// One second held more events of `kind` (by `author`, when split that far) than
    /// a page, and splitting could not read it all.
    CrowdedSecond {
        second: u64,
        kind: u16,
        author: Option<String>,
    },
}

impl Shortfall {
    /// A short label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Shortfall::UntilIgnored { .. } => "until-ignored",
            Shortfall::UnseenKinds { .. } => "unseen-kinds",
            Shortfall::NotServed { .. } => "not-served",
            Shortfall::Unreadable { .. } => "unreadable",
            Shortfall::CrowdedSecond { .. } => "crowded-second",
        }
    }
}

#[derive(Debug)]
enum State {
    /// Paging back from `until` (exclusive of nothing: inclusive second).
    Paging {
        until: Option<u64>,
    },
    /// Asked to reconcile `second`; `seen` is what the page that found it saw there,
    /// to split by if reconciliation fails.
    Reconciling {
        second: u64,
        seen: BTreeMap<u16, BTreeSet<String>>,
    },
    /// Reading `second` split into `queue`; `current` is in flight.
    Splitting {
        second: u64,
        queue: VecDeque<Query>,
        current: Option<Query>,
    },
    Finished,
}

/// What the planner knows of the relay and the filter.
#[derive(Debug, Clone, Default)]
pub struct Relay {
    /// The `limit` each REQ carries.
    pub limit: usize,
    /// The largest page the relay is known to have answered with (0: none yet).
    pub largest: usize,
    /// Whether crowded seconds may be reconciled with NIP-77.
    pub negentropy: bool,
    /// Most REQs for one window.
    pub max_reqs: usize,
    /// The filter's kinds (empty: every kind).
    pub kinds: Vec<u16>,
}

/// Plans the REQs that read `[since, until]` of one filter.
#[derive(Debug)]
pub struct Planner {
    since: u64,
    kinds: Vec<u16>,
    limit: usize,
    /// Largest page this relay answered with (shared across windows by the caller).
    largest: usize,
    negentropy: bool,
    max_reqs: usize,
    reqs: usize,
    state: State,
    /// Everything from this second up to the window's top has been asked for.
    covered: Option<u64>,
    shortfalls: Vec<Shortfall>,
}

impl Planner {
    /// Reads `[since, until]` (`until` `None`: up to now).
    pub fn new(since: u64, until: Option<u64>, relay: Relay) -> Self {
        Self {
            since,
            kinds: relay.kinds,
            limit: relay.limit.max(1),
            largest: relay.largest,
            negentropy: relay.negentropy,
            max_reqs: relay.max_reqs,
            reqs: 0,
            state: State::Paging { until },
            covered: None,
            shortfalls: Vec::new(),
        }
    }

    /// The first step.
    pub fn start(&mut self) -> Step {
        self.step()
    }

    /// Largest page seen, for the caller to carry to the next window.
    pub fn largest(&self) -> usize {
        self.largest
    }

    /// Down to which second everything of the window has been asked for.
    pub fn covered(&self) -> Option<u64> {
        self.covered
    }

    pub fn shortfalls(&self) -> &[Shortfall] {
        &self.shortfalls
    }

    /// REQs planned so far.
    #[cfg(test)]
    pub fn requests(&self) -> usize {
        self.reqs
    }

    fn full(&self, count: usize) -> bool {
        count > 0 && count >= self.limit.min(self.largest.max(1))
    }

    fn paging_query(&self, until: Option<u64>) -> Query {
        Query {
            since: self.since,
            until,
            kinds: None,
            authors: None,
            limit: self.limit,
        }
    }

    /// The step the current state asks for.
    fn step(&mut self) -> Step {
        let query = match &mut self.state {
            State::Finished => return Step::Done,
            State::Reconciling { second, .. } => return Step::Reconcile { second: *second },
            State::Paging { until } => {
                let until = *until;
                self.paging_query(until)
            }
            State::Splitting {
                second,
                queue,
                current,
            } => match queue.pop_front() {
                Some(q) => {
                    *current = Some(q.clone());
                    q
                }
                None => {
                    let second = *second;
                    return self.second_done(second);
                }
            },
        };
        if self.reqs >= self.max_reqs {
            self.state = State::Finished;
            return Step::Fail(Failure::TooManyRequests(self.max_reqs));
        }
        self.reqs += 1;
        Step::Fetch(query)
    }

    /// Every event of `second` has been read: carry on below it.
    fn second_done(&mut self, second: u64) -> Step {
        self.covered = Some(second);
        self.state = if second > self.since {
            State::Paging {
                until: Some(second - 1),
            }
        } else {
            self.covered = Some(self.since);
            State::Finished
        };
        self.step()
    }

    /// What the last `Fetch` brought.
    pub fn on_page(&mut self, page: &PageSummary) -> Step {
        self.largest = self.largest.max(page.count);
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Paging { until } => self.on_paging_page(until, page),
            State::Splitting {
                second,
                mut queue,
                current,
            } => {
                if let Some(q) = current {
                    self.split_further(second, &q, page, &mut queue);
                }
                self.state = State::Splitting {
                    second,
                    queue,
                    current: None,
                };
                self.step()
            }
            State::Reconciling { .. } | State::Finished => self.step(),
        }
    }

    fn on_paging_page(&mut self, until: Option<u64>, page: &PageSummary) -> Step {
        let Some(oldest) = page.oldest else {
            // Nothing at all: the window is read. Frames whose events could not even be
            // placed say nothing of what lies below them: never "read".
            if page.count > 0 {
                self.shortfalls.push(Shortfall::Unreadable {
                    until,
                    frames: page.count,
                });
            }
            self.covered = Some(self.since);
            return self.step();
        };
        if let (Some(u), Some(newest)) = (until, page.newest) {
            if newest > u {
                // Newer than asked for: the relay ignores `until`, and paging back
                // cannot reach further than this page did. A page beyond our `limit`
                // shows a relay that ignores `limit` too: it sent everything.
                if self.full(page.count) && page.count <= self.limit {
                    self.shortfalls.push(Shortfall::UntilIgnored { until: u });
                }
                return self.step();
            }
        }
        if oldest <= self.since {
            // The page reached the window's bottom (or went past it: the relay ignores
            // `since`). Only the bottom second itself may be cut.
            if oldest == self.since && self.full(page.count) {
                return self.crowded(self.since, page);
            }
            self.covered = Some(self.since);
            return self.step();
        }
        match until {
            Some(u) if oldest > u => {
                // Newer than asked for: the relay ignores `until`.
                if self.full(page.count) {
                    self.shortfalls.push(Shortfall::UntilIgnored { until: u });
                }
                self.step()
            }
            Some(u) if oldest == u => {
                // The whole page within one second: it may hold more than a page.
                if self.full(page.count) {
                    self.crowded(u, page)
                } else {
                    self.second_done(u)
                }
            }
            _ => {
                // Everything newer than `oldest` is read; `oldest` itself may be cut.
                self.covered = Some(oldest + 1);
                self.state = State::Paging {
                    until: Some(oldest),
                };
                self.step()
            }
        }
    }

    /// `second` holds a full page: read it on its own.
    fn crowded(&mut self, second: u64, page: &PageSummary) -> Step {
        if self.negentropy {
            self.state = State::Reconciling {
                second,
                seen: page.oldest_second.clone(),
            };
            return self.step();
        }
        self.split(second, &page.oldest_second)
    }

    /// Reads `second` kind by kind: every kind of the filter, or with a filter of every
    /// kind, the kinds `seen` there.
    fn split(&mut self, second: u64, seen: &BTreeMap<u16, BTreeSet<String>>) -> Step {
        let kinds: Vec<u16> = if self.kinds.is_empty() {
            self.shortfalls.push(Shortfall::UnseenKinds { second });
            seen.keys().copied().collect()
        } else {
            self.kinds.clone()
        };
        let queue = kinds
            .into_iter()
            .map(|kind| Query {
                since: second,
                until: Some(second),
                kinds: Some(vec![kind]),
                authors: None,
                limit: self.limit,
            })
            .collect();
        self.state = State::Splitting {
            second,
            queue,
            current: None,
        };
        self.step()
    }

    /// What the reconciliation of the crowded second gave: `ok` if every id the relay
    /// holds there was fetched. If not, the planner splits the second instead (with
    /// what the page that found it saw) and stops asking for reconciliation.
    pub fn on_reconciled(&mut self, ok: bool) -> Step {
        let State::Reconciling { second, seen } =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return self.step();
        };
        if ok {
            return self.second_done(second);
        }
        self.negentropy = false;
        self.split(second, &seen)
    }

    /// A split query came back; a full one is split again where that can help.
    fn split_further(
        &mut self,
        second: u64,
        q: &Query,
        page: &PageSummary,
        queue: &mut VecDeque<Query>,
    ) {
        if !self.full(page.count) {
            return;
        }
        if page.oldest != Some(second) || page.newest != Some(second) {
            // Asked for one second, given others: splitting cannot help.
            self.shortfalls
                .push(Shortfall::UntilIgnored { until: second });
            return;
        }
        let kind = q
            .kinds
            .as_ref()
            .and_then(|k| k.first().copied())
            .unwrap_or(0);
        match &q.authors {
            None => {
                let authors: Vec<String> = page
                    .oldest_second
                    .get(&kind)
                    .map(|a| a.iter().cloned().collect())
                    .unwrap_or_default();
                if authors.len() <= 1 {
                    self.shortfalls.push(Shortfall::CrowdedSecond {
                        second,
                        kind,
                        author: authors.into_iter().next(),
                    });
                    return;
                }
                for chunk in authors.chunks(AUTHOR_CHUNK) {
                    queue.push_back(Query {
                        authors: Some(chunk.to_vec()),
                        ..q.clone()
                    });
                }
                // Authors never seen in a full page cannot be asked for by name.
                self.shortfalls.push(Shortfall::CrowdedSecond {
                    second,
                    kind,
                    author: None,
                });
            }
            Some(authors) if authors.len() > 1 => {
                let (a, b) = authors.split_at(authors.len() / 2);
                for half in [a, b] {
                    queue.push_back(Query {
                        authors: Some(half.to_vec()),
                        ..q.clone()
                    });
                }
            }
            Some(authors) => self.shortfalls.push(Shortfall::CrowdedSecond {
                second,
                kind,
                author: authors.first().cloned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;

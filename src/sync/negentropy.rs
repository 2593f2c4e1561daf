//! Our side of a NIP-77 reconciliation, as the initiator, answered from sums kept per
//! second of `created_at` instead of from our items.
//!
//! Negentropy compares ranges of `(created_at, id)` by fingerprint (`IdSum`): the sum
//! of the ids and their count. We choose our ranges' bounds on whole seconds, so the
//! fingerprint of any of them is a sum of per-second rows the database keeps with every
//! write ([`Source::sums`]). A relay splits a differing range of ours on its own items,
//! so its bounds fall inside seconds wherever two of its events share one; rather than
//! read those seconds to compare its parts one by one, we take the parts together and
//! split them again on whole seconds ([`Theirs::Split`]). Our items are read only in
//! ranges that differ within a second or two, and in the seconds of the relay's bounds
//! where its parts cannot be taken together. A range small enough for the relay to
//! list its ids is compared with our sum of it: when the relay holds exactly one more,
//! the sums name it, and only that id is looked up ([`Source::held`]). We only take
//! (direction down), so what we hold and the relay does not is never listed.
//!
//! A differing range spanning whole seconds is split into up to [`BUCKETS`] equal
//! spans of time; one within a second or two, on its items, as the protocol's
//! reference does. The relay answers in kind, and the rounds go on until nothing
//! differs. What the relay listed that we lack is [`Initiator::take_need`].

use std::collections::{HashMap, HashSet};

use crate::nostr::fingerprint::{varint, IdSum, FINGERPRINT_BYTES};

pub const PROTOCOL_VERSION: u8 = 0x61;

/// Sub-ranges a differing range is split into.
pub const BUCKETS: usize = 16;

/// Our ranges within a second or two with fewer items than this are sent as lists of
/// ids.
pub const ID_LIST_BELOW: i64 = 2 * BUCKETS as i64;

/// Most bytes of one of our messages (before hex); strfry's own client uses 60,000.
pub const FRAME_LIMIT: usize = 60_000;

/// Most seconds of a window whose sums are read at once, at the start, and kept
/// (cumulated: 88 bytes each); a window with more reads the sums it needs round by
/// round. A day holds at most 86,400.
pub const KEPT_SECONDS: usize = 200_000;

/// Differing ranges split at once: about what one message holds.
const SPLIT_AT_ONCE: usize = 64;

/// The end of time: a bound past every item.
const END: u64 = u64::MAX;

pub type Id = [u8; 32];

/// A range's upper end: items below `(at, prefix padded with zeros)` are in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub at: u64,
    pub prefix: Vec<u8>,
}

impl Bound {
    pub fn second(at: u64) -> Self {
        Bound {
            at,
            prefix: Vec::new(),
        }
    }

    /// Whether the item `(at, id)` lies below this bound.
    fn above(&self, at: u64, id: &Id) -> bool {
        at < self.at || (at == self.at && id[..self.prefix.len()] < self.prefix[..])
    }

    /// The shortest bound between two neighbouring items (the reference's rule).
    fn between(prev: (u64, &Id), next: (u64, &Id)) -> Self {
        if prev.0 != next.0 {
            return Bound::second(next.0);
        }
        let shared = prev
            .1
            .iter()
            .zip(next.1)
            .take_while(|(a, b)| a == b)
            .count();
        Bound {
            at: next.0,
            prefix: next.1[..(shared + 1).min(32)].to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Skip,
    Fingerprint([u8; FINGERPRINT_BYTES]),
    IdList(Vec<Id>),
}

/// One range of a message: from the previous range's bound up to `upper`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub upper: Bound,
    pub body: Body,
}

/// A message that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid negentropy message: {0}")]
pub struct Malformed(pub &'static str);

pub fn decode(msg: &[u8]) -> Result<Vec<Range>, Malformed> {
    let (&version, mut rest) = msg.split_first().ok_or(Malformed("empty"))?;
    if version != PROTOCOL_VERSION {
        return Err(Malformed("unsupported protocol version"));
    }
    let mut last = 0u64;
    let mut ranges = Vec::new();
    let mut previous = Bound::second(0);
    while !rest.is_empty() {
        let at = match read_varint(&mut rest)? {
            0 => END,
            n => last.saturating_add(n - 1),
        };
        last = at;
        let len = read_varint(&mut rest)? as usize;
        if len > 32 {
            return Err(Malformed("bound longer than an id"));
        }
        let prefix = take(&mut rest, len)?.to_vec();
        let upper = Bound { at, prefix };
        if (upper.at, &upper.prefix) < (previous.at, &previous.prefix) {
            return Err(Malformed("bounds out of order"));
        }
        let body = match read_varint(&mut rest)? {
            0 => Body::Skip,
            1 => Body::Fingerprint(take_array(&mut rest)?),
            2 => {
                let n = read_varint(&mut rest)?;
                if n > (rest.len() / 32) as u64 {
                    return Err(Malformed("id list longer than the message"));
                }
                (0..n)
                    .map(|_| take_array(&mut rest))
                    .collect::<Result<_, Malformed>>()
                    .map(Body::IdList)?
            }
            _ => return Err(Malformed("unknown mode")),
        };
        previous = upper.clone();
        ranges.push(Range { upper, body });
    }
    Ok(ranges)
}

fn encode_range(out: &mut Vec<u8>, last: &mut u64, r: &Range) {
    if r.upper.at == END {
        out.push(0);
    } else {
        out.extend(varint(r.upper.at.saturating_sub(*last) + 1));
    }
    *last = r.upper.at;
    out.extend(varint(r.upper.prefix.len() as u64));
    out.extend(&r.upper.prefix);
    match &r.body {
        Body::Skip => out.push(0),
        Body::Fingerprint(f) => {
            out.push(1);
            out.extend(f);
        }
        Body::IdList(ids) => {
            out.push(2);
            out.extend(varint(ids.len() as u64));
            ids.iter().for_each(|id| out.extend(id));
        }
    }
}

/// `ranges` encoded after a range whose bound was at `last`; and the last bound's time.
fn encoded<'a>(mut last: u64, ranges: impl Iterator<Item = &'a Range>) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    ranges.for_each(|r| encode_range(&mut out, &mut last, r));
    (out, last)
}

fn read_varint(rest: &mut &[u8]) -> Result<u64, Malformed> {
    let mut n: u64 = 0;
    loop {
        let (&byte, tail) = rest.split_first().ok_or(Malformed("cut short"))?;
        *rest = tail;
        if n >> 57 != 0 {
            return Err(Malformed("varint too long"));
        }
        n = (n << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Ok(n);
        }
    }
}

fn take_array<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], Malformed> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(rest, N)?);
    Ok(out)
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], Malformed> {
    if rest.len() < n {
        return Err(Malformed("cut short"));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// Our stored events of the filter being reconciled, as the initiator reads them.
#[allow(async_fn_in_trait)] // Used with concrete sources only.
pub trait Source {
    type Error;
    /// The sums of our items dated within each `[from, to)` (unix seconds).
    async fn sums(&mut self, spans: &[(u64, u64)]) -> Result<Vec<IdSum>, Self::Error>;
    /// Our items dated within any of `spans` (each `[from, to)`), as
    /// `(created_at, id)`, in any order.
    async fn ids(&mut self, spans: &[(u64, u64)]) -> Result<Vec<(u64, Id)>, Self::Error>;
    /// Per second within `[from, to)` holding any of our items, in order: their sum;
    /// `None` if there are more than `limit` such seconds.
    async fn seconds(
        &mut self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Option<Vec<(u64, IdSum)>>, Self::Error>;
    /// Which of `ids` we hold (of any filter: an id names one event).
    async fn held(&mut self, ids: &[Id]) -> Result<HashSet<Id>, Self::Error>;
}

#[derive(Debug, thiserror::Error)]
pub enum Error<E> {
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("source: {0}")]
    Source(E),
}

/// The initiator's state through the rounds of one reconciliation of our items dated
/// within `[since, until]`.
pub struct Initiator {
    since: u64,
    /// One past `until`.
    end: u64,
    /// Seconds whose items were read, sorted by id.
    seconds: HashMap<u64, Vec<Id>>,
    /// Ids the relay listed that we lack.
    need: HashSet<Id>,
    /// Ids we listed to the relay: held, so not looked up when it lists them back.
    sent: HashSet<Id>,
    /// When the window has at most [`KEPT_SECONDS`] seconds with items: those seconds,
    /// and the sums of all items before each (one more, the total, at the end).
    kept: Option<(Vec<u64>, Vec<IdSum>)>,
    /// How many items our side holds in the window (known once opened).
    ours: i64,
    /// Our items read and ids looked up, so far.
    pub rows_read: u64,
}

/// One of the relay's ranges as we answer it: from `lower` up to `upper`.
struct Part {
    lower: Bound,
    upper: Bound,
    theirs: Theirs,
}

/// What the relay said of a range.
enum Theirs {
    Said(Body),
    /// Fingerprints of the relay's split of a range of ours, taken together: differs.
    Split,
}

/// A differing range, to be split.
struct Differs {
    lower: Bound,
    upper: Bound,
    ours: IdSum,
}

impl Initiator {
    pub fn new(since: u64, until: u64) -> Self {
        Initiator {
            since,
            end: until.saturating_add(1),
            seconds: HashMap::new(),
            need: HashSet::new(),
            sent: HashSet::new(),
            kept: None,
            ours: 0,
            rows_read: 0,
        }
    }

    /// How many ids the relay holds that we lack, found so far.
    pub fn needed(&self) -> usize {
        self.need.len()
    }

    /// Whether our side holds nothing in the window (once opened).
    pub fn holds_none(&self) -> bool {
        self.ours <= 0
    }

    pub fn take_need(self) -> Vec<Id> {
        self.need.into_iter().collect()
    }

    /// The first message: the whole window, split.
    pub async fn open<S: Source>(&mut self, src: &mut S) -> Result<Vec<u8>, Error<S::Error>> {
        if self.since < self.end {
            let rows = src.seconds(self.since, self.end, KEPT_SECONDS).await;
            if let Some(rows) = rows.map_err(Error::Source)? {
                let mut total = IdSum::default();
                let mut cumulated = Vec::with_capacity(rows.len() + 1);
                let mut seconds = Vec::with_capacity(rows.len());
                for (at, sum) in rows {
                    cumulated.push(total);
                    seconds.push(at);
                    total.add(&sum);
                }
                cumulated.push(total);
                self.kept = Some((seconds, cumulated));
            }
        }
        let whole = self.sums(src, &[(0, END)]).await?[0];
        self.ours = whole.count;
        let ranges = vec![Differs {
            lower: Bound::second(0),
            upper: Bound::second(END),
            ours: whole,
        }];
        self.frame(src, ranges, Vec::new()).await
    }

    /// Our answer to the relay's `msg`, or `None` when nothing differs any more.
    pub async fn answer<S: Source>(
        &mut self,
        src: &mut S,
        msg: &[u8],
    ) -> Result<Option<Vec<u8>>, Error<S::Error>> {
        let parts = self.parts(decode(msg)?);
        // The relay's bounds within one of its seconds need that second's ids.
        let mut spans = Vec::new();
        let mut seconds = Vec::new();
        for p in &parts {
            match &p.theirs {
                Theirs::Said(Body::Skip) => continue,
                Theirs::Said(Body::IdList(_)) => {}
                Theirs::Said(Body::Fingerprint(_)) | Theirs::Split => seconds.extend(
                    [&p.lower, &p.upper]
                        .iter()
                        .filter(|b| !b.prefix.is_empty())
                        .map(|b| b.at),
                ),
            }
            spans.push(span(&p.lower, &p.upper));
        }
        self.load_seconds(src, seconds).await?;
        let mut sums = self.sums(src, &spans).await?.into_iter();
        // Ours against theirs, range by range; a run of matching ranges is skipped.
        let mut listed = Vec::new();
        let mut pieces: Vec<(Option<Bound>, Differs)> = Vec::new();
        let mut skipped = false;
        for p in parts {
            if matches!(p.theirs, Theirs::Said(Body::Skip)) {
                skipped = true;
                continue;
            }
            let whole = sums.next().unwrap_or_default();
            let theirs = match p.theirs {
                Theirs::Said(Body::IdList(ids)) => {
                    // Our sum needs the bounds' seconds, read only for fingerprints.
                    let known = |b: &Bound| b.prefix.is_empty() || self.seconds.contains_key(&b.at);
                    if known(&p.lower) && known(&p.upper) {
                        listed.extend(may_lack(ids, &self.within(whole, &p.lower, &p.upper)));
                    } else {
                        listed.extend(ids);
                    }
                    skipped = true;
                    continue;
                }
                Theirs::Said(Body::Fingerprint(theirs)) => Some(theirs),
                Theirs::Said(Body::Skip) | Theirs::Split => None,
            };
            let ours = self.within(whole, &p.lower, &p.upper);
            if theirs == Some(ours.fingerprint()) {
                skipped = true;
                continue;
            }
            let skip_to = skipped.then(|| p.lower.clone());
            skipped = false;
            pieces.push((
                skip_to,
                Differs {
                    lower: p.lower,
                    upper: p.upper,
                    ours,
                },
            ));
        }
        self.take_listed(src, listed).await?;
        if pieces.is_empty() {
            return Ok(None);
        }
        let (skips, differing): (Vec<Option<Bound>>, Vec<Differs>) = pieces.into_iter().unzip();
        Ok(Some(self.frame(src, differing, skips).await?))
    }

    /// Our sum of a range from the sum of its whole seconds (`span`): the upper bound's
    /// second's items below it added, the lower's taken away (both must be loaded).
    fn within(&self, mut seconds: IdSum, lower: &Bound, upper: &Bound) -> IdSum {
        seconds.add(&self.partial(upper));
        seconds.sub(&self.partial(lower));
        seconds
    }

    /// The relay's ranges, each with its lower bound. A relay splits a differing range
    /// of ours on its own items, so its parts meet inside seconds; fingerprints that
    /// meet inside a second we have not read are taken together, as one range that
    /// differs ([`Theirs::Split`]), which we split again on whole seconds. Comparing
    /// them one by one would read every such second, most of them to find a match:
    /// with one event in a hundred missing, that read most of the window. A run of a
    /// second or two is compared part by part, as it cannot be split on whole seconds.
    fn parts(&self, ranges: Vec<Range>) -> Vec<Part> {
        let mut runs: Vec<Vec<Part>> = Vec::new();
        let mut lower = Bound::second(0);
        for r in ranges {
            let part = Part {
                lower: std::mem::replace(&mut lower, r.upper.clone()),
                upper: r.upper,
                theirs: Theirs::Said(r.body),
            };
            let fingerprint = |p: &Part| matches!(p.theirs, Theirs::Said(Body::Fingerprint(_)));
            let joins = |prev: &Part| {
                fingerprint(prev)
                    && fingerprint(&part)
                    && !part.lower.prefix.is_empty()
                    && !self.seconds.contains_key(&part.lower.at)
            };
            match runs.last_mut() {
                Some(run) if run.last().is_some_and(joins) => run.push(part),
                _ => runs.push(vec![part]),
            }
        }
        let mut parts = Vec::with_capacity(runs.len());
        for mut run in runs {
            let (Some(first), Some(last)) = (run.first(), run.last()) else {
                continue;
            };
            let (from, to) = self.whole_span(&first.lower, &last.upper);
            if run.len() > 1 && to.saturating_sub(from) >= 2 {
                parts.push(Part {
                    lower: first.lower.clone(),
                    upper: last.upper.clone(),
                    theirs: Theirs::Split,
                });
            } else {
                parts.append(&mut run);
            }
        }
        parts
    }

    /// Ids listed by the relay that we do not hold become needed.
    async fn take_listed<S: Source>(
        &mut self,
        src: &mut S,
        listed: Vec<Id>,
    ) -> Result<(), Error<S::Error>> {
        let fresh: Vec<Id> = listed
            .into_iter()
            .filter(|id| !self.need.contains(id) && !self.sent.contains(id))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        self.rows_read += fresh.len() as u64;
        let held = src.held(&fresh).await.map_err(Error::Source)?;
        for id in fresh {
            if !held.contains(&id) {
                self.need.insert(id);
            }
        }
        Ok(())
    }

    /// Our message: each differing range split, behind a skip of what matched before
    /// it. Ranges are split [`SPLIT_AT_ONCE`] at a time; once the next would not fit
    /// in [`FRAME_LIMIT`], the rest go unsplit, each as our fingerprint, for the relay
    /// to split in its answer (nothing is read for a range that does not fit, and none
    /// is summed twice). Past even that, the rest of time is one fingerprint.
    async fn frame<S: Source>(
        &mut self,
        src: &mut S,
        differing: Vec<Differs>,
        skips: Vec<Option<Bound>>,
    ) -> Result<Vec<u8>, Error<S::Error>> {
        let mut out = vec![PROTOCOL_VERSION];
        let mut last_at = 0u64;
        let mut written: Option<Bound> = None;
        let mut skips = skips.into_iter();
        let mut full = false;
        for chunk in differing.chunks(SPLIT_AT_ONCE) {
            let split = if full {
                Vec::new()
            } else {
                self.split(src, chunk).await?
            };
            let mut split = split.into_iter();
            for d in chunk {
                let skip = skips.next().flatten().map(|to| Range {
                    upper: to,
                    body: Body::Skip,
                });
                let unsplit = || {
                    vec![Range {
                        upper: d.upper.clone(),
                        body: Body::Fingerprint(d.ours.fingerprint()),
                    }]
                };
                // Room is kept for the rest's fingerprint (19 bytes).
                let fits = |next: &(Vec<u8>, u64)| out.len() + next.0.len() <= FRAME_LIMIT - 64;
                let mut pieces = split.next().filter(|_| !full).unwrap_or_else(unsplit);
                let mut next = encoded(last_at, skip.iter().chain(&pieces));
                if !full && !fits(&next) {
                    full = true;
                    pieces = unsplit();
                    next = encoded(last_at, skip.iter().chain(&pieces));
                }
                if !fits(&next) {
                    let tail = self.rest(src, written.unwrap_or(Bound::second(0))).await?;
                    encode_range(&mut out, &mut last_at, &tail);
                    return Ok(out);
                }
                out.extend(next.0);
                last_at = next.1;
                written = pieces.pop().map(|p| p.upper);
            }
        }
        Ok(out)
    }

    /// The rest of time from `from`, as one range with our fingerprint.
    async fn rest<S: Source>(
        &mut self,
        src: &mut S,
        from: Bound,
    ) -> Result<Range, Error<S::Error>> {
        if !from.prefix.is_empty() {
            self.load_seconds(src, vec![from.at]).await?;
        }
        let mut rest = self.sums(src, &[span(&from, &Bound::second(END))]).await?[0];
        rest.sub(&self.partial(&from));
        Ok(Range {
            upper: Bound::second(END),
            body: Body::Fingerprint(rest.fingerprint()),
        })
    }

    /// Each differing range as the pieces we send for it.
    async fn split<S: Source>(
        &mut self,
        src: &mut S,
        differing: &[Differs],
    ) -> Result<Vec<Vec<Range>>, Error<S::Error>> {
        // Edges of the ranges split in time, and the spans whose sums they need.
        let mut plans: Vec<Option<Vec<Bound>>> = Vec::new();
        let mut spans = Vec::new();
        for d in differing {
            let (from, to) = self.whole_span(&d.lower, &d.upper);
            let seconds = to.saturating_sub(from);
            if d.ours.count == 0 || seconds < 2 {
                plans.push(None);
                continue;
            }
            let k = (BUCKETS as u64).min(seconds);
            let mut edges: Vec<Bound> = (1..k)
                .map(|j| Bound::second(from + seconds * j / k))
                .collect();
            edges.push(d.upper.clone());
            let mut lower = d.lower.clone();
            for edge in &edges {
                spans.push(span(&lower, edge));
                lower = edge.clone();
            }
            plans.push(Some(edges));
        }
        let mut sums = self.sums(src, &spans).await?.into_iter();
        // Our items in the ranges split on them, in one read.
        let item_spans: Vec<(u64, u64)> = differing
            .iter()
            .zip(&plans)
            .filter(|(_, plan)| plan.is_none())
            .map(|(d, _)| self.item_span(d))
            .filter(|(from, to)| from < to)
            .collect();
        let mut pool = if item_spans.is_empty() {
            Vec::new()
        } else {
            src.ids(&item_spans).await.map_err(Error::Source)?
        };
        self.rows_read += pool.len() as u64;
        pool.sort_unstable();
        pool.dedup();
        let mut out = Vec::new();
        for (d, plan) in differing.iter().zip(plans) {
            let pieces = match plan {
                Some(edges) => {
                    let mut lower = d.lower.clone();
                    let mut pieces = Vec::new();
                    for edge in edges {
                        let mut sum = sums.next().unwrap_or_default();
                        sum.add(&self.partial(&edge));
                        sum.sub(&self.partial(&lower));
                        pieces.push(Range {
                            upper: edge.clone(),
                            body: Body::Fingerprint(sum.fingerprint()),
                        });
                        lower = edge;
                    }
                    pieces
                }
                None => self.split_items(d, &pool),
            };
            out.push(pieces);
        }
        Ok(out)
    }

    /// A differing range that is small: our items in it, as one id list or, past
    /// [`ID_LIST_BELOW`], as [`BUCKETS`] fingerprints of as many items each.
    fn split_items(&mut self, d: &Differs, pool: &[(u64, Id)]) -> Vec<Range> {
        let (from, to) = self.item_span(d);
        let first = pool.partition_point(|(at, _)| *at < from);
        let last = pool.partition_point(|(at, _)| *at < to);
        let items: Vec<(u64, Id)> = pool[first..last.max(first)]
            .iter()
            .filter(|(at, id)| !d.lower.above(*at, id) && d.upper.above(*at, id))
            .copied()
            .collect();
        let n = items.len();
        if n < ID_LIST_BELOW as usize {
            self.sent.extend(items.iter().map(|(_, id)| *id));
            return vec![Range {
                upper: d.upper.clone(),
                body: Body::IdList(items.into_iter().map(|(_, id)| id).collect()),
            }];
        }
        let (each, extra) = (n / BUCKETS, n % BUCKETS);
        let mut pieces = Vec::with_capacity(BUCKETS);
        let mut start = 0;
        for i in 0..BUCKETS {
            let stop = start + each + usize::from(i < extra);
            let mut sum = IdSum::default();
            items[start..stop]
                .iter()
                .for_each(|(_, id)| sum.add(&IdSum::of(id)));
            let upper = if stop == n {
                d.upper.clone()
            } else {
                let (a, b) = (&items[stop - 1], &items[stop]);
                Bound::between((a.0, &a.1), (b.0, &b.1))
            };
            pieces.push(Range {
                upper,
                body: Body::Fingerprint(sum.fingerprint()),
            });
            start = stop;
        }
        pieces
    }

    /// The seconds of our window holding a range's items: `[from, to)`.
    fn item_span(&self, d: &Differs) -> (u64, u64) {
        let past = d
            .upper
            .at
            .saturating_add(u64::from(!d.upper.prefix.is_empty()));
        (d.lower.at.max(self.since), past.min(self.end))
    }

    /// The seconds of our window wholly within a range: `[from, to)`.
    fn whole_span(&self, lower: &Bound, upper: &Bound) -> (u64, u64) {
        let first = lower.at.saturating_add(u64::from(!lower.prefix.is_empty()));
        (first.max(self.since), upper.at.min(self.end))
    }

    /// The sum of our items of `bound`'s second below it (its second must be loaded).
    fn partial(&self, bound: &Bound) -> IdSum {
        let mut sum = IdSum::default();
        if bound.prefix.is_empty() {
            return sum;
        }
        if let Some(ids) = self.seconds.get(&bound.at) {
            ids.iter()
                .filter(|id| bound.above(bound.at, id))
                .for_each(|id| sum.add(&IdSum::of(id)));
        }
        sum
    }

    /// Reads the ids of the `seconds` not read yet, in one read.
    async fn load_seconds<S: Source>(
        &mut self,
        src: &mut S,
        mut seconds: Vec<u64>,
    ) -> Result<(), Error<S::Error>> {
        seconds.sort_unstable();
        seconds.dedup();
        seconds.retain(|at| !self.seconds.contains_key(at));
        let spans: Vec<(u64, u64)> = seconds
            .iter()
            .filter(|at| (self.since..self.end).contains(*at))
            .map(|at| (*at, at + 1))
            .collect();
        let items = if spans.is_empty() {
            Vec::new()
        } else {
            src.ids(&spans).await.map_err(Error::Source)?
        };
        self.rows_read += items.len() as u64;
        let mut read: HashMap<u64, Vec<Id>> = seconds.iter().map(|at| (*at, Vec::new())).collect();
        for (at, id) in items {
            read.entry(at).or_default().push(id);
        }
        for (at, mut ids) in read {
            ids.sort_unstable();
            self.seconds.insert(at, ids);
        }
        Ok(())
    }

    /// Sums of `spans`, asking the source only for the non-empty ones.
    async fn sums<S: Source>(
        &mut self,
        src: &mut S,
        spans: &[(u64, u64)],
    ) -> Result<Vec<IdSum>, Error<S::Error>> {
        let clipped: Vec<(u64, u64)> = spans
            .iter()
            .map(|&(a, b)| (a.max(self.since), b.min(self.end)))
            .collect();
        if let Some((seconds, cumulated)) = &self.kept {
            let below = |t: u64| cumulated[seconds.partition_point(|at| *at < t)];
            return Ok(clipped
                .iter()
                .map(|&(a, b)| {
                    let mut sum = IdSum::default();
                    if a < b {
                        sum = below(b);
                        sum.sub(&below(a));
                    }
                    sum
                })
                .collect());
        }
        let asked: Vec<(u64, u64)> = clipped.iter().copied().filter(|(a, b)| a < b).collect();
        let mut answers = if asked.is_empty() {
            Vec::new()
        } else {
            src.sums(&asked).await.map_err(Error::Source)?
        }
        .into_iter();
        Ok(clipped
            .iter()
            .map(|(a, b)| {
                if a < b {
                    answers.next().unwrap_or_default()
                } else {
                    IdSum::default()
                }
            })
            .collect())
    }
}

/// Of the ids a relay listed for a range, those we may lack, given our sum of the
/// range: none when the sums are equal; when the relay holds one more than we do, the
/// one id that makes the difference (if one does); else all of them, to be looked up.
/// The sums say it as surely as a fingerprint would, and spare looking up what a
/// range of a few seconds holds for the one event in it we lack.
fn may_lack(ids: Vec<Id>, ours: &IdSum) -> Vec<Id> {
    let mut extra = IdSum::default();
    ids.iter().for_each(|id| extra.add(&IdSum::of(id)));
    extra.sub(ours);
    if extra.is_zero() {
        return Vec::new();
    }
    if extra.count == 1 {
        if let Some(id) = ids.iter().find(|id| IdSum::of(id) == extra) {
            return vec![*id];
        }
    }
    ids
}

/// The seconds whose sums make up a range's, before its bounds' partial seconds are
/// added (the upper's items below it) and taken away (the lower's): `[from, to)`.
fn span(lower: &Bound, upper: &Bound) -> (u64, u64) {
    (lower.at, upper.at)
}

#[cfg(test)]
mod tests;

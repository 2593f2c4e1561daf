//! Judging stored zap receipts against the database (`nostr::zap`): load them, look up
//! their targets and their recipients' servers in one go, and settle the verdicts in
//! one transaction. No actix types: the zap actor and `check-aggregates --repair`
//! both run it.

use std::collections::HashSet;

use crate::nostr::aggregate::zap_contribution;
use crate::nostr::zap::{verdict, ZapPolicy, ZapReject};
use crate::storage::zaps::{Settlement, Waiting, ZapStore};
use crate::storage::{judge_facts, StoreResult};

/// What one judging did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judged {
    /// Receipts that now count.
    pub counted: usize,
    /// Receipts that would count but whose stats row the database refuses (a rule of
    /// the operator's): claimed counting nothing, as the aggregator isolates such rows.
    pub isolated: u64,
    /// Judgements by reason, in `ZapReject::ALL`'s order (waiting ones included).
    pub rejects: [u64; ZapReject::ALL.len()],
}

impl Judged {
    fn add(&mut self, other: &Judged) {
        self.counted += other.counted;
        self.isolated += other.isolated;
        for (a, b) in self.rejects.iter_mut().zip(other.rejects) {
            *a += b;
        }
    }
}

/// Judges the receipts among `seqs` that are stored and not counted yet. Receipts
/// that wait are parked; a target or server that arrived while they were judged (by
/// this instance or another) is caught by one more look at their facts after parking.
pub async fn judge(
    store: &dyn ZapStore,
    policy: &ZapPolicy,
    seqs: &[i64],
    now: i64,
    recheck_secs: i64,
) -> StoreResult<Judged> {
    let mut judged = Judged::default();
    let (once, parked) = judge_once(store, policy, seqs, now, recheck_secs).await?;
    judged.add(&once);
    if parked.is_empty() {
        return Ok(judged);
    }
    let targets: Vec<String> = parked
        .iter()
        .filter(|w| !w.on_server)
        .map(|w| w.target.clone())
        .collect();
    let recipients: Vec<String> = parked
        .iter()
        .filter(|w| w.on_server)
        .map(|w| w.recipient.clone())
        .collect();
    let facts = store.zap_facts(&targets, &recipients).await?;
    let again: Vec<i64> = parked
        .iter()
        .filter(|w| match w.on_server {
            false => facts.targets.contains_key(&w.target),
            true => facts
                .servers
                .get(&w.recipient)
                .is_some_and(|s| s.checked_at >= now),
        })
        .map(|w| w.seq)
        .collect();
    if !again.is_empty() {
        let (twice, _) = judge_once(store, policy, &again, now, recheck_secs).await?;
        judged.add(&twice);
    }
    Ok(judged)
}

async fn judge_once(
    store: &dyn ZapStore,
    policy: &ZapPolicy,
    seqs: &[i64],
    now: i64,
    recheck_secs: i64,
) -> StoreResult<(Judged, Vec<Waiting>)> {
    let mut judged = Judged::default();
    let receipts = store.zap_receipts(seqs).await?;
    let found: HashSet<i64> = receipts.iter().map(|r| r.seq).collect();
    let mut s = Settlement {
        // Counted meanwhile (another instance), or gone: nothing waits for them.
        refused: seqs
            .iter()
            .filter(|q| !found.contains(q))
            .copied()
            .collect(),
        ..Default::default()
    };
    let facts = judge_facts(store, receipts.iter().map(|r| &r.event)).await?;
    for r in &receipts {
        match facts.judge(policy, &r.event, r.first_seen) {
            Ok(zap) => s
                .counted
                .push((r.seq, r.event.id.to_hex(), zap_contribution(&zap))),
            Err(why) => {
                judged.rejects[why as usize] += 1;
                // A receipt that waits held together: its zap names whom and what.
                match verdict(&r.event) {
                    Ok(zap) if why.waits() => s.waiting.push(Waiting {
                        seq: r.seq,
                        recipient: zap.recipient,
                        target: zap.target.key().to_owned(),
                        on_server: why == ZapReject::Pending,
                    }),
                    _ => {
                        tracing::debug!(id = %r.event.id, reason = why.label(), "zap receipt counts nothing");
                        s.refused.push(r.seq);
                    }
                }
            }
        }
    }
    if !s.is_empty() {
        match store.settle_zaps(&s, now, recheck_secs).await {
            Ok(n) => judged.counted = n,
            Err(e) if e.is_about_data() => {
                let (counted, isolated) =
                    settle_isolating(store, s.clone(), now, recheck_secs).await?;
                judged.counted = counted;
                judged.isolated = isolated;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((judged, s.waiting))
}

/// Settles `s` when the database refused it for what it holds: all but the counts
/// first, then each count alone; a count refused alone is settled as counting nothing
/// (logged), so one row never holds up every other receipt.
async fn settle_isolating(
    store: &dyn ZapStore,
    mut s: Settlement,
    now: i64,
    recheck_secs: i64,
) -> StoreResult<(usize, u64)> {
    let counted = std::mem::take(&mut s.counted);
    store.settle_zaps(&s, now, recheck_secs).await?;
    let (mut n, mut isolated) = (0, 0);
    for one in counted {
        let seq = one.0;
        let alone = Settlement {
            counted: vec![one],
            ..Default::default()
        };
        match store.settle_zaps(&alone, now, recheck_secs).await {
            Ok(k) => n += k,
            Err(error) if error.is_about_data() => {
                tracing::warn!(seq, %error, "the database refuses this zap's aggregate row; the receipt counts nothing");
                isolated += 1;
                let refused = Settlement {
                    refused: vec![seq],
                    ..Default::default()
                };
                store.settle_zaps(&refused, now, recheck_secs).await?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok((n, isolated))
}

/// Judges every receipt that was stored but never judged, in pages (start-up, and
/// after `check-aggregates --repair`). Returns what it did.
pub async fn judge_backlog(
    store: &dyn ZapStore,
    policy: &ZapPolicy,
    now: i64,
    recheck_secs: i64,
) -> StoreResult<Judged> {
    let mut judged = Judged::default();
    let mut after = 0;
    loop {
        let seqs = store.unjudged_zaps(after, PAGE).await?;
        let Some(last) = seqs.last() else {
            return Ok(judged);
        };
        after = *last;
        judged.add(&judge(store, policy, &seqs, now, recheck_secs).await?);
    }
}

/// Receipts judged per step: each is loaded whole (about 2 kB with its invoice and
/// request), so a step holds about a megabyte.
pub const PAGE: i64 = 500;

//! Synthetic, freshly signed Nostr data and in-process relays holding it, shared by
//! `demo`, the benchmark and the tests.

// Building tags from fixed shapes and signing with local keys cannot fail.
#![allow(clippy::expect_used)]

use std::collections::{BTreeSet, HashMap, HashSet};

use ::rand::rngs::StdRng;
use ::rand::{Rng, SeedableRng};
use nostr_relay_builder::prelude::*;

use nostr_sync::nostr::aggregate::{contribution, sum_by_target, zap_contribution, StatsDelta};
use nostr_sync::nostr::zap::{TargetFacts, ZapPolicy};

/// A generated data set: unique events and, per relay, the indices it holds.
pub struct Dataset {
    pub events: Vec<Event>,
    pub placement: Vec<Vec<usize>>,
}

impl Dataset {
    /// `n` events, placed on `relays` relays: each on relay `i % relays` and, with
    /// probability `overlap`, on each other relay too.
    pub fn generate(n: usize, relays: usize, overlap: f64, seed: u64) -> Dataset {
        let events = sign_events(n, seed);
        let placement = place(events.len(), relays, overlap, seed);
        Dataset { events, placement }
    }

    /// The aggregates a recount of all events gives.
    pub fn expected_stats(&self) -> HashMap<String, StatsDelta> {
        expected_stats(&self.events)
    }

    pub fn relay_events(&self, relay: usize) -> impl Iterator<Item = &Event> {
        self.placement[relay].iter().map(|i| &self.events[*i])
    }
}

/// NIP-09 deletions, dated now, of every `every`-th reaction, reply and repost of
/// `events`, each signed by the author of what it deletes (whose keys are in `authors`).
pub fn deletions(events: &[Event], authors: &[Keys], every: usize) -> Vec<Event> {
    let keys: HashMap<PublicKey, &Keys> = authors.iter().map(|k| (k.public_key(), k)).collect();
    events
        .iter()
        .filter(|e| contribution(e).is_some())
        .step_by(every.max(1))
        .filter_map(|e| {
            let author = keys.get(&e.pubkey)?;
            EventBuilder::new(Kind::EventDeletion, "")
                .tag(Tag::event(e.id))
                .sign_with_keys(author)
                .ok()
        })
        .collect()
}

/// The aggregates a recount of `events` gives, zap receipts judged by the rules alone.
pub fn expected_stats(events: &[Event]) -> HashMap<String, StatsDelta> {
    expected_stats_by(events, events, &ZapPolicy::default())
}

/// The aggregates a recount of `events` gives, zap receipts judged by `zaps` against
/// their targets among `seen` (events stored once, deleted since or not: a zap counted
/// stays counted, as a reaction does).
pub fn expected_stats_by(
    events: &[Event],
    seen: &[Event],
    zaps: &ZapPolicy,
) -> HashMap<String, StatsDelta> {
    let facts = nostr_sync::storage::zaps::Facts {
        targets: seen
            .iter()
            .map(|e| (e.id.to_hex(), TargetFacts::of(e)))
            .collect(),
        servers: HashMap::new(),
    };
    let items: Vec<_> = events
        .iter()
        .filter_map(|e| {
            contribution(e).or_else(|| Some(zap_contribution(&facts.judge(zaps, e, 0).ok()?)))
        })
        .collect();
    sum_by_target(&items)
}

/// `n` freshly signed events from `n / 20` authors (5 to 500), dated over the past
/// day in order.
pub fn sign_events(n: usize, seed: u64) -> Vec<Event> {
    sign_events_by(n, seed).0
}

/// As `sign_events`, with the authors' keys and the key of the zapper service that
/// signs the zap receipts.
pub fn sign_events_by(n: usize, seed: u64) -> (Vec<Event>, Vec<Keys>, Keys) {
    let mut maker = EventMaker::new((n / 20).clamp(5, 500), seed);
    let base = Timestamp::now().as_secs() - 86_400;
    let events = (0..n)
        .map(|i| {
            maker.next(Timestamp::from(
                base + (i as u64 * 86_000 / n.max(1) as u64),
            ))
        })
        .collect();
    (events, maker.authors, maker.zapper.keys)
}

/// Makes a realistic mix: notes, replies, reactions, reposts, zap receipts with bolt11
/// amounts, profiles and contact lists, with 100 to 1,000 bytes of content. Replies,
/// reactions, reposts and zaps point at notes made earlier.
pub struct EventMaker {
    rng: StdRng,
    authors: Vec<Keys>,
    /// Notes made so far, with their authors.
    notes: Vec<(EventId, PublicKey)>,
    zapper: Zapper,
    /// Profiles and contact lists are replaceable: one each per author, so that every
    /// event made is one a relay keeps.
    replaceable: BTreeSet<(usize, u16)>,
    /// Every id made so far: two reactions of one author to one note within one second
    /// are the same event, and a dataset must hold distinct events only.
    ids: HashSet<EventId>,
    made: usize,
}

impl EventMaker {
    pub fn new(authors: usize, seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            authors: (0..authors.max(1)).map(|_| Keys::generate()).collect(),
            notes: Vec::new(),
            zapper: Zapper::new(seed),
            replaceable: BTreeSet::new(),
            ids: HashSet::new(),
            made: 0,
        }
    }

    /// A new event dated `created_at`, distinct from every event made before.
    pub fn next(&mut self, created_at: Timestamp) -> Event {
        loop {
            let event = self.attempt(created_at);
            if self.ids.insert(event.id) {
                return event;
            }
        }
    }

    fn attempt(&mut self, created_at: Timestamp) -> Event {
        let rng = &mut self.rng;
        let author = rng.random_range(0..self.authors.len());
        let content_len = rng.random_range(100..1_000);
        let content: String = (0..content_len)
            .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
            .collect();
        let target =
            (!self.notes.is_empty()).then(|| self.notes[rng.random_range(0..self.notes.len())]);
        let mut roll = rng.random_range(0..100);
        let replaceable_kind = match roll {
            95..98 => Some(0),
            98.. => Some(3),
            _ => None,
        };
        if let Some(kind) = replaceable_kind {
            if !self.replaceable.insert((author, kind)) {
                roll = 0;
            }
        }
        let builder = match (roll, target) {
            (0..40, _) | (_, None) => EventBuilder::text_note(content),
            (40..58, Some((t, _))) => EventBuilder::text_note(content)
                .tag(Tag::parse(["e", &t.to_hex(), "", "reply"]).expect("tag")),
            (58..80, Some((t, _))) => EventBuilder::new(Kind::Reaction, "+").tag(Tag::event(t)),
            (80..87, Some((t, _))) => EventBuilder::new(Kind::Repost, "").tag(Tag::event(t)),
            (87..95, Some(t)) => {
                // A valid receipt (NIP-57): published by the zapper, not the sender.
                let msats = rng.random_range(1..5_000u64) * 1_000;
                self.made += 1;
                return self
                    .zapper
                    .receipt(&self.authors[author], t, msats, created_at);
            }
            (95..98, _) => EventBuilder::metadata(
                &Metadata::new()
                    .name(format!("user{}", self.made))
                    .about(content),
            ),
            _ => EventBuilder::new(Kind::ContactList, "").tags(
                self.authors
                    .iter()
                    .take(5)
                    .map(|k| Tag::public_key(k.public_key())),
            ),
        };
        let event = builder
            .custom_created_at(created_at)
            .sign_with_keys(&self.authors[author])
            .expect("signing with local keys");
        if event.kind == Kind::TextNote {
            self.notes.push((event.id, event.pubkey));
        }
        self.made += 1;
        event
    }
}

/// What it takes to make valid zap receipts (NIP-57): the zapper service's Nostr key and
/// its Lightning node's key.
pub struct Zapper {
    pub keys: Keys,
    node: bitcoin::secp256k1::SecretKey,
}

impl Zapper {
    pub fn new(seed: u64) -> Self {
        Self::with_keys(Keys::generate(), seed)
    }

    /// A zapper service signing receipts with `keys` (its LNURL server's `nostrPubkey`).
    pub fn with_keys(keys: Keys, seed: u64) -> Self {
        let mut bytes = [7u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Self {
            keys,
            node: bitcoin::secp256k1::SecretKey::from_slice(&bytes).expect("a valid key"),
        }
    }

    /// A zap request by `sender` for `msats` to `target` (an event and its author), and
    /// the receipt of its payment: an invoice signed by the node that commits to the
    /// request, published by the zapper.
    pub fn receipt(
        &self,
        sender: &Keys,
        target: (EventId, PublicKey),
        msats: u64,
        created_at: Timestamp,
    ) -> Event {
        let request = EventBuilder::new(Kind::ZapRequest, "")
            .tag(Tag::public_key(target.1))
            .tag(Tag::event(target.0))
            .tag(Tag::parse(["amount", &msats.to_string()]).expect("tag"))
            .custom_created_at(created_at)
            .sign_with_keys(sender)
            .expect("signing with local keys")
            .as_json();
        let invoice = self.invoice(&request, msats, created_at);
        EventBuilder::new(Kind::ZapReceipt, "")
            .tag(Tag::public_key(target.1))
            .tag(Tag::event(target.0))
            .tag(Tag::parse(["bolt11", &invoice]).expect("tag"))
            .tag(Tag::parse(["description", &request]).expect("tag"))
            .custom_created_at(created_at)
            .sign_with_keys(&self.keys)
            .expect("signing with local keys")
    }

    /// A BOLT-11 invoice for `msats` whose description hash commits to `description`.
    pub fn invoice(&self, description: &str, msats: u64, created_at: Timestamp) -> String {
        use bitcoin::hashes::{sha256, Hash};
        use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let hash = sha256::Hash::hash(description.as_bytes());
        let payment = sha256::Hash::hash(&created_at.as_secs().to_le_bytes());
        InvoiceBuilder::new(Currency::Bitcoin)
            .description_hash(hash)
            .amount_milli_satoshis(msats)
            .payment_hash(payment)
            .payment_secret(PaymentSecret([42u8; 32]))
            .duration_since_epoch(std::time::Duration::from_secs(created_at.as_secs()))
            .min_final_cltv_expiry_delta(144)
            .build_signed(|m| secp.sign_ecdsa_recoverable(m, &self.node))
            .expect("a well-formed invoice")
            .to_string()
    }
}

/// Which of `n` events each of `relays` relays holds.
/// The relay an author writes to, of `relays`: as its NIP-65 relay list says, for
/// `bench --discovery`.
pub fn home_of(author: &PublicKey, relays: usize) -> usize {
    let b = author.to_bytes();
    (u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) % relays.max(1) as u64)
        as usize
}

/// As `place`, with each event's home the relay its author writes to (`home_of`).
pub fn place_by_author(
    events: &[Event],
    relays: usize,
    overlap: f64,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut placement = vec![Vec::new(); relays];
    for (i, e) in events.iter().enumerate() {
        let home = home_of(&e.pubkey, relays);
        for (r, held) in placement.iter_mut().enumerate() {
            if r == home || rng.random_bool(overlap) {
                held.push(i);
            }
        }
    }
    placement
}

pub fn place(n: usize, relays: usize, overlap: f64, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut placement = vec![Vec::new(); relays];
    for i in 0..n {
        let home = i % relays;
        for (r, held) in placement.iter_mut().enumerate() {
            if r == home || rng.random_bool(overlap) {
                held.push(i);
            }
        }
    }
    placement
}

/// A nostr-relay-builder relay on loopback, and the store behind it.
pub struct HostedRelay {
    pub relay: LocalRelay,
    pub database: MemoryDatabase,
}

impl HostedRelay {
    /// Starts a relay holding `events`, keeping everything it is given, with its REQ
    /// limit capped at `max_limit` and publishing not rate-limited.
    pub async fn start<'a>(
        events: impl IntoIterator<Item = &'a Event>,
        max_limit: usize,
    ) -> anyhow::Result<HostedRelay> {
        Self::start_with(events, max_limit, false).await
    }

    /// As `start`, answering every REQ of a client that has not authenticated (NIP-42)
    /// with an AUTH challenge and `CLOSED auth-required:`.
    pub async fn start_with_auth<'a>(
        events: impl IntoIterator<Item = &'a Event>,
        max_limit: usize,
    ) -> anyhow::Result<HostedRelay> {
        Self::start_with(events, max_limit, true).await
    }

    async fn start_with<'a>(
        events: impl IntoIterator<Item = &'a Event>,
        max_limit: usize,
        auth: bool,
    ) -> anyhow::Result<HostedRelay> {
        let database = MemoryDatabase::with_opts(MemoryDatabaseOptions {
            events: true,
            max_events: None,
        });
        for event in events {
            database.save_event(event).await?;
        }
        let builder = RelayBuilder::default()
            .addr(std::net::IpAddr::from([127, 0, 0, 1]))
            .database(database.clone())
            .max_filter_limit(max_limit)
            .default_filter_limit(max_limit)
            .rate_limit(RateLimit {
                max_reqs: 100_000,
                notes_per_minute: 1_000_000,
            });
        let builder = if auth {
            builder.nip42(RelayBuilderNip42 {
                mode: RelayBuilderNip42Mode::Read,
            })
        } else {
            builder
        };
        let relay = LocalRelay::new(builder);
        relay.run().await?;
        Ok(HostedRelay { relay, database })
    }

    pub async fn url(&self) -> String {
        self.relay.url().await.to_string()
    }

    /// Stores `event` and sends it to live subscribers.
    pub async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        self.database.save_event(event).await?;
        self.relay.notify_event(event.clone());
        Ok(())
    }

    /// Stores `event` without sending it to live subscribers (as a relay that drops
    /// live delivery under load does).
    pub async fn store_silently(&self, event: &Event) -> anyhow::Result<()> {
        self.database.save_event(event).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_made_within_one_second_are_distinct() {
        // Few authors and one second make identical reactions and reposts likely.
        let mut maker = EventMaker::new(2, 7);
        let now = Timestamp::from(1_700_000_000);
        let ids: HashSet<EventId> = (0..2_000).map(|_| maker.next(now).id).collect();
        assert_eq!(ids.len(), 2_000);
    }
}

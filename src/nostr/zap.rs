//! Zap receipts (NIP-57, appendix F). A receipt *holds together* when its `bolt11`
//! invoice decodes with a valid checksum and signature and an amount of at most 21
//! million BTC; its `description` is a kind-9734 zap request with a valid id and
//! signature; the invoice's description hash is the SHA-256 of that description; the
//! request's `amount`, when given, is the invoice's; and receipt and request each carry
//! exactly one `p` tag (a valid key), at most one `e` and at most one `a`, the same in
//! both. Those name the zap: its recipient (`p`) and its [`Target`] (the `e`, else the
//! `a`), found by [`zap_of`] and used by the check and the count alike.
//!
//! A receipt that holds together counts ([`ZapPolicy::judge`]) only when
//! - its recipient is the target's author, or a pubkey in the target's appendix G
//!   `zap` split tags (for an `a` target: the address's pubkey): else anyone could add
//!   their own zaps to anybody's note. Until the target is stored, it waits;
//! - and, as appendix F asks, its signer is a key the recipient's LNURL server named
//!   as its `nostrPubkey` (one of the few newest, [`ServerFacts`]), or an allowlisted
//!   zapper (`aggregates.zap_signers`): anyone can sign an invoice for any amount with a
//!   node key of their own. Until the server is known, or while the receipt is newer
//!   than the server's last answer (the recipient may have moved to another provider),
//!   it waits.
//!
//! Anything else is a valid event that adds nothing.

use std::str::FromStr;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Message, SECP256K1};
use lightning_invoice::{RawTaggedField, SignedRawBolt11Invoice, TaggedField};

use nostr_sdk::{Event, JsonUtil, Kind, PublicKey};

/// Every bitcoin there will ever be, in millisatoshis: no invoice can be for more.
pub const MAX_MSATS: i64 = 21_000_000 * 100_000_000_000;

/// Why a zap receipt counts nothing (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZapReject {
    NoInvoice,
    BadInvoice,
    NoAmount,
    TooLarge,
    /// No description, or not a signed kind-9734 event.
    BadRequest,
    /// The invoice does not commit to the description.
    HashMismatch,
    AmountMismatch,
    /// Not exactly one `p`, more than one `e` or `a`, or the receipt's differ from
    /// the request's.
    TagMismatch,
    /// Zaps a profile, or names no event or address that can hold a count.
    NoTarget,
    /// The recipient is neither the target's author nor one of its zap splits.
    WrongRecipient,
    /// Not signed by the recipient's LNURL server (nor by an allowlisted zapper).
    UnknownSigner,
    /// The recipient's LNURL server is not known, or was last asked before the
    /// receipt arrived: judged again once it is asked.
    Pending,
    /// The target is not stored yet: judged again when it arrives.
    AwaitingTarget,
}

impl ZapReject {
    pub const ALL: [ZapReject; 13] = [
        ZapReject::NoInvoice,
        ZapReject::BadInvoice,
        ZapReject::NoAmount,
        ZapReject::TooLarge,
        ZapReject::BadRequest,
        ZapReject::HashMismatch,
        ZapReject::AmountMismatch,
        ZapReject::TagMismatch,
        ZapReject::NoTarget,
        ZapReject::WrongRecipient,
        ZapReject::UnknownSigner,
        ZapReject::Pending,
        ZapReject::AwaitingTarget,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ZapReject::NoInvoice => "no_invoice",
            ZapReject::BadInvoice => "bad_invoice",
            ZapReject::NoAmount => "no_amount",
            ZapReject::TooLarge => "too_large",
            ZapReject::BadRequest => "bad_request",
            ZapReject::HashMismatch => "hash_mismatch",
            ZapReject::AmountMismatch => "amount_mismatch",
            ZapReject::TagMismatch => "tag_mismatch",
            ZapReject::NoTarget => "no_target",
            ZapReject::WrongRecipient => "wrong_recipient",
            ZapReject::UnknownSigner => "unknown_signer",
            ZapReject::Pending => "pending",
            ZapReject::AwaitingTarget => "awaiting_target",
        }
    }

    /// Whether the receipt waits to be judged again, rather than counting nothing.
    pub fn waits(self) -> bool {
        matches!(self, ZapReject::Pending | ZapReject::AwaitingTarget)
    }
}

/// What a zap is for: the row of `event_stats` it counts in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// An event id, lowercase hex.
    Event(String),
    /// `kind:pubkey:d` of a replaceable or addressable event (`nostr::parse_address`).
    Address(String),
}

impl Target {
    /// The `event_stats` key.
    pub fn key(&self) -> &str {
        match self {
            Target::Event(id) | Target::Address(id) => id,
        }
    }
}

/// A receipt that holds together: whom it pays, for what, how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zap {
    pub target: Target,
    /// Lowercase hex of the recipient's key (`p`).
    pub recipient: String,
    pub msats: i64,
}

/// What the database knows of a zapped event: its author and its `zap` split tags
/// (NIP-57 appendix G), lowercase hex.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetFacts {
    pub author: String,
    pub splits: Vec<String>,
}

impl TargetFacts {
    pub fn of(event: &Event) -> Self {
        Self {
            author: super::hex(event.pubkey.as_bytes()),
            splits: split_recipients(event.tags.iter().map(|t| t.as_slice())),
        }
    }

    /// Whether `recipient` may receive zaps for this event.
    pub fn pays(&self, recipient: &str) -> bool {
        self.author == recipient || self.splits.iter().any(|s| s == recipient)
    }
}

/// Pubkeys of an event's `zap` tags (`["zap", pubkey, relay, weight]`), lowercase.
pub fn split_recipients<'a>(tags: impl Iterator<Item = &'a [String]>) -> Vec<String> {
    tags.filter(|t| t.len() >= 2 && t[0] == "zap" && super::is_hex_id(&t[1]))
        .map(|t| t[1].to_ascii_lowercase())
        .collect()
}

/// What the database knows of a recipient's LNURL server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFacts {
    /// Keys (hex) the server named as its `nostrPubkey`, newest first.
    pub keys: Vec<String>,
    /// When it last answered (unix seconds); 0: never.
    pub checked_at: i64,
}

/// Whose receipts count (`aggregates.zap_verification` and `zap_signers`). The
/// default judges by the rules alone: any signer, as the tools and the rules' own
/// tests judge receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZapPolicy {
    /// Any receipt that holds together counts (no signer check).
    pub any: bool,
    /// Zapper keys that count for any recipient.
    pub allow: Vec<PublicKey>,
    /// Whether a recipient's LNURL server decides (else the allowlist alone does).
    pub lnurl: bool,
}

impl Default for ZapPolicy {
    fn default() -> Self {
        Self {
            any: true,
            allow: Vec::new(),
            lnurl: false,
        }
    }
}

impl ZapPolicy {
    /// Whether the policy asks recipients' LNURL servers.
    pub fn asks_servers(&self) -> bool {
        self.lnurl && !self.any
    }

    /// Judges `receipt`, which arrived at `first_seen` (unix seconds), given what the
    /// database holds of its target (`None`: not stored) and of its recipient's
    /// server (`None`: never asked).
    pub fn judge(
        &self,
        receipt: &Event,
        first_seen: i64,
        target: Option<&TargetFacts>,
        server: Option<&ServerFacts>,
    ) -> Result<Zap, ZapReject> {
        let zap = verdict(receipt)?;
        match &zap.target {
            Target::Event(_) => {
                let target = target.ok_or(ZapReject::AwaitingTarget)?;
                if !target.pays(&zap.recipient) {
                    return Err(ZapReject::WrongRecipient);
                }
            }
            Target::Address(address) => {
                if address.split(':').nth(1) != Some(zap.recipient.as_str()) {
                    return Err(ZapReject::WrongRecipient);
                }
            }
        }
        self.signed_by_trusted(receipt, first_seen, server)?;
        Ok(zap)
    }

    /// NIP-57 appendix F: "The zapReceipt event's pubkey MUST be the same as the
    /// recipient's lnurl provider's nostrPubkey", or an allowlisted zapper's.
    fn signed_by_trusted(
        &self,
        receipt: &Event,
        first_seen: i64,
        server: Option<&ServerFacts>,
    ) -> Result<(), ZapReject> {
        if self.any || self.allow.contains(&receipt.pubkey) {
            return Ok(());
        }
        if !self.lnurl {
            return Err(ZapReject::UnknownSigner);
        }
        let signer = super::hex(receipt.pubkey.as_bytes());
        match server {
            Some(s) if s.keys.contains(&signer) => Ok(()),
            // Asked since the receipt arrived, and it did not name this signer.
            Some(s) if s.checked_at > first_seen => Err(ZapReject::UnknownSigner),
            _ => Err(ZapReject::Pending),
        }
    }
}

/// The first value of `event`'s `name` tags.
fn tag<'a>(event: &'a Event, name: &'a str) -> Option<&'a str> {
    values(event, name).next()
}

/// The values of `event`'s `name` tags.
fn values<'a>(event: &'a Event, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(move |t| t.len() >= 2 && t[0] == name)
        .map(|t| t[1].as_str())
}

/// At most one value of `name` (hex lowercased): `Err` when there are more.
fn at_most_one(event: &Event, name: &str) -> Result<Option<String>, ZapReject> {
    let mut all = values(event, name);
    // An address's `d` part is case-sensitive: only hex values are lowercased.
    let first = all.next().map(|v| match name {
        "a" => v.to_owned(),
        _ => v.to_ascii_lowercase(),
    });
    match all.next() {
        Some(_) => Err(ZapReject::TagMismatch),
        None => Ok(first),
    }
}

/// NIP-57: receipt and request carry one `p`, at most one `e` and at most one `a`,
/// and the receipt's are the request's. The one rule for which tags name the zap.
fn zap_tags(receipt: &Event, request: &Event) -> Result<(String, Target), ZapReject> {
    let mut named = Vec::with_capacity(2);
    for event in [receipt, request] {
        let p = at_most_one(event, "p")?.ok_or(ZapReject::TagMismatch)?;
        named.push((p, at_most_one(event, "e")?, at_most_one(event, "a")?));
    }
    if named[0] != named[1] {
        return Err(ZapReject::TagMismatch);
    }
    let (p, e, a) = named.swap_remove(0);
    if PublicKey::from_hex(&p).is_err() {
        return Err(ZapReject::TagMismatch);
    }
    let target = match (e, a) {
        (Some(e), _) if super::is_hex_id(&e) => Target::Event(e),
        (Some(_), _) => return Err(ZapReject::NoTarget),
        (None, Some(a)) => Target::Address(super::parse_address(&a).ok_or(ZapReject::NoTarget)?),
        (None, None) => return Err(ZapReject::NoTarget),
    };
    Ok((p, target))
}

/// Verdicts of the receipts seen last. Checking one costs two signature checks (the
/// invoice's and the request's); an id fixes the whole event, so a verdict holds
/// whatever the policy or the database: a cache of the rules, shared by every service
/// in the process.
static VERDICTS: std::sync::Mutex<
    Option<lru::LruCache<nostr_sdk::EventId, Result<Zap, ZapReject>>>,
> = std::sync::Mutex::new(None);

/// Receipts whose verdicts are cached.
const VERDICTS_CACHED: usize = 4_096;

/// Whether `receipt` holds together, and what it zaps (its signer, recipient and
/// target aside): judged once per id and remembered (see `VERDICTS`).
pub fn verdict(receipt: &Event) -> Result<Zap, ZapReject> {
    let lock = || VERDICTS.lock().unwrap_or_else(|e| e.into_inner());
    let cached = lock().as_mut().and_then(|c| c.get(&receipt.id).cloned());
    match cached {
        Some(v) => v,
        None => {
            let v = zap_of(receipt);
            lock()
                .get_or_insert_with(|| {
                    lru::LruCache::new(
                        std::num::NonZeroUsize::new(VERDICTS_CACHED)
                            .unwrap_or(std::num::NonZeroUsize::MIN),
                    )
                })
                .put(receipt.id, v.clone());
            v
        }
    }
}

/// Whether `event` is a zap receipt that holds together: it is judged against the
/// database before it counts.
pub fn holds_together(event: &Event) -> bool {
    event.kind == Kind::ZapReceipt && verdict(event).is_ok()
}

/// The zap a receipt makes, if it holds together (uncached: see [`verdict`]).
pub fn zap_of(receipt: &Event) -> Result<Zap, ZapReject> {
    if receipt.kind != Kind::ZapReceipt {
        return Err(ZapReject::NoInvoice);
    }
    let bolt11 = tag(receipt, "bolt11").ok_or(ZapReject::NoInvoice)?;
    // The decoder wants ASCII; anything else is not an invoice.
    if !bolt11.is_ascii() {
        return Err(ZapReject::BadInvoice);
    }
    let invoice = Invoice::decode(bolt11.trim()).ok_or(ZapReject::BadInvoice)?;
    let msats = invoice.msats.ok_or(ZapReject::NoAmount)?;
    let msats = i64::try_from(msats)
        .ok()
        .filter(|m| *m <= MAX_MSATS)
        .ok_or(ZapReject::TooLarge)?;
    let description = tag(receipt, "description").ok_or(ZapReject::BadRequest)?;
    let request = Event::from_json(description).map_err(|_| ZapReject::BadRequest)?;
    if request.kind != Kind::ZapRequest || request.verify().is_err() {
        return Err(ZapReject::BadRequest);
    }
    if invoice.description_hash != Some(sha256::Hash::hash(description.as_bytes())) {
        return Err(ZapReject::HashMismatch);
    }
    if let Some(asked) = tag(&request, "amount") {
        if asked.trim().parse::<i64>().ok() != Some(msats) {
            return Err(ZapReject::AmountMismatch);
        }
    }
    let (recipient, target) = zap_tags(receipt, &request)?;
    Ok(Zap {
        target,
        recipient,
        msats,
    })
}

/// What a receipt's check needs of its BOLT 11 invoice.
struct Invoice {
    msats: Option<u64>,
    /// The `h` field; `None` when the invoice carries its description in clear (`d`).
    description_hash: Option<sha256::Hash>,
}

impl Invoice {
    /// Decodes `bolt11` exactly as `Bolt11Invoice::from_str` accepts it: a valid
    /// checksum; one payment hash, one description (`d` or `h`) and one payment secret;
    /// feature bits that support payment secrets and require nothing unknown; an amount
    /// in whole millisatoshis; and a signature from which the signing node's key is
    /// recovered (and that verifies against the `n` field's key, when there is one).
    /// `from_str` checks the signature with two recoveries and a verification, each on a
    /// new secp256k1 context; this takes one recovery on the shared context.
    fn decode(bolt11: &str) -> Option<Invoice> {
        let signed = SignedRawBolt11Invoice::from_str(bolt11).ok()?;
        let raw = signed.raw_invoice();
        let fields = || {
            raw.data.tagged_fields.iter().filter_map(|f| match f {
                RawTaggedField::KnownSemantics(f) => Some(f),
                RawTaggedField::UnknownSemantics(_) => None,
            })
        };
        let one = |want: fn(&TaggedField) -> bool| fields().filter(|f| want(f)).count() == 1;
        let features_ok = match fields().find(|f| matches!(f, TaggedField::Features(_))) {
            Some(TaggedField::Features(f)) => {
                !f.requires_unknown_bits() && f.supports_payment_secret()
            }
            _ => false,
        };
        let pico = raw.amount_pico_btc();
        if !one(|f| matches!(f, TaggedField::PaymentHash(_)))
            || !one(|f| {
                matches!(
                    f,
                    TaggedField::Description(_) | TaggedField::DescriptionHash(_)
                )
            })
            || !one(|f| matches!(f, TaggedField::PaymentSecret(_)))
            || !features_ok
            || pico.is_some_and(|p| p % 10 != 0)
        {
            return None;
        }
        let digest = Message::from_digest(*signed.signable_hash());
        let recovered = SECP256K1
            .recover_ecdsa(&digest, &signed.signature().0)
            .ok()?;
        if let Some(stated) = raw.payee_pub_key() {
            let sig = signed.signature().0.to_standard();
            if stated.0 != recovered && SECP256K1.verify_ecdsa(&digest, &sig, &stated.0).is_err() {
                return None;
            }
        }
        Some(Invoice {
            msats: pico.map(|p| p / 10),
            description_hash: raw.description_hash().map(|h| h.0),
        })
    }
}

#[cfg(test)]
mod tests;

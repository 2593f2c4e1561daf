//! Zap receipts (NIP-57, appendix F). A receipt counts only when it holds together:
//! its `bolt11` invoice decodes with a valid checksum and signature and an amount of at
//! most 21 million BTC; its `description` is a kind-9734 zap request with a valid id and
//! signature; the invoice's description hash is the SHA-256 of that description; the
//! request's `amount`, when given, is the invoice's; and the receipt's `p` and `e` tags
//! are the request's. Anything else is a valid event that adds nothing.
//!
//! And, as appendix F asks, its signer must be the `nostrPubkey` of the recipient's
//! LNURL server (from the recipient's own kind-0 `lud16`/`lud06`): anyone can sign an
//! invoice with a node key of their own for any amount, and publish a receipt for it.
//! Until the server's key is known, a receipt counts nothing and is *pending*; it is
//! judged again once the key is learnt ([`ZapPolicy`]). `aggregates.zap_signers` is an
//! offline allowlist of zapper keys that count for any recipient.

use std::str::FromStr;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Message, SECP256K1};
use lightning_invoice::{RawTaggedField, SignedRawBolt11Invoice, TaggedField};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use nostr_sdk::{Event, JsonUtil, Kind, PublicKey};

/// Every bitcoin there will ever be, in millisatoshis: no invoice can be for more.
pub const MAX_MSATS: i64 = 21_000_000 * 100_000_000_000;

/// Why a zap receipt counts nothing.
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
    /// The receipt's `p` or `e` tag differs from the request's.
    TagMismatch,
    /// Not signed by the recipient's LNURL server (nor by an allowlisted zapper).
    UnknownSigner,
    /// The recipient's LNURL server is not known yet: judged again once it is.
    Pending,
}

impl ZapReject {
    pub const ALL: [ZapReject; 10] = [
        ZapReject::NoInvoice,
        ZapReject::BadInvoice,
        ZapReject::NoAmount,
        ZapReject::TooLarge,
        ZapReject::BadRequest,
        ZapReject::HashMismatch,
        ZapReject::AmountMismatch,
        ZapReject::TagMismatch,
        ZapReject::UnknownSigner,
        ZapReject::Pending,
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
            ZapReject::UnknownSigner => "unknown_signer",
            ZapReject::Pending => "pending",
        }
    }
}

fn tag<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .find(|t| t.len() >= 2 && t[0] == name)
        .map(|t| t[1].as_str())
}

/// Verdicts of the receipts seen last. Checking one costs two signature checks (the
/// invoice's and the request's), and storage asks twice per receipt (whether it is to be
/// aggregated, and what it adds); an id fixes the whole event, so a verdict holds
/// whatever the policy: a cache of the rules, shared by every service in the process.
static VERDICTS: std::sync::Mutex<
    Option<lru::LruCache<nostr_sdk::EventId, Result<i64, ZapReject>>>,
> = std::sync::Mutex::new(None);

/// Which receipts' signers are trusted (`aggregates.zap_verification`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// Any receipt that holds together counts (no signer check).
    pub any: bool,
    /// Zapper keys that count for any recipient.
    pub allow: Vec<PublicKey>,
    /// Whether a recipient's LNURL server decides (else the allowlist alone does).
    pub lnurl: bool,
    /// Per recipient, the `nostrPubkey` of their LNURL server as last learnt; `None`:
    /// their server does not sign zap receipts (or they have none).
    pub servers: HashMap<PublicKey, Option<PublicKey>>,
}

/// The zap policy one service runs with: its [`Trust`], set at start from the
/// configuration and what the database remembers of LNURL servers, then extended as
/// servers are learnt. Clones share it. Without a trust set (`default`), any signer
/// counts: the rules alone, as the tools and the rules' own tests judge receipts.
#[derive(Debug, Clone, Default)]
pub struct ZapPolicy(Arc<RwLock<Option<Trust>>>);

impl ZapPolicy {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Trust>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<Trust>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Judges receipts from now on by `trust`. LNURL servers learnt before are kept:
    /// they are facts about recipients, whatever the configuration.
    pub fn set(&self, mut trust: Trust) {
        let mut held = self.write();
        if let Some(old) = held.take() {
            for (recipient, server) in old.servers {
                trust.servers.entry(recipient).or_insert(server);
            }
        }
        *held = Some(trust);
    }

    /// Learns the LNURL server key of `recipient` (`None`: it signs no receipts).
    pub fn learn(&self, recipient: PublicKey, server: Option<PublicKey>) {
        if let Some(t) = self.write().as_mut() {
            t.servers.insert(recipient, server);
        }
    }

    /// Whether the LNURL server of `recipient` is known.
    pub fn knows(&self, recipient: &PublicKey) -> bool {
        self.read()
            .as_ref()
            .is_some_and(|t| t.servers.contains_key(recipient))
    }

    /// The amount a zap receipt counts for, in millisatoshis.
    pub fn amount(&self, receipt: &Event) -> Result<i64, ZapReject> {
        let msats = verdict(receipt)?;
        signed_by_trusted(receipt, self.read().as_ref())?;
        Ok(msats)
    }
}

/// The recipient of a receipt: its `p` tag.
pub fn recipient(receipt: &Event) -> Option<PublicKey> {
    tag(receipt, "p").and_then(|p| PublicKey::from_hex(p).ok())
}

/// Whether a receipt holds together, and for how much (its signer aside): judged
/// once per id and remembered (see `VERDICTS`).
pub fn verdict(receipt: &Event) -> Result<i64, ZapReject> {
    let lock = || VERDICTS.lock().unwrap_or_else(|e| e.into_inner());
    let cached = lock().as_mut().and_then(|c| c.get(&receipt.id).copied());
    match cached {
        Some(v) => v,
        None => {
            let v = judge(receipt);
            lock()
                .get_or_insert_with(|| {
                    lru::LruCache::new(
                        std::num::NonZeroUsize::new(4_096).unwrap_or(std::num::NonZeroUsize::MIN),
                    )
                })
                .put(receipt.id, v);
            v
        }
    }
}

/// NIP-57 appendix F: "The zapReceipt event's pubkey MUST be the same as the
/// recipient's lnurl provider's nostrPubkey", or an allowlisted zapper's. Without a
/// configured trust (tests of the rules alone), any signer.
fn signed_by_trusted(receipt: &Event, trust: Option<&Trust>) -> Result<(), ZapReject> {
    let Some(t) = trust else {
        return Ok(());
    };
    if t.any || t.allow.contains(&receipt.pubkey) {
        return Ok(());
    }
    if !t.lnurl {
        return Err(ZapReject::UnknownSigner);
    }
    let recipient = recipient(receipt).ok_or(ZapReject::UnknownSigner)?;
    match t.servers.get(&recipient) {
        Some(Some(server)) if *server == receipt.pubkey => Ok(()),
        Some(_) => Err(ZapReject::UnknownSigner),
        None => Err(ZapReject::Pending),
    }
}

fn judge(receipt: &Event) -> Result<i64, ZapReject> {
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
    if tag(receipt, "p") != tag(&request, "p") || tag(receipt, "e") != tag(&request, "e") {
        return Err(ZapReject::TagMismatch);
    }
    Ok(msats)
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

//! VerifyActor: checks ids and signatures on a `SyncArbiter` with one thread per core,
//! the dominant CPU cost of the pipeline (about 48 µs per event).
//!
//! In: `Verify` chunks from relay actors. Out: the same items split into valid ones and
//! invalid ones with the reason. Only events the dedup actor saw for the first time
//! get here, so duplicates never cost a signature check.

use actix::{Actor, Handler, Message, SyncContext};
use std::num::NonZeroUsize;

use nostr_sdk::secp256k1::{schnorr, Secp256k1, VerifyOnly, XOnlyPublicKey};
use nostr_sdk::PublicKey;

use crate::actors::item::Item;
use crate::metrics::Reject;

/// Check these items.
#[derive(Message)]
#[rtype(result = "Verified")]
pub struct Verify(pub Vec<Item>);

pub struct Verified {
    pub valid: Vec<Item>,
    pub invalid: Vec<(Item, Reject)>,
}

pub struct VerifyActor {
    checker: Checker,
    counters: std::sync::Arc<crate::metrics::Counters>,
}

impl VerifyActor {
    pub fn new(counters: std::sync::Arc<crate::metrics::Counters>) -> Self {
        Self {
            checker: Checker::new(),
            counters,
        }
    }
}

impl Actor for VerifyActor {
    type Context = SyncContext<Self>;
}

impl Handler<Verify> for VerifyActor {
    type Result = actix::MessageResult<Verify>;

    fn handle(&mut self, Verify(items): Verify, _: &mut Self::Context) -> Self::Result {
        let began = std::time::Instant::now();
        let mut out = Verified {
            valid: Vec::with_capacity(items.len()),
            invalid: Vec::new(),
        };
        for item in items {
            match self.checker.check(&item.event) {
                None => {
                    // Judged here, on every core, rather than on the storage thread,
                    // which finds the verdict remembered.
                    if item.event.kind == nostr_sdk::Kind::ZapReceipt {
                        let _ = crate::nostr::zap::verdict(&item.event);
                    }
                    out.valid.push(item)
                }
                Some(reason) => out.invalid.push((item, reason)),
            }
        }
        self.counters
            .timings
            .verify_seconds
            .observe(began.elapsed().as_secs_f64());
        actix::MessageResult(out)
    }
}

/// Authors whose curve points a verifier keeps: lifting a key from its 32 bytes takes a
/// square root, about a tenth of a signature check, and authors repeat.
const KNOWN_AUTHORS: usize = 8_192;

/// Checks ids and signatures, with its scratch buffer and its authors' points.
pub struct Checker {
    secp: Secp256k1<VerifyOnly>,
    /// Where each event's canonical form is written to be hashed, reused.
    buf: Vec<u8>,
    points: lru::LruCache<PublicKey, XOnlyPublicKey>,
}

impl Checker {
    pub fn new() -> Self {
        Self {
            secp: Secp256k1::verification_only(),
            buf: Vec::with_capacity(4096),
            points: lru::LruCache::new(
                NonZeroUsize::new(KNOWN_AUTHORS).unwrap_or(NonZeroUsize::MIN),
            ),
        }
    }

    /// Why `event` is not authentic, if it is not.
    pub fn check(&mut self, event: &nostr_sdk::Event) -> Option<Reject> {
        if !id_matches(event, &mut self.buf) {
            Some(Reject::BadId)
        } else if !self.signed(event.id.as_bytes(), &event.pubkey, &event.sig) {
            Some(Reject::BadSignature)
        } else {
            None
        }
    }

    /// Whether `sig` is `pubkey`'s BIP-340 signature of `digest`, as
    /// `Event::verify_signature_with_ctx` decides.
    fn signed(&mut self, digest: &[u8; 32], pubkey: &PublicKey, sig: &schnorr::Signature) -> bool {
        let Ok(point) = self.points.try_get_or_insert(*pubkey, || pubkey.xonly()) else {
            return false;
        };
        self.secp
            .verify_schnorr(
                sig,
                &nostr_sdk::secp256k1::Message::from_digest(*digest),
                point,
            )
            .is_ok()
    }
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `event.id` is the SHA-256 of NIP-01's serialization
/// `[0,pubkey,created_at,kind,tags,content]`, written straight into `buf`.
/// `Event::verify_id` builds the same bytes through a `serde_json::Value`, cloning the
/// content and every tag first.
fn id_matches(event: &nostr_sdk::Event, buf: &mut Vec<u8>) -> bool {
    use bitcoin::hashes::{sha256, Hash};
    buf.clear();
    let canonical = (
        0u8,
        &event.pubkey,
        &event.created_at,
        &event.kind,
        &event.tags,
        &event.content,
    );
    if serde_json::to_writer(&mut *buf, &canonical).is_err() {
        return false;
    }
    sha256::Hash::hash(buf).to_byte_array() == *event.id.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::{EventBuilder, JsonUtil, Keys, Kind, Tag};

    /// The checker's verdicts are nostr's own (`Event::verify`), for the same author
    /// seen again (its point remembered), a signature of another event, another
    /// author's key, and a key that is no curve point.
    #[test]
    fn signatures_are_checked_as_nostr_does() {
        let keys = Keys::generate();
        let note = |c: &str| EventBuilder::text_note(c).sign_with_keys(&keys).unwrap();
        let (a, b) = (note("a"), note("b"));
        let with = |e: &nostr_sdk::Event, field: &str, value: String| {
            let mut json: serde_json::Value = serde_json::from_str(&e.as_json()).unwrap();
            json[field] = value.into();
            nostr_sdk::Event::from_json(json.to_string()).unwrap()
        };
        let other = Keys::generate().public_key().to_hex();
        // x = 5 is not the x of any point of secp256k1 (5^3 + 7 = 132 is no square).
        let off_curve = format!("{:064x}", 5);
        let cases = [
            a.clone(),
            b.clone(),
            with(&b, "sig", a.sig.to_string()),
            with(&a, "pubkey", other),
            with(&a, "pubkey", off_curve),
            a.clone(),
        ];
        let mut checker = Checker::new();
        for (i, event) in cases.iter().enumerate() {
            let nostr_says = event.verify_signature();
            let got = checker.signed(event.id.as_bytes(), &event.pubkey, &event.sig);
            assert_eq!(got, nostr_says, "case {i}");
        }
        assert!(checker.check(&a).is_none());
        assert_eq!(checker.check(&cases[2]), Some(Reject::BadSignature));
    }

    proptest::proptest! {
        /// The same verdict as nostr's own `verify_id`, for any content and tags,
        /// genuine or altered.
        #[test]
        fn ids_are_checked_as_nostr_does(
            content in "\\PC{0,60}|[\\x00-\\x1f\"\\\\\u{2028}\u{7f}é😀]{0,20}",
            tags in proptest::collection::vec(proptest::collection::vec("\\PC{0,12}|[\\x00-\\x1f\"\\\\]{0,4}", 1..4), 0..4),
            alter in proptest::bool::ANY,
        ) {
            let tags: Vec<Tag> = tags.into_iter().filter_map(|t| Tag::parse(t).ok()).collect();
            let event = EventBuilder::new(Kind::from(1), content)
                .tags(tags)
                .sign_with_keys(&Keys::generate())
                .unwrap();
            let event = if alter {
                let mut json: serde_json::Value = serde_json::from_str(&event.as_json()).unwrap();
                json["content"] = format!("{}!", event.content).into();
                nostr_sdk::Event::from_json(json.to_string()).unwrap()
            } else {
                event
            };
            let mut buf = Vec::new();
            proptest::prop_assert_eq!(id_matches(&event, &mut buf), event.verify_id());
        }
    }
}

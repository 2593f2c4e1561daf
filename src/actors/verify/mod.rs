//! VerifyActor: checks ids and signatures on a `SyncArbiter` with one thread per core,
//! the dominant CPU cost of the pipeline (about 48 µs per event).
//!
//! In: `Verify` chunks from relay actors. Out: the same items split into valid ones and
//! invalid ones with the reason. Only events the dedup actor saw for the first time
//! get here, so duplicates never cost a signature check.

use actix::{Actor, Handler, Message, SyncContext};
use nostr_sdk::secp256k1::{Secp256k1, VerifyOnly};

use crate::actors::Item;
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
    secp: Secp256k1<VerifyOnly>,
    /// Where each event's canonical form is written to be hashed, reused.
    buf: Vec<u8>,
    counters: std::sync::Arc<crate::metrics::Counters>,
}

impl VerifyActor {
    pub fn new(counters: std::sync::Arc<crate::metrics::Counters>) -> Self {
        Self {
            secp: Secp256k1::verification_only(),
            buf: Vec::with_capacity(4096),
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
            match check(&self.secp, &item.event, &mut self.buf) {
                None => {
                    // Judged here, on every core, rather than on the storage thread,
                    // which finds the verdict remembered.
                    if item.event.kind == nostr_sdk::Kind::ZapReceipt {
                        let _ = crate::nostr::zap::amount(&item.event);
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

/// Why `event` is not authentic, if it is not; `buf` is scratch space.
pub fn check(
    secp: &Secp256k1<VerifyOnly>,
    event: &nostr_sdk::Event,
    buf: &mut Vec<u8>,
) -> Option<Reject> {
    if !id_matches(event, buf) {
        Some(Reject::BadId)
    } else if !event.verify_signature_with_ctx(secp) {
        Some(Reject::BadSignature)
    } else {
        None
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

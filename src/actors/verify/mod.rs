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
}

impl Default for VerifyActor {
    fn default() -> Self {
        Self {
            secp: Secp256k1::verification_only(),
        }
    }
}

impl Actor for VerifyActor {
    type Context = SyncContext<Self>;
}

impl Handler<Verify> for VerifyActor {
    type Result = actix::MessageResult<Verify>;

    fn handle(&mut self, Verify(items): Verify, _: &mut Self::Context) -> Self::Result {
        let mut out = Verified {
            valid: Vec::with_capacity(items.len()),
            invalid: Vec::new(),
        };
        for item in items {
            match check(&self.secp, &item.event) {
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
        actix::MessageResult(out)
    }
}

/// Why `event` is not authentic, if it is not.
pub fn check(secp: &Secp256k1<VerifyOnly>, event: &nostr_sdk::Event) -> Option<Reject> {
    if !event.verify_id() {
        Some(Reject::BadId)
    } else if !event.verify_signature_with_ctx(secp) {
        Some(Reject::BadSignature)
    } else {
        None
    }
}

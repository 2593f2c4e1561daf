//! The zap actor's inbox.

use actix::Message;

/// A storage write committed these rows: `receipts`, the sequence numbers of new zap
/// receipts to judge; `targets`, the ids of every new event, which waiting receipts
/// may name; `profiles`, the authors of new kind 0s, whose server lookups may now
/// succeed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stored {
    pub receipts: Vec<i64>,
    pub targets: Vec<nostr_sdk::EventId>,
    pub profiles: Vec<nostr_sdk::PublicKey>,
}

/// The server of this recipient (hex) answered: its waiting receipts may be judged.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Learnt(pub String);

//! Row structs and their conversions from and to signed events.

use diesel::prelude::*;
use nostr_sdk::{Event, JsonUtil};

use super::schema::{
    event_relays, event_stats, event_tags, events, fingerprints, replaceable_heads, retractions,
    zap_counted, zap_pending,
};
use crate::nostr::aggregate::{contribution, StatsDelta};
use crate::nostr::fingerprint::IdSum;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = events)]
#[diesel(treat_none_as_default_value = false)]
pub struct NewEvent {
    pub id: String,
    pub pubkey: String,
    pub created_at: i64,
    pub kind: i32,
    pub tags: String,
    pub content: String,
    pub sig: String,
    pub first_seen: i64,
    /// Events that count toward no aggregate are born aggregated, so the
    /// watermark only ever holds events with a pending contribution.
    pub aggregated: bool,
    /// `nostr::address`: set for replaceable and addressable events.
    pub address: Option<String>,
    /// `nostr::expiration` (NIP-40), when the event has one.
    pub expires_at: Option<i64>,
}

impl NewEvent {
    pub fn from_event(event: &Event, first_seen: i64) -> Self {
        Self {
            id: crate::nostr::hex(event.id.as_bytes()),
            pubkey: crate::nostr::hex(event.pubkey.as_bytes()),
            created_at: event.created_at.as_secs() as i64,
            kind: i32::from(event.kind.as_u16()),
            tags: serde_json::to_string(&event.tags).unwrap_or_else(|_| "[]".into()),
            content: event.content.clone(),
            sig: crate::nostr::hex(&event.sig.serialize()),
            first_seen,
            // Zap receipts that hold together wait for the zap judge.
            aggregated: contribution(event).is_none() && !crate::nostr::zap::holds_together(event),
            address: crate::nostr::address(event),
            expires_at: crate::nostr::expiration(event).and_then(|t| i64::try_from(t).ok()),
        }
    }
}

/// Single-letter tags of `event`, indexed for lookups (`#e`, `#p`, `#t`, ...).
/// Longest tag value indexed in `event_tags`. A PostgreSQL btree entry cannot exceed
/// about 2.7 kB, and one longer value would fail its whole batch; such values stay
/// in `events.tags`, where nothing looks them up by value anyway.
pub const MAX_INDEXED_TAG_VALUE: usize = 1024;

pub fn tag_rows(seq: i64, event: &Event) -> Vec<NewTag> {
    let mut rows: Vec<NewTag> = event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(|t| {
            t.len() >= 2 && t[0].chars().count() == 1 && t[1].len() <= MAX_INDEXED_TAG_VALUE
        })
        .map(|t| NewTag {
            event_seq: seq,
            name: t[0].clone(),
            value: t[1].clone(),
        })
        .collect();
    rows.sort_by(|a, b| (&a.name, &a.value).cmp(&(&b.name, &b.value)));
    rows.dedup_by(|a, b| a.name == b.name && a.value == b.value);
    rows
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = event_tags)]
#[diesel(treat_none_as_default_value = false)]
pub struct NewTag {
    pub event_seq: i64,
    pub name: String,
    pub value: String,
}

/// One relay's delivery of one stored event (`event_relays`).
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = event_relays)]
#[diesel(treat_none_as_default_value = false)]
pub struct NewEventRelay {
    pub event_seq: i64,
    pub relay_id: i32,
    pub first_seen: i64,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct EventRow {
    pub id: String,
    pub pubkey: String,
    pub created_at: i64,
    pub kind: i32,
    pub tags: String,
    pub content: String,
    pub sig: String,
}

impl EventRow {
    /// The signed event exactly as it was received, as NIP-01 JSON.
    pub fn json(&self) -> String {
        format!(
            r#"{{"id":"{}","pubkey":"{}","created_at":{},"kind":{},"tags":{},"content":{},"sig":"{}"}}"#,
            self.id,
            self.pubkey,
            self.created_at,
            self.kind,
            self.tags,
            serde_json::to_string(&self.content).unwrap_or_default(),
            self.sig
        )
    }

    /// The signed event exactly as it was received.
    pub fn into_event(self) -> Result<Event, nostr_sdk::event::Error> {
        Event::from_json(self.json())
    }
}

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = event_stats)]
pub struct StatsRow {
    pub event_id: String,
    pub reactions: i64,
    pub replies: i64,
    pub reposts: i64,
    pub zaps: i64,
    pub zap_msats: i64,
}

impl StatsRow {
    pub fn new(event_id: String, d: &StatsDelta) -> Self {
        Self {
            event_id,
            reactions: d.reactions,
            replies: d.replies,
            reposts: d.reposts,
            zaps: d.zaps,
            zap_msats: d.zap_msats,
        }
    }

    pub fn delta(&self) -> StatsDelta {
        StatsDelta {
            reactions: self.reactions,
            replies: self.replies,
            reposts: self.reposts,
            zaps: self.zaps,
            zap_msats: self.zap_msats,
        }
    }
}

/// What a removed event had counted, waiting in `retractions` to be subtracted
/// (negative amounts).
#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = retractions)]
pub struct NewRetraction {
    pub target: String,
    pub reactions: i64,
    pub replies: i64,
    pub reposts: i64,
    pub zaps: i64,
    pub zap_msats: i64,
}

impl NewRetraction {
    pub fn new(target: String, d: &StatsDelta) -> Self {
        Self {
            target,
            reactions: d.reactions,
            replies: d.replies,
            reposts: d.reposts,
            zaps: d.zaps,
            zap_msats: d.zap_msats,
        }
    }

    pub fn delta(&self) -> StatsDelta {
        StatsDelta {
            reactions: self.reactions,
            replies: self.replies,
            reposts: self.reposts,
            zaps: self.zaps,
            zap_msats: self.zap_msats,
        }
    }
}

/// A version offered as the head of its address.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = replaceable_heads)]
#[diesel(treat_none_as_default_value = false)]
pub struct NewHead<'a> {
    pub address: &'a str,
    pub created_at: i64,
    pub id: &'a str,
}

/// A receipt that waits to be judged again (`zap_pending`).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = zap_pending)]
#[diesel(treat_none_as_default_value = false)]
pub struct NewZapPending<'a> {
    pub seq: i64,
    pub recipient: &'a str,
    pub target: &'a str,
}

/// A receipt whose zap is counted (`zap_counted`).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = zap_counted)]
#[diesel(treat_none_as_default_value = false)]
pub struct NewZapCounted<'a> {
    pub id: &'a str,
}

/// What a write adds to (or, negative, takes from) the `fingerprints` row of one
/// relay (0: every stored event), second and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Insertable)]
#[diesel(table_name = fingerprints)]
pub struct FingerprintRow {
    pub relay_id: i32,
    pub second: i64,
    pub kind: i32,
    pub n: i64,
    pub l0: i64,
    pub l1: i64,
    pub l2: i64,
    pub l3: i64,
    pub l4: i64,
    pub l5: i64,
    pub l6: i64,
    pub l7: i64,
}

impl FingerprintRow {
    pub fn new(relay_id: i32, second: i64, kind: i32, sum: &IdSum) -> Self {
        let [l0, l1, l2, l3, l4, l5, l6, l7] = sum.limbs;
        FingerprintRow {
            relay_id,
            second,
            kind,
            n: sum.count,
            l0,
            l1,
            l2,
            l3,
            l4,
            l5,
            l6,
            l7,
        }
    }
}

//! Pure classification of raw relay frames, with the checks that need no signature:
//! JSON shape, size, tag count, timestamps.

use nostr_sdk::{Event, JsonUtil, RelayMessage};

use crate::metrics::Reject;

/// Frame-level limits, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_tags: usize,
    pub max_future_secs: u64,
}

#[derive(Debug)]
pub enum Frame {
    Event {
        sub: String,
        event: Box<Event>,
    },
    /// A valid-looking event that is not to be stored (ephemeral, expired): it still
    /// takes its place in its page.
    Skipped {
        sub: String,
        event: Box<Event>,
        reason: Reject,
    },
    /// An EVENT frame refused before verification; `sub` when it could be read, and
    /// where the event sits in its page when that could be read: a refused event
    /// takes its place in its page like any other.
    Rejected {
        sub: Option<String>,
        reason: Reject,
        place: Option<Place>,
    },
    Eose(String),
    Closed {
        sub: String,
        message: String,
    },
    Notice(String),
    /// NEG-MSG (`Ok`, the message in hex) or NEG-ERR (`Err`, the reason) (NIP-77).
    Negentropy {
        sub: String,
        reply: Result<String, String>,
    },
    Other,
}

/// Where an event sits in its page: what the paging planner needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub created_at: u64,
    pub kind: u16,
    /// The author, as hex.
    pub author: String,
}

impl Place {
    fn of(event: &Event) -> Self {
        Place {
            created_at: event.created_at.as_secs(),
            kind: event.kind.as_u16(),
            author: crate::nostr::hex(event.pubkey.as_bytes()),
        }
    }
}

/// Bytes the envelope (`["EVENT","<sub>",` and `]`) adds to an event at most.
pub const ENVELOPE_BYTES: usize = 256;

/// Classifies one text frame; `now` is the current unix time.
pub fn classify(raw: &str, limits: &Limits, now: u64) -> Frame {
    if raw.len() > limits.max_event_bytes + ENVELOPE_BYTES {
        // Too large to keep, but still an event of its page: read only where it sits
        // (the websocket's message size bounds what this reads).
        return match serde_json::from_str::<StubFrame>(raw) {
            Ok(StubFrame("EVENT", sub, stub)) => Frame::Rejected {
                sub: Some(sub.into_owned()),
                reason: Reject::TooLarge,
                place: Some(Place {
                    created_at: stub.created_at,
                    kind: stub.kind,
                    author: stub.pubkey.to_ascii_lowercase(),
                }),
            },
            _ => Frame::Rejected {
                sub: event_sub(raw),
                reason: Reject::TooLarge,
                place: None,
            },
        };
    }
    // EVENT frames, nearly all of them, are read straight into the event; the generic
    // parser goes through a `serde_json::Value` first.
    if super::transport::is_event_frame(raw) {
        if let Ok(EventFrame("EVENT", sub, event)) = serde_json::from_str::<EventFrame>(raw) {
            return event_frame(raw, sub.into_owned(), event, limits, now);
        }
    }
    let message = match RelayMessage::from_json(raw) {
        Ok(m) => m,
        Err(_) => {
            return Frame::Rejected {
                sub: event_sub(raw),
                reason: Reject::InvalidJson,
                place: None,
            }
        }
    };
    match message {
        RelayMessage::Event {
            subscription_id,
            event,
        } => event_frame(
            raw,
            subscription_id.as_str().to_owned(),
            event.into_owned(),
            limits,
            now,
        ),
        RelayMessage::EndOfStoredEvents(sub) => Frame::Eose(sub.as_str().to_owned()),
        RelayMessage::Closed {
            subscription_id,
            message,
        } => Frame::Closed {
            sub: subscription_id.as_str().to_owned(),
            message: message.into_owned(),
        },
        RelayMessage::Notice(message) => Frame::Notice(message.into_owned()),
        RelayMessage::NegMsg {
            subscription_id,
            message,
        } => Frame::Negentropy {
            sub: subscription_id.as_str().to_owned(),
            reply: Ok(message.into_owned()),
        },
        RelayMessage::NegErr {
            subscription_id,
            message,
        } => Frame::Negentropy {
            sub: subscription_id.as_str().to_owned(),
            reply: Err(message.into_owned()),
        },
        _ => Frame::Other,
    }
}

/// `["EVENT", <sub>, <event>]`.
#[derive(serde::Deserialize)]
struct EventFrame<'a>(&'a str, #[serde(borrow)] std::borrow::Cow<'a, str>, Event);

/// `["EVENT", <sub>, <event>]`, reading of the event only where it sits.
#[derive(serde::Deserialize)]
struct StubFrame<'a>(
    &'a str,
    #[serde(borrow)] std::borrow::Cow<'a, str>,
    #[serde(borrow)] Stub<'a>,
);

#[derive(serde::Deserialize)]
struct Stub<'a> {
    created_at: u64,
    kind: u16,
    #[serde(borrow)]
    pubkey: std::borrow::Cow<'a, str>,
}

/// The subscription id of an EVENT frame that cannot be read as a whole: the second
/// element, when it is a plain string (ours have no escapes).
fn event_sub(raw: &str) -> Option<String> {
    if !super::transport::is_event_frame(raw) {
        return None;
    }
    let rest = &raw[raw.find("EVENT\"")? + 6..];
    let rest = rest.trim_start().strip_prefix(',')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let sub = &rest[..rest.find('"')?];
    (!sub.contains('\\')).then(|| sub.to_owned())
}

/// The checks of an EVENT frame `raw` that carried `event` for `sub`.
fn event_frame(raw: &str, sub: String, event: Event, limits: &Limits, now: u64) -> Frame {
    // The event's JSON is the frame minus `["EVENT","<sub>",` and `]`: no need
    // to serialize it again to measure it.
    let event_bytes = raw.trim().len().saturating_sub(sub.len() + 13);
    let reason = if event.tags.len() > limits.max_tags {
        Some(Reject::TooManyTags)
    } else if event.created_at.as_secs() > now.saturating_add(limits.max_future_secs) {
        Some(Reject::FutureTimestamp)
    } else if event_bytes > limits.max_event_bytes {
        Some(Reject::TooLarge)
    } else if has_nul(&event) {
        Some(Reject::NulCharacter)
    } else {
        None
    };
    if let Some(reason) = reason {
        return Frame::Rejected {
            sub: Some(sub),
            reason,
            place: Some(Place::of(&event)),
        };
    }
    match crate::nostr::admit(&event, now) {
        Err(skip) => Frame::Skipped {
            sub,
            event: Box::new(event),
            reason: match skip {
                crate::nostr::Skip::Ephemeral => Reject::Ephemeral,
                crate::nostr::Skip::Expired => Reject::Expired,
                crate::nostr::Skip::AddressTooLong => Reject::AddressTooLong,
            },
        },
        Ok(()) => Frame::Event {
            sub,
            event: Box::new(event),
        },
    }
}

/// Whether the content or a tag holds U+0000: valid JSON, but no PostgreSQL text column
/// can store it, and the same event must not be storable on one backend only.
fn has_nul(event: &Event) -> bool {
    event.content.contains('\0')
        || event
            .tags
            .iter()
            .any(|t| t.as_slice().iter().any(|v| v.contains('\0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::{EventBuilder, Keys, Tag};

    const LIMITS: Limits = Limits {
        max_event_bytes: 4096,
        max_tags: 3,
        max_future_secs: 60,
    };

    fn frame(event: &Event) -> String {
        format!(r#"["EVENT","s1",{}]"#, event.as_json())
    }

    #[test]
    fn classification_table() {
        let keys = Keys::generate();
        let ok = EventBuilder::text_note("hi").sign_with_keys(&keys).unwrap();
        let many_tags = EventBuilder::text_note("hi")
            .tags((0..4).map(|i| Tag::hashtag(format!("t{i}"))))
            .sign_with_keys(&keys)
            .unwrap();
        let big = EventBuilder::text_note("x".repeat(5000))
            .sign_with_keys(&keys)
            .unwrap();
        let now = ok.created_at.as_secs();
        let reason = |raw: &str| match classify(raw, &LIMITS, now) {
            Frame::Rejected { reason, .. } => Some(reason),
            _ => None,
        };
        assert!(matches!(
            classify(&frame(&ok), &LIMITS, now),
            Frame::Event { .. }
        ));
        assert_eq!(reason(&frame(&many_tags)), Some(Reject::TooManyTags));
        assert_eq!(reason(&frame(&big)), Some(Reject::TooLarge));
        let nul = EventBuilder::text_note("a\0b")
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(reason(&frame(&nul)), Some(Reject::NulCharacter));
        assert_eq!(reason(&frame(&ok)[..20]), Some(Reject::InvalidJson));
        assert_eq!(reason("not json"), Some(Reject::InvalidJson));
        assert_eq!(
            classify(&frame(&ok), &LIMITS, now - 61).kind_name(),
            "rejected"
        );
        assert!(matches!(classify(r#"["EOSE","s1"]"#, &LIMITS, now), Frame::Eose(s) if s == "s1"));
        assert!(matches!(
            classify(r#"["CLOSED","s1","rate-limited: slow down"]"#, &LIMITS, now),
            Frame::Closed { .. }
        ));
        assert!(matches!(
            classify(r#"["NOTICE","hello"]"#, &LIMITS, now),
            Frame::Notice(_)
        ));
    }

    /// A refused event keeps its place in its page: the planner pages by it.
    #[test]
    fn refused_events_keep_their_place() {
        let keys = Keys::generate();
        let author = keys.public_key().to_hex();
        let now = 1_700_000_000;
        let future = EventBuilder::text_note("later")
            .custom_created_at(nostr_sdk::Timestamp::from(now + 1_200))
            .sign_with_keys(&keys)
            .unwrap();
        let huge = EventBuilder::new(nostr_sdk::Kind::from(30023), "x".repeat(10_000))
            .custom_created_at(nostr_sdk::Timestamp::from(now - 5))
            .sign_with_keys(&keys)
            .unwrap();
        let cases = [
            (
                frame(&future),
                Reject::FutureTimestamp,
                Some((now + 1_200, 1)),
            ),
            (frame(&huge), Reject::TooLarge, Some((now - 5, 30023))),
            (
                r#"["EVENT","s1",{"created_at":"#.to_owned(),
                Reject::InvalidJson,
                None,
            ),
        ];
        for (raw, want_reason, want_place) in cases {
            let Frame::Rejected { sub, reason, place } = classify(&raw, &LIMITS, now) else {
                panic!("not refused: {}", &raw[..40]);
            };
            assert_eq!(sub.as_deref(), Some("s1"));
            assert_eq!(reason, want_reason);
            let expected = want_place.map(|(created_at, kind)| Place {
                created_at,
                kind,
                author: author.clone(),
            });
            assert_eq!(place, expected);
        }
        // Junk that names no subscription is nobody's.
        assert!(matches!(
            classify("\u{1}\u{2}junk", &LIMITS, now),
            Frame::Rejected { sub: None, .. }
        ));
    }

    /// The direct EVENT reader gives what `RelayMessage::from_json` gives, whatever the
    /// spacing, escapes in the subscription id, key order of the event or trailing elements.
    #[test]
    fn direct_event_reading_matches_the_generic_parser() {
        let event = EventBuilder::text_note("a \"quoted\" note\n")
            .tag(Tag::hashtag("x"))
            .sign_with_keys(&Keys::generate())
            .unwrap();
        let json = event.as_json();
        let mut reordered: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&json).unwrap();
        let content = reordered.remove("content").unwrap();
        reordered.insert("content".into(), content);
        let reordered = serde_json::Value::Object(reordered).to_string();
        let frames = [
            format!(r#"["EVENT","s1",{json}]"#),
            format!(" [ \"EVENT\" , \"s\\u0031\" ,\n{json} ] "),
            format!(r#"["EVENT","s1",{reordered}]"#),
            // A fourth element: not read directly; the generic parser ignores it.
            format!(r#"["EVENT","s1",{json},1]"#),
        ];
        let now = event.created_at.as_secs();
        for raw in &frames {
            let Frame::Event { sub, event: got } = classify(raw, &LIMITS, now) else {
                panic!("not read: {raw}");
            };
            let RelayMessage::Event {
                subscription_id,
                event: want,
            } = RelayMessage::from_json(raw).unwrap()
            else {
                panic!("the generic parser disagrees: {raw}");
            };
            assert_eq!(sub, subscription_id.as_str(), "{raw}");
            assert_eq!(*got, *want, "{raw}");
            assert_eq!(got.content, event.content);
        }
    }

    proptest::proptest! {
        /// Whatever a relay sends, classification returns (it never panics).
        #[test]
        fn any_frame_is_classified(
            head in "\\[\"(EVENT|EOSE|CLOSED|NOTICE|OK|AUTH)\",\"[a-z0-9]{0,8}\",?",
            body in "\\PC{0,300}",
        ) {
            let _ = classify(&format!("{head}{body}"), &LIMITS, 1_700_000_000);
            let _ = classify(&body, &LIMITS, 1_700_000_000);
        }
    }

    impl Frame {
        fn kind_name(&self) -> &'static str {
            match self {
                Frame::Rejected { .. } => "rejected",
                _ => "other",
            }
        }
    }
}

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
    /// An EVENT frame refused before verification; `sub` when it could be read.
    Rejected {
        sub: Option<String>,
        reason: Reject,
    },
    Eose(String),
    Closed {
        sub: String,
        message: String,
    },
    Notice(String),
    Other,
}

/// Classifies one text frame; `now` is the current unix time.
pub fn classify(raw: &str, limits: &Limits, now: u64) -> Frame {
    // The envelope adds a subscription id and a few bytes to the event itself.
    if raw.len() > limits.max_event_bytes + 256 {
        return Frame::Rejected {
            sub: None,
            reason: Reject::TooLarge,
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
                sub: None,
                reason: Reject::InvalidJson,
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
        _ => Frame::Other,
    }
}

/// `["EVENT", <sub>, <event>]`.
#[derive(serde::Deserialize)]
struct EventFrame<'a>(&'a str, #[serde(borrow)] std::borrow::Cow<'a, str>, Event);

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
        };
    }
    match crate::nostr::admit(&event, now) {
        Err(skip) => Frame::Skipped {
            sub,
            event: Box::new(event),
            reason: match skip {
                crate::nostr::Skip::Ephemeral => Reject::Ephemeral,
                crate::nostr::Skip::Expired => Reject::Expired,
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

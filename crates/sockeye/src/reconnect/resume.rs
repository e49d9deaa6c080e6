//! Resuming topic subscriptions of the sockeye JSON protocol
//! (docs/PROTOCOL.md): which topics the client subscribed to, and the last
//! position it saw on each, read from the server's `message`, `ack` and
//! `gap` frames; and the `subscribe` frames that pick up from there on a new
//! connection.
//!
//! The client knows the protocol only this far: nothing else is parsed and
//! every frame still reaches the application unchanged.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserializer, Visitor};
use serde::Deserialize;
use sockeye_proto::Message;

/// A topic's position: `{"epoch": string, "offset": integer}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) epoch: String,
    pub(crate) offset: u64,
}

#[derive(Debug)]
struct Topic {
    /// Subscription order, so a new connection subscribes in the same order.
    order: u64,
    /// The last message seen, or the subscription's ack when none has come.
    last: Option<Position>,
}

/// The topics subscribed through the client, and where each stands.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    topics: HashMap<String, Topic>,
    next_order: u64,
}

impl Subscriptions {
    pub(crate) fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Adds `topic`; false when it was already there.
    pub(crate) fn subscribe(&mut self, topic: &str) -> bool {
        if self.topics.contains_key(topic) {
            return false;
        }
        self.next_order += 1;
        let order = self.next_order;
        self.topics
            .insert(topic.to_string(), Topic { order, last: None });
        true
    }

    /// Removes `topic` and forgets its position; false when it was not there.
    pub(crate) fn unsubscribe(&mut self, topic: &str) -> bool {
        self.topics.remove(topic).is_some()
    }

    #[cfg(test)]
    pub(crate) fn position(&self, topic: &str) -> Option<&Position> {
        self.topics.get(topic)?.last.as_ref()
    }

    /// One `subscribe` per topic, in subscription order, with `since` where a
    /// position is known.
    pub(crate) fn resubscribe_frames(&self) -> Vec<Message> {
        let mut topics: Vec<_> = self.topics.iter().collect();
        topics.sort_by_key(|(_, t)| t.order);
        topics
            .into_iter()
            .map(|(name, t)| subscribe_frame(name, t.last.as_ref()))
            .collect()
    }

    /// Takes note of what a frame from the server says about a subscribed topic.
    pub(crate) fn apply(&mut self, seen: &Parsed<'_>) {
        let Some(topic) = self.topics.get_mut(&*seen.topic) else {
            return;
        };
        match &seen.kind {
            ParsedKind::Message(epoch, offset) => match &mut topic.last {
                Some(last) if last.epoch == **epoch => last.offset = *offset,
                last => {
                    *last = Some(Position {
                        epoch: epoch.to_string(),
                        offset: *offset,
                    })
                }
            },
            // The ack carries the latest position, which is where a fresh
            // subscription starts. After a resume it is ahead of the missed
            // messages still to come, so it must not move a known position.
            ParsedKind::Ack(epoch, offset) => {
                if topic.last.is_none() {
                    topic.last = Some(Position {
                        epoch: epoch.to_string(),
                        offset: *offset,
                    });
                }
            }
            // `since` could not be honoured: the ack that follows is the new start.
            ParsedKind::Gap => topic.last = None,
        }
    }
}

/// `{"type":"subscribe","topic":…}` with `"since"` when a position is known.
pub(crate) fn subscribe_frame(topic: &str, since: Option<&Position>) -> Message {
    let topic = json_string(topic);
    Message::text(match since {
        Some(p) => format!(
            r#"{{"type":"subscribe","topic":{topic},"since":{{"epoch":{},"offset":{}}}}}"#,
            json_string(&p.epoch),
            p.offset
        ),
        None => format!(r#"{{"type":"subscribe","topic":{topic}}}"#),
    })
}

/// `{"type":"unsubscribe","topic":…}`.
pub(crate) fn unsubscribe_frame(topic: &str) -> Message {
    Message::text(format!(
        r#"{{"type":"unsubscribe","topic":{}}}"#,
        json_string(topic)
    ))
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The fields read; everything else (`data` above all) is skipped without
/// being kept, and strings are borrowed from the frame unless escaped.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Str<'a>,
    #[serde(default, borrow)]
    topic: Option<Str<'a>>,
    #[serde(default, borrow)]
    op: Option<Str<'a>>,
    #[serde(default, borrow)]
    position: Option<RawPosition<'a>>,
}

#[derive(Deserialize)]
struct RawPosition<'a> {
    #[serde(borrow)]
    epoch: Str<'a>,
    offset: u64,
}

/// Parses a text frame from the server, if it is one that moves a position:
/// a `message` or a subscribe `ack` (both carry `"position"`), or a `gap`.
/// Other frames are turned away by a substring check before any parsing.
pub(crate) fn parse(text: &str) -> Option<Parsed<'_>> {
    if !text.contains("\"position\"") && !text.contains("\"gap\"") {
        return None;
    }
    let frame: Frame<'_> = serde_json::from_str(text).ok()?;
    let topic = frame.topic?;
    let kind = match (&*frame.kind.0, frame.op.as_deref(), frame.position) {
        ("message", _, Some(p)) => ParsedKind::Message(p.epoch, p.offset),
        ("ack", Some("subscribe"), Some(p)) => ParsedKind::Ack(p.epoch, p.offset),
        ("gap", _, _) => ParsedKind::Gap,
        _ => return None,
    };
    Some(Parsed { topic, kind })
}

/// What one server frame says about a topic's position, borrowed from the
/// frame where it can be.
pub(crate) struct Parsed<'a> {
    topic: Str<'a>,
    kind: ParsedKind<'a>,
}

enum ParsedKind<'a> {
    Message(Str<'a>, u64),
    Ack(Str<'a>, u64),
    Gap,
}

/// A string borrowed from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
        }

        deserializer.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Message) -> &str {
        match m {
            Message::Text(t) => t.as_str(),
            other => panic!("not text: {other:?}"),
        }
    }

    fn feed(subs: &mut Subscriptions, frame: &str) {
        if let Some(parsed) = parse(frame) {
            subs.apply(&parsed);
        }
    }

    fn pos(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn frames_are_valid_json_with_since_when_known() {
        assert_eq!(
            text(&subscribe_frame("chat:lobby", None)),
            r#"{"type":"subscribe","topic":"chat:lobby"}"#
        );
        assert_eq!(
            text(&subscribe_frame("a\"b", Some(&pos("e1", 41)))),
            r#"{"type":"subscribe","topic":"a\"b","since":{"epoch":"e1","offset":41}}"#
        );
        assert_eq!(
            text(&unsubscribe_frame("t")),
            r#"{"type":"unsubscribe","topic":"t"}"#
        );
    }

    #[test]
    fn the_ack_starts_a_fresh_subscription_and_messages_move_it() {
        let mut subs = Subscriptions::default();
        subs.subscribe("t");
        feed(
            &mut subs,
            r#"{"type":"welcome","user":"anon-1","connection":"c1"}"#,
        );
        assert_eq!(subs.position("t"), None);
        // serde_json's json! sorts keys: "type" comes last in acks.
        feed(
            &mut subs,
            r#"{"op":"subscribe","position":{"epoch":"e","offset":7},"topic":"t","type":"ack"}"#,
        );
        assert_eq!(subs.position("t"), Some(&pos("e", 7)));
        feed(
            &mut subs,
            r#"{"type":"message","topic":"t","data":{"position":1,"nested":[1,2,{"x":"y"}]},"from":"a","position":{"epoch":"e","offset":8}}"#,
        );
        assert_eq!(subs.position("t"), Some(&pos("e", 8)));
        assert_eq!(
            text(&subs.resubscribe_frames()[0]),
            r#"{"type":"subscribe","topic":"t","since":{"epoch":"e","offset":8}}"#
        );
    }

    #[test]
    fn a_resume_ack_does_not_skip_the_replay() {
        let mut subs = Subscriptions::default();
        subs.subscribe("t");
        feed(
            &mut subs,
            r#"{"type":"message","topic":"t","data":1,"from":"a","position":{"epoch":"e","offset":9}}"#,
        );
        // The resume's ack says 11; messages 10 and 11 are still to come.
        feed(
            &mut subs,
            r#"{"type":"ack","op":"subscribe","topic":"t","position":{"epoch":"e","offset":11}}"#,
        );
        assert_eq!(subs.position("t"), Some(&pos("e", 9)));
    }

    #[test]
    fn a_gap_restarts_from_the_next_ack() {
        let mut subs = Subscriptions::default();
        subs.subscribe("t");
        feed(
            &mut subs,
            r#"{"type":"message","topic":"t","data":1,"from":"a","position":{"epoch":"old","offset":9}}"#,
        );
        feed(
            &mut subs,
            r#"{"type":"gap","topic":"t","message":"history no longer covers your position"}"#,
        );
        assert_eq!(subs.position("t"), None);
        feed(
            &mut subs,
            r#"{"type":"ack","op":"subscribe","topic":"t","position":{"epoch":"new","offset":3}}"#,
        );
        assert_eq!(subs.position("t"), Some(&pos("new", 3)));
    }

    #[test]
    fn other_topics_ops_and_garbage_change_nothing() {
        let mut subs = Subscriptions::default();
        subs.subscribe("t");
        for frame in [
            r#"{"type":"message","topic":"other","data":1,"position":{"epoch":"e","offset":1}}"#,
            r#"{"type":"ack","op":"publish","topic":"t","position":{"epoch":"e","offset":5}}"#,
            r#"{"type":"message","topic":"t","position":"nonsense"}"#,
            r#"{"type":"message","topic":"t","data":"unterminated"#,
            r#"not json "position""#,
            r#"{"type":"presence","room":"t","event":"join","user":"u","count":1}"#,
        ] {
            feed(&mut subs, frame);
        }
        assert_eq!(subs.position("t"), None);
    }

    #[test]
    fn escaped_strings_are_read_too() {
        let mut subs = Subscriptions::default();
        subs.subscribe("t");
        feed(
            &mut subs,
            r#"{"type":"message","topic":"\u0074","data":null,"position":{"epoch":"e\"1","offset":2}}"#,
        );
        assert_eq!(subs.position("t"), Some(&pos("e\"1", 2)));
    }

    #[test]
    fn resubscribe_keeps_the_subscription_order_and_unsubscribe_forgets() {
        let mut subs = Subscriptions::default();
        for t in ["c", "a", "b"] {
            assert!(subs.subscribe(t));
        }
        assert!(!subs.subscribe("a"), "already subscribed");
        assert!(subs.unsubscribe("a"));
        assert!(!subs.unsubscribe("a"));
        let frames: Vec<_> = subs
            .resubscribe_frames()
            .iter()
            .map(|m| text(m).to_string())
            .collect();
        assert_eq!(
            frames,
            [
                r#"{"type":"subscribe","topic":"c"}"#,
                r#"{"type":"subscribe","topic":"b"}"#
            ]
        );
    }
}

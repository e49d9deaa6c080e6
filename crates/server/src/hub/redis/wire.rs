//! What the processes of a cluster share in Redis: key and channel names, and
//! the format of a message on the pub/sub channels. Every process of a
//! cluster must speak the same version of this.
//!
//! # Names (`P` is [`RedisConfig::prefix`](super::RedisConfig::prefix))
//!
//! | name | type | holds |
//! |---|---|---|
//! | `P:topic:<topic>` | hash | `epoch` (random, set once with `HSETNX`), `seq` (the last offset, `HINCRBY`) |
//! | `P:history:<topic>` | stream | one entry per message, ID `0-<offset>`; fields `payload`, `text` (`1`/`0`), `from` (absent when none), `time` (ms, Redis clock) |
//! | `P:presence:<room>` | sorted set | member `<node>\|<user>`, score = when it expires (ms, Redis clock) |
//! | `P:pub:<topic>` | channel | messages and presence events of the topic, format below |
//!
//! # Message format (version 1)
//!
//! ```text
//! "S1 " <epoch> " " <offset> "\n" <header: one-line JSON object> "\n" <payload bytes>
//! ```
//!
//! Presence events have no position: `<epoch>` is `-` and `<offset>` is `0`.
//! The payload is everything after the second newline, taken as raw bytes, so
//! binary payloads need no escaping (JSON never contains a raw newline, so the
//! header ends at the first one). Header fields:
//!
//! | field | type | when |
//! |---|---|---|
//! | `topic` | string | always |
//! | `kind` | `"message"`, `"join"` or `"leave"` | always |
//! | `text` | bool (absent: false) | messages |
//! | `from` | string (absent: none) | messages; the user for presence |
//! | `user`, `count` | string, integer | presence: who, and distinct members after the event |
//! | `node` | string | the process that sent it (for logs and debugging) |
//!
//! The publish script (`publish.lua`) writes the position line in front of the
//! header that [`message_header`] made; the presence script builds presence
//! events itself with `cjson`.

use std::sync::Arc;

use bytes::Bytes;

use crate::hub::types::{Kind, Position, Publication};

/// The version tag that opens every message.
const MAGIC: &[u8] = b"S1 ";

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The hash with a topic's epoch and last offset.
    pub(super) fn meta(&self, topic: &str) -> String {
        format!("{}:topic:{topic}", self.prefix)
    }

    /// The stream with a topic's history.
    pub(super) fn history(&self, topic: &str) -> String {
        format!("{}:history:{topic}", self.prefix)
    }

    /// The sorted set of a room's members.
    pub(super) fn presence(&self, room: &str) -> String {
        format!("{}:presence:{room}", self.prefix)
    }

    /// The channel a topic's messages are published on.
    pub(super) fn channel(&self, topic: &str) -> String {
        format!("{}:pub:{topic}", self.prefix)
    }

    /// The pattern matching every topic's channel, glob characters of the
    /// prefix escaped.
    pub(super) fn pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 6);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":pub:*");
        pattern
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    text: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    node: Option<std::borrow::Cow<'a, str>>,
}

/// The header of a published message, which the publish script completes
/// with its position.
pub(super) fn message_header(topic: &str, text: bool, from: Option<&str>, node: &str) -> String {
    let header = Header {
        topic: topic.into(),
        kind: "message".into(),
        text,
        from: from.map(str::to_owned),
        user: None,
        count: None,
        node: Some(node.into()),
    };
    serde_json::to_string(&header).expect("a header of strings and bools always serializes")
}

/// A message read from a channel.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) topic: String,
    pub(super) position: Option<Position>,
    pub(super) payload: Bytes,
    pub(super) text: bool,
    pub(super) from: Option<String>,
    pub(super) kind: Kind,
}

impl Incoming {
    /// The publication, its topic name shared with `topic`.
    pub(super) fn into_publication(self, topic: Arc<str>) -> Publication {
        Publication::new(
            topic,
            self.position,
            self.payload,
            self.text,
            self.from,
            self.kind,
        )
    }
}

/// Reads one channel message (format above).
pub(super) fn decode(message: &[u8]) -> Result<Incoming, String> {
    let rest = message
        .strip_prefix(MAGIC)
        .ok_or("not a sockeye message (no \"S1 \" tag)")?;
    let (line, rest) = split_line(rest).ok_or("no end to the position line")?;
    let (header, payload) = split_line(rest).ok_or("no end to the header")?;
    let line = std::str::from_utf8(line).map_err(|_| "the position line is not UTF-8")?;
    let (epoch, offset) = line
        .split_once(' ')
        .ok_or("no offset in the position line")?;
    let offset: u64 = offset
        .parse()
        .map_err(|_| format!("bad offset {offset:?}"))?;
    let position = match epoch {
        "-" => None,
        _ => Some(Position {
            epoch: epoch.to_owned(),
            offset,
        }),
    };
    let header: Header<'_> =
        serde_json::from_slice(header).map_err(|e| format!("bad header: {e}"))?;
    let kind = match &*header.kind {
        "message" => Kind::Message,
        kind @ ("join" | "leave") => {
            let user = header.user.ok_or("a presence event without a user")?;
            let count = header.count.ok_or("a presence event without a count")? as usize;
            if kind == "join" {
                Kind::Join { user, count }
            } else {
                Kind::Leave { user, count }
            }
        }
        other => return Err(format!("unknown kind {other:?}")),
    };
    if matches!(kind, Kind::Message) != position.is_some() {
        return Err("a message needs a position, and only a message has one".into());
    }
    Ok(Incoming {
        topic: header.topic.into_owned(),
        position,
        payload: Bytes::copy_from_slice(payload),
        text: header.text,
        from: header.from,
        kind,
    })
}

fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// The offset in a history entry's ID (`0-<offset>`).
pub(super) fn offset_of_id(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `publish.lua` sends, built the same way.
    fn published(epoch: &str, offset: u64, header: &str, payload: &[u8]) -> Vec<u8> {
        let mut message = format!("S1 {epoch} {offset}\n{header}\n").into_bytes();
        message.extend_from_slice(payload);
        message
    }

    #[test]
    fn a_message_round_trips_with_a_binary_payload() {
        let payload = b"line 1\nline 2\0\xff\xfe";
        let header = message_header("chat:lobby", false, Some("alice"), "n1");
        let incoming = decode(&published("e1", 7, &header, payload)).unwrap();
        assert_eq!(incoming.topic, "chat:lobby");
        assert_eq!(
            incoming.position,
            Some(Position {
                epoch: "e1".into(),
                offset: 7
            })
        );
        assert_eq!(&incoming.payload[..], payload);
        assert!(!incoming.text);
        assert_eq!(incoming.from.as_deref(), Some("alice"));
        assert_eq!(incoming.kind, Kind::Message);
    }

    #[test]
    fn an_empty_payload_and_no_sender() {
        let header = message_header("t", true, None, "n1");
        assert_eq!(
            header,
            r#"{"topic":"t","kind":"message","text":true,"node":"n1"}"#
        );
        let incoming = decode(&published("e", 1, &header, b"")).unwrap();
        assert!(incoming.payload.is_empty());
        assert!(incoming.text);
        assert_eq!(incoming.from, None);
    }

    #[test]
    fn a_presence_event_as_the_script_writes_it() {
        let json =
            r#"{"topic":"room","kind":"leave","user":"bob","count":2,"from":"bob","node":"ab"}"#;
        let incoming = decode(&published("-", 0, json, b"")).unwrap();
        assert_eq!(incoming.position, None);
        assert_eq!(
            incoming.kind,
            Kind::Leave {
                user: "bob".into(),
                count: 2
            }
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"S1 ",
            b"S1 e 1",
            b"S1 e x\n{}\n",
            b"S1 e 1\n{}\n",
            b"HELLO\n\n",
            b"S1 - 0\n{\"topic\":\"t\",\"kind\":\"message\"}\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_pattern_escapes_glob_characters() {
        assert_eq!(Keys::new("sockeye").pattern(), "sockeye:pub:*");
        assert_eq!(Keys::new("a*b[1]").pattern(), r"a\*b\[1\]:pub:*");
    }

    #[test]
    fn history_ids_carry_the_offset() {
        assert_eq!(offset_of_id("0-42"), Some(42));
        assert_eq!(offset_of_id("1700000000000-0"), None);
    }
}

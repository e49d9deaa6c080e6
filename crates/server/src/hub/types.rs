//! The values that travel through the hub: positions, publications, presence.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use sockeye_proto::PreparedMessage;

/// Where a message stands in a topic's stream: the epoch names one unbroken
/// history (it changes when history is lost, for example when a process
/// without Redis restarts); the offset grows by one per published message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// The history this offset belongs to.
    pub epoch: String,
    /// The message's number in that history; the first message is 1, and 0
    /// means "before anything was published".
    pub offset: u64,
}

/// What a publication carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A published message.
    Message,
    /// A member joined a room.
    Join {
        /// The member's user id.
        user: String,
        /// Members in the room after the join.
        count: usize,
    },
    /// A member left a room.
    Leave {
        /// The member's user id.
        user: String,
        /// Members in the room after the leave.
        count: usize,
    },
}

/// One message on its way to a topic's subscribers.
#[derive(Debug)]
pub struct Publication {
    /// The topic (or room) it was published to.
    pub topic: Arc<str>,
    /// Its position; presence events have none.
    pub position: Option<Position>,
    /// The payload as published.
    pub payload: Bytes,
    /// Whether the payload is text.
    pub text: bool,
    /// Who published it (a user id), when known.
    pub from: Option<String>,
    /// Message or presence event.
    pub kind: Kind,
    /// The frame subscribers send, made once by the hub's encoder.
    pub(crate) prepared: OnceLock<PreparedMessage>,
}

impl Publication {
    /// A publication that has not been framed yet.
    pub fn new(
        topic: Arc<str>,
        position: Option<Position>,
        payload: Bytes,
        text: bool,
        from: Option<String>,
        kind: Kind,
    ) -> Self {
        Publication {
            topic,
            position,
            payload,
            text,
            from,
            kind,
            prepared: OnceLock::new(),
        }
    }
}

/// How the hub turns a publication into the frame its subscribers receive;
/// called once per publication per process.
pub type Encoder = Arc<dyn Fn(&Publication) -> PreparedMessage + Send + Sync>;

/// The default encoder: the payload as it was published, as text or binary;
/// presence events as a small JSON object.
pub fn raw_encoder() -> Encoder {
    Arc::new(|p: &Publication| match &p.kind {
        Kind::Message if p.text => match sockeye_proto::Utf8Bytes::try_from(p.payload.clone()) {
            Ok(text) => PreparedMessage::text(text),
            Err(_) => PreparedMessage::binary(p.payload.clone()),
        },
        Kind::Message => PreparedMessage::binary(p.payload.clone()),
        Kind::Join { user, count } | Kind::Leave { user, count } => {
            let event = if matches!(p.kind, Kind::Join { .. }) {
                "join"
            } else {
                "leave"
            };
            let json = serde_json::json!({
                "type": "presence", "room": &*p.topic, "event": event, "user": user, "count": count,
            });
            PreparedMessage::text(json.to_string())
        }
    })
}

/// A connection's id, unique within a process.
pub type ConnId = u64;

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the socket.
    Queued,
    /// Dropped: the subscriber's outgoing queue is past its backpressure limit.
    Dropped,
    /// The subscriber is closing; the hub may forget it.
    Closed,
}

/// Something that receives publications: a connection. Delivery never waits.
pub trait Subscriber: Send + Sync + 'static {
    /// The connection's id.
    fn id(&self) -> ConnId;
    /// Queues `message` for the socket without waiting.
    fn deliver(&self, publication: &Arc<Publication>, message: &PreparedMessage) -> Delivery;
}

/// The answer to a subscription that asked to resume from a position.
#[derive(Debug)]
pub enum Resume {
    /// The messages after the position, in order (possibly none).
    Replay(Vec<Arc<Publication>>),
    /// History no longer covers the position (too old, or another epoch).
    Gap,
}

//! What the reconnecting client tells the application, and how a send fails.

use std::time::Duration;

use sockeye_proto::{CloseCode, Message};

use crate::Error;

/// What happened to the logical connection, in order. Read them from
/// [`ReconnectEvents`](super::ReconnectEvents).
#[derive(Debug)]
#[non_exhaustive]
pub enum ReconnectEvent {
    /// A connection is open. `attempt` is the reconnect attempt that made
    /// it: 0 for the first connection, then counted since the last stable
    /// connection. Queued messages are written after this (and after the
    /// re-subscriptions).
    Connected {
        /// 0 for the first try; n for the n-th retry in a row.
        attempt: u32,
        /// The server's 101 response (headers, the chosen subprotocol).
        response: Box<http::Response<()>>,
    },
    /// A text or binary message from the server.
    Message(Message),
    /// The connection ended.
    Disconnected {
        /// The server's close code; 1005 for a close frame without one; 1006
        /// when the connection dropped without a close frame (including a
        /// missed pong); the code this client sent when it closed (its
        /// user's close, or a protocol error of the server's).
        code: CloseCode,
        /// The server's close reason, or what went wrong.
        reason: String,
        /// Whether the client will reconnect: a [`Reconnecting`] follows.
        ///
        /// [`Reconnecting`]: ReconnectEvent::Reconnecting
        reconnect: bool,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// 0 for the first try; n for the n-th retry in a row.
        attempt: u32,
        /// Why.
        error: Error,
    },
    /// The client waits `delay`, then makes reconnect attempt `attempt`.
    Reconnecting {
        /// Counted from 1 since the last stable connection.
        attempt: u32,
        /// The backoff delay.
        delay: Duration,
    },
    /// A message queued by `send` will not be sent.
    Dropped {
        /// Why.
        reason: DropReason,
        /// The message, given back.
        message: Message,
    },
    /// The client stopped trying: [`Backoff::max_attempts`] reconnect
    /// attempts failed in a row, or the server refused in a way that will
    /// not change (a bad URL, an HTTP 4xx). The event stream ends after it.
    ///
    /// [`Backoff::max_attempts`]: super::Backoff::max_attempts
    GaveUp {
        /// Reconnect attempts made in a row.
        attempts: u32,
    },
}

/// Why a queued message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Its time-to-live ran out ([`SendOptions::ttl`](super::SendOptions::ttl)).
    Expired,
    /// The queue was full ([`OverflowPolicy`](super::OverflowPolicy)).
    Overflow,
    /// It was marked never-replay and the connection it was meant for was
    /// not there or dropped.
    NeverReplay,
    /// The client closed or gave up with the message still queued.
    Closed,
}

/// A message `send` did not queue, given back.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue is full and the policy is [`OverflowPolicy::Error`](super::OverflowPolicy::Error).
    #[error("the outgoing queue is full")]
    Full(Message),
    /// The client was closed, gave up, or its driver is gone.
    #[error("the reconnecting client is closed")]
    Closed(Message),
}

impl QueueError {
    /// The message that was not queued.
    pub fn into_message(self) -> Message {
        match self {
            QueueError::Full(message) | QueueError::Closed(message) => message,
        }
    }
}

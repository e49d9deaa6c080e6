//! Settings of a [`ReconnectingClient`](super::ReconnectingClient).

use std::time::Duration;

use sockeye_proto::CloseCode;

use super::backoff::Backoff;
use super::queue::{OverflowPolicy, QueueLimit};
use crate::Config;

/// How a [`ReconnectingClient`](super::ReconnectingClient) connects,
/// waits, queues and checks its connection.
#[derive(Debug, Clone)]
pub struct ReconnectConfig {
    /// The connection settings of every attempt: headers, subprotocols,
    /// TLS, compression, proxy, limits, the handshake timeout (which bounds
    /// each attempt).
    pub websocket: Config,
    /// The delays between attempts and when to give up.
    pub backoff: Backoff,
    /// A connection that stayed up this long resets the backoff: the next
    /// drop reconnects after [`Backoff::initial`] again, and
    /// [`Backoff::max_attempts`] counts from zero. Default 5 s: a server
    /// that accepts and then drops every connection at once still backs off.
    pub stable_after: Duration,
    /// How many messages and bytes may wait to be written.
    pub queue_limit: QueueLimit,
    /// What `send` does when the queue is full. Default [`OverflowPolicy::Error`].
    pub overflow: OverflowPolicy,
    /// Ping the server and reconnect when it stops answering. Default: a
    /// ping every 30 s, dead after 10 s without its pong (what `sockeye
    /// serve` does the other way). A connection can die without either side
    /// hearing of it (a laptop sleeps, a NAT forgets); without a heartbeat
    /// the client would wait for a server that is gone, with messages queued.
    pub heartbeat: Option<Heartbeat>,
    /// Close codes from the server after which the client reconnects; after
    /// any other code it stops ([`ReconnectEvent::Disconnected`] with
    /// `reconnect: false`). 1006 stands for every drop without a close frame,
    /// a missed pong included. Default 1001 (going away), 1006, 1011
    /// (internal error), 1012 (restart), 1013 (try again later): the
    /// conditions that pass. A 1000 or 1008 from the server is a decision
    /// (the session is over, the client is not welcome) that reconnecting
    /// would override; the sockeye server's own 1000 and 1009 can be added
    /// here when its clients should come back after them.
    ///
    /// [`ReconnectEvent::Disconnected`]: super::ReconnectEvent::Disconnected
    pub reconnect_codes: Vec<CloseCode>,
    /// Received messages waiting in [`ReconnectEvents`](super::ReconnectEvents)
    /// before the driver stops reading the socket (and the server sees
    /// backpressure). Default 1024. Other events are never held back.
    pub max_pending_messages: usize,
}

/// Pings that prove the server is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Time between pings.
    pub interval: Duration,
    /// A ping unanswered this long means the connection is dead: it is
    /// dropped (reported as 1006) and the client reconnects.
    pub pong_timeout: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            websocket: Config::default(),
            backoff: Backoff::default(),
            stable_after: Duration::from_secs(5),
            queue_limit: QueueLimit::default(),
            overflow: OverflowPolicy::Error,
            heartbeat: Some(Heartbeat {
                interval: Duration::from_secs(30),
                pong_timeout: Duration::from_secs(10),
            }),
            reconnect_codes: vec![
                CloseCode::GOING_AWAY,
                CloseCode::ABNORMAL,
                CloseCode::INTERNAL,
                CloseCode::RESTART,
                CloseCode::TRY_AGAIN_LATER,
            ],
            max_pending_messages: 1024,
        }
    }
}

impl ReconnectConfig {
    /// Sets the connection settings used for every attempt.
    pub fn websocket(mut self, config: Config) -> Self {
        self.websocket = config;
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how long a connection must last to reset the backoff.
    pub fn stable_after(mut self, duration: Duration) -> Self {
        self.stable_after = duration;
        self
    }

    /// Bounds the outgoing queue and says what happens when it is full.
    pub fn queue(mut self, limit: QueueLimit, overflow: OverflowPolicy) -> Self {
        self.queue_limit = limit;
        self.overflow = overflow;
        self
    }

    /// Pings every `interval`; a pong missing for `pong_timeout` means dead.
    pub fn heartbeat(mut self, interval: Duration, pong_timeout: Duration) -> Self {
        self.heartbeat = Some(Heartbeat {
            interval,
            pong_timeout,
        });
        self
    }

    /// Sends no pings.
    pub fn no_heartbeat(mut self) -> Self {
        self.heartbeat = None;
        self
    }

    /// Sets the server close codes that lead to a reconnect.
    pub fn reconnect_codes(mut self, codes: impl IntoIterator<Item = CloseCode>) -> Self {
        self.reconnect_codes = codes.into_iter().collect();
        self
    }
}

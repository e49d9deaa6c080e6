//! What an endpoint allows, and what it does at each limit.

use std::time::Duration;

use sockeye::DeflateConfig;
use sockeye_proto::CloseCode;

/// The settings of one WebSocket endpoint. The defaults suit a public
/// server; each field says what it trades.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The largest message accepted; bigger ones close the connection with
    /// 1009. Default 16 MiB.
    pub max_payload_length: usize,
    /// A connection from which nothing arrives for this long is closed with
    /// 1001. Default 120 s; heartbeats (when on) keep healthy clients busy.
    /// Checked every quarter of it (messages never read the clock), so the
    /// close comes between 1 and 1.25 times this after the last message.
    pub idle_timeout: Option<Duration>,
    /// permessage-deflate per connection, when the client offers it. Default
    /// off: compression costs CPU and memory per connection.
    pub compression: Option<DeflateConfig>,
    /// Outgoing bytes a connection may have queued before it counts as slow.
    /// Past it, [`Conn::send`](crate::Conn::send) reports backpressure and
    /// publications follow [`EndpointConfig::backpressure_policy`]. Default 64 KiB.
    pub backpressure_limit: usize,
    /// What publications do to a connection past its backpressure limit.
    pub backpressure_policy: BackpressurePolicy,
    /// The most bytes a connection may have queued at all; direct sends past
    /// it are dropped. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Subprotocols this endpoint speaks; the first of the client's list
    /// that appears here is chosen. `"*"` accepts the client's first choice,
    /// whatever it is (for echo endpoints and testers).
    pub protocols: Vec<String>,
    /// Extra headers on the 101 response.
    pub headers: http::HeaderMap,
    /// Upgrades past this many open connections are refused with 503.
    /// Default unlimited.
    pub max_connections: Option<usize>,
    /// Allowed `Origin` values (exact, e.g. `https://example.com`); others
    /// get 403 before any upgrade. Default: any origin.
    pub origins: Option<Vec<String>>,
    /// Per-connection rate limit; default none.
    pub rate_limit: Option<RateLimit>,
    /// Ping every `interval`; a connection that has not answered within
    /// `timeout` is terminated. Default: none.
    pub heartbeat: Option<Heartbeat>,
    /// The most topics (and rooms) one connection may subscribe to.
    /// Default 1,000.
    pub max_topics_per_connection: usize,
    /// How long a closing connection waits for the peer's close frame. Default 5 s.
    pub close_timeout: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            max_payload_length: 16 << 20,
            idle_timeout: Some(Duration::from_secs(120)),
            compression: None,
            backpressure_limit: 64 * 1024,
            backpressure_policy: BackpressurePolicy::Drop,
            max_queued_bytes: 16 << 20,
            protocols: Vec::new(),
            headers: http::HeaderMap::new(),
            max_connections: None,
            origins: None,
            rate_limit: None,
            heartbeat: None,
            max_topics_per_connection: 1000,
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl EndpointConfig {
    /// Sets [`EndpointConfig::max_payload_length`].
    pub fn max_payload_length(mut self, bytes: usize) -> Self {
        self.max_payload_length = bytes;
        self
    }

    /// Sets [`EndpointConfig::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Turns permessage-deflate on with these settings.
    pub fn compression(mut self, deflate: DeflateConfig) -> Self {
        self.compression = Some(deflate);
        self
    }

    /// Sets the backpressure limit and what publications do past it.
    pub fn backpressure(mut self, limit: usize, policy: BackpressurePolicy) -> Self {
        self.backpressure_limit = limit;
        self.backpressure_policy = policy;
        self
    }

    /// Sets the subprotocols.
    pub fn protocols<I: IntoIterator<Item = S>, S: Into<String>>(mut self, protocols: I) -> Self {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a header to the 101 response.
    pub fn header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets [`EndpointConfig::max_connections`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Allows only these origins.
    pub fn origins<I: IntoIterator<Item = S>, S: Into<String>>(mut self, origins: I) -> Self {
        self.origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Sets a per-connection rate limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Turns heartbeats on.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat = Some(Heartbeat { interval, timeout });
        self
    }

    /// Sets [`EndpointConfig::max_topics_per_connection`].
    pub fn max_topics_per_connection(mut self, max: usize) -> Self {
        self.max_topics_per_connection = max;
        self
    }
}

/// What a publication does to a connection that is past its backpressure limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackpressurePolicy {
    /// Skip this connection for this publication (counted in metrics).
    Drop,
    /// Close the connection with this code (1008 policy, or 1013 try again later).
    Close(CloseCode),
}

/// A token bucket per connection: `messages` per second and `bytes` per
/// second, with bursts up to one second's worth.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Messages per second.
    pub messages_per_second: f64,
    /// Payload bytes per second.
    pub bytes_per_second: f64,
    /// What happens to a message over the limit.
    pub action: RateLimitAction,
}

/// What a connection that exceeds its rate limit gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitAction {
    /// Close with 1008 (policy violation).
    Close,
    /// Drop the message and send the client an error message.
    Reply,
}

/// Heartbeat settings.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// Time between pings.
    pub interval: Duration,
    /// How long to wait for any pong before terminating the connection.
    pub timeout: Duration,
}

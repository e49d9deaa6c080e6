//! Limits and timing of a connection.

use std::time::Duration;

/// How a [`Connection`](crate::Connection) behaves. Every field has a default
/// chosen for a public server; the docs say what each one trades.
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest frame payload accepted, checked against the header before
    /// anything is buffered. Default 16 MiB, the same as the message limit so
    /// that an unfragmented message may use all of it. Lower it on servers
    /// that only expect small messages: it bounds memory per connection.
    pub max_frame_size: usize,
    /// The largest message accepted (after decompression), checked before
    /// memory is reserved; past it the connection closes with 1009. Default
    /// 16 MiB: big enough for files and snapshots, small enough that a
    /// thousand hostile peers cannot exhaust a server.
    pub max_message_size: usize,
    /// How long to wait for the peer's close frame after sending ours before
    /// giving up on the close handshake. Default 5 s: longer than any healthy
    /// round trip, short enough not to hold resources for dead peers.
    pub close_timeout: Duration,
    /// Outgoing payloads at least this long are queued without being copied
    /// (server role, uncompressed); shorter ones are copied into one buffer
    /// so that many small messages leave in one write. Default 4 KiB.
    pub zero_copy_threshold: usize,
    pub(crate) dangerous: DangerousConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            close_timeout: Duration::from_secs(5),
            zero_copy_threshold: 4096,
            dangerous: DangerousConfig::default(),
        }
    }
}

impl Config {
    /// Sets [`Config::max_frame_size`].
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`Config::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Config::close_timeout`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Options that break RFC 6455; for tests and odd peers only.
    pub fn dangerous(&mut self) -> &mut DangerousConfig {
        &mut self.dangerous
    }
}

/// Settings that make a connection violate the RFC. Reached through
/// [`Config::dangerous`] so that using them is a visible choice.
#[derive(Debug, Clone, Default)]
pub struct DangerousConfig {
    /// Accept unmasked frames from a client (servers only).
    pub accept_unmasked_frames: bool,
}

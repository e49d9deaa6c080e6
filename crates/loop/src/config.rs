//! [`Config`]: what a [`crate::Server`] accepts and how long it waits.

use std::time::Duration;

use sockeye_proto::extension::DeflateConfig;

/// Settings of a [`crate::Server`]. Defaults are documented per field.
#[derive(Debug, Clone)]
pub struct Config {
    /// Protocol limits of each connection (frame and message sizes, the
    /// close timeout). Default: `sockeye_proto::Config::default()`.
    pub websocket: sockeye_proto::Config,
    /// Event loops, each on its own thread with its own listener on the
    /// same port. Default: one per core.
    pub threads: usize,
    /// The only path upgraded; others get 404. Default `None`: any path.
    pub path: Option<String>,
    /// Subprotocols offered to clients, in order of preference. Default none.
    pub protocols: Vec<String>,
    /// permessage-deflate, when set. Default off: compression state costs
    /// memory per connection, which is what this server saves.
    pub deflate: Option<DeflateConfig>,
    /// The most bytes an opening request head may have (then 431). Default 16 KiB.
    pub max_header_size: usize,
    /// How long a connection may take to send its opening request (then
    /// 408). Default 10 s.
    pub handshake_timeout: Duration,
    /// Bytes read from a socket at a time, into one buffer per loop.
    /// Default 16 KiB.
    pub read_size: usize,
    /// Reading from a connection stops while more than this many bytes wait
    /// to be written to it, and resumes once they are written. Default 1 MiB.
    pub max_backlog: usize,
    /// The most connections each loop holds; more are refused with 503.
    /// Default 1,000,000.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            websocket: sockeye_proto::Config::default(),
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            path: None,
            protocols: Vec::new(),
            deflate: None,
            max_header_size: 16 * 1024,
            handshake_timeout: Duration::from_secs(10),
            read_size: 16 * 1024,
            max_backlog: 1 << 20,
            max_connections: 1_000_000,
        }
    }
}

impl Config {
    /// Sets [`Config::threads`] (at least 1).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Sets [`Config::path`].
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Sets [`Config::deflate`].
    pub fn deflate(mut self, deflate: DeflateConfig) -> Self {
        self.deflate = Some(deflate);
        self
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

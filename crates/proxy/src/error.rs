//! The one error type of `sockeye-proxy`, grouped by who is at fault.

use std::net::SocketAddr;

use sockeye_proto::handshake::HandshakeError;
use sockeye_proto::ProtocolError;

use crate::observer::Direction;

/// What can go wrong while configuring the proxy or forwarding through it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- configuration (the operator's mistake)
    /// A backend URL cannot be used.
    #[error("invalid backend URL {url:?}: {reason}")]
    BackendUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A route is malformed (it must be `/prefix=URL`).
    #[error("invalid route {route:?}: {reason}")]
    Route {
        /// The route as given.
        route: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An allow-list entry is malformed (it must be a URL or `host:port`).
    #[error("invalid allow-list entry {entry:?}: {reason}")]
    AllowEntry {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The configuration has no route and no client-chosen backends: every
    /// request would be refused.
    #[error("no route: give --to URL, a --route, or --allow-backend")]
    NoRoutes,

    // ---- the backend (upstream failed or misbehaved)
    /// The backend's host did not resolve.
    #[error("cannot resolve backend host {host:?}: {source}")]
    Dns {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// No TCP connection to the backend.
    #[error("cannot connect to backend {backend}: {source}")]
    Connect {
        /// The backend, as `host:port`.
        backend: String,
        /// The last connection error.
        source: std::io::Error,
    },
    /// Connecting to the backend took longer than the connect timeout.
    #[error("connecting to backend {0} timed out")]
    ConnectTimeout(String),
    /// The TLS handshake with a `wss://` backend failed.
    #[error("TLS to backend {backend}: {reason}")]
    Tls {
        /// The backend, as `host:port`.
        backend: String,
        /// What failed.
        reason: String,
    },
    /// The backend's HTTP exchange failed.
    #[error("backend HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The backend answered the upgrade with an invalid 101.
    #[error("backend's upgrade response: {0}")]
    BackendHandshake(HandshakeError),
    /// The backend did not answer within the handshake timeout.
    #[error("backend did not answer the request within {0:?}")]
    BackendTimeout(std::time::Duration),

    // ---- a peer of a spliced connection broke the framing rules
    /// A peer's frames could not be split (close 1002 to the other side).
    #[error("{direction} stream broke the framing rules: {source}")]
    Framing {
        /// Which stream.
        direction: Direction,
        /// The rule broken.
        source: ProtocolError,
    },

    // ---- local
    /// A socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Listening failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the backend is at fault (the answer to the client is 502).
    pub fn is_backend(&self) -> bool {
        matches!(
            self,
            Error::Dns { .. }
                | Error::Connect { .. }
                | Error::ConnectTimeout(_)
                | Error::Tls { .. }
                | Error::Http(_)
                | Error::BackendHandshake(_)
                | Error::BackendTimeout(_)
        )
    }
}

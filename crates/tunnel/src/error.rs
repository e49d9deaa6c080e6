//! The one error type of `sockeye-tunnel`, grouped by who is at fault.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What can go wrong configuring, running or reaching a tunnel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- configuration (the user's or operator's mistake)
    /// A subdomain cannot be used as a DNS label.
    #[error("invalid subdomain {name:?}: {reason}")]
    Subdomain {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A setting is unusable (server URL, local port, auth, host header…).
    #[error("{0}")]
    Config(String),
    /// The config file cannot be read or parsed.
    #[error("{path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    // ---- the server said no (the agent should tell its user, not retry)
    /// The tunnel server refused the agent.
    #[error("the tunnel server refused: {reason}")]
    Refused {
        /// The server's words.
        reason: String,
        /// Whether trying again later may work (a limit), or not (a bad
        /// token, a subdomain in use).
        retry: bool,
    },

    // ---- the link (network, or a peer speaking something else)
    /// The WebSocket to the tunnel server failed to open.
    #[error("cannot reach the tunnel server at {url}: {source}")]
    Connect {
        /// The control URL.
        url: String,
        /// Why.
        source: sockeye::Error,
    },
    /// The link broke or the peer broke the control protocol.
    #[error("tunnel link: {0}")]
    Link(String),

    // ---- local
    /// Listening failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
    /// A socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The proxy refused its configuration.
    #[error(transparent)]
    Proxy(#[from] sockeye_proxy::Error),
}

impl Error {
    /// Whether the agent should stop rather than reconnect.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Refused { retry, .. } => !retry,
            Error::Subdomain { .. } | Error::Config(_) | Error::ConfigFile { .. } => true,
            Error::Proxy(_) | Error::Listen { .. } => true,
            _ => false,
        }
    }
}

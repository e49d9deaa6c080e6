//! The one error type of the `sockeye` crate.

use sockeye_proto::handshake::HandshakeError;

/// What can go wrong while connecting, accepting or talking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the WebSocket protocol (a close with the matching code was sent).
    #[error(transparent)]
    Protocol(#[from] sockeye_proto::Error),
    /// The opening handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server answered the upgrade with something other than 101.
    #[error("server refused the upgrade with HTTP {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The start of the response body (at most 4 KiB), for the user to read.
        body: String,
        /// The response head.
        response: Box<http::Response<()>>,
    },
    /// The URL cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host name did not resolve.
    #[error("cannot resolve host {host:?}: {source}")]
    Dns {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// TLS setup or the TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The opening handshake took longer than its timeout.
    #[error("the opening handshake did not finish within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The connection dropped without a close frame (close code 1006).
    #[error("connection closed without a close frame (1006)")]
    AbnormalClosure,
    /// The connection is closed; nothing more can be sent.
    #[error("the connection is closed")]
    Closed,
    /// The outgoing buffer is full; the message is given back.
    #[error("outgoing buffer full ({buffered} bytes queued, limit {limit})")]
    BufferFull {
        /// The message that was not queued.
        message: Box<crate::Message>,
        /// Bytes queued when the send was refused.
        buffered: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl From<tokio::time::error::Elapsed> for Error {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        Error::Io(std::io::ErrorKind::TimedOut.into())
    }
}

//! Why an opening handshake was refused, and the HTTP status that says so.

use http::StatusCode;

/// Why an opening handshake failed.
///
/// The first group is found by a server reading a client's request; each maps
/// through [`HandshakeError::status`] to the status of the refusal that
/// [`rejection`](super::rejection) builds. The second group is found by a
/// client reading a server's response (or by a client given bad arguments);
/// those map to `502 Bad Gateway` (the peer misbehaved) or
/// `500 Internal Server Error` (our caller did), which is what a proxy
/// relaying the failure should answer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    // ---- the request (server side) and HTTP head parsing (both sides)
    /// The request method was not GET (405, with `Allow: GET`).
    #[error("a WebSocket upgrade must use the GET method")]
    MethodNotGet,
    /// The request was older than HTTP/1.1 (505).
    #[error("a WebSocket upgrade needs HTTP/1.1 or later")]
    HttpVersion,
    /// No `Host` header (and no authority in the request target) (400).
    #[error("missing Host header")]
    MissingHost,
    /// No `Upgrade` header: a plain HTTP request reached a WebSocket
    /// endpoint (426).
    #[error("missing Upgrade: websocket header; this endpoint only speaks WebSocket")]
    MissingUpgrade,
    /// An `Upgrade` header without the `websocket` token (400).
    #[error("the Upgrade header does not list websocket")]
    NotWebSocketUpgrade,
    /// The `Connection` header does not list `upgrade` (400).
    #[error("Connection header does not contain the upgrade token")]
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Key` header (400).
    #[error("missing Sec-WebSocket-Key header")]
    MissingKey,
    /// `Sec-WebSocket-Key` is not the base64 encoding of exactly 16 bytes, or
    /// appears more than once (400).
    #[error("Sec-WebSocket-Key must be the base64 encoding of exactly 16 bytes, sent once")]
    InvalidKey,
    /// `Sec-WebSocket-Version` is missing (empty string) or not 13 (426,
    /// with `Sec-WebSocket-Version: 13`).
    #[error("{}", version_message(.0))]
    UnsupportedVersion(String),
    /// The head grew past the configured limit before it ended (431).
    #[error("headers exceed {limit} bytes")]
    HeadersTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The bytes are not a valid HTTP/1.x head, or a handshake header holds
    /// bytes that are not allowed there (400).
    #[error("malformed HTTP head: {0}")]
    Malformed(String),
    /// More than [`MAX_HEADERS`](super::MAX_HEADERS) header lines (431).
    #[error("more than {} header lines", super::MAX_HEADERS)]
    TooManyHeaders,

    // ---- the response (client side)
    /// The URI given to the client is not a usable ws:// or wss:// URI (500).
    #[error("bad WebSocket URI: {0}")]
    BadUri(String),
    /// A subprotocol name given to the client is not an HTTP token (500).
    #[error("subprotocol name {0:?} is not a valid HTTP token")]
    InvalidProtocol(String),
    /// The server answered with a status other than 101 (502).
    #[error("server refused the upgrade with status {status} (expected 101 Switching Protocols)")]
    Rejected {
        /// The status code the server sent.
        status: u16,
    },
    /// The 101 response lacks `Upgrade: websocket` (502).
    #[error("server response lacks Upgrade: websocket")]
    ResponseMissingUpgrade,
    /// The 101 response's `Connection` header does not list `upgrade` (502).
    #[error("server response lacks Connection: Upgrade")]
    ResponseMissingConnectionUpgrade,
    /// `Sec-WebSocket-Accept` is missing or does not match the key sent (502).
    #[error("Sec-WebSocket-Accept is missing or does not match the key we sent")]
    AcceptMismatch,
    /// The server chose a subprotocol the client did not offer (502).
    #[error("server chose subprotocol {0:?}, which we did not offer")]
    UnexpectedProtocol(String),
    /// The server's `Sec-WebSocket-Extensions` is unacceptable (502).
    #[error("Sec-WebSocket-Extensions from server: {0}")]
    Extension(String),
}

fn version_message(version: &str) -> String {
    if version.is_empty() {
        "missing Sec-WebSocket-Version header; this server speaks 13".to_owned()
    } else {
        format!("Sec-WebSocket-Version {version} is not supported; this server speaks 13")
    }
}

impl HandshakeError {
    /// The HTTP status that answers this error.
    ///
    /// Request problems give the status a server sends back (400, 405, 426,
    /// 431, 505). Response problems give 502 and bad client arguments 500:
    /// a proxy that failed to reach its upstream answers its own client with
    /// them.
    pub fn status(&self) -> StatusCode {
        use HandshakeError::*;
        match self {
            MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            HttpVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            MissingUpgrade | UnsupportedVersion(_) => StatusCode::UPGRADE_REQUIRED,
            HeadersTooLarge { .. } | TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            MissingHost
            | NotWebSocketUpgrade
            | MissingConnectionUpgrade
            | MissingKey
            | InvalidKey
            | Malformed(_) => StatusCode::BAD_REQUEST,
            BadUri(_) | InvalidProtocol(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Rejected { .. }
            | ResponseMissingUpgrade
            | ResponseMissingConnectionUpgrade
            | AcceptMismatch
            | UnexpectedProtocol(_)
            | Extension(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_messages_are_actionable() {
        assert_eq!(
            HandshakeError::UnsupportedVersion("8".into()).to_string(),
            "Sec-WebSocket-Version 8 is not supported; this server speaks 13"
        );
        assert_eq!(
            HandshakeError::UnsupportedVersion(String::new()).to_string(),
            "missing Sec-WebSocket-Version header; this server speaks 13"
        );
        assert_eq!(
            HandshakeError::HeadersTooLarge { limit: 16384 }.to_string(),
            "headers exceed 16384 bytes"
        );
    }

    #[test]
    fn client_side_errors_are_gateway_errors() {
        for err in [
            HandshakeError::Rejected { status: 403 },
            HandshakeError::ResponseMissingUpgrade,
            HandshakeError::ResponseMissingConnectionUpgrade,
            HandshakeError::AcceptMismatch,
            HandshakeError::UnexpectedProtocol("x".into()),
            HandshakeError::Extension("x".into()),
        ] {
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err}");
        }
        assert_eq!(
            HandshakeError::BadUri("x".into()).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

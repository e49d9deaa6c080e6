//! The one error type of `sockeye-proto`, grouped by who is at fault.
//!
//! Every error that ends a connection maps to exactly one close code through
//! [`Error::close_code`]; that function is the only place where the mapping lives.

use crate::frame::CloseCode;

/// Everything that can go wrong in the protocol core.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke RFC 6455 framing rules.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A text message or close reason was not valid UTF-8.
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A frame or message is bigger than the configured limit.
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooBig {
        /// "frame" or "message".
        what: &'static str,
        /// The size that was announced or reached.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A compressed message could not be decompressed.
    #[error("permessage-deflate: {0}")]
    Compression(String),
    /// The opening handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] crate::handshake::HandshakeError),
    /// The application tried to send after the close handshake started.
    #[error("the connection is closing or closed; nothing more can be sent")]
    Closed,
    /// The application asked for something the protocol forbids.
    #[error("invalid use of the API: {0}")]
    Misuse(&'static str),
}

impl Error {
    /// The close code this error puts on the wire when it ends a connection.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Error::Protocol(_) | Error::Handshake(_) | Error::Misuse(_) | Error::Closed => {
                CloseCode::PROTOCOL
            }
            Error::InvalidUtf8 | Error::Compression(_) => CloseCode::INVALID_PAYLOAD,
            Error::TooBig { .. } => CloseCode::TOO_BIG,
        }
    }
}

/// How the peer broke the framing rules of RFC 6455.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Opcodes 0x3-0x7 and 0xB-0xF are reserved.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// RSV1-3 set without an extension that defines them.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// A control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload larger than 125 bytes")]
    ControlTooLong,
    /// A server received a frame without a mask.
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A client received a masked frame.
    #[error("server frame is masked")]
    MaskedFrame,
    /// A continuation frame arrived with no message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived inside a fragmented message.
    #[error("new message started before the fragmented message ended")]
    ExpectedContinuation,
    /// A 64-bit payload length had its most significant bit set.
    #[error("64-bit payload length with the most significant bit set")]
    InvalidLength,
    /// A close frame carried a code that may not be sent.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close frame with a one-byte payload.
    #[error("close frame payload of 1 byte")]
    CloseTooShort,
}

//! Close codes and the close frame payload (RFC 6455 sections 5.5.1 and 7.4).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, ProtocolError};
use crate::frame::utf8::Utf8Bytes;

/// A close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection dropped without a close frame (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: payload data inconsistent with its type (bad UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a policy was violated.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway received an invalid response from upstream.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);

    /// Whether this code may appear in a close frame on the wire.
    ///
    /// 1000-1003 and 1007-1014 are defined by RFC 6455 and the IANA registry,
    /// 3000-4999 are for libraries and applications; everything else,
    /// including 1004-1006 and 1015, is reserved or must never be sent.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(value: u16) -> Self {
        CloseCode(value)
    }
}

impl From<CloseCode> for u16 {
    fn from(value: CloseCode) -> Self {
        value.0
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The most bytes a close reason may have (125 minus the two-byte code).
pub const MAX_REASON_LEN: usize = 123;

/// The payload of a close frame that carries a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// A UTF-8 reason of at most 123 bytes.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// A close frame with `code` and `reason`, the reason cut to 123 bytes at
    /// a character boundary.
    pub fn new(code: CloseCode, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        CloseFrame {
            code,
            reason: Utf8Bytes::from(&reason[..end]),
        }
    }

    /// Decodes a close payload: empty (no status), or a code and a UTF-8 reason.
    pub fn parse(payload: Bytes) -> Result<Option<CloseFrame>, Error> {
        match payload.len() {
            0 => Ok(None),
            1 => Err(ProtocolError::CloseTooShort.into()),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0).into());
                }
                let reason = Utf8Bytes::try_from(payload.slice(2..))?;
                Ok(Some(CloseFrame { code, reason }))
            }
        }
    }

    /// Encodes the payload: the code in network order, then the reason.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.code.0);
        out.put_slice(self.reason.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_ranges_follow_the_rfc() {
        for code in 0u16..=5000 {
            let ok = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode(code).is_sendable(), ok, "{code}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!CloseCode(bad).is_sendable(), "{bad}");
        }
    }

    #[test]
    fn parse_rejects_bad_payloads() {
        assert_eq!(CloseFrame::parse(Bytes::new()), Ok(None));
        assert!(CloseFrame::parse(Bytes::from_static(&[3])).is_err());
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xED])),
            Err(ProtocolError::InvalidCloseCode(1005).into())
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xE8, 0xFF])),
            Err(Error::InvalidUtf8)
        );
        let ok = CloseFrame::parse(Bytes::from_static(b"\x03\xe8bye")).unwrap();
        assert_eq!(ok, Some(CloseFrame::new(CloseCode::NORMAL, "bye")));
    }

    #[test]
    fn long_reason_is_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let frame = CloseFrame::new(CloseCode::NORMAL, &long);
        assert!(frame.reason.len() <= MAX_REASON_LEN);
        assert_eq!(frame.reason.len(), 122);
    }
}

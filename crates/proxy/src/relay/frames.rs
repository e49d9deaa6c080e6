//! The few frames the proxy writes itself: keepalive pings and closes.

use sockeye_proto::frame::{apply_mask, FrameHeader, MAX_HEADER_LEN};
use sockeye_proto::relay::MAX_CARRY;
use sockeye_proto::{CloseCode, OpCode};

/// Length of the proxy's ping payload: a 4-byte prefix per hop, then a
/// 4-byte sequence number.
pub(crate) const PING_LEN: usize = 8;

/// An encoded control frame, on the stack.
pub(crate) struct ControlFrame {
    bytes: [u8; MAX_CARRY],
    len: usize,
}

impl ControlFrame {
    /// `opcode` with `payload` (at most 125 bytes), masked with a fresh key
    /// when `masked` (frames toward the backend, where the proxy is the client).
    pub(crate) fn new(opcode: OpCode, payload: &[u8], masked: bool) -> Self {
        debug_assert!(payload.len() <= 125);
        let mut header = FrameHeader::new(opcode, payload.len() as u64);
        header.mask = masked.then(rand::random::<[u8; 4]>);
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode_into(&mut head);
        let mut bytes = [0u8; MAX_CARRY];
        bytes[..head_len].copy_from_slice(&head[..head_len]);
        let len = head_len + payload.len();
        bytes[head_len..len].copy_from_slice(payload);
        if let Some(key) = header.mask {
            apply_mask(&mut bytes[head_len..len], key, 0);
        }
        ControlFrame { bytes, len }
    }

    /// A close with `code` and `reason` (cut to fit at a character boundary).
    pub(crate) fn close(code: CloseCode, reason: &str, masked: bool) -> Self {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = [0u8; 125];
        payload[..2].copy_from_slice(&code.0.to_be_bytes());
        payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
        Self::new(OpCode::Close, &payload[..2 + end], masked)
    }

    /// A keepalive ping: `prefix` then `seq`.
    pub(crate) fn ping(prefix: [u8; 4], seq: u32, masked: bool) -> Self {
        let mut payload = [0u8; PING_LEN];
        payload[..4].copy_from_slice(&prefix);
        payload[4..].copy_from_slice(&seq.to_be_bytes());
        Self::new(OpCode::Ping, &payload, masked)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The code and reason of a close payload (unmasked), leniently: the
/// endpoints judge validity, the proxy only reports.
pub(crate) fn parse_close(payload: &[u8]) -> (CloseCode, String) {
    match payload {
        [a, b, reason @ ..] => (
            CloseCode(u16::from_be_bytes([*a, *b])),
            String::from_utf8_lossy(reason).into_owned(),
        ),
        _ => (CloseCode::NO_STATUS, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockeye_proto::relay::{FrameSplitter, RelayEvent};

    fn payload_of(frame: &ControlFrame) -> (FrameHeader, Vec<u8>) {
        let mut splitter = FrameSplitter::new();
        let bytes = frame.as_bytes();
        let (RelayEvent::FrameStart(header), used) = splitter.next_event(bytes).unwrap().unwrap()
        else {
            panic!("no frame start")
        };
        let mut payload = Vec::new();
        if let Some((RelayEvent::Payload(chunk), _)) = splitter.next_event(&bytes[used..]).unwrap()
        {
            chunk.unmask_into(&mut payload);
        }
        (header, payload)
    }

    #[test]
    fn close_frames_round_trip_masked_or_not() {
        for masked in [false, true] {
            let frame = ControlFrame::close(CloseCode::BAD_GATEWAY, "backend gone", masked);
            let (header, payload) = payload_of(&frame);
            assert_eq!(header.opcode, OpCode::Close);
            assert_eq!(header.mask.is_some(), masked);
            assert_eq!(
                parse_close(&payload),
                (CloseCode::BAD_GATEWAY, "backend gone".to_owned())
            );
        }
        let long = ControlFrame::close(CloseCode::NORMAL, &"é".repeat(100), false);
        assert_eq!(long.as_bytes().len(), 2 + 2 + 122);
        assert_eq!(parse_close(&[]), (CloseCode::NO_STATUS, String::new()));
    }

    #[test]
    fn ping_carries_prefix_and_sequence() {
        let (header, payload) = payload_of(&ControlFrame::ping([1, 2, 3, 4], 7, true));
        assert_eq!(header.opcode, OpCode::Ping);
        assert_eq!(payload, [1, 2, 3, 4, 0, 0, 0, 7]);
    }
}

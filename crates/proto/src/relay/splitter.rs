//! [`FrameSplitter`]: frame starts, payload pieces and frame ends out of a
//! byte stream, with no buffer of its own.

use crate::error::ProtocolError;
use crate::frame::{apply_mask, FrameHeader, MAX_HEADER_LEN};

/// The most bytes a caller has to keep between two calls: an incomplete
/// header, or an incomplete control frame (its header and at most 125 bytes
/// of payload), which is only reported once it is whole.
pub const MAX_CARRY: usize = MAX_HEADER_LEN + 125;

/// What [`FrameSplitter::next_event`] found at the start of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEvent<'a> {
    /// A frame starts; the header's bytes were used.
    ///
    /// For a control frame (close, ping, pong) this comes only once the
    /// whole frame is in the input, so its payload follows as one
    /// [`RelayEvent::Payload`] from the same input.
    FrameStart(FrameHeader),
    /// The next piece of the current frame's payload, as on the wire.
    Payload(PayloadChunk<'a>),
    /// The current frame ended (uses no bytes). After a frame with an empty
    /// payload this follows the start directly.
    FrameEnd,
}

/// A piece of a frame's payload, borrowed from the caller's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadChunk<'a> {
    /// The bytes as on the wire: masked when the frame is masked.
    pub data: &'a [u8],
    /// Where `data` starts within the frame's payload.
    pub offset: u64,
    /// The frame's masking key, if it has one.
    pub mask: Option<[u8; 4]>,
}

impl PayloadChunk<'_> {
    /// Appends the piece, unmasked, to `out`.
    pub fn unmask_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(self.data);
        self.unmask_in_place(&mut out[start..]);
    }

    /// Copies the start of the piece, unmasked, into `dst` (as much as fits);
    /// returns the number of bytes copied.
    pub fn unmask_to(&self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.data.len());
        dst[..n].copy_from_slice(&self.data[..n]);
        self.unmask_in_place(&mut dst[..n]);
        n
    }

    fn unmask_in_place(&self, buf: &mut [u8]) {
        if let Some(key) = self.mask {
            // Only the phase of the offset matters to the mask.
            apply_mask(buf, key, (self.offset % 4) as usize);
        }
    }
}

/// Splits a stream of WebSocket frames into [`RelayEvent`]s.
///
/// Call [`FrameSplitter::next_event`] with the bytes not yet used, advance
/// by the count it returns, and repeat until it answers `Ok(None)`; then
/// keep the unused bytes (at most [`MAX_CARRY`]) and call again once more
/// bytes are appended to them.
///
/// Checked here, because relaying depends on it: the header is well formed
/// (no reserved opcode, no 64-bit length with its top bit set), and control
/// frames are unfragmented and at most 125 bytes. Everything else (masking
/// direction, reserved bits, message continuity, sizes) is the endpoints'
/// business and passes through unchanged.
#[derive(Debug, Clone, Default)]
pub struct FrameSplitter {
    frame: Option<Frame>,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    header: FrameHeader,
    remaining: u64,
    offset: u64,
}

impl FrameSplitter {
    /// A splitter at a frame boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next event at the start of `input`, with the number of bytes of
    /// `input` it used; `Ok(None)` when `input` holds too little to say
    /// (nothing was used).
    ///
    /// An error means the stream cannot be split further: the peer broke
    /// the framing rules, and the splitter stays where it was.
    pub fn next_event<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<Option<(RelayEvent<'a>, usize)>, ProtocolError> {
        if let Some(frame) = &mut self.frame {
            if frame.remaining == 0 {
                self.frame = None;
                return Ok(Some((RelayEvent::FrameEnd, 0)));
            }
            if input.is_empty() {
                return Ok(None);
            }
            // `take` is at most `input.len()`, so the cast back cannot truncate.
            let take = frame.remaining.min(input.len() as u64) as usize;
            let chunk = PayloadChunk {
                data: &input[..take],
                offset: frame.offset,
                mask: frame.header.mask,
            };
            frame.remaining -= take as u64;
            frame.offset += take as u64;
            return Ok(Some((RelayEvent::Payload(chunk), take)));
        }
        let Some((header, header_len)) = FrameHeader::parse(input)? else {
            return Ok(None);
        };
        if header.opcode.is_control() {
            if !header.fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if header.payload_len > 125 {
                return Err(ProtocolError::ControlTooLong);
            }
            // Whole control frames only: a caller can look at the payload
            // before deciding to forward the frame.
            if input.len() < header_len + header.payload_len as usize {
                return Ok(None);
            }
        }
        self.frame = Some(Frame {
            header,
            remaining: header.payload_len,
            offset: 0,
        });
        Ok(Some((RelayEvent::FrameStart(header), header_len)))
    }

    /// Passes over whole data frames at the start of `input` without
    /// reporting them: returns the bytes passed over and how many frames
    /// they held. For a caller that only needs to see control frames and
    /// frame boundaries, this is the same as calling
    /// [`FrameSplitter::next_event`] until each frame's end, at one header
    /// parse per frame.
    ///
    /// Stops at a control frame, at a data frame not wholly in `input`, at
    /// a header it cannot parse (left for `next_event` to report), and at
    /// once when a frame is in progress; the splitter stays at a boundary.
    pub fn skip_whole_data_frames(&self, input: &[u8]) -> (usize, u64) {
        let (mut pos, mut frames) = (0, 0);
        if self.frame.is_some() {
            return (0, 0);
        }
        while let Ok(Some((header, header_len))) = FrameHeader::parse(&input[pos..]) {
            let rest = (input.len() - pos - header_len) as u64;
            if header.opcode.is_control() || header.payload_len > rest {
                break;
            }
            // At most `rest`, which came from a usize.
            pos += header_len + header.payload_len as usize;
            frames += 1;
        }
        (pos, frames)
    }

    /// Whether a frame has started and not yet ended: bytes written to the
    /// other side since the last [`RelayEvent::FrameEnd`] leave it inside a
    /// frame, where nothing may be injected.
    pub fn is_mid_frame(&self) -> bool {
        self.frame.is_some()
    }

    /// The header of the frame in progress.
    pub fn current(&self) -> Option<&FrameHeader> {
        self.frame.as_ref().map(|f| &f.header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    /// Encodes one frame; masks the payload when `mask` is given.
    fn frame(opcode: OpCode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut header = FrameHeader::new(opcode, payload.len() as u64);
        header.fin = fin;
        header.mask = mask;
        let mut out = Vec::new();
        header.encode(&mut out);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut out[start..], key, 0);
        }
        out
    }

    /// What a caller sees: (opcode, fin, unmasked payload) per frame.
    type Seen = Vec<(OpCode, bool, Vec<u8>)>;

    /// Feeds `wire` in pieces cut at `cuts`, keeping the unused tail as a
    /// caller would; checks the carry never passes MAX_CARRY.
    fn split(wire: &[u8], cuts: &[usize]) -> Seen {
        let mut splitter = FrameSplitter::new();
        let mut held: Vec<u8> = Vec::new();
        let mut seen = Seen::new();
        let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c < wire.len()).collect();
        bounds.push(wire.len());
        bounds.sort_unstable();
        let mut last = 0;
        for end in bounds {
            held.extend_from_slice(&wire[last..end]);
            last = end;
            let mut pos = 0;
            while let Some((event, used)) = splitter.next_event(&held[pos..]).unwrap() {
                match event {
                    RelayEvent::FrameStart(h) => seen.push((h.opcode, h.fin, Vec::new())),
                    RelayEvent::Payload(chunk) => {
                        let current = &mut seen.last_mut().unwrap().2;
                        assert_eq!(chunk.offset, current.len() as u64);
                        chunk.unmask_into(current);
                    }
                    RelayEvent::FrameEnd => {}
                }
                pos += used;
            }
            held.drain(..pos);
            assert!(held.len() <= MAX_CARRY, "carried {} bytes", held.len());
        }
        assert!(held.is_empty());
        assert!(!splitter.is_mid_frame());
        seen
    }

    fn sample() -> (Vec<u8>, Seen) {
        let key = Some([0x37, 0xfa, 0x21, 0x3d]);
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 31) as u8).collect();
        type Part = (OpCode, bool, Vec<u8>, Option<[u8; 4]>);
        let parts: Vec<Part> = vec![
            (OpCode::Text, true, b"Hello".to_vec(), key),
            (OpCode::Binary, false, big[..300].to_vec(), None),
            (OpCode::Ping, true, b"are you there".to_vec(), key),
            (OpCode::Continuation, true, big.clone(), key),
            (OpCode::Binary, true, Vec::new(), None),
            (OpCode::Pong, true, vec![7; 125], None),
            (OpCode::Close, true, b"\x03\xe8bye".to_vec(), key),
        ];
        let mut wire = Vec::new();
        let mut seen = Seen::new();
        for (op, fin, payload, mask) in parts {
            wire.extend(frame(op, fin, &payload, mask));
            seen.push((op, fin, payload));
        }
        (wire, seen)
    }

    #[test]
    fn whole_input_gives_every_frame() {
        let (wire, expected) = sample();
        assert_eq!(split(&wire, &[]), expected);
    }

    #[test]
    fn any_cut_gives_the_same_frames() {
        let (wire, expected) = sample();
        // Every cut in the first 400 bytes (headers and control frames), and
        // then every 997 bytes.
        for cut in (0..400).chain((400..wire.len()).step_by(997)) {
            assert_eq!(split(&wire, &[cut]), expected, "cut at {cut}");
        }
        // Byte by byte.
        let every: Vec<usize> = (0..wire.len()).collect();
        assert_eq!(split(&wire, &every), expected);
    }

    #[test]
    fn control_frame_is_reported_only_when_whole() {
        let ping = frame(OpCode::Ping, true, b"1234", Some([1, 2, 3, 4]));
        let mut splitter = FrameSplitter::new();
        for cut in 0..ping.len() {
            assert_eq!(splitter.next_event(&ping[..cut]), Ok(None), "cut {cut}");
        }
        let (event, used) = splitter.next_event(&ping).unwrap().unwrap();
        assert!(matches!(event, RelayEvent::FrameStart(h) if h.opcode == OpCode::Ping));
        assert_eq!(used, 6);
        let (event, used) = splitter.next_event(&ping[6..]).unwrap().unwrap();
        let RelayEvent::Payload(chunk) = event else {
            panic!("{event:?}")
        };
        assert_eq!(used, 4);
        let mut out = [0u8; 8];
        assert_eq!(chunk.unmask_to(&mut out), 4);
        assert_eq!(&out[..4], b"1234");
    }

    #[test]
    fn data_payload_streams_without_waiting_for_the_frame() {
        // A header announcing 1 TiB: nothing is reserved, pieces come out as given.
        let mut wire = Vec::new();
        FrameHeader::new(OpCode::Binary, 1 << 40).encode(&mut wire);
        let mut splitter = FrameSplitter::new();
        let (event, used) = splitter.next_event(&wire).unwrap().unwrap();
        assert!(matches!(event, RelayEvent::FrameStart(h) if h.payload_len == 1 << 40));
        assert_eq!(used, 10);
        let piece = [0u8; 1000];
        let (event, used) = splitter.next_event(&piece).unwrap().unwrap();
        assert!(matches!(event, RelayEvent::Payload(c) if c.data.len() == 1000));
        assert_eq!(used, 1000);
        assert!(splitter.is_mid_frame());
        assert_eq!(splitter.current().unwrap().payload_len, 1 << 40);
    }

    #[test]
    fn skipping_passes_over_whole_data_frames_only() {
        let (wire, _) = sample();
        let text = frame(OpCode::Text, true, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d])).len();
        let first_two = text + frame(OpCode::Binary, false, &[0; 300], None).len();
        let splitter = FrameSplitter::new();
        // Stops at the ping, which is left for next_event.
        assert_eq!(splitter.skip_whole_data_frames(&wire), (first_two, 2));
        // A data frame cut short is not passed over.
        assert_eq!(
            splitter.skip_whole_data_frames(&wire[..first_two - 1]),
            (text, 1)
        );
        // What comes after the skip is what next_event would have found there.
        let mut splitter = FrameSplitter::new();
        let (event, _) = splitter.next_event(&wire[first_two..]).unwrap().unwrap();
        assert!(matches!(event, RelayEvent::FrameStart(h) if h.opcode == OpCode::Ping));
        // Mid-frame, nothing is skipped.
        let mut splitter = FrameSplitter::new();
        splitter.next_event(&wire).unwrap();
        assert_eq!(splitter.skip_whole_data_frames(&wire[text..]), (0, 0));
        // A reserved opcode stops the skip and is reported by next_event.
        let mut bad = frame(OpCode::Text, true, b"ok", None);
        bad.extend([0x83, 0x00]);
        let mut splitter = FrameSplitter::new();
        assert_eq!(splitter.skip_whole_data_frames(&bad), (4, 1));
        assert!(splitter.next_event(&bad[4..]).is_err());
    }

    #[test]
    fn unmask_keeps_the_phase_across_pieces() {
        let payload: Vec<u8> = (0..37u8).collect();
        let wire = frame(OpCode::Binary, true, &payload, Some([9, 8, 7, 6]));
        for cut in 0..wire.len() {
            let seen = split(&wire, &[cut, cut + 3]);
            assert_eq!(seen[0].2, payload, "cut {cut}");
        }
    }

    #[test]
    fn broken_framing_is_an_error() {
        let mut splitter = FrameSplitter::new();
        // Fragmented ping.
        assert_eq!(
            splitter.next_event(&[0x09, 0x00]),
            Err(ProtocolError::FragmentedControl)
        );
        // Close with 126 bytes.
        assert_eq!(
            splitter.next_event(&[0x88, 0x7E, 0x00, 0x7E]),
            Err(ProtocolError::ControlTooLong)
        );
        // Reserved opcode.
        assert_eq!(
            splitter.next_event(&[0x83, 0x00]),
            Err(ProtocolError::ReservedOpcode(3))
        );
        assert!(!splitter.is_mid_frame());
    }
}

//! The frame header: parse and encode every length form (RFC 6455 section 5.2).

use crate::error::ProtocolError;
use crate::frame::OpCode;

/// The longest header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1: "compressed" under permessage-deflate.
    pub rsv1: bool,
    /// RSV2, never defined by an extension we speak.
    pub rsv2: bool,
    /// RSV3, never defined by an extension we speak.
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A header for an unfragmented frame without mask or reserved bits.
    pub fn new(opcode: OpCode, payload_len: u64) -> Self {
        FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header, and
    /// otherwise the header and its length in bytes. Nothing is allocated.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut len) = match b1 & 0x7F {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(ext);
                let value = u64::from_be_bytes(bytes);
                if value >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (value, 10)
            }
            short => (u64::from(short), 2),
        };
        let mask = if masked {
            let Some(key) = buf.get(len..len + 4) else {
                return Ok(None);
            };
            len += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, len)))
    }

    /// The number of bytes [`FrameHeader::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let ext = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header into `out`, which must hold at least
    /// [`FrameHeader::encoded_len`] bytes; returns the bytes written.
    pub fn encode_into(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = match self.payload_len {
            n @ 0..=125 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        len
    }

    /// Appends the encoded header to `out`.
    pub fn encode(&self, out: &mut impl bytes::BufMut) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = self.encode_into(&mut buf);
        out.put_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(header: FrameHeader) {
        let mut out = Vec::new();
        header.encode(&mut out);
        assert_eq!(out.len(), header.encoded_len());
        for cut in 0..out.len() {
            assert_eq!(FrameHeader::parse(&out[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(FrameHeader::parse(&out), Ok(Some((header, out.len()))));
    }

    #[test]
    fn every_length_form_round_trips() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, u64::MAX >> 1] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut h = FrameHeader::new(OpCode::Binary, len);
                h.mask = mask;
                h.fin = len % 2 == 0;
                h.rsv1 = true;
                round_trip(h);
            }
        }
    }

    #[test]
    fn rfc_examples() {
        // RFC 6455 5.7: unmasked "Hello", and 256 bytes / 64 KiB binary headers.
        let (h, n) = FrameHeader::parse(&[0x81, 0x05]).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, n),
            (true, OpCode::Text, 5, 2)
        );
        let (h, n) = FrameHeader::parse(&[0x82, 0x7E, 0x01, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
        let buf = [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        let (h, n) = FrameHeader::parse(&buf).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn msb_of_64_bit_length_is_an_error() {
        let buf = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&buf), Err(ProtocolError::InvalidLength));
    }

    #[test]
    fn reserved_opcode_is_an_error() {
        assert_eq!(
            FrameHeader::parse(&[0x83, 0x00]),
            Err(ProtocolError::ReservedOpcode(3))
        );
    }
}

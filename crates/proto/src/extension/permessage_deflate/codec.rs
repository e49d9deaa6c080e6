//! The per-message codec: DEFLATE with a sync flush per message, the
//! `00 00 ff ff` tail stripped on send and put back on receive (RFC 7692
//! section 7.2).

use bytes::{BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{clamp_bits, DeflateConfig, DeflateParams};
use crate::connection::Role;
use crate::error::Error;

/// What a sync flush ends with; stripped on send, appended on receive.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The most output produced per zlib call, so a deflate bomb is caught
/// after at most this much work past the limit check.
const STEP: usize = 64 * 1024;
/// zlib cannot compress with a window of 8; see the module docs for why 9
/// is a correct stand-in.
const MIN_ZLIB_BITS: u8 = 9;

/// permessage-deflate for one connection: compresses what we send and
/// decompresses what the peer sends, each direction with its own lazily
/// created zlib stream.
///
/// With context takeover (the default) the streams live as long as the
/// connection (see the module docs for sizes); with `*_no_context_takeover`
/// a direction's stream is dropped after every message.
#[derive(Debug)]
pub struct PerMessageDeflate {
    threshold: usize,
    level: Compression,
    /// Window for our compressor, never below 9.
    compress_bits: u8,
    /// Drop the compressor after each message (our no_context_takeover).
    compress_reset: bool,
    /// Window for our decompressor, never below 9.
    decompress_bits: u8,
    /// Drop the decompressor after each message (peer's no_context_takeover).
    decompress_reset: bool,
    compressor: Option<Compress>,
    decompressor: Option<Decompress>,
    /// `Some(n)`: the current message's deflate stream ended (a BFINAL
    /// block), followed so far by `n` bytes of the message.
    after_final: Option<usize>,
}

impl PerMessageDeflate {
    /// The codec for `role` with the parameters agreed in the handshake;
    /// `config` supplies the level and the threshold.
    pub fn new(role: Role, params: &DeflateParams, config: &DeflateConfig) -> Self {
        let server = (
            params.server_max_window_bits,
            params.server_no_context_takeover,
        );
        let client = (
            params.client_max_window_bits,
            params.client_no_context_takeover,
        );
        let (ours, theirs) = match role {
            Role::Server => (server, client),
            Role::Client => (client, server),
        };
        PerMessageDeflate {
            threshold: config.threshold,
            level: Compression::new(config.level.min(9)),
            compress_bits: clamp_bits(ours.0).max(MIN_ZLIB_BITS),
            compress_reset: ours.1,
            decompress_bits: clamp_bits(theirs.0).max(MIN_ZLIB_BITS),
            decompress_reset: theirs.1,
            compressor: None,
            decompressor: None,
            after_final: None,
        }
    }

    /// Forgets the compressor's history after its last output was not sent
    /// (it did not shrink the message): the peer never saw that data, so the
    /// next message must not refer back to it.
    pub fn discard_last_compressed(&mut self) {
        self.compressor = None;
    }

    /// When our compressor starts afresh for every message (our side has no
    /// context takeover), the settings that decide its output: two codecs
    /// with the same key compress a payload to the same bytes, so a message
    /// sent to many connections can be compressed once.
    pub fn stateless_key(&self) -> Option<(u8, u32)> {
        self.compress_reset
            .then(|| (self.compress_bits, self.level.level()))
    }

    /// Whether a payload of `len` bytes is worth compressing (`len` at least
    /// the configured threshold).
    pub fn should_compress(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Compresses one whole message payload, appending the compressed body
    /// (its trailing `00 00 ff ff` removed, RFC 7692 7.2.1) to `out`.
    ///
    /// Resets the compressor afterwards when our side has no context
    /// takeover. On error nothing is appended and the compressor is dropped,
    /// so the next message starts a fresh stream (which the peer can always
    /// decode).
    pub fn compress(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), Error> {
        if payload.is_empty() {
            // An empty stored-block header; with the tail it is an empty
            // block (RFC 7692 7.2.3.6). Leaves the compressor untouched,
            // where a second empty sync flush would produce nothing at all.
            out.put_u8(0x00);
            return Ok(());
        }
        let start = out.len();
        let result = self.deflate(payload, out, start);
        if result.is_err() || self.compress_reset {
            self.compressor = None;
        }
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn deflate(&mut self, mut input: &[u8], out: &mut BytesMut, start: usize) -> Result<(), Error> {
        let (level, bits) = (self.level, self.compress_bits);
        let z = self
            .compressor
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        loop {
            let chunk = (input.len() / 2 + 64).min(STEP);
            let pos = out.len();
            out.resize(pos + chunk, 0);
            let (in0, out0) = (z.total_in(), z.total_out());
            let status = z.compress(input, &mut out[pos..], FlushCompress::Sync);
            let produced = (z.total_out() - out0) as usize;
            let consumed = (z.total_in() - in0) as usize;
            input = &input[consumed..];
            out.truncate(pos + produced);
            status.map_err(|e| Error::Compression(format!("compressor failed: {e}")))?;
            // The flush is complete once all input is in and zlib left
            // output space unused.
            if (input.is_empty() && produced < chunk) || (consumed == 0 && produced == 0) {
                break;
            }
        }
        if !out[start..].ends_with(&TAIL) {
            return Err(Error::Compression(
                "compressor output lacks the sync-flush marker".into(),
            ));
        }
        out.truncate(out.len() - TAIL.len());
        Ok(())
    }

    /// Decompresses the payload of one frame of a compressed message (or any
    /// piece of it, as bytes arrive); `fin` is true on the last call of the
    /// message, which appends the `00 00 ff ff` tail and finishes it.
    ///
    /// Appends to `out` and never lets `out.len()` pass `max_len`: zlib
    /// writes into at most 64 KiB at a time, never past the limit, and once
    /// `out` is full one more byte of output fails with [`Error::TooBig`]; a
    /// deflate bomb stops there, with `out` holding at most `max_len` bytes
    /// (its capacity at most about twice that). Corrupt data fails with
    /// [`Error::Compression`]. A message may end its deflate stream with a
    /// BFINAL block (RFC 7692 7.2.3.4); only an empty non-final stored-block
    /// header may follow it, and the next message starts a fresh stream.
    pub fn decompress(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), Error> {
        let mut result = self.inflate(input, false, out, max_len);
        if fin {
            if result.is_ok() {
                result = self.inflate(&TAIL, true, out, max_len);
            }
            if self.decompress_reset || self.after_final.is_some() {
                self.decompressor = None;
            }
            self.after_final = None;
        }
        if result.is_err() {
            // The stream is in an unknown state; the connection fails anyway.
            self.decompressor = None;
            self.after_final = None;
        }
        result
    }

    fn inflate(
        &mut self,
        mut input: &[u8],
        tail: bool,
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), Error> {
        let bits = self.decompress_bits;
        let z = self
            .decompressor
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        loop {
            if let Some(extra) = self.after_final.as_mut() {
                return trailing_after_final(extra, input, tail);
            }
            let room = max_len.saturating_sub(out.len());
            let (in0, out0) = (z.total_in(), z.total_out());
            let (status, chunk, produced);
            if room == 0 {
                // At the limit: any further byte of output is one too many.
                let mut probe = [0u8; 1];
                status = z.decompress(input, &mut probe, FlushDecompress::None);
                (chunk, produced) = (1, (z.total_out() - out0) as usize);
                if produced > 0 {
                    return Err(too_big(max_len.saturating_add(1), max_len));
                }
            } else {
                let spare = out.capacity() - out.len();
                chunk = room
                    .min(STEP)
                    .min(spare.max(input.len().saturating_mul(4)).max(1024));
                let pos = out.len();
                out.resize(pos + chunk, 0);
                status = z.decompress(input, &mut out[pos..], FlushDecompress::None);
                produced = (z.total_out() - out0) as usize;
                out.truncate(pos + produced);
            }
            let consumed = (z.total_in() - in0) as usize;
            input = &input[consumed..];
            match status {
                Ok(Status::StreamEnd) => self.after_final = Some(0),
                Ok(_) => {}
                Err(e) => return Err(Error::Compression(format!("invalid compressed data: {e}"))),
            }
            if self.after_final.is_some() {
                continue;
            }
            if input.is_empty() && produced < chunk {
                return Ok(());
            }
            if consumed == 0 && produced == 0 {
                return Err(Error::Compression(
                    "the decompressor made no progress".into(),
                ));
            }
        }
    }
}

/// After a BFINAL block the message may hold only what completes an empty
/// stored block with our tail: nothing, or one header byte with BFINAL and
/// BTYPE clear (the RFC 7692 7.2.3.4 example ends in such a `0x00`).
fn trailing_after_final(seen: &mut usize, input: &[u8], tail: bool) -> Result<(), Error> {
    if tail || input.is_empty() {
        return Ok(());
    }
    *seen += input.len();
    if *seen > 1 || input[0] & 0x07 != 0 {
        return Err(Error::Compression(
            "data after the final deflate block".into(),
        ));
    }
    Ok(())
}

fn too_big(size: usize, limit: usize) -> Error {
    Error::TooBig {
        what: "message",
        size: size as u64,
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    fn params(snct: bool, cnct: bool, sbits: u8, cbits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: sbits,
            client_max_window_bits: cbits,
        }
    }

    fn pair(p: DeflateParams) -> (PerMessageDeflate, PerMessageDeflate) {
        let config = DeflateConfig::default();
        (
            PerMessageDeflate::new(Role::Client, &p, &config),
            PerMessageDeflate::new(Role::Server, &p, &config),
        )
    }

    fn inflate(codec: &mut PerMessageDeflate, body: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = BytesMut::new();
        codec.decompress(body, true, &mut out, usize::MAX)?;
        Ok(out.to_vec())
    }

    fn deflate(codec: &mut PerMessageDeflate, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        codec.compress(payload, &mut out).unwrap();
        out.to_vec()
    }

    /// Text with structure and some noise, so matches come at all distances.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let words = [
            "{\"id\":",
            "\"name\":\"sockeye\",",
            "\"payload\":[",
            "1,2,3",
            "],",
            "}\n",
            "lorem ",
            "ipsum ",
        ];
        let mut v = Vec::with_capacity(len + 32);
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 11 {
                0 => v.extend_from_slice(&x.to_le_bytes()[..3]),
                n => v.extend_from_slice(words[n as usize % words.len()].as_bytes()),
            }
        }
        v.truncate(len);
        v
    }

    #[test]
    fn rfc7692_examples() {
        let (_, mut server) = pair(params(false, false, 15, 15));
        // 7.2.3.1, then 7.2.3.2's second message using the shared context.
        assert_eq!(inflate(&mut server, &HELLO).unwrap(), b"Hello");
        assert_eq!(
            inflate(&mut server, &[0xf2, 0x00, 0x11, 0x00, 0x00]).unwrap(),
            b"Hello"
        );
        // 7.2.3.3: a stored block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate(&mut server, &stored).unwrap(), b"Hello");
        // 7.2.3.4: BFINAL set; the next message starts a fresh stream.
        let final_block = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflate(&mut server, &final_block).unwrap(), b"Hello");
        assert!(server.decompressor.is_none());
        assert_eq!(inflate(&mut server, &HELLO).unwrap(), b"Hello");
        // 7.2.3.6: an empty message.
        assert_eq!(inflate(&mut server, &[0x00]).unwrap(), b"");
        // A BFINAL block without the extra 0x00 is tolerated too.
        assert_eq!(inflate(&mut server, &final_block[..7]).unwrap(), b"Hello");
    }

    #[test]
    fn compresses_hello_as_the_rfc_does() {
        let (mut client, mut server) = pair(params(false, false, 15, 15));
        assert_eq!(deflate(&mut client, b"Hello"), HELLO);
        let second = deflate(&mut client, b"Hello");
        assert!(
            second.len() < HELLO.len(),
            "context takeover shortens {second:02x?}"
        );
        assert_eq!(inflate(&mut server, &HELLO).unwrap(), b"Hello");
        assert_eq!(inflate(&mut server, &second).unwrap(), b"Hello");
        assert_eq!(deflate(&mut client, b""), [0x00]);
        assert_eq!(deflate(&mut client, b""), [0x00]);
        assert_eq!(inflate(&mut server, &[0x00]).unwrap(), b"");
        let third = deflate(&mut client, b"Hello");
        assert_eq!(inflate(&mut server, &third).unwrap(), b"Hello");
    }

    #[test]
    fn round_trips_across_messages_all_windows_both_directions() {
        for bits in 8..=15 {
            for (snct, cnct) in [(false, false), (true, true), (true, false), (false, true)] {
                let (mut client, mut server) = pair(params(snct, cnct, bits, bits));
                for (i, len) in [0, 1, 5, 300, 4000, 70_000, 0, 4000]
                    .into_iter()
                    .enumerate()
                {
                    let msg = sample(len, i as u64 + u64::from(bits));
                    let up = deflate(&mut client, &msg);
                    assert_eq!(
                        inflate(&mut server, &up).unwrap(),
                        msg,
                        "c->s bits {bits} msg {i}"
                    );
                    let down = deflate(&mut server, &msg);
                    assert_eq!(
                        inflate(&mut client, &down).unwrap(),
                        msg,
                        "s->c bits {bits} msg {i}"
                    );
                }
                assert_eq!(client.compressor.is_none(), cnct);
                assert_eq!(server.decompressor.is_none(), cnct);
                assert_eq!(server.compressor.is_none(), snct);
                assert_eq!(client.decompressor.is_none(), snct);
            }
        }
    }

    #[test]
    fn context_takeover_helps_and_no_context_takeover_forgets() {
        let msg = sample(2000, 7);
        let (mut keep, _) = pair(params(false, false, 15, 15));
        let (mut forget, _) = pair(params(false, true, 15, 15));
        assert!(keep.compressor.is_none(), "allocated lazily");
        let (k1, k2) = (deflate(&mut keep, &msg), deflate(&mut keep, &msg));
        let (f1, f2) = (deflate(&mut forget, &msg), deflate(&mut forget, &msg));
        assert!(k2.len() < k1.len() / 4, "{} vs {}", k2.len(), k1.len());
        assert_eq!((k1, &f1), (f2.clone(), &f2));
        assert!(keep.compressor.is_some() && forget.compressor.is_none());
        // A stream made with takeover cannot be read by a receiver that resets.
        let (_, mut resetting) = pair(params(false, true, 15, 15));
        assert_eq!(inflate(&mut resetting, &f1).unwrap(), msg);
        assert!(inflate(&mut resetting, &k2).is_err());
    }

    #[test]
    fn fed_one_byte_at_a_time() {
        let msg = sample(100_000, 3);
        let (mut client, mut server) = pair(params(false, false, 15, 15));
        for _ in 0..2 {
            let body = deflate(&mut client, &msg);
            let mut out = BytesMut::new();
            for byte in body.chunks(1) {
                server.decompress(byte, false, &mut out, msg.len()).unwrap();
            }
            server.decompress(&[], true, &mut out, msg.len()).unwrap();
            assert_eq!(out, msg[..]);
        }
    }

    #[test]
    fn deflate_bomb_stops_at_the_limit() {
        // 100 MiB of zeros: 100 copies of one sync-flushed 1 MiB segment. A
        // segment from a fresh compressor refers only to itself and ends
        // byte-aligned, so the copies concatenate into one valid stream.
        let zeros = vec![0u8; 1 << 20];
        let (mut fresh, _) = pair(params(false, true, 15, 15));
        let mut segment = deflate(&mut fresh, &zeros);
        segment.extend_from_slice(&TAIL);
        let mut bomb = segment.repeat(100);
        bomb.truncate(bomb.len() - TAIL.len());
        let limit = 1 << 20;
        let (_, mut server) = pair(params(false, false, 15, 15));
        let mut out = BytesMut::new();
        let mut result = Ok(());
        for piece in bomb.chunks(16 * 1024) {
            result = server.decompress(piece, false, &mut out, limit);
            assert!(out.len() <= limit);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(
                result,
                Err(Error::TooBig {
                    what: "message",
                    limit: 1_048_576,
                    ..
                })
            ),
            "{result:?}"
        );
        assert!(
            out.len() <= limit && out.capacity() <= 2 * limit + STEP,
            "{}",
            out.capacity()
        );
        // Exactly at the limit is fine.
        let (_, mut server) = pair(params(false, false, 15, 15));
        let body = deflate(&mut fresh, &zeros);
        let mut exact = BytesMut::new();
        server
            .decompress(&body, true, &mut exact, zeros.len())
            .unwrap();
        assert_eq!(exact.len(), zeros.len());
        let mut short = BytesMut::new();
        assert!(matches!(
            server.decompress(&body, true, &mut short, zeros.len() - 1),
            Err(Error::TooBig { .. })
        ));
    }

    #[test]
    fn corrupt_data_is_a_compression_error() {
        let (_, mut server) = pair(params(false, false, 15, 15));
        let err = inflate(&mut server, &[0xff, 0xff, 0xff]).unwrap_err();
        assert!(
            matches!(&err, Error::Compression(m) if m.contains("invalid")),
            "{err}"
        );
        // After a failure the next message starts clean.
        assert_eq!(inflate(&mut server, &HELLO).unwrap(), b"Hello");
        // Data after a BFINAL block.
        for trailing in [&[0x00, 0x00][..], &[0x01], &[0xf2, 0x48]] {
            let mut body = vec![0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
            body.extend_from_slice(trailing);
            assert!(
                matches!(inflate(&mut server, &body), Err(Error::Compression(_))),
                "{trailing:?}"
            );
        }
    }

    #[test]
    fn window_8_stays_within_256_bytes() {
        let (mut client, mut server) = pair(params(false, false, 8, 8));
        assert_eq!((client.compress_bits, server.decompress_bits), (9, 9));
        let msg = sample(10_000, 1);
        assert_eq!(
            inflate(&mut server, &deflate(&mut client, &msg)).unwrap(),
            msg
        );
        // Every level, context takeover across messages; window 15 as a
        // control that the checker does see long distances.
        for (bits, level) in [(8, 1), (8, 2), (8, 4), (8, 6), (8, 9), (15, 1)] {
            let config = DeflateConfig {
                level,
                ..DeflateConfig::default()
            };
            let p = params(false, false, bits, bits);
            let mut codec = PerMessageDeflate::new(Role::Server, &p, &config);
            let mut stream = Vec::new();
            for i in 0..4 {
                stream.extend(deflate(&mut codec, &sample(50_000, i)));
                stream.extend_from_slice(&TAIL);
            }
            let (far, total) = max_distance(&stream);
            assert_eq!(total, 200_000, "the checker walked the whole stream");
            let want = if bits == 8 { 200..=256 } else { 257..=32_768 };
            assert!(
                want.contains(&far),
                "bits {bits} level {level}: farthest back-reference {far}"
            );
        }
    }

    /// Test-only walk over a raw deflate stream returning the farthest
    /// back-reference and the decoded length (a checker, not a decoder: no
    /// output is kept).
    fn max_distance(data: &[u8]) -> (usize, usize) {
        struct Bits<'a>(&'a [u8], usize);
        impl Bits<'_> {
            fn get(&mut self, n: usize) -> usize {
                let mut v = 0;
                for i in 0..n {
                    v |= usize::from((self.0[self.1 / 8] >> (self.1 % 8)) & 1) << i;
                    self.1 += 1;
                }
                v
            }
        }
        /// Canonical Huffman table: codes per length and symbols in code order.
        struct Table([usize; 16], Vec<usize>);
        impl Table {
            fn new(lengths: &[usize]) -> Table {
                let mut count = [0; 16];
                lengths.iter().for_each(|&l| count[l] += 1);
                count[0] = 0;
                let symbols = (1..16)
                    .flat_map(|len| (0..lengths.len()).filter(move |&s| lengths[s] == len))
                    .collect();
                Table(count, symbols)
            }
            fn decode(&self, b: &mut Bits) -> usize {
                let (mut code, mut first, mut index) = (0, 0, 0);
                for len in 1..16 {
                    code |= b.get(1);
                    if code < first + self.0[len] {
                        return self.1[index + code - first];
                    }
                    (index, first, code) =
                        (index + self.0[len], (first + self.0[len]) << 1, code << 1);
                }
                panic!("invalid Huffman code");
            }
        }
        const ORDER: [usize; 19] = [
            16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
        ];
        let (mut b, mut far, mut total) = (Bits(data, 0), 0, 0);
        while b.1 + 3 <= data.len() * 8 {
            let _bfinal = b.get(1);
            let (lit, dist) = match b.get(2) {
                0 => {
                    b.1 = b.1.div_ceil(8) * 8;
                    let len = b.get(16);
                    b.1 += 16 + 8 * len;
                    total += len;
                    continue;
                }
                1 => {
                    let lit: Vec<usize> = (0..288)
                        .map(|s| match s {
                            0..=143 => 8,
                            144..=255 => 9,
                            256..=279 => 7,
                            _ => 8,
                        })
                        .collect();
                    (Table::new(&lit), Table::new(&[5; 30]))
                }
                2 => {
                    let (hlit, hdist, hclen) = (b.get(5) + 257, b.get(5) + 1, b.get(4) + 4);
                    let mut cl = [0; 19];
                    ORDER.iter().take(hclen).for_each(|&i| cl[i] = b.get(3));
                    let cl = Table::new(&cl);
                    let mut lens = Vec::new();
                    while lens.len() < hlit + hdist {
                        let (value, repeat) = match cl.decode(&mut b) {
                            16 => (*lens.last().unwrap(), 3 + b.get(2)),
                            17 => (0, 3 + b.get(3)),
                            18 => (0, 11 + b.get(7)),
                            len => (len, 1),
                        };
                        lens.extend(std::iter::repeat_n(value, repeat));
                    }
                    (Table::new(&lens[..hlit]), Table::new(&lens[hlit..]))
                }
                _ => panic!("reserved block type"),
            };
            loop {
                match lit.decode(&mut b) {
                    0..=255 => total += 1,
                    256 => break,
                    s => {
                        let c = s - 257;
                        total += match c {
                            0..=7 => c + 3,
                            28 => 258,
                            _ => ((4 + c % 4) << (c / 4 - 1)) + 3 + b.get(c / 4 - 1),
                        };
                        let code = dist.decode(&mut b);
                        let (extra, base) = if code < 4 {
                            (0, code + 1)
                        } else {
                            (code / 2 - 1, ((2 + code % 2) << (code / 2 - 1)) + 1)
                        };
                        far = far.max(base + b.get(extra));
                    }
                }
            }
        }
        (far, total)
    }
}

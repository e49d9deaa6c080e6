//! permessage-deflate (RFC 7692): negotiation and the per-message codec.
//!
//! ```text
//!   client: DeflateConfig::offer() ──► Sec-WebSocket-Extensions ──► server: negotiate_server(offers)
//!   client: negotiate_client(answer) ◄── Sec-WebSocket-Extensions ◄── (DeflateParams, answer)
//!   both:   PerMessageDeflate::new(role, &params, &config)
//!           compress(payload) ──► RSV1 frame body      frame bodies ──► decompress(.., fin, .., max_len)
//! ```
//!
//! # Which parameters apply to which direction
//!
//! `server_*` parameters govern what the server compresses (and so what the
//! client decompresses); `client_*` the reverse. [`PerMessageDeflate::new`]
//! picks them by [`Role`](crate::connection::Role).
//!
//! # Memory
//!
//! zlib streams are allocated lazily, on the first compressed message in
//! each direction. With context takeover (the default) each connection then
//! keeps both streams for its whole life: about 256 KiB for a window-15
//! compressor plus about 40 KiB for a window-15 decompressor. A side with
//! `*_no_context_takeover` drops its stream after every message, so an idle
//! connection holds no zlib state for that direction, at the price of one
//! allocation and a cold dictionary (worse ratio) per message. Smaller
//! `*_max_window_bits` shrink the window proportionally.
//!
//! # Window bits 8
//!
//! RFC 7692 allows `server_max_window_bits=8` / `client_max_window_bits=8`
//! (a 256-byte window), but zlib (and zlib-rs, which mirrors it; flate2
//! asserts `9..=15`) refuses to *compress* raw deflate with `windowBits` 8.
//! We still accept 8 in both roles and compress with a window of 9. That is
//! correct, not a guess: every zlib-family match finder limits distances to
//! `MAX_DIST = window_size - MIN_LOOKAHEAD` with `MIN_LOOKAHEAD = 262`
//! (zlib-rs 0.6.8: `State::max_dist`, checked in `fast`, `quick`, `medium`,
//! `slow`/`longest_match`; `rle` only uses distance 1), so a window-9
//! compressor never refers further back than 512 - 262 = 250 bytes, which a
//! 256-byte window can follow. Chromium (`net/websockets/websocket_deflater.cc`)
//! upgrades 8 to 9 with the same argument, and Node.js's zlib does it for
//! every raw deflate stream ("passing windowBits = 9 to zlib actually results
//! in a compressed stream that effectively uses an 8-bit window only",
//! `zlib.createDeflateRaw` docs), which is what `ws` relies on.
//!
//! The test `window_8_stays_within_256_bytes` in `codec.rs` pins this by
//! walking the compressed output and checking every distance (the farthest
//! is 250 at levels 1 to 9). Such streams were also inflated by C zlib
//! 1.2.13 with `windowBits = -8`, one output byte per call so that only the
//! 256-byte window could serve a match, while a window-15 stream failed
//! there with "invalid distance too far back". Decompressing with a window
//! at least as large as the sender's is always valid, so we inflate with
//! `max(bits, 9)`.
//!
//! Declining offers that ask for 8 was the alternative; it would lose
//! compression with peers that ask for small windows for no safety gain.
//! (Autobahn's 13.x cases only ask for 9 and 15, so either choice passes
//! there.)
//!
//! # Autobahn 13.x
//!
//! As a server we receive offers like
//! `permessage-deflate; client_no_context_takeover; client_max_window_bits;
//! server_no_context_takeover; server_max_window_bits=9` (and 13.7 sends
//! three offers in one header, most specific first). We accept the first one
//! and echo the server parameters it asked for. As a client our default offer
//! `permessage-deflate; client_max_window_bits` lets Autobahn's server answer
//! with `client_max_window_bits=9|15` and/or `client_no_context_takeover`,
//! which we honour.

mod codec;
mod negotiation;

pub use codec::PerMessageDeflate;

/// The extension token.
const EXTENSION_NAME: &str = "permessage-deflate";
/// The largest LZ77 window RFC 7692 allows (and the default).
const MAX_WINDOW_BITS: u8 = 15;
/// The smallest LZ77 window RFC 7692 allows.
const MIN_WINDOW_BITS: u8 = 8;

/// What we offer (client) or accept (server) for permessage-deflate.
///
/// Window-bits values outside `8..=15` are clamped into that range.
#[derive(Debug, Clone)]
pub struct DeflateConfig {
    /// Client: ask the server to reset its compressor after every message.
    /// Server: reset ours after every message even when not asked.
    ///
    /// Resetting frees ~256 KiB of compressor state per idle connection but
    /// compresses small, similar messages much worse. Default `false`.
    pub server_no_context_takeover: bool,
    /// Client: reset our compressor after every message (and tell the
    /// server). Server: require the client to do so.
    ///
    /// Same trade-off as `server_no_context_takeover`, for the other
    /// direction; on a server it also lets the decompressor be dropped
    /// between messages. Default `false`.
    pub client_no_context_takeover: bool,
    /// The largest window the server may compress with (2^bits bytes).
    ///
    /// Client: values below 15 are requested in the offer. Server: the
    /// largest window we compress with. Smaller windows use less memory and
    /// compress worse. Default 15 (what zlib uses, 32 KiB).
    pub server_max_window_bits: u8,
    /// The largest window the client may compress with (2^bits bytes).
    ///
    /// Client: the window we compress with (announced in the offer). Server:
    /// the largest window we are willing to keep for decompression; below 15
    /// an offer without `client_max_window_bits` is declined, since such a
    /// client cannot be told to use a smaller window. Default 15.
    pub client_max_window_bits: u8,
    /// zlib compression level, 0 (store) to 9 (smallest); higher values are
    /// treated as 9.
    ///
    /// Default 1 (speed). On 2.6 MB of chat-like JSON, level 1 gave 20.5 %
    /// of the input at ~96 MB/s, level 6 14.8 % at ~15 MB/s (zlib); a server
    /// compresses every message per connection, so CPU matters more than
    /// the last few percent.
    pub level: u32,
    /// Payloads shorter than this many bytes are sent uncompressed.
    ///
    /// Default 64. Under it the most compression can save is a few dozen
    /// bytes, less than the TCP/IP and TLS overhead of the packet carrying
    /// them, and without context takeover deflate makes such payloads
    /// *larger* (measured: 19-byte JSON became 21 bytes). From 64 bytes up,
    /// with the default context takeover, chat-like JSON messages of ~80
    /// bytes shrink to ~22. `ws` uses 1024, sized for Node's thread-pool
    /// zlib; in-line zlib-rs calls on small inputs cost microseconds. 0
    /// compresses everything.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
            level: 1,
            threshold: 64,
        }
    }
}

/// The parameters agreed in the opening handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The largest window the server compresses with, 8 to 15.
    pub server_max_window_bits: u8,
    /// The largest window the client compresses with, 8 to 15.
    pub client_max_window_bits: u8,
}

/// Clamps configured window bits into the range RFC 7692 allows.
fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Role;
    use crate::error::Error;
    use bytes::BytesMut;

    /// Negotiates like a client and a server would, then sends `messages`
    /// both ways through the two codecs.
    fn converse(client: &DeflateConfig, server: &DeflateConfig, offer: &str, messages: &[&[u8]]) {
        let (on_server, answer) = server
            .negotiate_server(&[offer])
            .unwrap()
            .expect("accepted");
        let on_client = client.negotiate_client(&answer).expect("answer accepted");
        assert_eq!(on_client, on_server, "{offer} -> {answer}");
        let mut c = PerMessageDeflate::new(Role::Client, &on_client, client);
        let mut s = PerMessageDeflate::new(Role::Server, &on_server, server);
        for client_sends in [true, false] {
            let (from, to) = if client_sends {
                (&mut c, &mut s)
            } else {
                (&mut s, &mut c)
            };
            for &msg in messages {
                let mut body = BytesMut::new();
                from.compress(msg, &mut body).unwrap();
                let mut out = BytesMut::new();
                let (head, rest) = body.split_at(body.len() / 2);
                to.decompress(head, false, &mut out, msg.len()).unwrap();
                to.decompress(rest, false, &mut out, msg.len()).unwrap();
                to.decompress(&[], true, &mut out, msg.len()).unwrap();
                assert_eq!(&out[..], msg, "{answer}");
            }
        }
    }

    #[test]
    fn autobahn_13_offers_end_to_end() {
        let d = DeflateConfig::default();
        let text = br#"{"id":1,"text":"sockeye sockeye sockeye"}"#.repeat(40);
        let messages: [&[u8]; 4] = [b"Hello", &text, b"", &text];
        let base = "permessage-deflate; client_no_context_takeover; client_max_window_bits";
        for extra in [
            "",
            "; server_no_context_takeover",
            "; server_max_window_bits=9",
            "; server_max_window_bits=15",
            "; server_no_context_takeover; server_max_window_bits=9",
            "; server_no_context_takeover; server_max_window_bits=8",
        ] {
            converse(&d, &d, &format!("{base}{extra}"), &messages);
        }
        for client_bits in 8..=15 {
            let client = DeflateConfig {
                client_max_window_bits: client_bits,
                ..d.clone()
            };
            converse(&client, &d, &client.offer(), &messages);
        }
    }

    #[test]
    fn defaults_and_threshold() {
        let d = DeflateConfig::default();
        assert_eq!(
            (d.server_max_window_bits, d.client_max_window_bits, d.level),
            (15, 15, 1)
        );
        assert!(!d.server_no_context_takeover && !d.client_no_context_takeover);
        let p = d.negotiate_client("permessage-deflate").unwrap();
        let codec = PerMessageDeflate::new(Role::Client, &p, &d);
        assert!(!codec.should_compress(d.threshold - 1) && codec.should_compress(d.threshold));
        let all = DeflateConfig { threshold: 0, ..d };
        assert!(PerMessageDeflate::new(Role::Server, &p, &all).should_compress(0));
    }

    #[test]
    fn errors_close_with_the_right_code() {
        use crate::frame::CloseCode;
        let d = DeflateConfig::default();
        let p = d.negotiate_client("permessage-deflate").unwrap();
        let mut codec = PerMessageDeflate::new(Role::Server, &p, &d);
        let corrupt = codec
            .decompress(&[0xff; 4], true, &mut BytesMut::new(), 100)
            .unwrap_err();
        assert_eq!(corrupt.close_code(), CloseCode::INVALID_PAYLOAD);
        let err = d.negotiate_client("permessage-deflate; x=1").unwrap_err();
        assert!(matches!(err, Error::Compression(_)), "{err}");
    }
}

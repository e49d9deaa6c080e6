//! Arbitrary bytes into a server (or client) `Connection` and into
//! `FrameHeader::parse`: no panic, `poll_message` always ends, and memory
//! stays within the configured limits.
//!
//! The first byte chooses the set-up: bit 0 a client instead of a server,
//! bit 1 permessage-deflate, bits 2-3 the piece size the bytes are fed in
//! (1, 7, 512 or all at once). The rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_proto::extension::{DeflateConfig, PerMessageDeflate};
use sockeye_proto::frame::{FrameHeader, MAX_HEADER_LEN};
use sockeye_proto::{Config, Connection, Message, Role};

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&setup, stream)) = data.split_first() else {
        return;
    };

    // The header parser alone: consistent with its own encoding.
    if let Ok(Some((header, len))) = FrameHeader::parse(stream) {
        assert!((2..=MAX_HEADER_LEN).contains(&len) && len <= stream.len());
        let mut wire = Vec::new();
        header.encode(&mut wire);
        assert_eq!(FrameHeader::parse(&wire), Ok(Some((header, wire.len()))));
    }

    let role = if setup & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let config = Config::default()
        .max_frame_size(LIMIT)
        .max_message_size(LIMIT);
    let mut conn = Connection::new(role, config);
    if setup & 2 != 0 {
        let deflate = DeflateConfig::default();
        let offer = deflate.offer();
        let (params, _) = deflate
            .negotiate_server(&[offer.as_str()])
            .expect("never fails")
            .expect("own offer");
        conn = conn.with_deflate(PerMessageDeflate::new(role, &params, &deflate));
    }
    let piece = match (setup >> 2) & 3 {
        0 => 1,
        1 => 7,
        2 => 512,
        _ => stream.len().max(1),
    };

    let mut fed = 0;
    let mut outputs = 0;
    for chunk in stream.chunks(piece) {
        conn.receive(chunk);
        fed += chunk.len();
        while let Some(result) = conn.poll_message() {
            outputs += 1;
            // Each message or error consumes at least a two-byte header.
            assert!(outputs <= fed / 2 + 1, "{outputs} outputs from {fed} bytes");
            match result {
                Ok(message) => {
                    assert!(message.len() <= LIMIT);
                    if let Message::Close(_) = message {
                        assert!(conn.is_closed());
                    }
                }
                Err(_) => assert!(conn.is_closed()),
            }
        }
        assert!(conn.read_buf().capacity() < 4 * LIMIT + 4 * piece);
        assert!(conn.buffered_amount() <= 3 * fed + 256);
    }
});

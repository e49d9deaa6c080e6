//! Symmetric client/server tests of the state machine, fed with bytes.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::error::ProtocolError;
use crate::frame::{CloseCode, CloseFrame, FrameHeader, OpCode};

fn pair() -> (Connection, Connection) {
    (
        Connection::new(Role::Client, Config::default()),
        Connection::new(Role::Server, Config::default()),
    )
}

/// Moves everything `from` queued into `to`.
fn deliver(from: &mut Connection, to: &mut Connection) {
    let bytes = from.take_transmit();
    to.receive(&bytes);
}

fn drain(conn: &mut Connection) -> Vec<Result<Message, Error>> {
    std::iter::from_fn(|| conn.poll_message()).collect()
}

/// A raw frame as a peer would send it: `mask` decides client or server style.
fn raw_frame(fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut header = FrameHeader::new(
        OpCode::from_u8(opcode).unwrap_or(OpCode::Binary),
        payload.len() as u64,
    );
    header.fin = fin;
    let key = [0xA1, 0xB2, 0xC3, 0xD4];
    if mask {
        header.mask = Some(key);
    }
    let mut out = Vec::new();
    header.encode(&mut out);
    out[0] = (out[0] & 0xF0) | opcode;
    let mut body = payload.to_vec();
    if mask {
        crate::frame::apply_mask(&mut body, key, 0);
    }
    out.extend_from_slice(&body);
    out
}

/// The close frame the connection queued, decoded.
fn sent_close(conn: &mut Connection) -> Option<CloseFrame> {
    let bytes = conn.take_transmit();
    let mut reader = Connection::new(
        match conn.role() {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        },
        Config::default(),
    );
    reader.receive(&bytes);
    loop {
        match reader.poll_message() {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            other => panic!("no close frame sent: {other:?}"),
        }
    }
}

fn assert_fails_with(conn: &mut Connection, input: &[u8], code: CloseCode) {
    conn.receive(input);
    let results = drain(conn);
    let err = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .unwrap_or_else(|| panic!("expected an error, got {results:?}"));
    assert_eq!(err.close_code(), code, "{err}");
    assert!(conn.is_closed());
    assert_eq!(sent_close(conn).map(|f| f.code), Some(code));
}

#[test]
fn client_text_reaches_server_and_back() {
    for (a, b) in [pair(), {
        let (c, s) = pair();
        (c, s)
    }] {
        let (mut client, mut server) = (a, b);
        client.send_text("hello").unwrap();
        client.send_binary(Bytes::from_static(&[1, 2, 3])).unwrap();
        deliver(&mut client, &mut server);
        let got = drain(&mut server);
        assert_eq!(
            got,
            vec![
                Ok(Message::text("hello")),
                Ok(Message::binary(vec![1, 2, 3]))
            ]
        );
        server.send_text("world").unwrap();
        deliver(&mut server, &mut client);
        assert_eq!(drain(&mut client), vec![Ok(Message::text("world"))]);
    }
}

#[test]
fn client_frames_are_masked_and_server_frames_are_not() {
    let (mut client, mut server) = pair();
    client.send_text("x").unwrap();
    let wire = client.take_transmit();
    assert_eq!(wire[1] & 0x80, 0x80);
    server.send_text("x").unwrap();
    let wire = server.take_transmit();
    assert_eq!(&wire[..], &[0x81, 0x01, b'x']);
}

#[test]
fn server_rejects_unmasked_frames_and_client_rejects_masked() {
    let (mut client, mut server) = pair();
    assert_fails_with(
        &mut server,
        &raw_frame(true, 1, b"hi", false),
        CloseCode::PROTOCOL,
    );
    assert_fails_with(
        &mut client,
        &raw_frame(true, 1, b"hi", true),
        CloseCode::PROTOCOL,
    );
}

#[test]
fn fragments_are_assembled_with_control_frames_interleaved() {
    let (_, mut server) = pair();
    let mut input = raw_frame(false, 1, b"Hel", true);
    input.extend(raw_frame(true, 9, b"ping!", true));
    input.extend(raw_frame(false, 0, b"lo, ", true));
    input.extend(raw_frame(true, 0, b"world", true));
    // Feed one byte at a time: every chunking must give the same result.
    let mut got = Vec::new();
    for byte in input {
        server.receive(&[byte]);
        got.extend(drain(&mut server));
    }
    assert_eq!(
        got,
        vec![
            Ok(Message::Ping(Bytes::from_static(b"ping!"))),
            Ok(Message::text("Hello, world"))
        ]
    );
    // The ping was answered with a pong carrying the same payload.
    let pong = server.take_transmit();
    assert_eq!(&pong[..], &[0x8A, 0x05, b'p', b'i', b'n', b'g', b'!']);
}

#[test]
fn continuation_without_start_and_new_start_inside_fragmented_are_rejected() {
    let (_, mut server) = pair();
    assert_fails_with(
        &mut server,
        &raw_frame(true, 0, b"x", true),
        CloseCode::PROTOCOL,
    );
    let (_, mut server) = pair();
    let mut input = raw_frame(false, 1, b"a", true);
    input.extend(raw_frame(true, 1, b"b", true));
    assert_fails_with(&mut server, &input, CloseCode::PROTOCOL);
}

#[test]
fn control_frame_rules() {
    let (_, mut server) = pair();
    assert_fails_with(
        &mut server,
        &raw_frame(false, 9, b"x", true),
        CloseCode::PROTOCOL,
    );
    let (_, mut server) = pair();
    assert_fails_with(
        &mut server,
        &raw_frame(true, 9, &[0; 126], true),
        CloseCode::PROTOCOL,
    );
    let (_, mut server) = pair();
    server.receive(&raw_frame(true, 10, b"unsolicited", true));
    assert_eq!(
        drain(&mut server),
        vec![Ok(Message::Pong(Bytes::from_static(b"unsolicited")))]
    );
    assert!(
        server.take_transmit().is_empty(),
        "an unsolicited pong gets no answer"
    );
}

#[test]
fn reserved_bits_and_opcodes_are_rejected() {
    for first in [0xC1u8, 0xA1, 0x91, 0x83, 0x8B] {
        let (_, mut server) = pair();
        let mut input = raw_frame(true, 1, b"x", true);
        input[0] = first;
        assert_fails_with(&mut server, &input, CloseCode::PROTOCOL);
    }
}

#[test]
fn invalid_utf8_fails_fast_with_1007() {
    let (_, mut server) = pair();
    // The first fragment is already invalid: the error comes before the message ends.
    server.receive(&raw_frame(false, 1, b"ok\xf4\x90", true));
    let got = drain(&mut server);
    assert!(
        matches!(got.as_slice(), [Err(Error::InvalidUtf8)]),
        "{got:?}"
    );
    assert_eq!(
        sent_close(&mut server).map(|f| f.code),
        Some(CloseCode::INVALID_PAYLOAD)
    );

    // Within one frame whose payload arrives in pieces, too.
    let (_, mut server) = pair();
    let frame = raw_frame(
        true,
        1,
        b"abc\xed\xa0\x80 and much more text after it",
        true,
    );
    server.receive(&frame[..12]);
    assert!(matches!(
        drain(&mut server).as_slice(),
        [Err(Error::InvalidUtf8)]
    ));
}

#[test]
fn close_handshake_initiated_by_client() {
    let (mut client, mut server) = pair();
    let now = Instant::now();
    client
        .send_close(Some(CloseFrame::new(CloseCode::NORMAL, "bye")), now)
        .unwrap();
    assert_eq!(client.state(), State::CloseSent);
    assert_eq!(client.send_text("late"), Err(Error::Closed));
    deliver(&mut client, &mut server);
    assert_eq!(
        drain(&mut server),
        vec![Ok(Message::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            "bye"
        ))))]
    );
    assert!(server.is_closed());
    deliver(&mut server, &mut client);
    assert_eq!(
        drain(&mut client),
        vec![Ok(Message::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            ""
        ))))]
    );
    assert!(client.is_closed());
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn close_timeout_ends_an_unanswered_close() {
    let (mut client, _) = pair();
    let now = Instant::now();
    client.send_close(None, now).unwrap();
    let deadline = client.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(5));
    client.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!client.is_closed());
    client.handle_timeout(deadline);
    assert!(client.is_closed());
    assert_eq!(client.close_cause(), Some(&CloseCause::TimedOut));
}

#[test]
fn bad_close_frames() {
    for (payload, code) in [
        (&b"\x03"[..], CloseCode::PROTOCOL),
        (&b"\x03\xed"[..], CloseCode::PROTOCOL),
        (&b"\x03\xe7"[..], CloseCode::PROTOCOL),
        (&b"\x03\xe8\xff"[..], CloseCode::INVALID_PAYLOAD),
    ] {
        let (_, mut server) = pair();
        assert_fails_with(&mut server, &raw_frame(true, 8, payload, true), code);
    }
}

#[test]
fn nothing_is_read_after_close() {
    let (_, mut server) = pair();
    let mut input = raw_frame(true, 8, b"\x03\xe8", true);
    input.extend(raw_frame(true, 1, b"after", true));
    server.receive(&input);
    assert_eq!(
        drain(&mut server),
        vec![Ok(Message::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            ""
        ))))]
    );
}

#[test]
fn limits_close_with_1009_before_buffering() {
    let config = Config::default()
        .max_message_size(1024)
        .max_frame_size(1024);
    let mut server = Connection::new(Role::Server, config.clone());
    // Only the header of a 1 GiB frame: refused from the header alone.
    let mut header = FrameHeader::new(OpCode::Binary, 1 << 30);
    header.mask = Some([1, 2, 3, 4]);
    let mut input = Vec::new();
    header.encode(&mut input);
    assert_fails_with(&mut server, &input, CloseCode::TOO_BIG);
    assert!(server.read_buf().capacity() < 4096);

    // Fragments that add up past the message limit.
    let mut server = Connection::new(Role::Server, config);
    let mut input = raw_frame(false, 2, &[0; 1000], true);
    input.extend(raw_frame(true, 0, &[0; 100], true));
    assert_fails_with(&mut server, &input, CloseCode::TOO_BIG);
}

#[test]
fn protocol_error_variants_are_specific() {
    let (_, mut server) = pair();
    server.receive(&raw_frame(true, 0, b"", true));
    assert_eq!(
        server.poll_message(),
        Some(Err(Error::Protocol(ProtocolError::UnexpectedContinuation)))
    );
    assert_eq!(server.poll_message(), None);
}

#[test]
fn fragmented_send_and_misuse() {
    let (mut client, mut server) = pair();
    client
        .send_fragment(OpCode::Text, Bytes::from_static(b"ab"), false)
        .unwrap();
    assert!(client.send_text("x").is_err());
    client
        .send_fragment(OpCode::Continuation, Bytes::from_static(b"cd"), true)
        .unwrap();
    assert!(client
        .send_fragment(OpCode::Continuation, Bytes::new(), true)
        .is_err());
    assert!(client.send_ping(vec![0u8; 126]).is_err());
    deliver(&mut client, &mut server);
    assert_eq!(drain(&mut server), vec![Ok(Message::text("abcd"))]);
}

#[test]
fn large_server_payloads_are_not_copied() {
    let (mut client, mut server) = pair();
    let big = Bytes::from(vec![7u8; 100_000]);
    server.send_binary(big.clone()).unwrap();
    assert_eq!(server.buffered_amount(), 100_000 + 10);
    deliver(&mut server, &mut client);
    assert_eq!(drain(&mut client), vec![Ok(Message::Binary(big))]);
}

#[test]
fn an_idle_read_buffer_is_taken_and_a_stalled_frame_keeps_only_its_bytes() {
    let mut server = Connection::new(Role::Server, Config::default());
    assert!(
        server.take_idle_read_buffer().is_none(),
        "nothing to take yet"
    );
    server.read_buf().reserve(16 * 1024);
    let taken = server
        .take_idle_read_buffer()
        .expect("an empty buffer is taken");
    assert!(taken.is_empty() && taken.capacity() >= 16 * 1024);
    assert_eq!(server.read_buf().capacity(), 0);

    // Three bytes of a frame in a 16 KiB buffer: they move to a buffer of
    // their own, and the large one comes back empty.
    server.read_buf().reserve(16 * 1024);
    server.receive(&[0x82, 0xFE, 0x10]);
    let large = server.take_idle_read_buffer().expect("the large buffer");
    assert!(large.is_empty() && large.capacity() >= 16 * 1024);
    assert_eq!(&server.read_buf()[..], &[0x82, 0xFE, 0x10]);
    assert!(server.read_buf().capacity() < 1024);
    // A buffer already of their size stays.
    assert!(server.take_idle_read_buffer().is_none());
}

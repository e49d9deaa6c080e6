//! Property tests of the protocol core, fed only with bytes.
//!
//! - frame headers round-trip through `encode` / `parse`;
//! - any sequence of messages sent by one role arrives intact at the other,
//!   however the bytes are cut on the way, with and without permessage-deflate;
//! - hostile bytes never panic a connection, never make `poll_message` loop,
//!   and never make it hold more memory than its limits allow;
//! - the handshake parsers and extension negotiation never panic.
//!
//! Case counts are bounded so the file runs in a few seconds with
//! `cargo test -p sockeye-proto --release --test properties` (a quarter of
//! the cases in debug builds); set `PROPTEST_CASES=N` for a longer search.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use sockeye_proto::connection::CloseCause;
use sockeye_proto::extension::{DeflateConfig, PerMessageDeflate};
use sockeye_proto::frame::{apply_mask, FrameHeader, MAX_HEADER_LEN};
use sockeye_proto::handshake::{
    accept, accept_key, parse_request, rejection, validate_request, write_response, ClientHandshake,
};
use sockeye_proto::{CloseCode, CloseFrame, Config, Connection, Message, OpCode, Role, State};

/// The limit used by the hostile-input properties (frame and message).
const LIMIT: usize = 64 * 1024;

fn cases(n: u32) -> ProptestConfig {
    // PROPTEST_CASES in the environment overrides the default of each block;
    // unoptimised builds (plain `cargo test --workspace`) run a quarter.
    let default = if cfg!(debug_assertions) {
        (n / 4).max(1)
    } else {
        n
    };
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Deterministic payloads: large payloads come from a seed, not from proptest
// vectors of 70,000 shrinkable bytes.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        // xorshift64*; the seed is forced odd so it never sticks at zero.
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn binary_payload(len: usize, seed: u64, compressible: bool) -> Bytes {
    let mut rng = XorShift(seed);
    let mut out = Vec::with_capacity(len);
    if compressible {
        let words: [&[u8]; 6] = [b"{\"id\":", b"\"sockeye\"", b",", b"12345", b"}", b" "];
        while out.len() < len {
            out.extend_from_slice(words[(rng.next() % 6) as usize]);
        }
        out.truncate(len);
    } else {
        while out.len() < len {
            out.extend_from_slice(&rng.next().to_le_bytes());
        }
        out.truncate(len);
    }
    Bytes::from(out)
}

/// A string of about `len` bytes mixing one- to four-byte characters.
fn text_payload(len: usize, seed: u64) -> String {
    const PALETTE: [char; 10] = ['a', 'b', ' ', '{', '"', 'é', '€', '😀', '\u{7f}', 'ß'];
    let mut rng = XorShift(seed);
    let mut out = String::with_capacity(len + 4);
    while out.len() < len {
        out.push(PALETTE[(rng.next() % PALETTE.len() as u64) as usize]);
    }
    out
}

fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..130usize,
        3 => 0..2_000usize,
        1 => 60_000..70_000usize,
        1 => 0..70_000usize,
    ]
}

// ---------------------------------------------------------------------------
// Frame headers

fn any_opcode() -> impl Strategy<Value = OpCode> {
    prop::sample::select(vec![
        OpCode::Continuation,
        OpCode::Text,
        OpCode::Binary,
        OpCode::Close,
        OpCode::Ping,
        OpCode::Pong,
    ])
}

fn any_len() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..=127u64,
        prop::sample::select(vec![125u64, 126, 127, 0xFFFF, 0x1_0000, u64::MAX >> 1]),
        120..=0x1_0010u64,
        0..=(u64::MAX >> 1),
    ]
}

prop_compose! {
    fn any_header()(
        fin: bool, rsv1: bool, rsv2: bool, rsv3: bool,
        opcode in any_opcode(),
        mask: Option<[u8; 4]>,
        payload_len in any_len(),
    ) -> FrameHeader {
        FrameHeader { fin, rsv1, rsv2, rsv3, opcode, mask, payload_len }
    }
}

proptest! {
    #![proptest_config(cases(2_000))]

    #[test]
    fn header_round_trips(header in any_header(), trailing in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut wire = Vec::new();
        header.encode(&mut wire);
        prop_assert_eq!(wire.len(), header.encoded_len());
        prop_assert!(wire.len() <= MAX_HEADER_LEN);
        let mut fixed = [0u8; MAX_HEADER_LEN];
        let n = header.encode_into(&mut fixed);
        prop_assert_eq!(&fixed[..n], &wire[..]);
        for cut in 0..wire.len() {
            prop_assert_eq!(FrameHeader::parse(&wire[..cut]), Ok(None), "cut at {}", cut);
        }
        // What follows the header (payload) is not looked at.
        let len = wire.len();
        wire.extend_from_slice(&trailing);
        prop_assert_eq!(FrameHeader::parse(&wire), Ok(Some((header, len))));
    }

    #[test]
    fn header_parse_of_any_bytes_is_consistent(bytes in prop::collection::vec(any::<u8>(), 0..16)) {
        match FrameHeader::parse(&bytes) {
            Ok(Some((header, len))) => {
                prop_assert!(len <= bytes.len() && (2..=MAX_HEADER_LEN).contains(&len));
                // The same header from exactly its own bytes, and from our encoding of it
                // (which may be shorter: the peer may use a longer length form).
                prop_assert_eq!(FrameHeader::parse(&bytes[..len]), Ok(Some((header, len))));
                let mut wire = Vec::new();
                header.encode(&mut wire);
                prop_assert!(wire.len() <= len);
                prop_assert_eq!(FrameHeader::parse(&wire), Ok(Some((header, wire.len()))));
                prop_assert_eq!(wire[0], bytes[0]);
            }
            Ok(None) => prop_assert!(bytes.len() < MAX_HEADER_LEN),
            Err(_) => {}
        }
    }
}

proptest! {
    #![proptest_config(cases(2_000))]

    #[test]
    fn mask_matches_bytewise_and_undoes_itself(
        data in prop::collection::vec(any::<u8>(), 0..300),
        start in 0..8usize,
        key: [u8; 4],
        offset in 0..64usize,
        split in any::<prop::sample::Index>(),
    ) {
        let start = start.min(data.len());
        let mut fast = data.clone();
        let mut slow = data.clone();
        sockeye_proto::frame::apply_mask_bytewise(&mut slow[start..], key, offset);
        // In two pieces, the second continuing at the right offset.
        let cut = start + split.index(data.len() - start + 1);
        apply_mask(&mut fast[start..cut], key, offset);
        apply_mask(&mut fast[cut..], key, offset + (cut - start));
        prop_assert_eq!(&fast, &slow);
        apply_mask(&mut fast[start..], key, offset);
        prop_assert_eq!(&fast, &data);
    }
}

// ---------------------------------------------------------------------------
// Message round trips between a client and a server Connection

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
    Ping,
    Pong,
}

/// One message to send, described compactly (payloads come from the seed).
#[derive(Debug, Clone)]
struct Op {
    kind: Kind,
    len: usize,
    seed: u64,
    compressible: bool,
    /// Cut points (as fractions of the payload) for `send_fragment`; empty:
    /// sent whole with `send_text` / `send_binary`.
    cuts: Vec<prop::sample::Index>,
    /// Send a ping between the first and second fragment.
    ping_inside: bool,
}

fn any_op() -> impl Strategy<Value = Op> {
    let data = (
        prop_oneof![Just(Kind::Text), Just(Kind::Binary)],
        payload_len(),
        any::<u64>(),
        any::<bool>(),
        prop_oneof![
            3 => Just(Vec::new()),
            2 => prop::collection::vec(any::<prop::sample::Index>(), 1..5),
        ],
        any::<bool>(),
    )
        .prop_map(|(kind, len, seed, compressible, cuts, ping_inside)| Op {
            kind,
            len,
            seed,
            compressible,
            cuts,
            ping_inside,
        });
    let control = (
        prop_oneof![Just(Kind::Ping), Just(Kind::Pong)],
        0..=125usize,
        any::<u64>(),
    )
        .prop_map(|(kind, len, seed)| Op {
            kind,
            len,
            seed,
            compressible: false,
            cuts: Vec::new(),
            ping_inside: false,
        });
    prop_oneof![3 => data, 1 => control]
}

/// How bytes travel from one connection to the other.
#[derive(Debug, Clone)]
struct Delivery {
    /// Sizes of the pieces handed to the receiver, used in turn.
    chunks: Vec<usize>,
    /// Read the sender's queue through `Buf::chunk` / `advance` (pieces never
    /// cross a queue boundary) instead of `take_transmit` then cutting.
    through_buf: bool,
    /// Write into `read_buf()` instead of calling `receive`.
    into_read_buf: bool,
}

fn any_delivery() -> impl Strategy<Value = Delivery> {
    let chunk = prop_oneof![1..=8usize, 1..=1_500usize, 1..=100_000usize];
    (
        prop::collection::vec(chunk, 1..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(chunks, through_buf, into_read_buf)| Delivery {
            chunks,
            through_buf,
            into_read_buf,
        })
}

prop_compose! {
    fn any_deflate_config()(
        server_no_context_takeover: bool,
        client_no_context_takeover: bool,
        server_max_window_bits in 8u8..=15,
        client_max_window_bits in 8u8..=15,
        level in 0u32..=9,
        threshold in prop_oneof![Just(0usize), 0..200usize],
    ) -> DeflateConfig {
        DeflateConfig {
            server_no_context_takeover,
            client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
            level,
            threshold,
        }
    }
}

/// A client/server pair with permessage-deflate negotiated the way the
/// handshake does it: offer, server choice, client check of the answer.
fn deflate_pair(
    client_config: &DeflateConfig,
    server_config: &DeflateConfig,
    config: Config,
) -> Result<(Connection, Connection), TestCaseError> {
    let offer = client_config.offer();
    let (server_params, answer) = server_config
        .negotiate_server(&[offer.as_str()])
        .map_err(|e| TestCaseError::fail(format!("negotiate_server failed: {e}")))?
        .ok_or_else(|| TestCaseError::fail(format!("offer {offer:?} declined")))?;
    let client_params = client_config
        .negotiate_client(&answer)
        .map_err(|e| TestCaseError::fail(format!("answer {answer:?} refused: {e}")))?;
    prop_assert_eq!(client_params, server_params, "{} -> {}", offer, answer);
    let client = Connection::new(Role::Client, config.clone()).with_deflate(
        PerMessageDeflate::new(Role::Client, &client_params, client_config),
    );
    let server = Connection::new(Role::Server, config).with_deflate(PerMessageDeflate::new(
        Role::Server,
        &server_params,
        server_config,
    ));
    Ok((client, server))
}

/// Moves every queued byte of `from` into `to` as `delivery` says, polling
/// `to` after each piece. Returns what `to` produced; an error fails the case.
fn deliver(
    from: &mut Connection,
    to: &mut Connection,
    delivery: &Delivery,
) -> Result<Vec<Message>, TestCaseError> {
    let mut received = Vec::new();
    let mut feed = |to: &mut Connection, piece: &[u8]| -> Result<(), TestCaseError> {
        if delivery.into_read_buf {
            to.read_buf().extend_from_slice(piece);
        } else {
            to.receive(piece);
        }
        // Every message consumes at least two bytes of header.
        for _ in 0..=piece.len() / 2 + 1 {
            match to.poll_message() {
                Some(Ok(message)) => received.push(message),
                Some(Err(e)) => return Err(TestCaseError::fail(format!("receiver failed: {e}"))),
                None => return Ok(()),
            }
        }
        Err(TestCaseError::fail("poll_message did not return None"))
    };
    let mut sizes = delivery.chunks.iter().cycle();
    if delivery.through_buf {
        let queued = from.buffered_amount();
        let mut moved = 0;
        let transmit = from.transmit();
        while transmit.has_remaining() {
            let chunk = transmit.chunk();
            prop_assert!(!chunk.is_empty());
            let n = chunk.len().min(*sizes.next().expect("cycle"));
            let piece = chunk[..n].to_vec();
            transmit.advance(n);
            moved += n;
            feed(to, &piece)?;
        }
        prop_assert_eq!(moved, queued);
    } else {
        let wire = from.take_transmit();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = rest.len().min(*sizes.next().expect("cycle"));
            feed(to, &rest[..n])?;
            rest = &rest[n..];
        }
    }
    prop_assert_eq!(from.buffered_amount(), 0);
    // Nothing left over: every byte was consumed by a whole frame.
    prop_assert!(!to.is_mid_message() || to.is_closed());
    Ok(received)
}

/// Sends `ops` from `sender`, checks that `receiver` gets exactly them (and
/// the sender the pongs for its pings), optionally ending with a close
/// handshake.
fn exchange(
    mut sender: Connection,
    mut receiver: Connection,
    ops: &[Op],
    delivery: &Delivery,
    back: &Delivery,
    close: Option<u16>,
) -> Result<(), TestCaseError> {
    let mut expected = Vec::new();
    let mut pings = Vec::new();
    for op in ops {
        match op.kind {
            Kind::Ping => {
                let data = binary_payload(op.len, op.seed, false);
                sender.send_ping(data.clone()).map_err(fail)?;
                pings.push(Message::Pong(data.clone()));
                expected.push(Message::Ping(data));
            }
            Kind::Pong => {
                let data = binary_payload(op.len, op.seed, false);
                sender.send_pong(data.clone()).map_err(fail)?;
                expected.push(Message::Pong(data));
            }
            Kind::Text | Kind::Binary => {
                let (payload, message, opcode) = if op.kind == Kind::Text {
                    let text = text_payload(op.len, op.seed);
                    let bytes = Bytes::from(text.clone());
                    (bytes, Message::text(text), OpCode::Text)
                } else {
                    let bytes = binary_payload(op.len, op.seed, op.compressible);
                    (bytes.clone(), Message::Binary(bytes), OpCode::Binary)
                };
                if op.cuts.is_empty() {
                    match &message {
                        Message::Text(t) => sender.send_text(t.clone()).map_err(fail)?,
                        _ => sender.send_binary(payload).map_err(fail)?,
                    }
                } else {
                    // Cut anywhere, even inside a UTF-8 character; empty
                    // fragments are legal too.
                    let mut cuts: Vec<usize> =
                        op.cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
                    cuts.sort_unstable();
                    cuts.push(payload.len());
                    let ping = binary_payload(op.len % 126, op.seed ^ 1, false);
                    let mut start = 0;
                    for (i, &end) in cuts.iter().enumerate() {
                        let op_code = if i == 0 { opcode } else { OpCode::Continuation };
                        let fin = i + 1 == cuts.len();
                        sender
                            .send_fragment(op_code, payload.slice(start..end), fin)
                            .map_err(fail)?;
                        if i == 0 && op.ping_inside {
                            sender.send_ping(ping.clone()).map_err(fail)?;
                            pings.push(Message::Pong(ping.clone()));
                            expected.push(Message::Ping(ping.clone()));
                        }
                        start = end;
                    }
                }
                expected.push(message);
            }
        }
    }
    let now = Instant::now();
    if let Some(code) = close {
        let frame = CloseFrame::new(CloseCode(code), "bye é");
        sender.send_close(Some(frame.clone()), now).map_err(fail)?;
        prop_assert_eq!(sender.state(), State::CloseSent);
        prop_assert_eq!(
            sender.poll_timeout(),
            Some(now + sender.config().close_timeout)
        );
        expected.push(Message::Close(Some(frame)));
    }

    let received = deliver(&mut sender, &mut receiver, delivery)?;
    prop_assert_eq!(received.len(), expected.len());
    for (i, (got, want)) in received.iter().zip(&expected).enumerate() {
        prop_assert!(
            got == want,
            "message {} differs: got {:?}, want {:?}",
            i,
            short(got),
            short(want)
        );
    }

    // Pongs (and the close echo) come back.
    let answers = deliver(&mut receiver, &mut sender, back)?;
    let mut want_back = pings;
    if let Some(code) = close {
        prop_assert!(receiver.is_closed());
        prop_assert!(
            matches!(receiver.close_cause(), Some(CloseCause::Handshake(Some(f))) if f.code.0 == code)
        );
        want_back.push(Message::Close(Some(CloseFrame::new(CloseCode(code), ""))));
        prop_assert_eq!(&answers, &want_back);
        prop_assert!(sender.is_closed());
        prop_assert!(matches!(
            sender.close_cause(),
            Some(CloseCause::Handshake(_))
        ));
        prop_assert_eq!(sender.poll_timeout(), None);
        prop_assert!(sender.send_text("late").is_err());
    } else {
        prop_assert_eq!(&answers, &want_back);
        prop_assert_eq!(receiver.state(), State::Open);
        prop_assert_eq!(sender.state(), State::Open);
    }
    Ok(())
}

fn fail(e: sockeye_proto::Error) -> TestCaseError {
    TestCaseError::fail(format!("send failed: {e}"))
}

/// A message for an assertion message: kind and length, not 70 KB of bytes.
fn short(m: &Message) -> String {
    match m {
        Message::Close(f) => format!("Close({f:?})"),
        other => {
            let kind = match other {
                Message::Text(_) => "Text",
                Message::Binary(_) => "Binary",
                Message::Ping(_) => "Ping",
                _ => "Pong",
            };
            format!("{kind}({} bytes)", other.len())
        }
    }
}

fn any_close() -> impl Strategy<Value = Option<u16>> {
    prop_oneof![
        2 => Just(None),
        1 => prop::sample::select(vec![1000u16, 1001, 1003, 1008, 1011, 3000, 4999]).prop_map(Some),
    ]
}

fn plain_config() -> impl Strategy<Value = Config> {
    prop_oneof![Just(0usize), Just(4096), 1..100_000usize].prop_map(|zero_copy| {
        let mut config = Config::default();
        config.zero_copy_threshold = zero_copy;
        config
    })
}

proptest! {
    #![proptest_config(cases(400))]

    #[test]
    fn client_to_server_round_trip(
        ops in prop::collection::vec(any_op(), 0..8),
        delivery in any_delivery(),
        back in any_delivery(),
        close in any_close(),
        config in plain_config(),
    ) {
        let client = Connection::new(Role::Client, config.clone());
        let server = Connection::new(Role::Server, config);
        exchange(client, server, &ops, &delivery, &back, close)?;
    }

    #[test]
    fn server_to_client_round_trip(
        ops in prop::collection::vec(any_op(), 0..8),
        delivery in any_delivery(),
        back in any_delivery(),
        close in any_close(),
        config in plain_config(),
    ) {
        let client = Connection::new(Role::Client, config.clone());
        let server = Connection::new(Role::Server, config);
        exchange(server, client, &ops, &delivery, &back, close)?;
    }

    #[test]
    fn deflate_client_to_server_round_trip(
        ops in prop::collection::vec(any_op(), 0..8),
        delivery in any_delivery(),
        back in any_delivery(),
        close in any_close(),
        client_config in any_deflate_config(),
        server_config in any_deflate_config(),
        config in plain_config(),
    ) {
        let (client, server) = deflate_pair(&client_config, &server_config, config)?;
        exchange(client, server, &ops, &delivery, &back, close)?;
    }

    #[test]
    fn deflate_server_to_client_round_trip(
        ops in prop::collection::vec(any_op(), 0..8),
        delivery in any_delivery(),
        back in any_delivery(),
        close in any_close(),
        client_config in any_deflate_config(),
        server_config in any_deflate_config(),
        config in plain_config(),
    ) {
        let (client, server) = deflate_pair(&client_config, &server_config, config)?;
        exchange(server, client, &ops, &delivery, &back, close)?;
    }
}

proptest! {
    #![proptest_config(cases(400))]

    /// `max_message_size` is exact: a message of the limit arrives, one byte
    /// more fails with 1009, whether whole, fragmented or compressed.
    #[test]
    fn message_limit_is_exact(
        limit in prop_oneof![0..200usize, 60_000..70_000usize],
        delta in -1i64..=1,
        text: bool,
        seed: u64,
        compressible: bool,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        deflate: bool,
        delivery in any_delivery(),
    ) {
        let len = (limit as i64 + delta).max(0) as usize;
        let mut receiver_config = Config::default().max_message_size(limit);
        // Frames may be larger: deflate can grow incompressible payloads.
        receiver_config.max_frame_size = 2 * limit + 1_024;
        // Compress everything, so that small messages are compressed too.
        let deflate_config = DeflateConfig { threshold: 0, ..DeflateConfig::default() };
        let (mut client, mut server) = if deflate {
            let (client, _) = deflate_pair(&deflate_config, &deflate_config, Config::default())?;
            let offer = deflate_config.offer();
            let (params, _) = deflate_config
                .negotiate_server(&[offer.as_str()])
                .expect("never fails")
                .expect("own offer");
            let server = Connection::new(Role::Server, receiver_config)
                .with_deflate(PerMessageDeflate::new(Role::Server, &params, &deflate_config));
            (client, server)
        } else {
            (Connection::new(Role::Client, Config::default()), Connection::new(Role::Server, receiver_config))
        };
        let payload = if text {
            // Exactly `len` bytes: cut at a character boundary, pad with ASCII.
            let mut t = text_payload(len, seed);
            let mut end = len.min(t.len());
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t.truncate(end);
            while t.len() < len {
                t.push('x');
            }
            Bytes::from(t)
        } else {
            binary_payload(len, seed, compressible)
        };
        let opcode = if text { OpCode::Text } else { OpCode::Binary };
        if cuts.is_empty() {
            if text {
                client.send_text(sockeye_proto::Utf8Bytes::try_from(payload.clone()).unwrap()).map_err(fail)?;
            } else {
                client.send_binary(payload.clone()).map_err(fail)?;
            }
        } else {
            let mut ends: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
            ends.sort_unstable();
            ends.push(len);
            let mut start = 0;
            for (i, &end) in ends.iter().enumerate() {
                let op = if i == 0 { opcode } else { OpCode::Continuation };
                client.send_fragment(op, payload.slice(start..end), i + 1 == ends.len()).map_err(fail)?;
                start = end;
            }
        }
        let wire = client.take_transmit();
        let mut sizes = delivery.chunks.iter().cycle();
        let mut rest = &wire[..];
        let mut results = Vec::new();
        while !rest.is_empty() {
            let n = rest.len().min(*sizes.next().unwrap());
            server.receive(&rest[..n]);
            rest = &rest[n..];
            while let Some(r) = server.poll_message() {
                results.push(r);
            }
        }
        prop_assert_eq!(results.len(), 1, "{:?}", results.iter().map(|r| r.as_ref().map(short)).collect::<Vec<_>>());
        if len <= limit {
            let got = results.pop().unwrap();
            prop_assert!(got.is_ok(), "{len} bytes refused at limit {limit}: {:?}", got.err());
            prop_assert_eq!(got.unwrap().into_payload(), payload);
        } else {
            match results.pop().unwrap() {
                Err(e) => prop_assert_eq!(e.close_code(), CloseCode::TOO_BIG, "{}", e),
                Ok(m) => prop_assert!(false, "{} bytes accepted at limit {}: {}", len, limit, short(&m)),
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// Both directions at once: each side's messages interleave with the
    /// pongs it owes the other, and both streams are cut differently.
    #[test]
    fn deflate_both_directions_interleaved(
        rounds in prop::collection::vec(
            (prop::collection::vec(any_op(), 0..3), prop::collection::vec(any_op(), 0..3)),
            1..4,
        ),
        delivery in any_delivery(),
        client_config in any_deflate_config(),
        server_config in any_deflate_config(),
    ) {
        let (mut client, mut server) = deflate_pair(&client_config, &server_config, Config::default())?;
        for (from_client, from_server) in &rounds {
            let mut want_server = Vec::new();
            let mut want_client = Vec::new();
            for op in from_client {
                want_server.push(send_simple(&mut client, op)?);
            }
            for op in from_server {
                want_client.push(send_simple(&mut server, op)?);
            }
            let got = deliver(&mut client, &mut server, &delivery)?;
            prop_assert_eq!(strip_pongs(&got), strip_pongs(&want_server));
            // The server's queue now holds its own messages, then its pongs.
            let got = deliver(&mut server, &mut client, &delivery)?;
            prop_assert_eq!(strip_pongs(&got), strip_pongs(&want_client));
            // And the client's pongs to the server's pings.
            let pongs = deliver(&mut client, &mut server, &delivery)?;
            prop_assert!(pongs.iter().all(|m| matches!(m, Message::Pong(_))));
        }
    }
}

/// Sends `op` whole (no fragments); returns what the peer should see.
fn send_simple(conn: &mut Connection, op: &Op) -> Result<Message, TestCaseError> {
    Ok(match op.kind {
        Kind::Text => {
            let text = text_payload(op.len, op.seed);
            conn.send_text(text.clone()).map_err(fail)?;
            Message::text(text)
        }
        Kind::Binary => {
            let data = binary_payload(op.len, op.seed, op.compressible);
            conn.send_binary(data.clone()).map_err(fail)?;
            Message::Binary(data)
        }
        Kind::Ping => {
            let data = binary_payload(op.len, op.seed, false);
            conn.send_ping(data.clone()).map_err(fail)?;
            Message::Ping(data)
        }
        Kind::Pong => {
            let data = binary_payload(op.len, op.seed, false);
            conn.send_pong(data.clone()).map_err(fail)?;
            Message::Pong(data)
        }
    })
}

fn strip_pongs(messages: &[Message]) -> Vec<Message> {
    // Pongs the application sent and automatic ones interleave; compare the rest.
    messages
        .iter()
        .filter(|m| !matches!(m, Message::Pong(_)))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// Hostile input: never panic, always terminate, stay within memory limits

/// One piece of hostile input: junk, a well-formed message (possibly
/// fragmented, compressed or a deflate bomb), or a single frame with its
/// fields chosen to be valid, nearly valid, or lying.
#[derive(Debug, Clone)]
enum Piece {
    Junk(Vec<u8>),
    Message {
        text: bool,
        body: Body,
        /// Fragment cut points in the (possibly compressed) payload.
        cuts: Vec<prop::sample::Index>,
        /// Set RSV1 on the first frame (a compressed message).
        rsv1: bool,
    },
    Frame {
        flags: u8,
        opcode: u8,
        /// Flip the mask bit from what the receiver's role expects.
        wrong_mask: bool,
        /// Announce this length instead of the payload's.
        lie: Option<u64>,
        /// Use the 8-byte length form even for short payloads.
        long_form: bool,
        body: Body,
    },
}

#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    Large {
        len: usize,
        seed: u64,
    },
    Text {
        len: usize,
        seed: u64,
        corrupt: Option<prop::sample::Index>,
    },
    Close {
        code: u16,
        reason: String,
    },
    /// A real permessage-deflate body of this many bytes.
    Deflated {
        len: usize,
        seed: u64,
        compressible: bool,
        text: bool,
    },
    /// A deflate bomb: this many zero bytes compressed.
    Bomb {
        len: usize,
    },
    /// A deflate body with one byte changed.
    CorruptDeflate {
        len: usize,
        seed: u64,
        at: prop::sample::Index,
        xor: u8,
    },
}

fn data_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Body::Bytes),
        1 => (payload_len(), any::<u64>()).prop_map(|(len, seed)| Body::Large { len, seed }),
        3 => (payload_len(), any::<u64>(), prop::option::weighted(0.2, any::<prop::sample::Index>()))
            .prop_map(|(len, seed, corrupt)| Body::Text { len, seed, corrupt }),
    ]
}

fn deflate_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => (payload_len(), any::<u64>(), any::<bool>(), any::<bool>())
            .prop_map(|(len, seed, compressible, text)| Body::Deflated { len, seed, compressible, text }),
        1 => prop_oneof![60_000..70_000usize, 1..3_000_000usize].prop_map(|len| Body::Bomb { len }),
        1 => (0..5_000usize, any::<u64>(), any::<prop::sample::Index>(), 1..=255u8)
            .prop_map(|(len, seed, at, xor)| Body::CorruptDeflate { len, seed, at, xor }),
    ]
}

fn control_body() -> impl Strategy<Value = Body> {
    let code = prop_oneof![
        4 => prop::sample::select(vec![1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999]),
        1 => any::<u16>(),
    ];
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..=125).prop_map(Body::Bytes),
        1 => (code, "\\PC{0,40}").prop_map(|(code, reason)| Body::Close { code, reason }),
    ]
}

fn any_piece() -> impl Strategy<Value = Piece> {
    let message = prop_oneof![
        (any::<bool>(), data_body(), Just(false)),
        (any::<bool>(), deflate_body(), Just(true)),
    ];
    let message = (
        message,
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(any::<prop::sample::Index>(), 1..4),
        ],
    )
        .prop_map(|((text, body, rsv1), cuts)| Piece::Message {
            text: text || matches!(body, Body::Text { .. } | Body::Deflated { text: true, .. }),
            body,
            cuts,
            rsv1,
        });
    let control = (prop::sample::select(vec![8u8, 9, 10]), control_body());
    let data = (
        prop::sample::select(vec![0u8, 1, 2]),
        prop_oneof![data_body(), deflate_body()],
    );
    let frame = (
        prop_oneof![control, data],
        // Mostly FIN alone; sometimes RSV1, no FIN, or any flags.
        prop_oneof![
            8 => Just(0x80u8),
            1 => Just(0xC0),
            1 => Just(0x00),
            1 => any::<u8>().prop_map(|b| b & 0xF0),
        ],
        prop::option::weighted(0.1, 0u8..16),
        prop::bool::weighted(0.05),
        prop::option::weighted(0.05, prop_oneof![0..200_000u64, any::<u64>()]),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |((opcode, body), flags, other_opcode, wrong_mask, lie, long_form)| Piece::Frame {
                flags,
                opcode: other_opcode.unwrap_or(opcode),
                wrong_mask,
                lie,
                long_form,
                body,
            },
        );
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Piece::Junk),
        6 => message,
        4 => frame,
    ]
}

fn compress(data: &[u8]) -> Vec<u8> {
    let config = DeflateConfig::default();
    let params = config
        .negotiate_client("permessage-deflate")
        .expect("plain answer");
    let mut codec = PerMessageDeflate::new(Role::Client, &params, &config);
    let mut out = BytesMut::new();
    codec.compress(data, &mut out).expect("compress");
    out.to_vec()
}

fn body_bytes(body: &Body) -> Vec<u8> {
    match body {
        Body::Bytes(b) => b.clone(),
        Body::Large { len, seed } => binary_payload(*len, *seed, false).to_vec(),
        Body::Text { len, seed, corrupt } => {
            let mut text = text_payload(*len, *seed).into_bytes();
            if let (Some(at), false) = (corrupt, text.is_empty()) {
                let i = at.index(text.len());
                text[i] = 0xFF;
            }
            text
        }
        Body::Close { code, reason } => {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason.as_bytes());
            p
        }
        Body::Deflated {
            len,
            seed,
            compressible,
            text,
        } => {
            if *text {
                compress(text_payload(*len, *seed).as_bytes())
            } else {
                compress(&binary_payload(*len, *seed, *compressible))
            }
        }
        Body::Bomb { len } => compress(&vec![0u8; *len]),
        Body::CorruptDeflate { len, seed, at, xor } => {
            let mut body = compress(&binary_payload(*len, *seed, true));
            if !body.is_empty() {
                let i = at.index(body.len());
                body[i] ^= xor;
            }
            body
        }
    }
}

/// One frame as a peer would put it on the wire; `masked` as its role does.
fn frame_bytes(
    b0: u8,
    masked: bool,
    len: Option<u64>,
    long_form: bool,
    mut payload: Vec<u8>,
) -> Vec<u8> {
    let len = len.unwrap_or(payload.len() as u64);
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(b0);
    let mask_bit = if masked { 0x80 } else { 0 };
    if long_form || len > 0xFFFF {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    } else if len > 125 {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | len as u8);
    }
    if masked {
        let key = [0x5A, 0xC3, 0x01, 0xFE];
        out.extend_from_slice(&key);
        apply_mask(&mut payload, key, 0);
    }
    out.extend_from_slice(&payload);
    out
}

/// The bytes a peer of `receiver` would send for `piece`.
fn render(piece: &Piece, receiver: Role) -> Vec<u8> {
    let masked = receiver == Role::Server;
    match piece {
        Piece::Junk(junk) => junk.clone(),
        Piece::Message {
            text,
            body,
            cuts,
            rsv1,
        } => {
            let payload = body_bytes(body);
            let mut ends: Vec<usize> = cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
            ends.sort_unstable();
            ends.push(payload.len());
            let mut out = Vec::new();
            let mut start = 0;
            for (i, &end) in ends.iter().enumerate() {
                let fin = if i + 1 == ends.len() { 0x80 } else { 0 };
                let first = if i == 0 {
                    u8::from(*rsv1) << 6 | if *text { 1 } else { 2 }
                } else {
                    0
                };
                out.extend(frame_bytes(
                    fin | first,
                    masked,
                    None,
                    false,
                    payload[start..end].to_vec(),
                ));
                start = end;
            }
            out
        }
        Piece::Frame {
            flags,
            opcode,
            wrong_mask,
            lie,
            long_form,
            body,
        } => frame_bytes(
            flags | opcode,
            masked != *wrong_mask,
            *lie,
            *long_form,
            body_bytes(body),
        ),
    }
}

fn limited_config() -> Config {
    Config::default()
        .max_frame_size(LIMIT)
        .max_message_size(LIMIT)
        .close_timeout(Duration::from_secs(1))
}

fn hostile_receiver(role: Role, deflate: Option<bool>) -> Connection {
    let conn = Connection::new(role, limited_config());
    match deflate {
        None => conn,
        Some(no_context_takeover) => {
            let config = DeflateConfig {
                server_no_context_takeover: no_context_takeover,
                client_no_context_takeover: no_context_takeover,
                ..DeflateConfig::default()
            };
            let offer = config.offer();
            let (params, _) = config
                .negotiate_server(&[offer.as_str()])
                .expect("never fails")
                .expect("own offer accepted");
            conn.with_deflate(PerMessageDeflate::new(role, &params, &config))
        }
    }
}

/// Feeds `input` to `conn` in pieces of `chunks` sizes (each at most what an
/// I/O layer would read at once), checking after every piece that the
/// connection terminates, stays within its limits, and, once failed or
/// closed, stays quiet.
fn feed_hostile(
    conn: &mut Connection,
    input: &[u8],
    chunks: &[usize],
    time_steps: bool,
) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let mut sizes = chunks.iter().cycle();
    let mut rest = input;
    let mut fed = 0usize;
    let mut outputs = 0usize;
    let mut step = 0u64;
    while !rest.is_empty() {
        let n = rest.len().min(*sizes.next().expect("cycle"));
        conn.receive(&rest[..n]);
        rest = &rest[n..];
        fed += n;
        let mut ended = false;
        loop {
            let before = conn.read_buf().len();
            match conn.poll_message() {
                None => break,
                Some(Ok(message)) => {
                    outputs += 1;
                    prop_assert!(message.len() <= LIMIT, "message of {} bytes", message.len());
                    prop_assert!(!ended, "a message after the connection ended");
                    if let Message::Close(_) = message {
                        prop_assert!(conn.is_closed());
                        ended = true;
                    }
                }
                Some(Err(e)) => {
                    outputs += 1;
                    prop_assert!(conn.is_closed(), "failed but not closed: {}", e);
                    prop_assert!(matches!(conn.close_cause(), Some(CloseCause::Failed(_))));
                    prop_assert!(conn.poll_message().is_none());
                    ended = true;
                }
            }
            // Every output consumes at least a two-byte header.
            prop_assert!(
                outputs <= fed / 2 + 1,
                "{} outputs from {} bytes (buffer {})",
                outputs,
                fed,
                before
            );
        }
        let capacity = conn.read_buf().capacity();
        prop_assert!(
            capacity < 4 * LIMIT,
            "read buffer capacity {} after {} bytes",
            capacity,
            fed
        );
        prop_assert!(
            conn.buffered_amount() <= 3 * fed + 256,
            "{} bytes queued after {} received",
            conn.buffered_amount(),
            fed
        );
        if conn.is_closed() {
            prop_assert!(conn.poll_message().is_none());
        }
        if time_steps {
            step += 1;
            conn.handle_timeout(start + Duration::from_millis(300 * step));
            if conn.state() == State::CloseSent {
                prop_assert!(conn.poll_timeout().is_some());
            }
        }
    }
    // Answers (pongs, close) always frame correctly for the peer.
    let answers = conn.take_transmit();
    let peer_role = match conn.role() {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    };
    let mut peer = Connection::new(peer_role, Config::default());
    peer.receive(&answers);
    while let Some(result) = peer.poll_message() {
        prop_assert!(result.is_ok(), "our own answer is invalid: {:?}", result);
    }
    Ok(())
}

fn hostile_chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1..=16usize, 1..=16_384usize], 1..5)
}

proptest! {
    #![proptest_config(cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..4_096),
        chunks in hostile_chunks(),
        server: bool,
        deflate in prop::option::of(any::<bool>()),
        time_steps: bool,
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut conn = hostile_receiver(role, deflate);
        feed_hostile(&mut conn, &input, &chunks, time_steps)?;
    }
}

proptest! {
    #![proptest_config(cases(1_000))]

    #[test]
    fn hostile_frames_to_server_stay_bounded(
        pieces in prop::collection::vec(any_piece(), 0..12),
        chunks in hostile_chunks(),
        deflate in prop::option::weighted(0.75, any::<bool>()),
        time_steps: bool,
    ) {
        let input: Vec<u8> = pieces.iter().flat_map(|p| render(p, Role::Server)).collect();
        let mut conn = hostile_receiver(Role::Server, deflate);
        feed_hostile(&mut conn, &input, &chunks, time_steps)?;
    }

    #[test]
    fn hostile_frames_to_client_stay_bounded(
        pieces in prop::collection::vec(any_piece(), 0..12),
        chunks in hostile_chunks(),
        deflate in prop::option::weighted(0.75, any::<bool>()),
        time_steps: bool,
    ) {
        let input: Vec<u8> = pieces.iter().flat_map(|p| render(p, Role::Client)).collect();
        let mut conn = hostile_receiver(Role::Client, deflate);
        feed_hostile(&mut conn, &input, &chunks, time_steps)?;
    }
}

// ---------------------------------------------------------------------------
// The opening handshake and extension negotiation

/// Header lines an upgrade request or response might carry, valid or not.
fn header_line() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "Host",
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Accept",
        "Content-Length",
        "X-Junk",
    ]);
    let values = prop_oneof![
        prop::sample::select(vec![
            "websocket".to_string(),
            "Upgrade".to_string(),
            "keep-alive, Upgrade".to_string(),
            "13".to_string(),
            "8, 13".to_string(),
            "dGhlIHNhbXBsZSBub25jZQ==".to_string(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string(),
            "example.com".to_string(),
            "chat, superchat".to_string(),
            "permessage-deflate; client_max_window_bits".to_string(),
        ]),
        extension_value(),
        "[ -~]{0,40}",
    ];
    (names, values).prop_map(|(n, v)| format!("{n}: {v}"))
}

/// Strings in the grammar of Sec-WebSocket-Extensions, and near misses.
fn extension_value() -> impl Strategy<Value = String> {
    let atom = prop::sample::select(vec![
        "permessage-deflate",
        "x-webkit-deflate-frame",
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
        "=",
        "=8",
        "=9",
        "=15",
        "=16",
        "=08",
        "=\"10\"",
        "=\"1\\0\"",
        "\"",
        "\\",
        ";",
        "; ",
        ",",
        ", ",
        " ",
        "\t",
        "é",
    ]);
    prop::collection::vec(atom, 0..14).prop_map(|atoms| atoms.concat())
}

fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        prop::sample::select(vec!["GET", "POST", "get", "G\0T"]),
        prop::sample::select(vec![
            "/",
            "/chat?x=1",
            "http://example.com/",
            "*",
            "",
            "/\u{7f}",
        ]),
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "]),
        prop::collection::vec(header_line(), 0..12),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(method, target, version, lines, tail)| {
            let mut out = format!("{method} {target} {version}\r\n").into_bytes();
            for line in lines {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&tail);
            out
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..1_024),
        3 => structured,
    ]
}

/// A response head; `with_accept` adds the `Sec-WebSocket-Accept` that
/// matches the client's key, which is only known when the test runs.
#[derive(Debug, Clone)]
enum ResponseHead {
    Raw(Vec<u8>),
    Structured {
        status: &'static str,
        lines: Vec<String>,
        with_accept: bool,
    },
}

impl ResponseHead {
    fn render(&self, accept: &str) -> Vec<u8> {
        match self {
            ResponseHead::Raw(bytes) => bytes.clone(),
            ResponseHead::Structured {
                status,
                lines,
                with_accept,
            } => {
                let mut out = format!("{status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
                    .into_bytes();
                if *with_accept {
                    out.extend_from_slice(format!("Sec-WebSocket-Accept: {accept}\r\n").as_bytes());
                }
                for line in lines {
                    out.extend_from_slice(line.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                out
            }
        }
    }
}

fn response_head() -> impl Strategy<Value = ResponseHead> {
    let structured = (
        prop::sample::select(vec![
            "HTTP/1.1 101 Switching Protocols",
            "HTTP/1.1 200 OK",
            "HTTP/1.0 101 x",
            "HTTP/1.1 999",
            "HTTP/1.1 1011",
        ]),
        prop::collection::vec(header_line(), 0..10),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(status, lines, with_accept)| ResponseHead::Structured {
            status,
            lines,
            with_accept,
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..1_024).prop_map(ResponseHead::Raw),
        3 => structured,
    ]
}

proptest! {
    #![proptest_config(cases(1_000))]

    #[test]
    fn request_parsing_never_panics(
        bytes in request_bytes(),
        max in prop_oneof![Just(16 * 1024usize), 0..1_200usize],
        cut in any::<prop::sample::Index>(),
        deflate in any_deflate_config(),
    ) {
        // Every prefix is either incomplete, an error, or the same head.
        let prefix = &bytes[..cut.index(bytes.len() + 1)];
        let _ = parse_request(prefix, max);
        match parse_request(&bytes, max) {
            Ok(Some((req, len))) => {
                prop_assert!(len <= bytes.len() && len <= max);
                match validate_request(&req) {
                    Ok(upgrade) => {
                        let protocols = ["chat".to_string(), "superchat".to_string()];
                        for deflate in [None, Some(&deflate)] {
                            match accept(&upgrade, &protocols, deflate) {
                                Ok(accepted) => {
                                    let mut out = Vec::new();
                                    write_response(&accepted.response, b"", &mut out);
                                    prop_assert!(out.starts_with(b"HTTP/1.1 101 "));
                                    prop_assert!(out.ends_with(b"\r\n\r\n"));
                                }
                                Err(e) => {
                                    let mut out = Vec::new();
                                    write_response(&rejection(&e), b"x", &mut out);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let response = rejection(&e);
                        prop_assert!(response.status().is_client_error() || response.status().is_server_error());
                        let mut out = Vec::new();
                        write_response(&response, response.body().as_bytes(), &mut out);
                    }
                }
            }
            Ok(None) => prop_assert!(bytes.len() <= max),
            Err(_) => {}
        }
    }

    #[test]
    fn response_parsing_never_panics(
        head in response_head(),
        offer_deflate: bool,
        deflate in any_deflate_config(),
        max in prop_oneof![Just(16 * 1024usize), 0..1_200usize],
    ) {
        let uri = "ws://example.com/chat".parse().expect("uri");
        let protocols = ["chat".to_string(), "superchat".to_string()];
        let (client, _request) = ClientHandshake::new(
            &uri,
            &protocols,
            &http::HeaderMap::new(),
            offer_deflate.then_some(&deflate),
        )
        .expect("valid handshake");
        let bytes = head.render(&accept_key(client.key().as_bytes()));
        match client.parse_response(&bytes, max) {
            Ok(Some((resp, len))) => {
                prop_assert!(len <= bytes.len() && len <= max);
                if let Ok(negotiated) = client.validate_response(&resp) {
                    prop_assert!(negotiated.protocol.is_none() || protocols.contains(negotiated.protocol.as_ref().unwrap()));
                    prop_assert!(negotiated.deflate.is_none() || offer_deflate);
                }
            }
            Ok(None) => prop_assert!(bytes.len() <= max),
            Err(_) => {}
        }
    }

    #[test]
    fn extension_negotiation_never_panics(
        offers in prop::collection::vec(extension_value(), 0..3),
        answer in extension_value(),
        server in any_deflate_config(),
        client in any_deflate_config(),
    ) {
        let offers: Vec<&str> = offers.iter().map(String::as_str).collect();
        let chosen = server.negotiate_server(&offers);
        prop_assert!(chosen.is_ok(), "negotiate_server never fails");
        if let Ok(Some((params, answer))) = chosen {
            // An answer we produce is one we would parse ourselves.
            prop_assert!(answer.starts_with("permessage-deflate"));
            prop_assert!((8..=15).contains(&params.server_max_window_bits));
            prop_assert!((8..=15).contains(&params.client_max_window_bits));
        }
        let _ = client.negotiate_client(&answer);
    }

    #[test]
    fn negotiation_agrees_for_any_configs(
        client in any_deflate_config(),
        server in any_deflate_config(),
    ) {
        let offer = client.offer();
        let (on_server, answer) = server
            .negotiate_server(&[offer.as_str()])
            .expect("never fails")
            .expect("our own offers always carry client_max_window_bits");
        let on_client = client.negotiate_client(&answer);
        prop_assert_eq!(on_client, Ok(on_server), "{} -> {}", offer, answer);
    }
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,12}"
}

proptest! {
    #![proptest_config(cases(500))]

    /// A full opening handshake between our client and our server agrees on
    /// the subprotocol and the deflate parameters, and leaves the bytes that
    /// follow the head untouched.
    #[test]
    fn handshake_round_trips(
        host in "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,10}){0,2}",
        port in prop::option::of(1u16..),
        secure: bool,
        path in "(/[a-zA-Z0-9._~%!$&'()*+,;=:@-]{0,12}){0,3}",
        query in prop::option::of("[a-zA-Z0-9=&%._-]{0,20}"),
        offered in prop::collection::vec(token(), 0..4),
        supported in prop::collection::vec(token(), 0..4),
        extra in prop::collection::vec(
            (prop::sample::select(vec!["origin", "user-agent", "x-trace", "cookie"]), "[ -~]{0,30}"),
            0..4,
        ),
        client_deflate in prop::option::of(any_deflate_config()),
        server_deflate in prop::option::of(any_deflate_config()),
        trailing in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let scheme = if secure { "wss" } else { "ws" };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        let Ok(uri) = format!("{scheme}://{host}{port}{path}{query}").parse::<http::Uri>() else {
            return Ok(());
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in &extra {
            if let Ok(value) = http::HeaderValue::from_str(value.trim()) {
                headers.append(*name, value);
            }
        }
        let (client, mut request) = ClientHandshake::new(&uri, &offered, &headers, client_deflate.as_ref())
            .map_err(|e| TestCaseError::fail(format!("client refused {uri}: {e}")))?;
        let head_len = request.len();
        request.extend_from_slice(&trailing);
        let (req, len) = parse_request(&request, 16 * 1024)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?
            .expect("complete head");
        prop_assert_eq!(len, head_len);
        let upgrade = validate_request(&req).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&upgrade.protocols, &offered);
        let accepted = accept(&upgrade, &supported, server_deflate.as_ref())
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let want_protocol = offered.iter().find(|p| supported.contains(p)).cloned();
        prop_assert_eq!(&accepted.protocol, &want_protocol);
        prop_assert_eq!(accepted.deflate.is_some(), client_deflate.is_some() && server_deflate.is_some());

        let mut response = Vec::new();
        write_response(&accepted.response, b"", &mut response);
        let head_len = response.len();
        response.extend_from_slice(&trailing);
        let (resp, len) = client
            .parse_response(&response, 16 * 1024)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?
            .expect("complete head");
        prop_assert_eq!(len, head_len);
        let negotiated = client
            .validate_response(&resp)
            .map_err(|e| TestCaseError::fail(format!("client refused the answer: {e}")))?;
        prop_assert_eq!(negotiated.protocol, want_protocol);
        prop_assert_eq!(negotiated.deflate, accepted.deflate);
    }
}

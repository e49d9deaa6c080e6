//! A client and a server `Connection` driven by an arbitrary sequence of
//! operations (sends of every kind, partial deliveries in either direction,
//! polls, timeouts), checked against a model of what each side must receive.
//! The shape follows quinn's `fuzz/fuzz_targets/streams.rs`.
//!
//! Every byte on the wire comes from the connections themselves, so no poll
//! may ever fail: each message arrives exactly as sent, in order, pongs and
//! close echoes included, whatever the interleaving and however the bytes
//! are cut, with or without permessage-deflate.

#![no_main]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::{Buf, Bytes};
use libfuzzer_sys::fuzz_target;
use sockeye_proto::connection::CloseCause;
use sockeye_proto::extension::{DeflateConfig, PerMessageDeflate};
use sockeye_proto::{CloseCode, CloseFrame, Config, Connection, Message, OpCode, Role, State};

#[derive(Arbitrary, Debug)]
struct Input {
    deflate: Option<(Deflate, Deflate)>,
    zero_copy_threshold: u16,
    close_timeout_ms: u16,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Deflate {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: u8,
    client_max_window_bits: u8,
    level: u8,
    threshold: u8,
}

impl Deflate {
    fn config(&self) -> DeflateConfig {
        DeflateConfig {
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
            server_max_window_bits: self.server_max_window_bits,
            client_max_window_bits: self.client_max_window_bits,
            level: u32::from(self.level),
            threshold: usize::from(self.threshold),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum FragOp {
    Text,
    Binary,
    Continuation,
}

#[derive(Arbitrary, Debug)]
enum Op {
    SendText(Side, String),
    SendBinary(Side, Vec<u8>),
    /// A payload of up to 64 KiB, more or less compressible.
    SendLarge {
        side: Side,
        len: u16,
        seed: u8,
        text: bool,
    },
    SendPing(Side, Vec<u8>),
    SendPong(Side, Vec<u8>),
    /// One fragment; text fragments may end inside a character (`split`
    /// bytes are held back for the next fragment).
    SendFragment {
        side: Side,
        opcode: FragOp,
        text: String,
        data: Vec<u8>,
        split: u8,
        fin: bool,
    },
    SendClose {
        side: Side,
        code: Option<u16>,
        reason: String,
    },
    /// Moves up to `max` queued bytes (0: all) from `from` to its peer.
    Deliver {
        from: Side,
        max: u16,
    },
    Poll(Side),
    HandleTimeout {
        side: Side,
        after_ms: u16,
    },
    ShrinkIdle(Side),
}

/// A fragmented message being sent.
#[derive(Debug, Default)]
struct Frag {
    text: bool,
    /// Everything sent so far, plus `tail`.
    bytes: Vec<u8>,
    /// Text bytes held back so that a fragment may end mid-character.
    tail: Vec<u8>,
}

struct Peer {
    conn: Connection,
    /// What this side must receive next, in the order the other side queued it.
    expect: VecDeque<Message>,
    frag: Option<Frag>,
    /// Gave up on the close handshake: no longer receives anything.
    timed_out: bool,
}

impl Peer {
    fn new(conn: Connection) -> Self {
        Peer {
            conn,
            expect: VecDeque::new(),
            frag: None,
            timed_out: false,
        }
    }
}

fn large(len: u16, seed: u8, text: bool) -> Bytes {
    let len = usize::from(len);
    let mut out = Vec::with_capacity(len + 4);
    let mut x = u32::from(seed) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if text {
            let words: [&str; 5] = ["sockeye ", "é", "{\"k\":1}", "€", "😀"];
            out.extend_from_slice(words[(x % 5) as usize].as_bytes());
        } else if seed & 1 == 0 {
            out.push((x % 7) as u8);
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    if !text {
        out.truncate(len);
    }
    Bytes::from(out)
}

struct World {
    client: Peer,
    server: Peer,
    now: Instant,
}

impl World {
    fn pair(&mut self, side: Side) -> (&mut Peer, &mut Peer) {
        match side {
            Side::Client => (&mut self.client, &mut self.server),
            Side::Server => (&mut self.server, &mut self.client),
        }
    }

    fn send(&mut self, side: Side, message: Message) {
        let now = self.now;
        let (me, other) = self.pair(side);
        let open = me.conn.state() == State::Open;
        let ok = match &message {
            Message::Text(_) | Message::Binary(_) => open && me.frag.is_none(),
            Message::Ping(b) | Message::Pong(b) => open && b.len() <= 125,
            Message::Close(_) => true,
        };
        let result = me.conn.send_message(message.clone(), || now);
        assert_eq!(result.is_ok(), ok, "send {message:?}: {result:?}");
        if ok && (open || !matches!(message, Message::Close(_))) {
            other.expect.push_back(message);
        }
    }

    fn send_close(&mut self, side: Side, code: Option<u16>, reason: &str) {
        let now = self.now;
        let (me, other) = self.pair(side);
        let frame = code.map(|c| CloseFrame::new(CloseCode(c), reason));
        let sendable = frame.as_ref().is_none_or(|f| f.code.is_sendable());
        let was_open = me.conn.state() == State::Open;
        let result = me.conn.send_close(frame.clone(), now);
        assert_eq!(result.is_ok(), sendable, "{result:?}");
        if sendable && was_open {
            assert_eq!(me.conn.state(), State::CloseSent);
            assert_eq!(
                me.conn.poll_timeout(),
                Some(now + me.conn.config().close_timeout)
            );
            other.expect.push_back(Message::Close(frame));
        }
    }

    fn send_fragment(
        &mut self,
        side: Side,
        opcode: FragOp,
        text: &str,
        data: &[u8],
        split: u8,
        fin: bool,
    ) {
        let (me, other) = self.pair(side);
        let open = me.conn.state() == State::Open;
        let ok = open
            && match opcode {
                FragOp::Continuation => me.frag.is_some(),
                FragOp::Text | FragOp::Binary => me.frag.is_none(),
            };
        let is_text = match (opcode, &me.frag) {
            (FragOp::Text, _) => true,
            (FragOp::Continuation, Some(f)) => f.text,
            _ => false,
        };
        // What this fragment carries: for text, the held-back tail and the
        // new string, less a few bytes held back again unless it is the last.
        let mut tail = me.frag.as_ref().map(|f| f.tail.clone()).unwrap_or_default();
        let payload = if is_text && ok {
            tail.extend_from_slice(text.as_bytes());
            let keep = if fin {
                0
            } else {
                usize::from(split % 4).min(tail.len())
            };
            let cut = tail.len() - keep;
            let payload = tail[..cut].to_vec();
            tail.drain(..cut);
            payload
        } else {
            data.to_vec()
        };
        let wire_op = match opcode {
            FragOp::Text => OpCode::Text,
            FragOp::Binary => OpCode::Binary,
            FragOp::Continuation => OpCode::Continuation,
        };
        let result = me
            .conn
            .send_fragment(wire_op, Bytes::from(payload.clone()), fin);
        assert_eq!(result.is_ok(), ok, "fragment {opcode:?}: {result:?}");
        if !ok {
            return;
        }
        let frag = me.frag.get_or_insert_with(|| Frag {
            text: is_text,
            ..Frag::default()
        });
        frag.bytes.extend_from_slice(&payload);
        frag.tail = tail;
        if fin {
            let frag = me.frag.take().expect("set above");
            assert!(frag.tail.is_empty());
            let bytes = Bytes::from(frag.bytes);
            other.expect.push_back(if frag.text {
                Message::Text(bytes.try_into().expect("whole strings were sent"))
            } else {
                Message::Binary(bytes)
            });
        }
    }

    fn deliver(&mut self, from: Side, max: u16) {
        let (me, other) = self.pair(from);
        let mut budget = if max == 0 {
            usize::MAX
        } else {
            usize::from(max)
        };
        let transmit = me.conn.transmit();
        let mut moved = Vec::new();
        while budget > 0 && transmit.has_remaining() {
            let chunk = transmit.chunk();
            assert!(!chunk.is_empty());
            let n = chunk.len().min(budget);
            moved.extend_from_slice(&chunk[..n]);
            transmit.advance(n);
            budget -= n;
        }
        other.conn.receive(&moved);
    }

    fn poll(&mut self, side: Side) {
        let (me, other) = self.pair(side);
        loop {
            let was_open = me.conn.state() == State::Open;
            let Some(result) = me.conn.poll_message() else {
                break;
            };
            let message = match result {
                Ok(message) => message,
                Err(e) => panic!("{side:?} failed on bytes its peer produced: {e}"),
            };
            let want = me.expect.pop_front();
            assert_eq!(
                Some(&message),
                want.as_ref(),
                "{side:?} received the wrong message"
            );
            match &message {
                Message::Ping(payload) if was_open => {
                    other.expect.push_back(Message::Pong(payload.clone()));
                }
                Message::Close(frame) => {
                    assert!(me.conn.is_closed());
                    assert!(matches!(
                        me.conn.close_cause(),
                        Some(CloseCause::Handshake(_))
                    ));
                    if was_open {
                        let echo = frame.as_ref().map(|f| CloseFrame::new(f.code, ""));
                        other.expect.push_back(Message::Close(echo));
                    }
                }
                _ => {}
            }
        }
    }

    fn handle_timeout(&mut self, side: Side, after_ms: u16) {
        self.now += Duration::from_millis(u64::from(after_ms));
        let now = self.now;
        let (me, _) = self.pair(side);
        let deadline = me.conn.poll_timeout();
        me.conn.handle_timeout(now);
        if deadline.is_some_and(|d| now >= d) {
            assert!(me.conn.is_closed());
            assert_eq!(me.conn.close_cause(), Some(&CloseCause::TimedOut));
            me.timed_out = true;
            me.expect.clear();
        }
        if me.timed_out {
            assert!(me.conn.poll_message().is_none());
        }
    }
}

fn connections(input: &Input) -> (Connection, Connection) {
    let mut config =
        Config::default().close_timeout(Duration::from_millis(u64::from(input.close_timeout_ms)));
    config.zero_copy_threshold = usize::from(input.zero_copy_threshold);
    let client = Connection::new(Role::Client, config.clone());
    let server = Connection::new(Role::Server, config);
    let Some((c, s)) = &input.deflate else {
        return (client, server);
    };
    let (c, s) = (c.config(), s.config());
    let offer = c.offer();
    let (on_server, answer) = s
        .negotiate_server(&[offer.as_str()])
        .expect("never fails")
        .expect("our offers always carry client_max_window_bits");
    let on_client = c.negotiate_client(&answer).expect("our own answer");
    assert_eq!(on_client, on_server, "{offer} -> {answer}");
    (
        client.with_deflate(PerMessageDeflate::new(Role::Client, &on_client, &c)),
        server.with_deflate(PerMessageDeflate::new(Role::Server, &on_server, &s)),
    )
}

fuzz_target!(|input: Input| {
    let (client, server) = connections(&input);
    let mut world = World {
        client: Peer::new(client),
        server: Peer::new(server),
        now: Instant::now(),
    };
    for op in &input.ops {
        match op {
            Op::SendText(side, text) => world.send(*side, Message::text(text.as_str())),
            Op::SendBinary(side, data) => world.send(*side, Message::binary(data.clone())),
            Op::SendLarge {
                side,
                len,
                seed,
                text,
            } => {
                let bytes = large(*len, *seed, *text);
                let message = if *text {
                    Message::Text(bytes.try_into().expect("built from strings"))
                } else {
                    Message::Binary(bytes)
                };
                world.send(*side, message);
            }
            Op::SendPing(side, data) => world.send(*side, Message::Ping(Bytes::from(data.clone()))),
            Op::SendPong(side, data) => world.send(*side, Message::Pong(Bytes::from(data.clone()))),
            Op::SendFragment {
                side,
                opcode,
                text,
                data,
                split,
                fin,
            } => world.send_fragment(*side, *opcode, text, data, *split, *fin),
            Op::SendClose { side, code, reason } => world.send_close(*side, *code, reason),
            Op::Deliver { from, max } => world.deliver(*from, *max),
            Op::Poll(side) => world.poll(*side),
            Op::HandleTimeout { side, after_ms } => world.handle_timeout(*side, *after_ms),
            Op::ShrinkIdle(side) => world.pair(*side).0.conn.shrink_idle(),
        }
    }
    // Let everything settle: each round can produce pongs and close echoes.
    for _ in 0..3 {
        for side in [Side::Client, Side::Server] {
            world.deliver(side, 0);
            world.poll(side.other());
        }
    }
    for peer in [&world.client, &world.server] {
        // A side that gave up on the close handshake receives nothing more.
        assert!(
            peer.timed_out || peer.expect.is_empty(),
            "never received: {:?}",
            peer.expect
        );
    }
});

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

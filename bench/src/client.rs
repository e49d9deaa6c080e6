//! The generator's connections: a tokio `TcpStream` and a
//! [`sockeye_proto::Connection`] driven directly, without `sockeye::WebSocket`
//! (no timers, no wakers shared between halves, no write coalescing policy):
//! the cheapest client path, so that the generator spends less CPU per
//! delivery than the server it measures.
//!
//! Receiving allocates nothing per message once warm: bytes are read into the
//! connection's own buffer, payloads are split off it as `Bytes`, and the
//! buffer is reused in place once they are dropped.

use std::io::IoSlice;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use bytes::{Buf, BytesMut};
use http::HeaderMap;
use serde::Serialize;
use sockeye_proto::handshake::ClientHandshake;
use sockeye_proto::{Config, Connection, Message, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::Error;

/// Bytes asked of the socket per read: a few dozen fan-out messages.
const READ_CHUNK: usize = 8 * 1024;

/// The largest handshake response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Where to connect: a `ws://` URL, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved address (the first the name resolves to).
    pub addr: SocketAddr,
    /// The URL, for the request line and `Host`.
    pub uri: http::Uri,
}

impl Target {
    /// Parses and resolves a `ws://HOST:PORT/PATH` URL (`wss://` is not
    /// supported: TLS would measure the TLS stack, not the server).
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => return Err(bad("wss:// is not supported; benchmark over ws://")),
            _ => return Err(bad("the URL must start with ws://")),
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| bad("the host resolves to no address"))?;
        Ok(Target { addr, uri })
    }
}

/// What the server on the other end speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The JSON pub/sub protocol of docs/PROTOCOL.md (`sockeye serve`'s
    /// `/ws`): subscribe with `{"type":"subscribe"}` and wait for the ack,
    /// publish with `{"type":"publish"}`.
    #[default]
    Sockeye,
    /// A reference broadcast server (bench/peers/ws-fanout.mjs): every
    /// message a client sends goes to every other client; nothing to
    /// subscribe to.
    Raw,
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sockeye" => Ok(Protocol::Sockeye),
            "raw" => Ok(Protocol::Raw),
            other => Err(format!(
                "unknown protocol {other:?}; expected sockeye or raw"
            )),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Sockeye => "sockeye",
            Protocol::Raw => "raw",
        })
    }
}

/// Slices handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// The most bytes of frames laid end to end in a [`Prepared`] batch.
const MAX_BATCH: usize = 64 * 1024;

/// A message encoded ahead of time as client frames (header, mask key,
/// masked payload) and sent again and again: sending costs no masking, no
/// copy and no random mask key per message. Each frame in the batch has a
/// key of its own (the keys repeat from batch to batch; a server cannot
/// tell, and a load generator has no cache-poisoning proxy to defend
/// against, which is what RFC 6455 requires fresh keys for).
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// `frames` copies of the frame, end to end.
    batch: bytes::Bytes,
    frame_len: usize,
    frames: usize,
}

impl Prepared {
    /// Up to `count` frames of `message` (as many as fit in 64 KiB, at
    /// least one).
    pub(crate) fn new(message: &Message, count: usize, config: Config) -> Result<Self, Error> {
        let mut conn = Connection::new(Role::Client, config);
        let encode = |conn: &mut Connection| -> Result<bytes::Bytes, Error> {
            match message {
                Message::Text(text) => conn.send_text(text.clone())?,
                Message::Binary(data) => conn.send_binary(data.clone())?,
                _ => {
                    return Err(Error::Config(
                        "only text or binary messages are sent".into(),
                    ))
                }
            }
            Ok(conn.take_transmit())
        };
        let first = encode(&mut conn)?;
        let frame_len = first.len();
        let frames = (MAX_BATCH / frame_len).clamp(1, count.max(1));
        if frames == 1 {
            return Ok(Prepared {
                batch: first,
                frame_len,
                frames,
            });
        }
        let mut batch = BytesMut::with_capacity(frame_len * frames);
        batch.extend_from_slice(&first);
        for _ in 1..frames {
            batch.extend_from_slice(&encode(&mut conn)?);
        }
        Ok(Prepared {
            batch: batch.freeze(),
            frame_len,
            frames,
        })
    }
}

/// One open WebSocket client connection.
#[derive(Debug)]
pub(crate) struct Client {
    tcp: TcpStream,
    conn: Connection,
    /// Bytes asked of the socket per read.
    read_chunk: usize,
    /// Whole frames waiting to be written, in order: what the core queued
    /// (pongs, close replies) and [`Prepared`] frames.
    out: std::collections::VecDeque<bytes::Bytes>,
}

impl Client {
    /// Opens TCP (Nagle off) and performs the opening handshake, with the
    /// core's default limits (16 MiB messages).
    pub(crate) async fn connect(target: &Target) -> Result<Client, Error> {
        Self::connect_with(target, Config::default(), READ_CHUNK).await
    }

    /// As [`Client::connect`], with the core's `config` and reads of
    /// `read_chunk` bytes.
    pub(crate) async fn connect_with(
        target: &Target,
        config: Config,
        read_chunk: usize,
    ) -> Result<Client, Error> {
        let mut tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|source| Error::Connect {
                addr: target.addr,
                source,
            })?;
        tcp.set_nodelay(true)?;
        let (handshake, request) = ClientHandshake::new(&target.uri, &[], &HeaderMap::new(), None)
            .map_err(sockeye_proto::Error::from)?;
        tcp.write_all(&request).await?;
        let mut buf = BytesMut::with_capacity(512);
        let (response, len) = loop {
            if let Some(parsed) = handshake
                .parse_response(&buf, MAX_HEAD)
                .map_err(sockeye_proto::Error::from)?
            {
                break parsed;
            }
            buf.reserve(512);
            if tcp.read_buf(&mut buf).await? == 0 {
                return Err(Error::Closed("during the opening handshake"));
            }
        };
        handshake
            .validate_response(&response)
            .map_err(sockeye_proto::Error::from)?;
        let mut conn = Connection::new(Role::Client, config);
        conn.receive(&buf[len..]);
        Ok(Client {
            tcp,
            conn,
            read_chunk,
            out: Default::default(),
        })
    }

    /// The next message or control frame; `Ok(None)` once the connection
    /// is closed (the close reply has been written). Pings are answered
    /// (the core queues the pong; it is written here) before they are
    /// returned. Cancel-safe: what was read stays in the connection.
    pub(crate) async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            if let Some(message) = self.conn.poll_message() {
                let message = message?;
                if matches!(message, Message::Ping(_) | Message::Close(_)) {
                    self.flush().await?;
                }
                return Ok(Some(message));
            }
            if self.conn.is_closed() {
                self.flush().await?;
                return Ok(None);
            }
            let buf = self.conn.read_buf();
            buf.reserve(self.read_chunk);
            if self.tcp.read_buf(buf).await? == 0 {
                return Err(Error::Closed("by the server without a close frame"));
            }
        }
    }

    /// Queues a text message and writes everything queued.
    pub(crate) async fn send_text(
        &mut self,
        text: impl Into<sockeye_proto::Utf8Bytes>,
    ) -> Result<(), Error> {
        self.conn.send_text(text)?;
        self.flush().await
    }

    /// Queues a binary message and writes everything queued.
    pub(crate) async fn send_binary(&mut self, data: impl Into<bytes::Bytes>) -> Result<(), Error> {
        self.conn.send_binary(data)?;
        self.flush().await
    }

    /// A message or control frame already read, if any (a ping's pong is
    /// queued by the core; [`Client::write_queued`] sends it). Never waits.
    pub(crate) fn poll_buffered(&mut self) -> Result<Option<Message>, Error> {
        Ok(self.conn.poll_message().transpose()?)
    }

    /// Bytes read and not yet parsed.
    pub(crate) fn read_buffered(&mut self) -> usize {
        self.conn.read_buf().len()
    }

    /// Whether the connection has been closed (both close frames seen).
    pub(crate) fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Queues `n` frames of `prepared` without writing them
    /// ([`Client::write_queued`] does).
    pub(crate) fn queue_prepared(&mut self, prepared: &Prepared, mut n: usize) {
        self.take_core_output();
        while n > 0 {
            let k = n.min(prepared.frames);
            self.out
                .push_back(prepared.batch.slice(..k * prepared.frame_len));
            n -= k;
        }
    }

    /// Moves what the core queued (pongs, close replies) to `out`, behind
    /// the whole frames already there.
    fn take_core_output(&mut self) {
        if !self.conn.transmit().is_empty() {
            self.out.push_back(self.conn.take_transmit());
        }
    }

    /// Reads once from the socket into the connection (waits until
    /// something arrives); [`Client::poll_buffered`] then yields it.
    pub(crate) async fn read_some(&mut self) -> Result<(), Error> {
        let buf = self.conn.read_buf();
        // Room for `read_chunk` bytes in all, not on top of what is there:
        // a large frame then grows its buffer once, not at every read.
        buf.reserve(self.read_chunk.saturating_sub(buf.len()).max(READ_CHUNK));
        if self.tcp.read_buf(buf).await? == 0 {
            return Err(Error::Closed("by the server without a close frame"));
        }
        Ok(())
    }

    /// Writes everything queued, in vectored writes, and reads whatever
    /// arrives while the socket is full: a server echoing many large
    /// messages blocks on writing to us, and would never drain our writes
    /// if we did not read.
    pub(crate) async fn write_queued(&mut self) -> Result<(), Error> {
        self.take_core_output();
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = self.out.len().min(MAX_IOVECS);
            for (slice, bytes) in slices.iter_mut().zip(&self.out) {
                *slice = IoSlice::new(bytes);
            }
            match self.tcp.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(Error::Closed("while writing")),
                Ok(mut written) => {
                    while written > 0 {
                        let front = self.out.front_mut().expect("written bytes were queued");
                        if front.len() <= written {
                            written -= front.len();
                            self.out.pop_front();
                        } else {
                            front.advance(written);
                            written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let ready = self
                        .tcp
                        .ready(Interest::READABLE | Interest::WRITABLE)
                        .await?;
                    if ready.is_readable() {
                        let buf = self.conn.read_buf();
                        buf.reserve(self.read_chunk);
                        match self.tcp.try_read_buf(buf) {
                            Ok(0) => return Err(Error::Closed("by the server while we wrote")),
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
            self.take_core_output();
        }
        Ok(())
    }

    /// Writes what the connection has queued (messages, pongs, close replies).
    async fn flush(&mut self) -> Result<(), Error> {
        let transmit = self.conn.transmit();
        while transmit.has_remaining() {
            let n = self.tcp.write(transmit.chunk()).await?;
            if n == 0 {
                return Err(Error::Closed("while writing"));
            }
            transmit.advance(n);
        }
        Ok(())
    }

    /// Makes dropping the connection reset it (`SO_LINGER` 0), so that
    /// thousands of benchmark sockets do not wait out TIME_WAIT.
    pub(crate) fn abort_on_drop(&self) {
        let _ = self.tcp.set_zero_linger();
    }
}

/// Waits for the first data message, answering pings on the way.
pub(crate) async fn recv_data(client: &mut Client) -> Result<Message, Error> {
    loop {
        match client.recv().await? {
            Some(m @ (Message::Text(_) | Message::Binary(_))) => return Ok(m),
            Some(Message::Ping(_) | Message::Pong(_)) => continue,
            Some(Message::Close(_)) | None => {
                return Err(Error::Closed("by the server with a close frame"))
            }
        }
    }
}

/// The sockeye protocol's setup for a subscriber: reads `welcome`, sends
/// `subscribe` to `topic`, and waits for its `ack` (messages of the topic
/// may follow it at once, and are left in the connection).
pub(crate) async fn subscribe(client: &mut Client, topic: &str) -> Result<(), Error> {
    expect(client, "welcome").await?;
    let request = serde_json::json!({"type": "subscribe", "id": 1, "topic": topic}).to_string();
    client.send_text(request).await?;
    expect(client, "ack").await
}

/// Reads data messages until one of `"type": kind`; an `error` ends it.
pub(crate) async fn expect(client: &mut Client, kind: &str) -> Result<(), Error> {
    loop {
        let message = recv_data(client).await?;
        let value: serde_json::Value =
            serde_json::from_slice(&message.into_payload()).unwrap_or_default();
        match value.get("type").and_then(|t| t.as_str()) {
            Some(t) if t == kind => return Ok(()),
            Some("error") => return Err(Error::Server(value.to_string())),
            _ => continue,
        }
    }
}

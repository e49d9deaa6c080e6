//! [`Observer`]: what the proxy lets an inspector see, and nothing it lets
//! one decide.
//!
//! ```text
//!   request ──on_request──► (forwarded) ──on_response──►
//!   upgrade ──on_upgrade──► frames ──on_frame (each direction)──► on_close
//!   anything failing ──on_error──►
//! ```
//!
//! Every callback has a no-op default and runs on the proxy's task, so it
//! must be quick (push into a bounded channel, bump a counter). Frames are
//! reported only to an observer whose [`Observer::wants_frames`] says so,
//! and payload previews are cut only as long as [`Observer::wants_previews`]
//! asks: with the default [`NoopObserver`] the relay makes no call per frame
//! and copies nothing.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode, Uri};
use sockeye_proto::{CloseCode, OpCode};

use crate::Error;

/// A number for a request, and for the WebSocket connection its upgrade
/// started: unique within one proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the backend.
    ClientToBackend,
    /// From the backend to the client.
    BackendToClient,
}

impl Direction {
    /// `"client_to_backend"` or `"backend_to_client"` (a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToBackend => "client_to_backend",
            Direction::BackendToClient => "backend_to_client",
        }
    }

    /// The side the frames come from.
    pub fn source(self) -> Initiator {
        match self {
            Direction::ClientToBackend => Initiator::Client,
            Direction::BackendToClient => Initiator::Backend,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::ClientToBackend => "client->backend",
            Direction::BackendToClient => "backend->client",
        })
    }
}

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// The client sent the first close frame, or vanished.
    Client,
    /// The backend sent the first close frame, or vanished.
    Backend,
    /// The proxy itself: idle timeout, shutdown, a framing error.
    Proxy,
}

impl Initiator {
    /// `"client"`, `"backend"` or `"proxy"` (a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::Backend => "backend",
            Initiator::Proxy => "proxy",
        }
    }
}

/// A request as it arrived from the client.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeta<'a> {
    /// The request's number (the connection's, if it upgrades).
    pub id: ConnId,
    /// The client's address.
    pub remote: SocketAddr,
    /// The method.
    pub method: &'a Method,
    /// The request target, as the client sent it.
    pub uri: &'a Uri,
    /// The client's headers (before the proxy adds `X-Forwarded-For`).
    pub headers: &'a HeaderMap,
    /// The backend chosen for it (`ws://host:port/path`), if any.
    pub backend: Option<&'a str>,
}

/// Who produced a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseSource {
    /// Relayed from the backend.
    Backend,
    /// Made by the proxy (a refusal, 502, `/metrics`).
    Proxy,
}

/// A response as it goes back to the client.
#[derive(Debug, Clone, Copy)]
pub struct ResponseMeta<'a> {
    /// The request's number.
    pub id: ConnId,
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// Who made it.
    pub source: ResponseSource,
    /// From the request's arrival to the response head.
    pub elapsed: Duration,
}

/// Which body a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodySide {
    /// The client's request body, on its way to the backend.
    Request,
    /// The backend's response body, on its way to the client.
    Response,
}

/// What the relay knows about a frame: its header, never its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// The opcode.
    pub opcode: OpCode,
    /// Final fragment.
    pub fin: bool,
    /// RSV1 (compressed, under permessage-deflate).
    pub rsv1: bool,
    /// Whether the payload is masked on the wire (client frames are).
    pub masked: bool,
    /// The payload length announced by the header.
    pub payload_len: u64,
}

/// How a spliced connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The code of the first close frame; 1005 when it carried none, 1006
    /// when no close frame passed at all.
    pub code: CloseCode,
    /// Its reason.
    pub reason: String,
    /// Who started the close.
    pub initiator: Initiator,
}

/// Hooks into the proxy's work: what an inspector sees, and nothing it
/// decides.
///
/// ```text
///   request ──on_request──► (forwarded) ──on_response──►
///   upgrade ──on_upgrade──► frames ──on_frame (each direction)──► on_close
///   anything failing ──on_error──►
/// ```
///
/// Every callback has a no-op default and runs on the proxy's task, so it
/// must be quick (push into a bounded channel, bump a counter). Frames are
/// reported only when [`Observer::wants_frames`] says so, and payload
/// previews are cut only as long as [`Observer::wants_previews`] asks: with
/// the default [`NoopObserver`] the relay makes no call per frame and
/// copies nothing.
pub trait Observer: Send + Sync + 'static {
    /// A request arrived and a backend was chosen (or none was).
    fn on_request(&self, request: &RequestMeta<'_>) {
        let _ = request;
    }

    /// A response head goes back to the client.
    fn on_response(&self, request: &RequestMeta<'_>, response: &ResponseMeta<'_>) {
        let _ = (request, response);
    }

    /// The backend accepted an upgrade: frames follow under `conn`.
    fn on_upgrade(&self, conn: ConnId, request: &RequestMeta<'_>, response: &ResponseMeta<'_>) {
        let _ = (conn, request, response);
    }

    /// How many bytes of each plain HTTP body (request and response) to
    /// show [`Observer::on_body`]; asked once per body. Default 0: bodies
    /// stream through untouched and neither body callback is made.
    fn wants_bodies(&self) -> usize {
        0
    }

    /// A chunk of the body `side` of request `id` passed: its bytes, cut
    /// so that all calls together show at most [`Observer::wants_bodies`].
    fn on_body(&self, id: ConnId, side: BodySide, chunk: &[u8]) {
        let _ = (id, side, chunk);
    }

    /// The body `side` of request `id` ended after `total` bytes:
    /// `complete` when it ended normally, false when it broke off.
    fn on_body_end(&self, id: ConnId, side: BodySide, total: u64, complete: bool) {
        let _ = (id, side, total, complete);
    }

    /// Whether [`Observer::on_frame`] should be called at all; asked once
    /// per connection. Default false.
    fn wants_frames(&self) -> bool {
        false
    }

    /// How many payload bytes of each frame to show [`Observer::on_frame`],
    /// unmasked; asked once per connection. Default 0.
    fn wants_previews(&self) -> usize {
        0
    }

    /// A frame passed, in `direction`. Called once per frame, as soon as
    /// the header and the preview (the first [`Observer::wants_previews`]
    /// bytes, fewer if the frame is shorter) have been relayed. The proxy's
    /// own keepalive pings and the pongs answering them are not reported.
    fn on_frame(&self, conn: ConnId, direction: Direction, frame: &FrameInfo, preview: &[u8]) {
        let _ = (conn, direction, frame, preview);
    }

    /// A spliced connection ended.
    fn on_close(&self, conn: ConnId, close: &CloseInfo) {
        let _ = (conn, close);
    }

    /// Something failed: a backend unreachable (`conn` is the request's
    /// number), a peer breaking the framing rules.
    fn on_error(&self, conn: ConnId, error: &Error) {
        let _ = (conn, error);
    }
}

/// The observer that observes nothing: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {}

//! [`EventLoop`]: one thread's listener, connections and handler.
//!
//! Sockets are registered once, edge-triggered, for reading and writing. A
//! readable socket is read until it is drained, each read handed to its
//! `Connection` and the messages to the handler; what the handler sent is
//! written before the next read. When a connection has nothing in flight
//! its read and write buffers go back to the loop for the next connection.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use sockeye_proto::connection::CloseCause;
use sockeye_proto::extension::PerMessageDeflate;
use sockeye_proto::handshake;
use sockeye_proto::{CloseCode, Connection, Message, Role, State};
use tracing::{debug, warn};

use crate::socket::{ConnId, Handler, Socket};
use crate::Config;

pub(crate) const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
/// Connection `key` has token `FIRST + key`.
const FIRST: usize = 2;

/// Spare buffers larger than this are freed rather than kept, so one big
/// message does not leave a big buffer behind.
const KEEP_CAPACITY: usize = 64 * 1024;
/// The longest timeout honoured (a longer one would overflow `Instant`).
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a refused connection is drained before it is closed.
const LINGER: Duration = Duration::from_secs(1);
/// Reads one connection gets before the others have their turn; a socket
/// not yet drained then waits in the loop's queue (no new edge will come
/// for it). Without this, a peer that keeps its socket full would keep the
/// loop to itself.
const READS_PER_TURN: usize = 4;

struct Slot {
    stream: TcpStream,
    phase: Phase,
}

// Open is the large variant and the common one: boxing it would add an
// allocation (and its overhead) to every connection the slab holds inline.
#[allow(clippy::large_enum_variant)]
enum Phase {
    /// Waiting for the opening request; `head` holds what came so far.
    Handshake { head: Vec<u8>, deadline: Instant },
    /// Refused: the response is written and our side shut; what the peer
    /// still sends is read and dropped until it closes or the deadline
    /// passes. Closing with unread bytes would send a reset, which can make
    /// the peer's system drop the response before it is read.
    Lingering { deadline: Instant },
    Open {
        conn: Connection,
        /// Reading stopped because too much waits to be written.
        paused: bool,
        /// When to stop waiting for the peer: for its answer to our close,
        /// or to take the last bytes of a closed connection.
        give_up: Option<Instant>,
    },
}

/// What an event says about a socket.
#[derive(Clone, Copy)]
struct Ready {
    read: bool,
    write: bool,
    /// Read until the socket says it is empty: the peer's end of stream may
    /// be queued behind the data, and no further edge would announce it.
    /// Otherwise a short read is taken to mean the socket is drained.
    drain: bool,
}

/// What became of a connection after an event.
enum Outcome {
    Keep,
    /// The peer went away before the handshake finished: drop it.
    Gone,
    /// A refusal was written: linger, then drop it.
    Refused,
    /// An open connection ended; the handler hears the code and reason.
    Ended(CloseCode, String),
}

pub(crate) struct EventLoop<H> {
    poll: Poll,
    listener: TcpListener,
    config: Arc<Config>,
    stop: Arc<AtomicBool>,
    handler: H,
    slots: Slab<Slot>,
    /// Deadlines (handshake, close) by connection; an entry whose
    /// connection has moved on is skipped when it comes due.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Every read lands here first.
    input: Box<[u8]>,
    /// Connections whose socket may hold more than their turn read, and
    /// the queue being worked through.
    more: Vec<usize>,
    turn: Vec<usize>,
    /// When to call `accept` again after it failed for want of resources.
    accept_again: Option<Instant>,
    /// The loop's buffers, lent to a connection while it has bytes in flight.
    spare_read: BytesMut,
    spare_write: BytesMut,
}

impl<H: Handler> EventLoop<H> {
    pub(crate) fn new(
        poll: Poll,
        mut listener: TcpListener,
        config: Arc<Config>,
        stop: Arc<AtomicBool>,
        handler: H,
    ) -> io::Result<Self> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        // Reserved, not touched: pages become resident as connections arrive.
        let slots = Slab::with_capacity(config.max_connections.min(1 << 16));
        let input = vec![0; config.read_size.max(1024)].into_boxed_slice();
        Ok(EventLoop {
            poll,
            listener,
            config,
            stop,
            handler,
            slots,
            timers: BinaryHeap::new(),
            input,
            more: Vec::new(),
            turn: Vec::new(),
            accept_again: None,
            spare_read: BytesMut::new(),
            spare_write: BytesMut::new(),
        })
    }

    /// Serves until the stop flag is set.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if self.stop.load(Ordering::Acquire) {
                self.shut_down();
                return Ok(());
            }
            let timeout = if self.more.is_empty() {
                let next = self.timers.peek().map(|Reverse((at, _))| *at);
                next.into_iter()
                    .chain(self.accept_again)
                    .min()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    LISTENER => self.accept(),
                    Token(token) => {
                        let drain = event.is_read_closed() || event.is_error();
                        let ready = Ready {
                            read: event.is_readable() || drain,
                            write: event.is_writable(),
                            drain,
                        };
                        self.ready(token - FIRST, ready);
                    }
                }
            }
            // Connections left with unread bytes, after everyone else.
            std::mem::swap(&mut self.more, &mut self.turn);
            let more = Ready {
                read: true,
                write: false,
                drain: true,
            };
            for i in 0..self.turn.len() {
                // A connection that ended meanwhile is gone, or its key
                // now belongs to a new one, for which a read is harmless.
                self.ready(self.turn[i], more);
            }
            self.turn.clear();
            if self.accept_again.is_some_and(|at| at <= Instant::now()) {
                self.accept_again = None;
                self.accept();
            }
            if !self.timers.is_empty() {
                self.fire_timers(Instant::now());
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Out of descriptors or memory: the connections held are
                // unaffected; those queued are accepted in a moment (their
                // edge has passed, so a timer brings the retry).
                Err(e) if matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) => {
                    warn!("accept failed: {e}; retrying in 100 ms");
                    self.accept_again = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
                // One connection's failure (aborted before it was accepted,
                // and the like): the next may be fine.
                Err(e) => debug!("accept failed: {e}"),
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream) {
        let full = self.slots.len() >= self.config.max_connections;
        // Nagle would hold small replies back for the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(FIRST + key), interest)
        {
            debug!("could not register a connection: {e}");
            return;
        }
        let deadline = Instant::now() + self.config.handshake_timeout.min(YEAR);
        entry.insert(Slot {
            stream,
            phase: Phase::Handshake {
                head: Vec::new(),
                deadline,
            },
        });
        self.timers.push(Reverse((deadline, key)));
        if full {
            let message = format!(
                "this server holds its limit of {} connections; try again later",
                self.config.max_connections
            );
            refuse(
                &self.slots[key].stream,
                StatusCode::SERVICE_UNAVAILABLE,
                &message,
            );
            self.settle(key, Outcome::Refused);
        }
    }

    fn ready(&mut self, key: usize, ready: Ready) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let outcome = match slot.phase {
            Phase::Handshake { .. } if ready.read => self.handshake(key),
            Phase::Lingering { .. } if ready.read => self.drain(key),
            Phase::Handshake { .. } | Phase::Lingering { .. } => Outcome::Keep,
            Phase::Open { .. } => self.serve(key, ready),
        };
        self.settle(key, outcome);
    }

    fn settle(&mut self, key: usize, outcome: Outcome) {
        match outcome {
            Outcome::Keep => {}
            Outcome::Gone => self.remove(key),
            Outcome::Refused => self.linger(key),
            Outcome::Ended(code, reason) => {
                self.handler.close(ConnId(key), code, &reason);
                self.linger(key);
            }
        }
    }

    /// Shuts our side and reads what the peer still sends until it closes
    /// or [`LINGER`] passes: closing with unread bytes would send a reset,
    /// which can make the peer's system drop our last bytes (a refusal, a
    /// close frame) before it reads them.
    fn linger(&mut self, key: usize) {
        let slot = &mut self.slots[key];
        if slot.stream.shutdown(std::net::Shutdown::Write).is_err() {
            self.remove(key);
            return;
        }
        let deadline = Instant::now() + LINGER;
        slot.phase = Phase::Lingering { deadline };
        self.timers.push(Reverse((deadline, key)));
        // Bytes may be waiting already, with no edge to come.
        let outcome = self.drain(key);
        self.settle(key, outcome);
    }

    fn remove(&mut self, key: usize) {
        let mut slot = self.slots.remove(key);
        // Closing the descriptor would also take it out of epoll.
        let _ = self.poll.registry().deregister(&mut slot.stream);
    }

    /// Reads and drops what a refused peer sends; gone at its end of stream.
    fn drain(&mut self, key: usize) -> Outcome {
        let stream = &self.slots[key].stream;
        for _ in 0..READS_PER_TURN {
            match (&*stream).read(&mut self.input) {
                Ok(0) => return Outcome::Gone,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Outcome::Gone,
            }
        }
        self.more.push(key);
        Outcome::Keep
    }

    /// Reads the opening request; upgrades once it is whole.
    fn handshake(&mut self, key: usize) -> Outcome {
        let limit = self.config.max_header_size;
        let slot = &mut self.slots[key];
        let Phase::Handshake { head, .. } = &mut slot.phase else {
            return Outcome::Keep;
        };
        let mut eof = false;
        while head.len() <= limit {
            match (&slot.stream).read(&mut self.input) {
                // The request may be whole before the end of stream.
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => head.extend_from_slice(&self.input[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Outcome::Gone,
            }
        }
        match handshake::parse_request(head, limit) {
            Ok(None) if eof => Outcome::Gone,
            Ok(None) => Outcome::Keep,
            Ok(Some((request, len))) => {
                let rest = head.split_off(len);
                *head = Vec::new();
                self.upgrade(key, &request, &rest)
            }
            Err(e) => {
                refuse_with(&slot.stream, &handshake::rejection(&e));
                Outcome::Refused
            }
        }
    }

    fn upgrade(&mut self, key: usize, request: &Request<()>, rest: &[u8]) -> Outcome {
        let config = &*self.config;
        let slot = &mut self.slots[key];
        let path = request.uri().path();
        if let Some(only) = config.path.as_deref().filter(|only| *only != path) {
            let message = format!("no WebSocket endpoint at {path}; this server upgrades {only}");
            refuse(&slot.stream, StatusCode::NOT_FOUND, &message);
            return Outcome::Refused;
        }
        let accepted = handshake::validate_request(request).and_then(|upgrade| {
            handshake::accept(&upgrade, &config.protocols, config.deflate.as_ref())
        });
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                refuse_with(&slot.stream, &handshake::rejection(&e));
                return Outcome::Refused;
            }
        };
        let mut head = Vec::with_capacity(256);
        handshake::write_response(&accepted.response, &[], &mut head);
        if !write_whole(&slot.stream, &head) {
            return Outcome::Gone;
        }
        let mut conn = Connection::new(Role::Server, config.websocket.clone());
        if let (Some(params), Some(deflate)) = (accepted.deflate, config.deflate.as_ref()) {
            conn = conn.with_deflate(PerMessageDeflate::new(Role::Server, &params, deflate));
        }
        conn.receive(rest);
        conn.transmit()
            .give_buffer(std::mem::take(&mut self.spare_write));
        let id = ConnId(key);
        let stream = &slot.stream;
        self.handler.open(&mut Socket {
            id,
            stream,
            conn: &mut conn,
        });
        slot.phase = Phase::Open {
            conn,
            paused: false,
            give_up: None,
        };
        // The request may have come with frames behind it, and the socket
        // may hold more than was read (up to its end of stream).
        let ready = Ready {
            read: true,
            write: true,
            drain: true,
        };
        self.serve(key, ready)
    }

    /// Writes what waits, then reads and delivers until the socket is
    /// drained; lends the loop's buffers for the while.
    fn serve(&mut self, key: usize, ready: Ready) -> Outcome {
        let backlog = self.config.max_backlog;
        let slot = &mut self.slots[key];
        let Phase::Open {
            conn,
            paused,
            give_up,
        } = &mut slot.phase
        else {
            return Outcome::Keep;
        };
        let stream = &slot.stream;
        let id = ConnId(key);
        let mut readable = ready.read;
        let mut eof = false;
        // Messages left in the read buffer: behind the handshake, or held
        // back while too much waited to be written.
        if conn.is_mid_message() {
            deliver(&mut self.handler, id, stream, conn, backlog);
        }
        if ready.write || !conn.transmit().is_empty() {
            if let Err(e) = flush(stream, conn) {
                return ended(conn, Some(e));
            }
            if *paused && conn.buffered_amount() <= backlog {
                // The readable edge was left unread while paused.
                *paused = false;
                readable = true;
            }
        }
        let mut reads = 0;
        while readable && !conn.is_closed() {
            if conn.buffered_amount() > backlog {
                *paused = true;
                break;
            }
            if reads == READS_PER_TURN {
                self.more.push(key);
                break;
            }
            reads += 1;
            match (&*stream).read(&mut self.input) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    let buf = conn.read_buf();
                    if buf.capacity() == 0 {
                        *buf = std::mem::take(&mut self.spare_read);
                    }
                    conn.receive(&self.input[..n]);
                    if conn.transmit().wants_buffer() {
                        conn.transmit()
                            .give_buffer(std::mem::take(&mut self.spare_write));
                    }
                    deliver(&mut self.handler, id, stream, conn, backlog);
                    if let Err(e) = flush(stream, conn) {
                        return ended(conn, Some(e));
                    }
                    // A short read drained the socket; the next bytes bring
                    // a new edge (unless only the end of stream is left).
                    readable = ready.drain || n == self.input.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return ended(conn, Some(e)),
            }
        }
        release(conn, &mut self.spare_read, &mut self.spare_write);
        if eof || (conn.is_closed() && conn.transmit().is_empty()) {
            return ended(conn, None);
        }
        if give_up.is_none() {
            // Waiting for the peer's close, or for it to take the last
            // bytes of a closed connection, does not last forever.
            let at = match conn.state() {
                State::CloseSent => conn.poll_timeout(),
                State::Closed => Some(Instant::now() + conn.config().close_timeout.min(YEAR)),
                State::Open => None,
            };
            if let Some(at) = at {
                self.timers.push(Reverse((at, key)));
                *give_up = Some(at);
            }
        }
        Outcome::Keep
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(slot) = self.slots.get_mut(key) else {
                continue;
            };
            let outcome = match &mut slot.phase {
                Phase::Handshake { deadline, .. } if *deadline <= now => {
                    let message = format!(
                        "the opening request did not arrive within {:?}",
                        self.config.handshake_timeout
                    );
                    refuse(&slot.stream, StatusCode::REQUEST_TIMEOUT, &message);
                    Outcome::Refused
                }
                Phase::Lingering { deadline } if *deadline <= now => Outcome::Gone,
                Phase::Open { conn, give_up, .. } if give_up.is_some_and(|at| at <= now) => {
                    conn.handle_timeout(now);
                    ended(conn, None)
                }
                _ => Outcome::Keep,
            };
            self.settle(key, outcome);
        }
    }

    /// Sends every open connection a close (1001), writes what the sockets
    /// take at once, and drops them all.
    fn shut_down(&mut self) {
        let keys: Vec<usize> = self.slots.iter().map(|(key, _)| key).collect();
        for key in keys {
            let slot = &mut self.slots[key];
            if let Phase::Open { conn, .. } = &mut slot.phase {
                let reason = "server shutting down";
                if conn.state() == State::Open {
                    let frame = sockeye_proto::CloseFrame::new(CloseCode::GOING_AWAY, reason);
                    let _ = conn.send_close(Some(frame), Instant::now());
                }
                let _ = flush(&slot.stream, conn);
                self.remove(key);
                self.handler
                    .close(ConnId(key), CloseCode::GOING_AWAY, reason);
            } else {
                self.remove(key);
            }
        }
    }
}

/// Hands the messages received so far to the handler, until more than
/// `backlog` bytes wait to be written; the rest stay in the read buffer.
fn deliver<H: Handler>(
    handler: &mut H,
    id: ConnId,
    stream: &TcpStream,
    conn: &mut Connection,
    backlog: usize,
) {
    while conn.buffered_amount() <= backlog {
        let Some(next) = conn.poll_message() else {
            return;
        };
        match next {
            // The core answered it; the connection ends once that is written.
            Ok(Message::Close(_)) => {}
            Ok(message) => handler.message(&mut Socket { id, stream, conn }, message),
            Err(e) => {
                // The core queued a close with the matching code.
                debug!(id = id.get(), "protocol error: {e}");
                return;
            }
        }
    }
}

/// Writes what is queued until the socket is full.
fn flush(stream: &TcpStream, conn: &mut Connection) -> io::Result<()> {
    let transmit = conn.transmit();
    while !transmit.is_empty() {
        let mut slices = [IoSlice::new(&[]); 64];
        let count = transmit.chunks_vectored(&mut slices);
        // One chunk goes in a plain write: `send`, which skips the VFS
        // layer that `writev` passes through.
        let written = if count == 1 {
            (&*stream).write(&slices[0])
        } else {
            (&*stream).write_vectored(&slices[..count])
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => transmit.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Gives the connection's buffers back to the loop when it has nothing in
/// flight; a few stalled bytes of a frame move to a buffer of their size.
fn release(conn: &mut Connection, spare_read: &mut BytesMut, spare_write: &mut BytesMut) {
    if let Some(buf) = conn.take_idle_read_buffer() {
        keep(spare_read, buf);
    }
    if let Some(buf) = conn.transmit().take_idle_buffer() {
        keep(spare_write, buf);
    }
}

/// Keeps the larger of the spare and `buf` (within [`KEEP_CAPACITY`]).
fn keep(spare: &mut BytesMut, buf: BytesMut) {
    if buf.capacity() > spare.capacity() && buf.capacity() <= KEEP_CAPACITY {
        *spare = buf;
    }
}

/// How an open connection ended: from its close handshake or its failure
/// (even when the socket failed after it), or from the socket (`error`, or
/// end of stream without a close).
fn ended(conn: &Connection, error: Option<io::Error>) -> Outcome {
    let cause = conn.close_cause().filter(|_| conn.is_closed());
    let (code, reason) = match (cause, error) {
        (None, Some(e)) => (CloseCode::ABNORMAL, format!("socket error: {e}")),
        (Some(CloseCause::Handshake(Some(frame))), _) => {
            (frame.code, frame.reason.as_str().to_owned())
        }
        (Some(CloseCause::Handshake(None)), _) => (CloseCode::NO_STATUS, String::new()),
        (Some(CloseCause::Failed(e)), _) => (e.close_code(), e.to_string()),
        (Some(CloseCause::TimedOut), _) => (
            CloseCode::ABNORMAL,
            "the peer did not answer our close in time".to_owned(),
        ),
        (None, None) => (
            CloseCode::ABNORMAL,
            "the connection dropped without a close frame".to_owned(),
        ),
    };
    Outcome::Ended(code, reason)
}

/// Writes a plain-text refusal with `status` and closes after it.
fn refuse(stream: &TcpStream, status: StatusCode, message: &str) {
    let mut response = Response::new(format!("{message}\n"));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    refuse_with(stream, &response);
}

fn refuse_with(stream: &TcpStream, response: &Response<String>) {
    let mut out = Vec::with_capacity(256);
    handshake::write_response(response, response.body().as_bytes(), &mut out);
    write_whole(stream, &out);
}

/// Writes `bytes` to a socket that has written nothing yet; a fresh
/// socket's send buffer takes a response head whole, so a socket that does
/// not is treated as gone.
fn write_whole(stream: &TcpStream, bytes: &[u8]) -> bool {
    let mut written = 0;
    while written < bytes.len() {
        match (&*stream).write(&bytes[written..]) {
            Ok(0) => return false,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle connection costs is its slab entry (buffers go back to
    /// the loop), so the entry is held to a budget.
    #[test]
    fn a_connection_slot_stays_small() {
        let size = std::mem::size_of::<Slot>();
        assert!(size <= 280, "a connection slot is {size} bytes");
    }
}

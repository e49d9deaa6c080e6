//! The connection state machine: one per WebSocket, for either role.
//!
//! A [`Connection`] has four kinds of methods, called in this order by an I/O
//! layer (compare quinn-proto's `Connection`):
//!
//! 1. inputs: bytes read from the socket go into [`Connection::read_buf`] (or
//!    are copied in by [`Connection::receive`]); time comes in through
//!    [`Connection::handle_timeout`];
//! 2. outputs: [`Connection::poll_message`] until it returns `None`, then the
//!    bytes of [`Connection::transmit`] go to the socket;
//!    [`Connection::poll_timeout`] says when to call `handle_timeout` next;
//! 3. commands from the application: `send_*`;
//! 4. getters: [`Connection::state`], [`Connection::buffered_amount`], ...
//!
//! Once [`Connection::is_closed`] is true and the transmit queue is empty, the
//! I/O layer closes the socket (a server at once; a client after the server
//! has closed its side, or after [`Config::close_timeout`]).

mod config;
mod message;
mod prepared;
mod recv;
mod role;
mod send;
mod transmit;

use std::time::Instant;

use bytes::BytesMut;

pub use config::{Config, DangerousConfig};
pub use message::Message;
pub use prepared::PreparedMessage;
pub use role::Role;
pub use transmit::Transmit;

use crate::error::Error;
use crate::extension::PerMessageDeflate;
use crate::frame::{CloseFrame, FrameHeader, OpCode, Utf8Validator};

/// Half-received bytes up to this many move out of a large read buffer when
/// the connection goes quiet; see [`Connection::take_idle_read_buffer`].
pub const SMALL_PARTIAL: usize = 1024;

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// The close handshake is over (or the connection failed): flush the
    /// transmit queue, then close the socket.
    Closed,
}

/// A WebSocket connection without I/O. See the [module docs](self).
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    state: State,
    /// Boxed: an idle connection without compression stays small.
    deflate: Option<Box<Compression>>,
    read: BytesMut,
    frame: Option<FrameInProgress>,
    /// Boxed: only fragmented, compressed or partly received messages use it.
    message: Option<Box<MessageInProgress>>,
    transmit: Transmit,
    /// A fragmented message we are sending: its first opcode, for checks.
    sending_fragmented: bool,
    close_deadline: Option<Instant>,
    /// Why the connection ended, once it has.
    close_reason: Option<Box<CloseCause>>,
}

/// permessage-deflate, and the buffer compressed payloads are written into
/// (kept between messages, freed by [`Connection::shrink_idle`]).
#[derive(Debug)]
struct Compression {
    deflate: PerMessageDeflate,
    out: BytesMut,
}

/// A frame whose header has been read and whose payload is arriving.
#[derive(Debug)]
struct FrameInProgress {
    header: FrameHeader,
    /// Payload bytes already consumed (the mask offset).
    consumed: u64,
}

/// A data message being assembled from one or more frames.
#[derive(Debug)]
struct MessageInProgress {
    text: bool,
    compressed: bool,
    data: BytesMut,
    utf8: Utf8Validator,
}

/// How the connection came to an end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseCause {
    /// The close handshake completed; the peer's frame, if it had a status.
    Handshake(Option<CloseFrame>),
    /// The peer broke the protocol; we sent a close with the error's code.
    Failed(Error),
    /// We sent a close and the peer did not answer within the timeout.
    TimedOut,
}

impl Connection {
    /// A new open connection (the opening handshake is already done).
    pub fn new(role: Role, config: Config) -> Self {
        Connection {
            role,
            config,
            state: State::Open,
            deflate: None,
            read: BytesMut::new(),
            frame: None,
            message: None,
            transmit: Transmit::default(),
            sending_fragmented: false,
            close_deadline: None,
            close_reason: None,
        }
    }

    /// Enables permessage-deflate as negotiated in the opening handshake.
    pub fn with_deflate(mut self, deflate: PerMessageDeflate) -> Self {
        self.deflate = Some(Box::new(Compression {
            deflate,
            out: BytesMut::new(),
        }));
        self
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The close-handshake state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the connection is over: flush [`Connection::transmit`] and close the socket.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Why the connection ended, once [`Connection::is_closed`].
    pub fn close_cause(&self) -> Option<&CloseCause> {
        self.close_reason.as_deref()
    }

    /// Whether permessage-deflate is in use.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Bytes queued for the socket and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.transmit.len()
    }

    /// The queue of bytes to write; see [`Transmit`].
    pub fn transmit(&mut self) -> &mut Transmit {
        &mut self.transmit
    }

    /// Takes every queued byte at once (tests and simple I/O layers).
    pub fn take_transmit(&mut self) -> bytes::Bytes {
        self.transmit.take_all()
    }

    /// The buffer the I/O layer reads socket bytes into, without a copy.
    /// Reserve space in it as needed; received payloads are split off it.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.read
    }

    /// How many more bytes the frame in progress needs before it can be
    /// handled; reserve at least this much in [`Connection::read_buf`]. 0
    /// when no frame is partly received.
    pub fn read_hint(&self) -> usize {
        self.frame.as_ref().map_or(0, |frame| {
            if frame.header.payload_len > recv::WAIT_WHOLE_MAX {
                return 0;
            }
            let remaining = frame.header.payload_len - frame.consumed;
            usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .saturating_sub(self.read.len())
        })
    }

    /// Copies received bytes in. Call [`Connection::poll_message`] after.
    pub fn receive(&mut self, data: &[u8]) {
        if self.state != State::Closed {
            self.read.extend_from_slice(data);
        }
    }

    /// Whether a frame or message is partly received.
    pub fn is_mid_message(&self) -> bool {
        self.frame.is_some() || self.message.is_some() || !self.read.is_empty()
    }

    /// Takes the read buffer's memory when the connection waits for input,
    /// so that it holds none; the I/O layer may lend it to another
    /// connection (it comes back empty).
    ///
    /// When nothing is buffered the whole buffer is taken. When at most
    /// [`SMALL_PARTIAL`] bytes of a frame wait in a buffer more than four
    /// times that size (a peer that sent a few bytes and stalled), they
    /// move to a buffer of their own size and the large one is taken,
    /// emptied. Otherwise the buffer stays.
    pub fn take_idle_read_buffer(&mut self) -> Option<BytesMut> {
        let read = &mut self.read;
        if read.is_empty() {
            return (read.capacity() > 0).then(|| std::mem::take(read));
        }
        if read.len() <= SMALL_PARTIAL && read.capacity() > 4 * SMALL_PARTIAL {
            let mut large = std::mem::replace(read, BytesMut::from(&read[..]));
            large.clear();
            return Some(large);
        }
        None
    }

    /// Releases buffer memory that an idle connection does not need.
    ///
    /// Call it when the connection goes quiet; the next message allocates again.
    pub fn shrink_idle(&mut self) {
        if self.read.is_empty() && self.frame.is_none() && self.message.is_none() {
            self.read = BytesMut::new();
        }
        self.transmit.shrink_idle();
        if let Some(compression) = self.deflate.as_mut() {
            compression.out = BytesMut::new();
        }
    }

    /// When [`Connection::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::CloseSent => self.close_deadline,
            _ => None,
        }
    }

    /// Tells the connection what time it is: ends a close handshake the peer
    /// did not answer in time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::CloseSent && self.close_deadline.is_some_and(|d| now >= d) {
            self.state = State::Closed;
            self.close_reason = Some(Box::new(CloseCause::TimedOut));
            self.read = BytesMut::new();
        }
    }

    /// Ends the connection because the peer broke the rules: queues a close
    /// frame with the error's code (unless one was sent) and stops reading.
    fn fail(&mut self, error: Error) -> Error {
        if self.state == State::Open {
            // `CloseFrame::new` cuts the reason to 123 bytes at a character boundary.
            let frame = CloseFrame::new(error.close_code(), &error.to_string());
            self.write_close(Some(&frame));
        }
        self.state = State::Closed;
        self.close_reason = Some(Box::new(CloseCause::Failed(error.clone())));
        self.read = BytesMut::new();
        self.frame = None;
        self.message = None;
        error
    }

    fn write_close(&mut self, frame: Option<&CloseFrame>) {
        let mut payload = BytesMut::new();
        if let Some(frame) = frame {
            frame.encode(&mut payload);
        }
        self.write_frame(
            FrameHeader::new(OpCode::Close, payload.len() as u64),
            &payload,
        );
    }
}

#[cfg(test)]
mod tests;

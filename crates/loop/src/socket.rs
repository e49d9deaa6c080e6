//! What a [`Handler`] is told and what it can do with a connection.

use std::net::SocketAddr;
use std::time::Instant;

use sockeye_proto::{CloseCode, CloseFrame, Connection, Error, Message};

/// A connection's number within its loop; reused after the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) usize);

impl ConnId {
    /// The number, for logs and maps.
    pub fn get(self) -> usize {
        self.0
    }
}

/// What the application does with connections. Each loop thread has its own
/// handler (made by the factory given to [`crate::Server::run`]), so a
/// handler needs no locks; it runs on the loop and must not block.
pub trait Handler {
    /// A connection finished its opening handshake.
    fn open(&mut self, socket: &mut Socket<'_>) {
        let _ = socket;
    }

    /// A message arrived: text, binary, or a ping or pong (the core has
    /// already answered a ping). The peer's close comes to [`Handler::close`].
    fn message(&mut self, socket: &mut Socket<'_>, message: Message);

    /// The connection ended: the close code and reason the peer sent (1005
    /// when it sent none), the code we sent when the peer broke the protocol,
    /// or 1006 when the connection dropped without a close handshake.
    fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let _ = (id, code, reason);
    }
}

/// One connection, lent to a [`Handler`] for the length of a call. What it
/// sends is written when the handler returns, together with everything else
/// sent in reply to the same read.
#[derive(Debug)]
pub struct Socket<'a> {
    pub(crate) id: ConnId,
    pub(crate) stream: &'a mio::net::TcpStream,
    pub(crate) conn: &'a mut Connection,
}

impl Socket<'_> {
    /// This connection's number in its loop.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address, if the socket could tell it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }

    /// Queues a message; fails with [`Error::Closed`] once a close was sent.
    pub fn send(&mut self, message: Message) -> Result<(), Error> {
        self.conn.send_message(message, Instant::now)
    }

    /// Starts the close handshake with `code` and `reason` (cut to 123
    /// bytes). The connection ends when the peer answers, or after the close
    /// timeout of [`crate::Config::websocket`].
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let frame = CloseFrame::new(code, reason);
        self.conn.send_close(Some(frame), Instant::now())
    }

    /// Bytes queued for this connection and not yet written to its socket.
    pub fn buffered_amount(&self) -> usize {
        self.conn.buffered_amount()
    }
}

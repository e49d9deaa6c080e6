//! [`WebSocket`]: a connection over any `AsyncRead + AsyncWrite`.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use sockeye_proto::extension::PerMessageDeflate;
use sockeye_proto::{CloseFrame, Connection, Message, Role, State};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::inner::{Half, Inner};
use crate::split::{ReadHalf, WriteHalf};
use crate::{Config, Error};

/// A WebSocket connection whose opening handshake is done.
///
/// Receive with [`WebSocket::recv`] (or as a [`Stream`]), send with
/// [`WebSocket::send`] (or as a [`Sink`]). Pings are answered and close
/// frames replied to by the connection itself; the application sees them
/// as messages. Nothing runs in the background: the connection moves when
/// it is polled.
#[derive(Debug)]
pub struct WebSocket<S> {
    pub(crate) inner: Inner<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream whose opening handshake was done elsewhere (for
    /// example by hyper's upgrade), with the negotiated compression, if any.
    pub fn from_raw(io: S, role: Role, config: Config, deflate: Option<PerMessageDeflate>) -> Self {
        let mut conn = Connection::new(role, config.protocol.clone());
        if let Some(deflate) = deflate {
            conn = conn.with_deflate(deflate);
        }
        WebSocket {
            inner: Inner::new(io, conn, &config),
        }
    }

    /// Like [`WebSocket::from_raw`], with bytes already read past the handshake.
    pub fn from_partially_read(
        io: S,
        read: &[u8],
        role: Role,
        config: Config,
        deflate: Option<PerMessageDeflate>,
    ) -> Self {
        let mut ws = Self::from_raw(io, role, config, deflate);
        ws.inner.conn.receive(read);
        ws
    }

    /// The next message; `None` once the connection is closed and the
    /// socket shut down. A protocol error is returned once (the close frame
    /// with its code has been sent); after it comes `None`.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.inner.poll_recv(cx)).await
    }

    /// Sends a message and flushes it to the socket.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message; it is written when the queue passes
    /// [`Config::write_buffer_high`], on [`WebSocket::flush`], or before
    /// [`WebSocket::recv`] waits for input. Waits while the queue is full.
    pub async fn feed(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        poll_fn(|cx| self.inner.poll_ready(cx)).await?;
        self.inner.start_send(message.into())
    }

    /// Queues a message without waiting, or gives it back in
    /// [`Error::BufferFull`] when [`Config::max_write_buffer`] bytes are queued.
    pub fn try_send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        self.inner.try_send(message.into())
    }

    /// Queues a message framed once for many connections (pub/sub fan-out):
    /// its bytes are shared, not copied. Waits while the queue is full.
    pub async fn feed_prepared(
        &mut self,
        message: &sockeye_proto::PreparedMessage,
    ) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.inner.poll_ready(cx)).await?;
        self.inner.start_send_prepared(message)
    }

    /// Queues a prepared message without waiting, as [`Sink::start_send`]
    /// does for a [`Message`]: call it once [`Sink::poll_ready`] is ready.
    pub fn start_send_prepared(
        &mut self,
        message: &sockeye_proto::PreparedMessage,
    ) -> Result<(), Error> {
        self.inner.start_send_prepared(message)
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.inner.poll_flush(cx, Half::Writer)).await
    }

    /// Closes with `frame` (default 1000) and waits for the close handshake
    /// to finish, discarding messages that arrive meanwhile, up to the close
    /// timeout; then shuts the socket down.
    ///
    /// Once the close handshake has started (either side), `frame` is not
    /// sent and this only waits for the end.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if let Some(frame) = frame.filter(|_| self.inner.conn.state() == State::Open) {
            self.inner.start_send(Message::Close(Some(frame)))?;
        }
        poll_fn(|cx| self.inner.poll_close(cx)).await
    }

    /// Frees the read and write buffers while nothing is buffered, so that a
    /// quiet connection holds no buffer memory; the next read or write
    /// allocates again. Servers call this after a connection has been idle
    /// for a moment.
    pub fn release_buffers(&mut self) {
        if !self.inner.conn.is_mid_message() && self.inner.conn.buffered_amount() == 0 {
            self.inner.conn.shrink_idle();
        }
    }

    /// Bytes queued and not yet written (the browser's `bufferedAmount`).
    pub fn buffered_amount(&self) -> usize {
        self.inner.conn.buffered_amount()
    }

    /// Where the close handshake stands.
    pub fn state(&self) -> State {
        self.inner.conn.state()
    }

    /// Whether permessage-deflate was negotiated.
    pub fn is_compressed(&self) -> bool {
        self.inner.conn.is_compressed()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner.io
    }

    /// Splits into a receiving and a sending half that can live in different
    /// tasks. They share the connection behind a lock that is held only
    /// inside a poll, never across an `.await`.
    pub fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        crate::split::split(self.inner)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_recv(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().inner.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.get_mut().inner.start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().inner.poll_flush(cx, Half::Writer)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().inner.poll_close(cx)
    }
}

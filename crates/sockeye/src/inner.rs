//! The driver shared by [`WebSocket`](crate::WebSocket) and its split halves:
//! a [`Connection`] and the socket, moved by `poll_*` functions that never
//! hold a lock across an `.await`.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};

use bytes::Buf;
use sockeye_proto::connection::CloseCause;
use sockeye_proto::{Connection, Message, Role};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::{spare, Config, Error};

#[derive(Debug)]
pub(crate) struct Inner<S> {
    pub(crate) conn: Connection,
    pub(crate) io: S,
    limits: Limits,
    timer: Option<Pin<Box<Sleep>>>,
    /// The socket's write side is shut down.
    shut_down: bool,
    /// The peer closed its side of the socket.
    eof: bool,
    /// The error that ended the connection was already reported.
    reported_end: bool,
    /// Reading or writing the socket failed; `recv` reported it and ends.
    io_failed: bool,
    /// Once split: the waker the socket gets for write readiness, which
    /// wakes both halves; see [`WriteWakers`]. A whole `WebSocket` is
    /// polled by one task at a time and passes its own waker.
    split_wakers: Option<Box<SplitWakers>>,
}

/// What the driver needs of [`Config`] once the handshake is done, in as
/// few bytes as will do: every idle connection carries it. (The close
/// timeout is the protocol config's, which the connection has already.)
#[derive(Debug, Clone, Copy)]
struct Limits {
    read_buffer_size: u32,
    write_buffer_high: u32,
    max_write_buffer: u32,
}

/// `n` as a `u32`, at most `u32::MAX` (4 GiB: beyond any buffer limit).
fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Which half of a (possibly split) connection is writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Half {
    /// `recv`: writes pongs, close replies and queued echoes on its way.
    Reader,
    /// `send`, `feed`, `flush`.
    Writer,
}

#[derive(Debug)]
struct SplitWakers {
    wakers: Arc<WriteWakers>,
    waker: Waker,
}

/// Both halves of a split connection write (the reader sends pongs and
/// close replies), but a socket keeps only the last waker given to
/// `poll_write`: each half would displace the other's and one could sleep
/// forever. So the socket is given this waker, which wakes whichever
/// halves are waiting for it to take bytes (as tokio-tungstenite's
/// `WakerProxy` does).
#[derive(Debug, Default)]
struct WriteWakers {
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
}

impl WriteWakers {
    fn register(&self, half: Half, waker: &Waker) {
        let slot = match half {
            Half::Reader => &self.reader,
            Half::Writer => &self.writer,
        };
        let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !slot.as_ref().is_some_and(|old| old.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

impl Wake for WriteWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        for slot in [&self.reader, &self.writer] {
            let waker = slot
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// The waker to give the socket when `half` writes: the task's own, or once
/// split, the one that wakes both halves.
fn write_waker<'a>(
    split: &'a Option<Box<SplitWakers>>,
    half: Half,
    cx: &'a Context<'_>,
) -> &'a Waker {
    match split {
        Some(split) => {
            split.wakers.register(half, cx.waker());
            &split.waker
        }
        None => cx.waker(),
    }
}

impl<S> Inner<S> {
    /// Called when the connection is split: from now on both halves may
    /// wait for the socket to take bytes.
    pub(crate) fn use_split_wakers(&mut self) {
        let wakers = Arc::new(WriteWakers::default());
        self.split_wakers = Some(Box::new(SplitWakers {
            waker: Waker::from(Arc::clone(&wakers)),
            wakers,
        }));
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Inner<S> {
    pub(crate) fn new(io: S, conn: Connection, config: &Config) -> Self {
        Inner {
            split_wakers: None,
            conn,
            io,
            limits: Limits {
                read_buffer_size: saturate(config.read_buffer_size),
                write_buffer_high: saturate(config.write_buffer_high),
                max_write_buffer: saturate(config.max_write_buffer),
            },
            timer: None,
            shut_down: false,
            eof: false,
            reported_end: false,
            io_failed: false,
        }
    }

    /// The next message. Writes queued bytes (echoes, pongs) before waiting
    /// for input, so replies to a burst of messages leave in one write.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, Error>>> {
        loop {
            if let Some(result) = self.conn.poll_message() {
                return Poll::Ready(Some(match result {
                    Ok(message) => Ok(message),
                    Err(error) => {
                        // Best effort: put the close frame on the wire now.
                        let _ = self.poll_write_transmit(cx, Half::Reader);
                        self.reported_end = true;
                        Err(Error::Protocol(error))
                    }
                }));
            }
            if self.conn.is_closed() {
                return match ready!(self.poll_finish(cx)) {
                    Ok(()) => Poll::Ready(None),
                    Err(e) if !self.reported_end => {
                        self.reported_end = true;
                        Poll::Ready(Some(Err(e)))
                    }
                    Err(_) => Poll::Ready(None),
                };
            }
            if self.io_failed {
                // Reported once; trying again would fail the same way.
                return Poll::Ready(None);
            }
            if !self.conn.transmit().is_empty() {
                if let Poll::Ready(Err(e)) = self.poll_flush(cx, Half::Reader) {
                    self.io_failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if self.poll_close_timer(cx) {
                continue;
            }
            if self.eof {
                if self.reported_end {
                    return Poll::Ready(None);
                }
                self.reported_end = true;
                return Poll::Ready(Some(Err(Error::AbnormalClosure)));
            }
            match ready!(self.poll_read(cx)) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => {
                    self.io_failed = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// Reads what the socket has. When it has nothing and nothing is
    /// half-received, the read buffer goes back to the thread's spare slot
    /// (see [`spare`]): a connection waiting for input holds no buffer.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let want = self.limits.read_buffer_size as usize;
        // Room for the rest of a frame in progress, so that it arrives whole
        // in one buffer (and leaves it without a copy).
        let hint = self.conn.read_hint();
        let buf = self.conn.read_buf();
        if buf.is_empty() && buf.capacity() > spare::KEEP_CAPACITY {
            *buf = bytes::BytesMut::new();
        }
        if buf.capacity() == 0 {
            *buf = spare::take_read();
        }
        buf.reserve(want.max(hint));
        // tokio-util fills the spare capacity without exposing uninitialised bytes.
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, buf) {
            Poll::Pending => {
                // Waiting: the buffer goes back to the thread (a stalled
                // peer's few bytes move to a buffer of their own size).
                if let Some(buf) = self.conn.take_idle_read_buffer() {
                    spare::put_read(buf);
                }
                Poll::Pending
            }
            ready => ready,
        }
    }

    /// Fires the close-handshake timer; true when it fired.
    fn poll_close_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.conn.poll_timeout() else {
            self.timer = None;
            return false;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            self.conn.handle_timeout(deadline.into_std());
            self.timer = None;
            return true;
        }
        false
    }

    /// Writes what is queued, without flushing the socket. `half` is woken
    /// when the socket can take more.
    fn poll_write_transmit(&mut self, cx: &mut Context<'_>, half: Half) -> Poll<Result<(), Error>> {
        if self.conn.transmit().is_empty() {
            return Poll::Ready(Ok(()));
        }
        let cx = &mut Context::from_waker(write_waker(&self.split_wakers, half, cx));
        while !self.conn.transmit().is_empty() {
            let transmit = self.conn.transmit();
            // One chunk goes in a plain write: a socket's `write` is `send`,
            // which skips the VFS layer that `writev` passes through.
            let vectored = self.io.is_write_vectored() && transmit.chunk().len() < transmit.len();
            let n = if vectored {
                let mut slices = [IoSlice::new(&[]); 64];
                let count = transmit.chunks_vectored(&mut slices);
                ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?
            } else {
                let chunk = transmit.chunk();
                ready!(Pin::new(&mut self.io).poll_write(cx, chunk))?
            };
            if n == 0 {
                return Poll::Ready(Err(
                    std::io::Error::from(std::io::ErrorKind::WriteZero).into()
                ));
            }
            self.conn.transmit().advance(n);
        }
        if let Some(buf) = self.conn.transmit().take_idle_buffer() {
            spare::put_write(buf);
        }
        Poll::Ready(Ok(()))
    }

    /// Writes everything queued and flushes the socket.
    pub(crate) fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        half: Half,
    ) -> Poll<Result<(), Error>> {
        ready!(self.poll_write_transmit(cx, half))?;
        let cx = &mut Context::from_waker(write_waker(&self.split_wakers, half, cx));
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    /// Waits until the queue is below the high-water mark, writing as needed.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while self.conn.buffered_amount() >= self.limits.write_buffer_high as usize {
            ready!(self.poll_write_transmit(cx, Half::Writer))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Hands an idle connection the thread's spare write buffer, so that
    /// what it sends is not written into a fresh allocation.
    fn lend_write_buffer(&mut self) {
        if self.conn.transmit().wants_buffer() {
            self.conn.transmit().give_buffer(spare::take_write());
        }
    }

    /// Queues a message without waiting.
    pub(crate) fn start_send(&mut self, message: Message) -> Result<(), Error> {
        if self.conn.is_closed() {
            return Err(Error::Closed);
        }
        self.lend_write_buffer();
        let now = || tokio::time::Instant::now().into_std();
        self.conn.send_message(message, now).map_err(|e| match e {
            sockeye_proto::Error::Closed => Error::Closed,
            other => Error::Protocol(other),
        })
    }

    /// Queues a prepared message (shared frame bytes) without waiting.
    pub(crate) fn start_send_prepared(
        &mut self,
        message: &sockeye_proto::PreparedMessage,
    ) -> Result<(), Error> {
        if self.conn.is_closed() {
            return Err(Error::Closed);
        }
        self.lend_write_buffer();
        self.conn.send_prepared(message).map_err(|e| match e {
            sockeye_proto::Error::Closed => Error::Closed,
            other => Error::Protocol(other),
        })
    }

    /// Queues a message unless the queue is over its limit.
    pub(crate) fn try_send(&mut self, message: Message) -> Result<(), Error> {
        let buffered = self.conn.buffered_amount();
        let limit = self.limits.max_write_buffer as usize;
        if buffered + message.len() > limit && buffered > 0 {
            return Err(Error::BufferFull {
                message: Box::new(message),
                buffered,
                limit,
            });
        }
        self.start_send(message)
    }

    /// After the close handshake: flush, then close the socket. A client
    /// waits for the server to close first (RFC 6455 section 7.1.1), up to
    /// the close timeout; not when the close timeout has already run out
    /// waiting for the server's close frame.
    pub(crate) fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if !self.shut_down {
            ready!(self.poll_flush(cx, Half::Reader))?;
            let timed_out = matches!(self.conn.close_cause(), Some(CloseCause::TimedOut));
            if self.conn.role() == Role::Client && !self.eof && !timed_out {
                ready!(self.poll_wait_eof(cx));
            }
            let waker = write_waker(&self.split_wakers, Half::Reader, cx);
            let write_cx = &mut Context::from_waker(waker);
            ready!(Pin::new(&mut self.io).poll_shutdown(write_cx))?;
            self.shut_down = true;
            self.conn.shrink_idle();
        }
        Poll::Ready(Ok(()))
    }

    /// Reads and discards until the peer closes the socket or the close timeout passes.
    fn poll_wait_eof(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let timeout = self.conn.config().close_timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_ready() {
            self.timer = None;
            return Poll::Ready(());
        }
        let mut scratch = [0u8; 512];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.eof = true;
        self.timer = None;
        Poll::Ready(())
    }

    /// Starts the close handshake if needed, then drives it to the end.
    pub(crate) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if self.conn.is_closed() {
                return self.poll_finish(cx);
            }
            if self.conn.state() == sockeye_proto::State::Open {
                let now = tokio::time::Instant::now().into_std();
                let frame = sockeye_proto::CloseFrame::new(sockeye_proto::CloseCode::NORMAL, "");
                let _ = self.conn.send_close(Some(frame), now);
            }
            match ready!(self.poll_recv(cx)) {
                // The socket failed: the handshake cannot finish.
                Some(Err(e @ Error::Io(_))) => return Poll::Ready(Err(e)),
                // Messages, and protocol errors whose close frame is queued.
                Some(_) => continue,
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;

    use bytes::Bytes;
    use sockeye_proto::{Message, Role};
    use tokio::io::DuplexStream;

    use crate::{Config, WebSocket};

    fn pair() -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let config = Config::default();
        (
            WebSocket::from_raw(a, Role::Client, config.clone(), None),
            WebSocket::from_raw(b, Role::Server, config, None),
        )
    }

    /// Polls `recv` once; true when it is waiting for input.
    async fn waits(ws: &mut WebSocket<DuplexStream>) -> bool {
        poll_fn(|cx| Poll::Ready(ws.inner.poll_recv(cx).is_pending())).await
    }

    #[tokio::test]
    async fn a_connection_waiting_for_input_holds_no_buffer() {
        let (mut client, mut server) = pair();
        client.send(Message::text("hello")).await.unwrap();
        let got = server.recv().await.unwrap().unwrap();
        assert_eq!(got, Message::text("hello"));
        server.send(got).await.unwrap();
        assert!(waits(&mut server).await);
        assert_eq!(server.inner.conn.read_buf().capacity(), 0);
        assert!(server.inner.conn.transmit().wants_buffer());
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::text("hello")
        );
    }

    #[tokio::test]
    async fn a_peer_that_stalls_mid_frame_holds_only_what_it_sent() {
        use tokio::io::AsyncWriteExt;
        let (mut peer, io) = tokio::io::duplex(1 << 20);
        let mut server = WebSocket::from_raw(io, Role::Server, Config::default(), None);
        // A masked text frame "hello", sent as its first 3 bytes, then the rest.
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | 5];
        frame.extend_from_slice(&mask);
        frame.extend(b"hello".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        peer.write_all(&frame[..3]).await.unwrap();
        assert!(waits(&mut server).await);
        let held = server.inner.conn.read_buf().capacity();
        assert!(
            held < 64,
            "a stalled 3-byte frame holds a {held}-byte buffer"
        );
        peer.write_all(&frame[3..]).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("hello")
        );
    }

    #[tokio::test]
    async fn messages_kept_by_the_application_survive_buffer_reuse() {
        // Two connections on one thread take turns with the spare buffers,
        // while the application keeps every message it received.
        let (mut client_a, mut server_a) = pair();
        let (mut client_b, mut server_b) = pair();
        let mut kept = Vec::new();
        for round in 0..50u8 {
            let payload = Bytes::from(vec![round; 100 + usize::from(round)]);
            client_a
                .send(Message::Binary(payload.clone()))
                .await
                .unwrap();
            kept.push((server_a.recv().await.unwrap().unwrap(), payload.clone()));
            assert!(waits(&mut server_a).await);
            client_b
                .send(Message::Binary(payload.clone()))
                .await
                .unwrap();
            kept.push((server_b.recv().await.unwrap().unwrap(), payload));
            assert!(waits(&mut server_b).await);
        }
        for (got, sent) in kept {
            assert_eq!(got, Message::Binary(sent));
        }
    }
}

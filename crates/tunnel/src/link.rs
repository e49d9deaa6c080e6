//! [`WsIo`]: a WebSocket as a byte stream for the multiplexer, with the
//! link's keepalive.
//!
//! ```text
//!   yamux ──poll_write──► pending (coalesced) ──flush──► one binary message
//!   yamux ◄─poll_read─── binary message payloads, in order
//!   every `keepalive` without a byte from the peer: a ping;
//!   3 × `keepalive` without one: the link is dead (TimedOut)
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use sockeye::{Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

/// Writes are gathered into one message up to this size.
const MESSAGE_SIZE: usize = 64 * 1024;

/// How many keepalive intervals without a byte from the peer make a link dead.
const DEAD_AFTER: u32 = 3;

/// A WebSocket carrying a byte stream in binary messages (`futures-io`
/// traits, as yamux wants them).
#[derive(Debug)]
pub(crate) struct WsIo<S> {
    ws: WebSocket<S>,
    read: Bytes,
    pending: BytesMut,
    keepalive: Option<Duration>,
    timer: Pin<Box<Sleep>>,
    last_heard: Instant,
    ping_due: bool,
    eof: bool,
    /// While set, a flush only gathers (see [`WsIo::batching`]).
    batching: Arc<AtomicBool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsIo<S> {
    /// Carries bytes over `ws`, pinging after `keepalive` of silence from
    /// the peer and failing reads after three times that.
    pub(crate) fn new(ws: WebSocket<S>, keepalive: Option<Duration>) -> Self {
        let now = Instant::now();
        WsIo {
            ws,
            read: Bytes::new(),
            pending: BytesMut::new(),
            keepalive,
            timer: Box::pin(tokio::time::sleep_until(
                now + keepalive.unwrap_or(Duration::from_secs(3600)),
            )),
            last_heard: now,
            ping_due: false,
            eof: false,
            batching: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A flag that, while set, makes `poll_flush` keep what was written in
    /// the gathering buffer instead of sending it. yamux flushes after
    /// every frame; its driver sets this while it works through everything
    /// ready, then clears it and polls once more, so that all the frames of
    /// one pass leave in one message and one write.
    pub(crate) fn batching(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.batching)
    }

    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(interval) = self.keepalive else {
            return Ok(());
        };
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let silent = now.saturating_duration_since(self.last_heard);
            if silent >= interval * DEAD_AFTER {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing heard from the peer for {silent:?}: the link is dead"),
                ));
            }
            if silent >= interval {
                self.ping_due = true;
            }
            let next = (self.last_heard + interval).max(now + interval / 4);
            self.timer.as_mut().reset(next);
        }
        if self.ping_due {
            if let Poll::Ready(ready) = Pin::new(&mut self.ws).poll_ready(cx) {
                ready.map_err(io::Error::other)?;
                Pin::new(&mut self.ws)
                    .start_send(Message::Ping(Bytes::from_static(b"sockeye-tunnel")))
                    .map_err(io::Error::other)?;
                self.ping_due = false;
                // Best effort: a flush that is pending completes with the
                // next write or flush.
                if let Poll::Ready(Err(e)) = Pin::new(&mut self.ws).poll_flush(cx) {
                    return Err(io::Error::other(e));
                }
            }
        }
        Ok(())
    }

    /// Sends what was gathered as one binary message.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
        let message = Message::Binary(self.pending.split().freeze());
        Pin::new(&mut self.ws)
            .start_send(message)
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> futures_io::AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.read.is_empty() {
                let n = buf.len().min(this.read.len());
                buf[..n].copy_from_slice(&this.read[..n]);
                this.read.advance(n);
                return Poll::Ready(Ok(n));
            }
            if this.eof {
                return Poll::Ready(Ok(0));
            }
            this.poll_keepalive(cx)?;
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(message)) => {
                    this.last_heard = Instant::now();
                    match message {
                        Message::Binary(data) => this.read = data,
                        Message::Close(_) => this.eof = true,
                        // Pongs and pings only prove the peer is alive; text
                        // has no meaning once the multiplexer runs.
                        Message::Ping(_) | Message::Pong(_) | Message::Text(_) => {}
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => this.eof = true,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> futures_io::AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() >= MESSAGE_SIZE {
            ready!(this.poll_send_pending(cx))?;
        }
        let n = buf.len().min(MESSAGE_SIZE - this.pending.len());
        this.pending.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.batching.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_send_pending(cx))?;
        Pin::new(&mut this.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_pending(cx))?;
        Pin::new(&mut this.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{AsyncReadExt, AsyncWriteExt};
    use sockeye::Role;

    use super::*;

    fn pair() -> (
        WebSocket<tokio::io::DuplexStream>,
        WebSocket<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let config = sockeye::Config::default();
        (
            WebSocket::from_raw(a, Role::Client, config.clone(), None),
            WebSocket::from_raw(b, Role::Server, config, None),
        )
    }

    #[tokio::test]
    async fn bytes_cross_in_binary_messages() {
        let (a, b) = pair();
        let (mut a, mut b) = (WsIo::new(a, None), WsIo::new(b, None));
        a.write_all(b"hello ").await.unwrap();
        a.write_all(b"world").await.unwrap();
        a.flush().await.unwrap();
        let mut buf = [0u8; 11];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello world");
    }

    #[tokio::test]
    async fn a_silent_peer_is_pinged_then_declared_dead() {
        let (a, b) = pair();
        let keepalive = Duration::from_millis(40);
        let mut a = WsIo::new(a, Some(keepalive));
        // A peer that answers pings keeps the link alive past 3 × keepalive.
        let mut b = WsIo::new(b, None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let answering = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            tokio::select! {
                _ = b.read(&mut buf) => {}
                _ = stopped => {}
            }
            b
        });
        let mut buf = [0u8; 16];
        let alive = tokio::time::timeout(keepalive * 6, a.read(&mut buf)).await;
        assert!(alive.is_err(), "still waiting: the pongs kept it alive");
        // A peer that stops reading (but keeps the connection): no pong,
        // and the link is declared dead.
        let _ = stop.send(());
        let _silent = answering.await.unwrap();
        let started = Instant::now();
        let dead = tokio::time::timeout(Duration::from_secs(5), a.read(&mut buf))
            .await
            .expect("declared dead in time");
        assert_eq!(dead.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() <= keepalive * 5,
            "{:?}",
            started.elapsed()
        );
    }
}

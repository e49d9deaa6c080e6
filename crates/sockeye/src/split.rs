//! The receiving and sending halves of a split [`WebSocket`](crate::WebSocket).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use sockeye_proto::{CloseFrame, Message};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::inner::{Half, Inner};
use crate::Error;

type Shared<S> = Arc<Mutex<Inner<S>>>;

pub(crate) fn split<S>(mut inner: Inner<S>) -> (ReadHalf<S>, WriteHalf<S>) {
    inner.use_split_wakers();
    let shared = Arc::new(Mutex::new(inner));
    (
        ReadHalf {
            shared: shared.clone(),
        },
        WriteHalf { shared },
    )
}

fn lock<S>(shared: &Shared<S>) -> MutexGuard<'_, Inner<S>> {
    // A panic while holding the lock cannot leave the connection half-updated
    // in a way that matters more than losing it; keep going.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The receiving half: messages in. Pongs and close replies it triggers are
/// written by whichever half polls next.
#[derive(Debug)]
pub struct ReadHalf<S> {
    shared: Shared<S>,
}

/// The sending half: messages out.
#[derive(Debug)]
pub struct WriteHalf<S> {
    shared: Shared<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ReadHalf<S> {
    /// The next message; see [`WebSocket::recv`](crate::WebSocket::recv).
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| lock(&self.shared).poll_recv(cx)).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WriteHalf<S> {
    /// Sends a message and flushes it.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message; see [`WebSocket::feed`](crate::WebSocket::feed).
    pub async fn feed(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        let message = message.into();
        poll_fn(|cx| lock(&self.shared).poll_ready(cx)).await?;
        lock(&self.shared).start_send(message)
    }

    /// Queues without waiting; see [`WebSocket::try_send`](crate::WebSocket::try_send).
    pub fn try_send(&mut self, message: impl Into<Message>) -> Result<(), Error> {
        lock(&self.shared).try_send(message.into())
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| lock(&self.shared).poll_flush(cx, Half::Writer)).await
    }

    /// Sends a close frame and flushes it. The reading half sees the peer's
    /// reply and then the end of the stream. Once the close handshake has
    /// started (either side), only flushes.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        {
            let mut inner = lock(&self.shared);
            if inner.conn.state() == sockeye_proto::State::Open {
                let frame =
                    frame.unwrap_or_else(|| CloseFrame::new(sockeye_proto::CloseCode::NORMAL, ""));
                inner.start_send(Message::Close(Some(frame)))?;
            }
        }
        self.flush().await
    }

    /// Bytes queued and not yet written.
    pub fn buffered_amount(&self) -> usize {
        lock(&self.shared).conn.buffered_amount()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for ReadHalf<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        lock(&self.shared).poll_recv(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WriteHalf<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(&self.shared).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        lock(&self.shared).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        lock(&self.shared).poll_flush(cx, Half::Writer)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut inner = lock(&self.shared);
        if inner.conn.state() == sockeye_proto::State::Open {
            let frame = CloseFrame::new(sockeye_proto::CloseCode::NORMAL, "");
            inner.start_send(Message::Close(Some(frame)))?;
        }
        inner.poll_flush(cx, Half::Writer)
    }
}

//! The multiplexer over the link: a yamux connection driven by one task,
//! and a handle that opens streams from any task.
//!
//! ```text
//!   Opener::open ──mpsc──► driver (owns yamux::Connection) ──► WsIo ──► WebSocket
//!   inbound streams ◄────── driver ──► on_inbound (the agent serves each)
//! ```

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use futures_io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

/// The largest yamux data frame: yamux's own default, 16 KiB, which bounds
/// how long one stream's frame holds up the others on a slow uplink. 64 KiB
/// (fewer frames, fewer link messages) measured no better on loopback
/// (`tunnel_bench`, three alternating runs each: 650-1326 vs 654-743 MB/s).
pub(crate) const SPLIT_SEND_SIZE: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

/// Opens outbound streams on a connection driven by [`drive`].
#[derive(Debug, Clone)]
pub(crate) struct Opener {
    requests: mpsc::Sender<Reply>,
}

impl Opener {
    /// A new stream; fails when the connection has ended.
    pub(crate) async fn open(&self) -> Result<yamux::Stream, String> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(reply)
            .await
            .map_err(|_| "the agent's link has closed".to_owned())?;
        match answer.await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(format!("the agent's link failed: {e}")),
            Err(_) => Err("the agent's link has closed".to_owned()),
        }
    }

    /// Whether the driver has stopped.
    pub(crate) fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }
}

/// The receiving end of an [`Opener`], for [`drive`].
pub(crate) type Requests = mpsc::Receiver<Reply>;

/// A handle that opens streams, and what the driver reads its requests
/// from. Requests made before the driver starts wait for it.
pub(crate) fn channel() -> (Opener, Requests) {
    let (requests, receiver) = mpsc::channel(64);
    (Opener { requests }, receiver)
}

/// Runs a yamux connection over `io` until it ends: opens the streams asked for through
/// its [`Opener`], hands every inbound stream to `on_inbound`, and moves
/// all their bytes. Returns why it ended.
///
/// Each wake-up is two passes: the first with `batching` set (the link
/// gathers every frame written instead of sending each on yamux's flush),
/// the second with it clear, which sends what was gathered in one message.
pub(crate) async fn drive<T>(
    io: T,
    batching: Arc<AtomicBool>,
    config: yamux::Config,
    mode: yamux::Mode,
    mut requests: Requests,
    mut on_inbound: impl FnMut(yamux::Stream),
) -> Result<(), yamux::ConnectionError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = yamux::Connection::new(io, config, mode);
    let mut waiting: Option<Reply> = None;
    let mut requests_open = true;
    poll_fn(|cx| {
        loop {
            if waiting.is_none() && requests_open {
                match requests.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => waiting = Some(reply),
                    Poll::Ready(None) => requests_open = false,
                    Poll::Pending => {}
                }
            }
            let Some(reply) = waiting.take() else { break };
            if reply.is_closed() {
                continue;
            }
            match connection.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    let _ = reply.send(Ok(stream));
                }
                Poll::Ready(Err(e)) => {
                    let _ = reply.send(Err(yamux::ConnectionError::Closed));
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    waiting = Some(reply);
                    break;
                }
            }
        }
        for batch in [true, false] {
            batching.store(batch, Ordering::Relaxed);
            loop {
                match connection.poll_next_inbound(cx) {
                    Poll::Ready(Some(Ok(stream))) => on_inbound(stream),
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => break,
                }
            }
        }
        Poll::Pending
    })
    .await
}

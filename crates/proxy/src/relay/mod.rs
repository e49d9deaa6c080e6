//! Splicing an upgraded client connection to an upgraded backend connection.
//!
//! ```text
//!   client socket ──read──► Pump(client→backend) ──write──► backend socket
//!   client socket ◄─write── Pump(backend→client) ◄──read─── backend socket
//!                 both pumps share ConnShared: hop clocks, the first close,
//!                 keepalive tokens, the observer
//! ```
//!
//! Each direction is a [`pump`]: it reads into one buffer, runs the bytes
//! through a [`FrameSplitter`](sockeye_proto::relay::FrameSplitter) and
//! writes them on unchanged (client frames stay masked as the client masked
//! them; the backend's stay unmasked), so frames of any size stream through
//! and a connection holds two read buffers, whatever the message size. The
//! splitter's frame boundaries are where the pump may write frames of its
//! own (a keepalive ping, a close when a peer vanished) and where it cuts
//! out the pong that answers its own ping.
//!
//! Both pumps run in one task: one wake-up serves whichever side is ready,
//! and nothing is shared across threads but a few relaxed atomics.

mod frames;
mod pump;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use sockeye::MaybeTlsStream;
use sockeye_proto::CloseCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::dial::BackendStream;
use crate::limits::Permit;
use crate::observer::{CloseInfo, ConnId, Direction, Initiator, Observer};
use crate::server::Shared;
use tokio_util::either::Either;

use pump::Pump;

/// One side of a spliced connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client = 0,
    Backend = 1,
}

/// What the two pumps of one connection share.
pub(crate) struct ConnShared<'a> {
    pub(crate) id: ConnId,
    pub(crate) proxy: &'a Shared,
    pub(crate) observer: &'a dyn Observer,
    /// Whether to call `on_frame`, and how many payload bytes to show it.
    pub(crate) frames: Option<usize>,
    start: Instant,
    /// When a relayed frame last passed either way (ms since `start`); the
    /// proxy's own keepalives do not count.
    activity: AtomicU64,
    /// When bytes last moved on each hop, either way (ms since `start`).
    hop: [AtomicU64; 2],
    /// The first four bytes of the proxy's ping payloads, per side.
    pub(crate) ping_prefix: [[u8; 4]; 2],
    /// The first close frame that passed, or the close the proxy made.
    close: Mutex<Option<CloseInfo>>,
    /// A close frame passed: the close timeout runs.
    closing: AtomicBool,
    /// The proxy is shutting down: each pump closes its destination.
    pub(crate) stop: AtomicBool,
}

impl ConnShared<'_> {
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn at_ms(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    pub(crate) fn touch_hop(&self, side: Side, now: u64) {
        self.hop[side as usize].store(now, Ordering::Relaxed);
    }

    pub(crate) fn hop_ms(&self, side: Side) -> u64 {
        self.hop[side as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn touch_activity(&self, now: u64) {
        self.activity.store(now, Ordering::Relaxed);
    }

    pub(crate) fn activity_ms(&self) -> u64 {
        self.activity.load(Ordering::Relaxed)
    }

    /// Records how the connection is closing, unless something already has.
    pub(crate) fn record_close(&self, code: CloseCode, reason: &str, initiator: Initiator) {
        let mut close = self.close.lock().unwrap_or_else(PoisonError::into_inner);
        if close.is_none() {
            *close = Some(CloseInfo {
                code,
                reason: reason.to_owned(),
                initiator,
            });
        }
        drop(close);
        self.closing.store(true, Ordering::Relaxed);
    }
}

/// Completes once `flag` is set. It registers no waker: the pumps and the
/// driver are polled together by the connection's one task, and whoever
/// sets a flag is polled in the same pass, before the future that reads it
/// (see [`run`]). A relaxed load per poll is all a quiet flag costs.
pub(crate) fn flag(flag: &AtomicBool) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |_| {
        if flag.load(Ordering::Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Relays frames between `client` and `backend` until both have closed, or
/// the close timeout has passed since the first of them did.
pub(crate) async fn splice(
    shared: Arc<Shared>,
    id: ConnId,
    client: Upgraded,
    backend: Upgraded,
    permit: Permit,
) {
    let metrics = &shared.metrics;
    metrics.opened();
    let observer = &*shared.config.observer;
    let frames = observer.wants_frames().then(|| observer.wants_previews());
    let conn = ConnShared {
        id,
        proxy: &shared,
        observer,
        frames,
        start: Instant::now(),
        activity: AtomicU64::new(0),
        hop: [AtomicU64::new(0), AtomicU64::new(0)],
        ping_prefix: [rand::random(), rand::random()],
        close: Mutex::new(None),
        closing: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    };

    // Plain TCP on both sides (the common case) relays over the sockets'
    // own halves; anything else through tokio's generic split.
    let client = client.downcast::<TokioIo<TcpStream>>();
    let backend = backend.downcast::<TokioIo<BackendStream>>();
    match (client, backend) {
        (Ok(client), Ok(backend)) => {
            let (client_pre, backend_pre) = (client.read_buf, backend.read_buf);
            let client = client.io.into_inner();
            match backend.io.into_inner() {
                Either::Left(MaybeTlsStream::Plain(backend)) => {
                    let (cr, cw) = client.into_split();
                    let (br, bw) = backend.into_split();
                    run(&conn, (cr, cw, client_pre), (br, bw, backend_pre)).await
                }
                tls => {
                    let (cr, cw) = client.into_split();
                    let (br, bw) = tokio::io::split(tls);
                    run(&conn, boxed(cr, cw, client_pre), boxed(br, bw, backend_pre)).await
                }
            }
        }
        (client, backend) => {
            // A client served by `Proxy::serve_connection` is a
            // `BackendStream` too: taking it out of hyper's upgrade skips a
            // layer per read that hands down uninitialised buffers (which
            // a futures-io stream underneath then zeroes, 32 KiB a read).
            let client = match client {
                Ok(parts) => generic(Ok(parts)),
                Err(upgraded) => match upgraded.downcast::<TokioIo<BackendStream>>() {
                    Ok(parts) => direct(parts),
                    Err(upgraded) => generic::<TokioIo<TcpStream>>(Err(upgraded)),
                },
            };
            let backend = match backend {
                Ok(parts) => direct(parts),
                Err(upgraded) => generic::<TokioIo<BackendStream>>(Err(upgraded)),
            };
            run(&conn, client, backend).await
        }
    }

    let close = conn
        .close
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .unwrap_or(CloseInfo {
            code: CloseCode::ABNORMAL,
            reason: String::new(),
            initiator: Initiator::Proxy,
        });
    debug!(%id, code = %close.code, initiator = close.initiator.as_str(), "relay ended");
    metrics.closed(close.code.0, close.initiator);
    observer.on_close(id, &close);
    drop(permit);
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

fn boxed(
    r: impl AsyncRead + Send + Unpin + 'static,
    w: impl AsyncWrite + Send + Unpin + 'static,
    pre: Bytes,
) -> (Reader, Writer, Bytes) {
    (Box::new(r), Box::new(w), pre)
}

/// A side whose stream is ours, split without hyper's layers.
fn direct(parts: hyper::upgrade::Parts<TokioIo<BackendStream>>) -> (Reader, Writer, Bytes) {
    let (r, w) = tokio::io::split(parts.io.into_inner());
    boxed(r, w, parts.read_buf)
}

/// Either side as a generic stream, when it is not the type we expected.
fn generic<T>(parts: Result<hyper::upgrade::Parts<T>, Upgraded>) -> (Reader, Writer, Bytes)
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    TokioIo<T>: AsyncRead + AsyncWrite,
{
    match parts {
        Ok(parts) => {
            let (r, w) = tokio::io::split(TokioIo::new(parts.io));
            boxed(r, w, parts.read_buf)
        }
        Err(upgraded) => {
            let (r, w) = tokio::io::split(TokioIo::new(upgraded));
            boxed(r, w, Bytes::new())
        }
    }
}

/// Runs both pumps; once one has ended (or a close frame has passed), the
/// other has the close timeout to end too.
///
/// The order of the branches matters: the pumps are polled first, so a
/// flag one of them sets (a close passed) is seen by the `closing` branch
/// in the same pass; the shutdown branch sets `stop` and loops, so the
/// pumps see it at once.
async fn run<CR, CW, BR, BW>(
    conn: &ConnShared<'_>,
    (client_read, client_write, client_pre): (CR, CW, Bytes),
    (backend_read, backend_write, backend_pre): (BR, BW, Bytes),
) where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    BR: AsyncRead + Unpin,
    BW: AsyncWrite + Unpin,
{
    let up =
        Pump::new(conn, Direction::ClientToBackend).run(client_read, backend_write, client_pre);
    let down =
        Pump::new(conn, Direction::BackendToClient).run(backend_read, client_write, backend_pre);
    tokio::pin!(up, down);
    let shutdown = conn.proxy.shutdown.cancelled();
    tokio::pin!(shutdown);
    let close_timeout = conn.proxy.config.close_timeout;
    let linger = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(linger);
    let (mut up_done, mut down_done, mut lingering, mut stopping) = (false, false, false, false);
    while !(up_done && down_done) {
        tokio::select! {
            biased;
            _ = &mut up, if !up_done => up_done = true,
            _ = &mut down, if !down_done => down_done = true,
            _ = flag(&conn.closing), if !lingering => {}
            _ = &mut shutdown, if !stopping => {
                stopping = true;
                conn.stop.store(true, Ordering::Relaxed);
                continue;
            }
            _ = &mut linger, if lingering => {
                debug!(id = %conn.id, "close timeout: dropping both connections");
                break;
            }
        }
        if !lingering {
            lingering = true;
            linger.as_mut().reset(Instant::now() + close_timeout);
        }
    }
}

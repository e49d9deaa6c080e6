//! The task that owns one connection's socket: reads messages and calls the
//! handlers, writes the queue, and enforces the endpoint's timers and limits.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{Sink, Stream};
use sockeye::WebSocket;
use sockeye_proto::{CloseCode, CloseFrame, Message};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, Instant};
use tracing::debug;

use super::{lock, Conn, Outbound};
use crate::endpoint::{EndpointShared, RateLimitAction};
use crate::ratelimit::TokenBucket;

/// A connection with no traffic for this long frees its read and write buffers.
const RELEASE_BUFFERS_AFTER: Duration = Duration::from_secs(1);

/// How a connection ended, for the close handler and the metrics.
#[derive(Debug, Clone)]
struct Ending {
    code: CloseCode,
    reason: String,
}

impl Ending {
    fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Ending {
            code,
            reason: reason.into(),
        }
    }
}

/// Runs a connection to its end; the close handler always runs.
///
/// Not an `async fn`: an async fn keeps its arguments and the locals they
/// are moved into side by side (rust-lang/rust#62958), which would hold
/// the `WebSocket` twice in every connection's task. The block below uses
/// the captured values in place.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<S>(
    mut ws: WebSocket<S>,
    conn: Conn,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        run_connection(&mut ws, &conn, &mut shutdown).await;
    }
}

async fn run_connection<S>(
    ws: &mut WebSocket<S>,
    conn: &Conn,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The await points a connection passes once (open, close, leaving its
    // topics) are boxed: the task keeps room for its largest await point
    // for its whole life, and an idle connection should pay only for
    // waiting in `drive`.
    let endpoint = Arc::clone(&conn.shared.endpoint);
    Box::pin(endpoint.handlers.open(conn.clone())).await;
    let ending = drive(ws, conn, &endpoint, shutdown).await;
    conn.shared.closing.store(true, Ordering::Relaxed);
    Box::pin(conn.leave_everything()).await;
    endpoint.metrics.connection_closed(ending.code.0);
    Box::pin(
        endpoint
            .handlers
            .close(conn.clone(), ending.code, ending.reason),
    )
    .await;
    endpoint.forget(conn.id());
}

async fn drive<S>(
    ws: &mut WebSocket<S>,
    conn: &Conn,
    endpoint: &EndpointShared,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = &endpoint.config;
    let close_limit = close_limit(endpoint);
    let started = Instant::now();
    let far = started + Duration::from_secs(86400 * 365);
    // One timer for all of the connection's deadlines, armed for the
    // nearest. Messages only count themselves: they never read the clock
    // or touch the timer wheel. A check that fires compares the counts
    // with what it saw last time.
    let idle_after = config.idle_timeout;
    let mut at = Deadlines {
        idle: idle_after.map_or(far, |after| started + idle_step(after)),
        quiet: started + RELEASE_BUFFERS_AFTER,
        ping: config.heartbeat.map_or(far, |h| started + h.interval),
        pong: far,
        auth: match &endpoint.handlers.first_message_auth {
            Some((timeout, _)) if conn.user().is_none() => started + *timeout,
            _ => far,
        },
    };
    let timer = sleep_until(at.next());
    tokio::pin!(timer);
    // Messages received, and wake-ups for queued sends.
    let mut received: u64 = 0;
    let mut woken: u64 = 0;
    // What the idle check saw last, and when it last saw a message arrive.
    let mut idle_seen = 0;
    let mut last_seen = started;
    // What the quiet check saw last.
    let mut quiet_seen = 0;
    let mut awaiting_pong = false;
    let mut authenticating = at.auth != far;
    let mut buffers_held = true;
    let mut bucket = config
        .rate_limit
        .map(|limit| TokenBucket::new(limit, std::time::Instant::now()));
    // With every shutdown sender dropped (an `App` dropped after `router()`),
    // `changed()` fails at once, every time: stop watching it then.
    let mut shutdown_gone = false;
    // Messages taken in a row without waiting; see below.
    let mut streak = 0u32;

    loop {
        // Write what handlers and publications queued; `recv` flushes it
        // before it waits, so a burst leaves in one write.
        if let Some(ending) = drain(ws, conn, shutdown).await {
            return ending;
        }
        conn.shared
            .socket_buffered
            .store(ws.buffered_amount(), Ordering::Relaxed);
        if *shutdown.borrow() {
            return close(
                ws,
                CloseCode::GOING_AWAY,
                "server shutting down",
                close_limit,
            )
            .await;
        }
        // `recv` writes what is queued while it waits for input: the count
        // publications check (`Conn::buffered_amount`) must follow what the
        // socket took, or a reader that caught up looks slow for good.
        let mut recv = |cx: &mut std::task::Context<'_>| {
            let polled = std::pin::Pin::new(&mut *ws).poll_next(cx);
            conn.shared
                .socket_buffered
                .store(ws.buffered_amount(), Ordering::Relaxed);
            polled
        };
        // A message that is already there is taken without building the
        // select below: its notifiers would each take a lock to register
        // and another to deregister. Every 64 messages in a row the select
        // runs anyway, so the timer is checked under a flood too.
        let ready = if streak < 64 {
            std::future::poll_fn(|cx| Poll::Ready(recv(cx))).await
        } else {
            Poll::Pending
        };
        let received_now = match ready {
            Poll::Ready(message) => {
                streak += 1;
                message
            }
            Poll::Pending => {
                streak = 0;
                tokio::select! {
                    biased;
                    () = &mut timer => {
                        let now = Instant::now();
                        if at.pong <= now {
                            debug!(id = conn.id(), "no pong in time; terminating");
                            return Ending::new(CloseCode::ABNORMAL, "no pong within the heartbeat timeout");
                        }
                        if at.auth <= now {
                            return close(ws, CloseCode::POLICY, "authentication timeout", close_limit).await;
                        }
                        if at.idle <= now {
                            let after = idle_after.expect("armed only with an idle timeout");
                            if received != idle_seen {
                                idle_seen = received;
                                last_seen = now;
                            } else if last_seen + after <= now {
                                return close(ws, CloseCode::GOING_AWAY, "idle timeout", close_limit).await;
                            }
                            at.idle = (now + idle_step(after)).min(last_seen + after);
                        }
                        if at.quiet <= now {
                            let activity = received + woken;
                            if activity != quiet_seen {
                                quiet_seen = activity;
                                at.quiet = now + RELEASE_BUFFERS_AFTER;
                            } else {
                                ws.release_buffers();
                                buffers_held = false;
                                at.quiet = far;
                            }
                        }
                        if at.ping <= now {
                            let heartbeat = config.heartbeat.expect("armed only with heartbeats");
                            if !awaiting_pong {
                                awaiting_pong = true;
                                at.pong = now + heartbeat.timeout;
                            }
                            at.ping = now + heartbeat.interval;
                            at.rearm(timer.as_mut());
                            let ping = Message::Ping(bytes::Bytes::from_static(b"sockeye"));
                            let _ = Box::pin(ws.feed(ping)).await;
                        }
                        at.rearm(timer.as_mut());
                        continue;
                    }
                    received = std::future::poll_fn(&mut recv) => received,
                    _ = conn.shared.notify.notified() => {
                        woken += 1;
                        if !buffers_held {
                            buffers_held = true;
                            at.quiet = Instant::now() + RELEASE_BUFFERS_AFTER;
                            at.rearm(timer.as_mut());
                        }
                        continue;
                    }
                    changed = shutdown.changed(), if !shutdown_gone => {
                        shutdown_gone = changed.is_err();
                        continue;
                    }
                }
            }
        };
        let message = match received_now {
            None => return Ending::new(CloseCode::ABNORMAL, "connection closed"),
            Some(Err(sockeye::Error::Protocol(error))) => {
                let code = error.close_code();
                let protocol_error = sockeye::Error::Protocol(error.clone());
                Box::pin(endpoint.handlers.error(conn.clone(), protocol_error)).await;
                return Ending::new(code, error.to_string());
            }
            Some(Err(error)) => {
                let ending = Ending::new(CloseCode::ABNORMAL, error.to_string());
                Box::pin(endpoint.handlers.error(conn.clone(), error)).await;
                return ending;
            }
            Some(Ok(message)) => message,
        };
        received += 1;
        if !buffers_held {
            buffers_held = true;
            at.quiet = Instant::now() + RELEASE_BUFFERS_AFTER;
            at.rearm(timer.as_mut());
        }
        match message {
            Message::Pong(_) => {
                awaiting_pong = false;
                at.pong = far;
                at.rearm(timer.as_mut());
            }
            Message::Ping(_) => {}
            Message::Close(frame) => {
                // The reply went out with the next flush; finish the socket
                // (bounded: a peer that reads nothing more would keep the
                // flush waiting).
                let _ = Box::pin(tokio::time::timeout(close_limit, async {
                    while ws.recv().await.is_some() {}
                }))
                .await;
                return match frame {
                    Some(f) => Ending::new(f.code, f.reason.as_str()),
                    None => Ending::new(CloseCode::NO_STATUS, ""),
                };
            }
            message => {
                endpoint.metrics.message_in(message.len());
                if let Some(bucket) = bucket.as_mut() {
                    if !bucket.take(message.len(), std::time::Instant::now()) {
                        match config.rate_limit.map(|l| l.action) {
                            Some(RateLimitAction::Reply) => {
                                conn.send_text(r#"{"type":"error","code":"rate_limited","message":"too many messages; this one was dropped"}"#);
                                continue;
                            }
                            _ => {
                                return close(
                                    ws,
                                    CloseCode::POLICY,
                                    "rate limit exceeded",
                                    close_limit,
                                )
                                .await
                            }
                        }
                    }
                }
                if authenticating {
                    let Some((_, check)) = &endpoint.handlers.first_message_auth else {
                        continue;
                    };
                    match check(conn.clone(), message).await {
                        Ok(user) => {
                            conn.set_user(user);
                            authenticating = false;
                            at.auth = far;
                            at.rearm(timer.as_mut());
                        }
                        Err(reason) => {
                            return close(ws, CloseCode::POLICY, &reason, close_limit).await
                        }
                    }
                    continue;
                }
                endpoint.handlers.message(conn.clone(), message).await;
            }
        }
    }
}

/// How often the idle check looks at the message count: a quarter of the
/// idle timeout, so a connection is closed between 1 and 1.25 idle
/// timeouts after its last message (uWebSockets checks every 4 s).
fn idle_step(idle_after: Duration) -> Duration {
    (idle_after / 4).max(Duration::from_millis(1))
}

/// When each of a connection's timed checks is due (`far` when off).
struct Deadlines {
    /// No message for the idle timeout: close with 1001.
    idle: Instant,
    /// A second without traffic: free the read and write buffers.
    quiet: Instant,
    /// Send the next heartbeat ping.
    ping: Instant,
    /// The ping sent was not answered in time: drop the connection.
    pong: Instant,
    /// First-message authentication did not arrive in time: close with 1008.
    auth: Instant,
}

impl Deadlines {
    fn next(&self) -> Instant {
        self.idle
            .min(self.quiet)
            .min(self.ping)
            .min(self.pong)
            .min(self.auth)
    }

    /// Points `timer` at the nearest deadline, if it moved.
    fn rearm(&self, timer: std::pin::Pin<&mut tokio::time::Sleep>) {
        let next = self.next();
        if timer.deadline() != next {
            timer.reset(next);
        }
    }
}

/// Moves the connection's queue into the socket writer.
///
/// Handing a message to the writer waits while the writer holds more than
/// its high-water mark and the socket takes nothing (a reader that stopped
/// reading). A close asked for meanwhile ([`Conn::close`], which the
/// backpressure policy uses) or a shutdown ends that wait: what is still
/// queued is dropped and the connection closes, bounded by the close
/// timeout. Without this, such a connection was never closed.
async fn drain<S>(
    ws: &mut WebSocket<S>,
    conn: &Conn,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let close_limit = close_limit(&conn.shared.endpoint);
    loop {
        let item = {
            let mut queue = lock(&conn.shared.queue);
            let item = queue.items.pop_front()?;
            queue.bytes = queue.bytes.saturating_sub(item.len());
            item
        };
        let step = match item {
            Outbound::Close(frame) => Step::Close(frame),
            item => {
                // Most items go straight into the write buffer (it writes
                // only past its high-water mark): check that without
                // holding a future, and wait, in a box of its own, only
                // when the socket is full. The task then keeps no room for
                // a write in progress while it waits for input.
                let ready =
                    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *ws).poll_ready(cx))).await;
                match ready {
                    Poll::Ready(Ok(())) => Step::Wrote(start_send(ws, conn, item)),
                    Poll::Ready(Err(error)) => Step::Wrote(Err(error)),
                    Poll::Pending => Box::pin(wait_then_send(ws, conn, shutdown, item)).await,
                }
            }
        };
        match step {
            Step::Wrote(result) => {
                conn.shared
                    .socket_buffered
                    .store(ws.buffered_amount(), Ordering::Relaxed);
                if let Err(error) = result {
                    return Some(Ending::new(CloseCode::ABNORMAL, error.to_string()));
                }
            }
            Step::Close(frame) => {
                return Some(close(ws, frame.code, frame.reason.as_str(), close_limit).await)
            }
            Step::CloseRequested => {
                let frame =
                    take_close(conn).unwrap_or_else(|| CloseFrame::new(CloseCode::NORMAL, ""));
                return Some(close(ws, frame.code, frame.reason.as_str(), close_limit).await);
            }
            Step::ShuttingDown => {
                return Some(
                    close(
                        ws,
                        CloseCode::GOING_AWAY,
                        "server shutting down",
                        close_limit,
                    )
                    .await,
                )
            }
        }
    }
}

/// What handing one queued item to the writer came to.
enum Step {
    Wrote(Result<(), sockeye::Error>),
    Close(CloseFrame),
    CloseRequested,
    ShuttingDown,
}

/// Hands a message or publication to the writer, which has room.
fn start_send<S>(ws: &mut WebSocket<S>, conn: &Conn, item: Outbound) -> Result<(), sockeye::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = &conn.shared.endpoint.metrics;
    match item {
        Outbound::Message(message) => {
            metrics.message_out(message.len());
            Pin::new(ws).start_send(message)
        }
        Outbound::Publication(publication) => match publication.prepared.get() {
            Some(prepared) => {
                metrics.message_out(prepared.len());
                ws.start_send_prepared(prepared)
            }
            None => Ok(()),
        },
        // (`drain` takes close requests before asking for room.)
        Outbound::Close(_) => Ok(()),
    }
}

/// Waits for room in the writer, then hands it `item`; a close request or
/// a shutdown ends the wait first (and `item` is dropped with the rest).
async fn wait_then_send<S>(
    ws: &mut WebSocket<S>,
    conn: &Conn,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    item: Outbound,
) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // (`drive` reads the shutdown flag itself after each drain: marking the
    // value seen here loses nothing.)
    tokio::select! {
        biased;
        ready = std::future::poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx)) => match ready {
            Ok(()) => Step::Wrote(start_send(ws, conn, item)),
            Err(error) => Step::Wrote(Err(error)),
        },
        _ = conn.shared.close_requested.notified() => Step::CloseRequested,
        // (With every sender gone, `wait_for` fails: that is no shutdown.)
        Ok(_) = shutdown.wait_for(|down| *down) => Step::ShuttingDown,
    }
}

/// Drops what is queued up to the first close request, and returns it.
fn take_close(conn: &Conn) -> Option<CloseFrame> {
    let mut queue = lock(&conn.shared.queue);
    while let Some(item) = queue.items.pop_front() {
        queue.bytes = queue.bytes.saturating_sub(item.len());
        if let Outbound::Close(frame) = item {
            return Some(frame);
        }
    }
    None
}

/// How long closing may take in all: the close timeout for the peer's
/// close frame, and a second more for the socket to take the last bytes.
fn close_limit(endpoint: &EndpointShared) -> Duration {
    endpoint.config.close_timeout + Duration::from_secs(1)
}

/// Closes with `code` and waits for the handshake (bounded by the close timeout).
///
/// The writer's own close timeout covers a peer that does not answer, but
/// not one that does not read: the close frame waits behind bytes the
/// socket does not take, and the socket is never shut down. `limit` bounds
/// that; past it the socket is dropped.
///
/// Boxed, as every await point a connection passes at most once: see `run`.
fn close<'a, S>(
    ws: &'a mut WebSocket<S>,
    code: CloseCode,
    reason: &'a str,
    limit: Duration,
) -> std::pin::Pin<Box<impl Future<Output = Ending> + 'a>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    Box::pin(close_now(ws, code, reason, limit))
}

async fn close_now<S>(
    ws: &mut WebSocket<S>,
    code: CloseCode,
    reason: &str,
    limit: Duration,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if tokio::time::timeout(limit, ws.close(Some(CloseFrame::new(code, reason))))
        .await
        .is_err()
    {
        debug!("the close handshake did not finish within {limit:?}; dropping the socket");
    }
    Ending::new(code, reason)
}

//! The task that owns one connection's socket: reads messages and calls the
//! handlers, writes the queue, and enforces the endpoint's timers and limits.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sockeye::WebSocket;
use sockeye_proto::{CloseCode, CloseFrame, Message};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, Instant};
use tracing::debug;

use super::{lock, Conn, Outbound};
use crate::endpoint::{EndpointShared, RateLimitAction};
use crate::ratelimit::TokenBucket;

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
pub(crate) async fn run<S>(
    mut ws: WebSocket<S>,
    conn: Conn,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let endpoint = Arc::clone(&conn.shared.endpoint);
    endpoint.handlers.open(conn.clone()).await;
    let ending = drive(&mut ws, &conn, &endpoint, &mut shutdown).await;
    conn.shared.closing.store(true, Ordering::Relaxed);
    conn.leave_everything().await;
    endpoint.metrics.connection_closed(ending.code.0);
    endpoint
        .handlers
        .close(conn.clone(), ending.code, ending.reason)
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
    let far = || Instant::now() + Duration::from_secs(86400 * 365);
    let idle_after = config.idle_timeout;
    let mut idle_deadline = idle_after.map_or_else(far, |t| Instant::now() + t);
    let mut ping_at = config
        .heartbeat
        .map_or_else(far, |h| Instant::now() + h.interval);
    let mut pong_deadline: Option<Instant> = None;
    let mut auth_deadline = match &endpoint.handlers.first_message_auth {
        Some((timeout, _)) if conn.user().is_none() => Some(Instant::now() + *timeout),
        _ => None,
    };
    let mut bucket = config
        .rate_limit
        .map(|limit| TokenBucket::new(limit, std::time::Instant::now()));

    loop {
        // Write what handlers and publications queued; `recv` flushes it
        // before it waits, so a burst leaves in one write.
        if let Some(ending) = drain(ws, conn).await {
            return ending;
        }
        if *shutdown.borrow() {
            return close(ws, CloseCode::GOING_AWAY, "server shutting down").await;
        }
        let pong_or_far = pong_deadline.unwrap_or_else(far);
        let auth_or_far = auth_deadline.unwrap_or_else(far);
        tokio::select! {
            received = ws.recv() => {
                let message = match received {
                    None => return Ending::new(CloseCode::ABNORMAL, "connection closed"),
                    Some(Err(sockeye::Error::Protocol(error))) => {
                        let code = error.close_code();
                        endpoint.handlers.error(conn.clone(), sockeye::Error::Protocol(error.clone())).await;
                        return Ending::new(code, error.to_string());
                    }
                    Some(Err(error)) => {
                        let ending = Ending::new(CloseCode::ABNORMAL, error.to_string());
                        endpoint.handlers.error(conn.clone(), error).await;
                        return ending;
                    }
                    Some(Ok(message)) => message,
                };
                if let Some(after) = idle_after {
                    idle_deadline = Instant::now() + after;
                }
                match message {
                    Message::Pong(_) => pong_deadline = None,
                    Message::Ping(_) => {}
                    Message::Close(frame) => {
                        // The reply went out with the next flush; finish the socket.
                        while ws.recv().await.is_some() {}
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
                                    _ => return close(ws, CloseCode::POLICY, "rate limit exceeded").await,
                                }
                            }
                        }
                        if auth_deadline.is_some() {
                            let Some((_, check)) = &endpoint.handlers.first_message_auth else { continue };
                            match check(conn.clone(), message).await {
                                Ok(user) => {
                                    conn.set_user(user);
                                    auth_deadline = None;
                                }
                                Err(reason) => return close(ws, CloseCode::POLICY, &reason).await,
                            }
                            continue;
                        }
                        endpoint.handlers.message(conn.clone(), message).await;
                    }
                }
            }
            _ = conn.shared.notify.notified() => {}
            _ = shutdown.changed() => {}
            _ = sleep_until(idle_deadline) => {
                return close(ws, CloseCode::GOING_AWAY, "idle timeout").await;
            }
            _ = sleep_until(ping_at) => {
                let heartbeat = config.heartbeat.expect("timer armed only with heartbeats");
                if pong_deadline.is_none() {
                    pong_deadline = Some(Instant::now() + heartbeat.timeout);
                }
                ping_at = Instant::now() + heartbeat.interval;
                let _ = ws.feed(Message::Ping(bytes::Bytes::from_static(b"sockeye"))).await;
            }
            _ = sleep_until(pong_or_far) => {
                debug!(id = conn.id(), "no pong in time; terminating");
                return Ending::new(CloseCode::ABNORMAL, "no pong within the heartbeat timeout");
            }
            _ = sleep_until(auth_or_far) => {
                return close(ws, CloseCode::POLICY, "authentication timeout").await;
            }
        }
    }
}

/// Moves the connection's queue into the socket writer.
async fn drain<S>(ws: &mut WebSocket<S>, conn: &Conn) -> Option<Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let item = {
            let mut queue = lock(&conn.shared.queue);
            let item = queue.items.pop_front()?;
            queue.bytes = queue.bytes.saturating_sub(item.len());
            item
        };
        let result = match item {
            Outbound::Message(message) => {
                conn.shared.endpoint.metrics.message_out(message.len());
                ws.feed(message).await
            }
            Outbound::Publication(publication) => match publication.prepared.get() {
                Some(prepared) => {
                    conn.shared.endpoint.metrics.message_out(prepared.len());
                    ws.feed_prepared(prepared).await
                }
                None => Ok(()),
            },
            Outbound::Close(frame) => {
                return Some(close(ws, frame.code, frame.reason.as_str()).await)
            }
        };
        conn.shared
            .socket_buffered
            .store(ws.buffered_amount(), Ordering::Relaxed);
        if let Err(error) = result {
            return Some(Ending::new(CloseCode::ABNORMAL, error.to_string()));
        }
    }
}

/// Closes with `code` and waits for the handshake (bounded by the close timeout).
async fn close<S>(ws: &mut WebSocket<S>, code: CloseCode, reason: &str) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = ws.close(Some(CloseFrame::new(code, reason))).await;
    Ending::new(code, reason)
}

//! [`ReconnectDriver`]: the future that connects, re-subscribes, writes the
//! queue, reads, pings, and waits out the backoff between connections.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use sockeye_proto::{CloseCode, CloseFrame, Message};
use tokio::time::{Instant, Sleep};

use super::backoff::Rng;
use super::config::{Heartbeat, ReconnectConfig};
use super::{resume, DropReason, ReconnectEvent, Shared, State};
use crate::{Error, MaybeTlsStream, WebSocket};

/// Loop turns (messages read, pings sent) in one poll before the driver
/// lets other tasks run.
const BUDGET: usize = 128;

/// The future that does the work of a [`ReconnectingClient`](super::ReconnectingClient):
/// spawn it. It finishes when the client is closed (or every handle is
/// dropped), gives up, or the server closes with a final code. Dropping it
/// drops the connection and ends the client.
pub struct ReconnectDriver {
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl ReconnectDriver {
    pub(crate) fn new(shared: Arc<Shared>, url: String, config: ReconnectConfig) -> Self {
        ReconnectDriver {
            future: Box::pin(run(shared, url, config)),
        }
    }
}

impl Future for ReconnectDriver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.future.as_mut().poll(cx)
    }
}

impl fmt::Debug for ReconnectDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectDriver").finish_non_exhaustive()
    }
}

/// How a connection ended.
#[derive(Debug)]
struct Ending {
    code: CloseCode,
    reason: String,
    /// The application closed it.
    by_user: bool,
}

async fn run(shared: Arc<Shared>, url: String, config: ReconnectConfig) {
    let _end = EndGuard(Arc::clone(&shared));
    let mut house = Housekeeping {
        shared,
        expiry: Box::pin(tokio::time::sleep_until(Instant::now())),
    };
    let mut rng = Rng::new(config.backoff.seed);
    // Reconnect attempts since the last stable connection.
    let mut failures: u32 = 0;
    loop {
        let attempt = failures;
        match house
            .until_close(crate::connect_with(&url, &config.websocket))
            .await
        {
            None => return,
            Some(Ok((ws, response))) => {
                let opened = Instant::now();
                let ending = connection(&mut house, &config, ws, attempt, response).await;
                if opened.elapsed() >= config.stable_after {
                    failures = 0;
                }
                let reconnect = !ending.by_user && config.reconnect_codes.contains(&ending.code);
                house.disconnected(ending, reconnect);
                if !reconnect {
                    return;
                }
            }
            Some(Err(error)) => {
                let give_up = is_final(&error);
                house.emit(ReconnectEvent::ConnectFailed { attempt, error });
                if give_up {
                    house.emit(ReconnectEvent::GaveUp { attempts: failures });
                    return;
                }
            }
        }
        failures = failures.saturating_add(1);
        if config
            .backoff
            .max_attempts
            .is_some_and(|max| failures > max)
        {
            house.emit(ReconnectEvent::GaveUp {
                attempts: failures - 1,
            });
            return;
        }
        let delay = config.backoff.delay(failures, rng.next_unit());
        house.emit(ReconnectEvent::Reconnecting {
            attempt: failures,
            delay,
        });
        if house.until_close(tokio::time::sleep(delay)).await.is_none() {
            return;
        }
    }
}

/// Failures that would happen again the same way: no point retrying.
fn is_final(error: &Error) -> bool {
    match error {
        Error::Url { .. } => true,
        Error::Refused { status, .. } => {
            (400..500).contains(status) && !matches!(status, 408 | 429)
        }
        _ => false,
    }
}

/// Marks the client ended however the driver stops, finishing or dropped:
/// sends fail from then on, what is still queued is reported, and the
/// events end once read.
struct EndGuard(Arc<Shared>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        let mut guard = self.0.lock();
        let state = &mut *guard;
        state.ended = true;
        state.connected = false;
        let outbox = &mut state.outbox;
        state
            .queue
            .drain(DropReason::Closed, &mut |reason, message| {
                outbox.dropped(reason, message)
            });
        outbox.end();
    }
}

/// What the driver does in every phase: notice a close request, and drop
/// queued messages whose time-to-live runs out.
struct Housekeeping {
    shared: Arc<Shared>,
    /// Fires at the queue's next expiry.
    expiry: Pin<Box<Sleep>>,
}

impl Housekeeping {
    fn emit(&self, event: ReconnectEvent) {
        self.shared.lock().outbox.push(event);
    }

    /// Runs `future` unless the application closes first (`None`).
    async fn until_close<F: Future>(&mut self, future: F) -> Option<F::Output> {
        let mut future = pin!(future);
        poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            let mut state = self.shared.lock();
            match poll_state(&mut self.expiry, cx, &mut state) {
                Some(_) => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The connection is gone: say so, then drop what was only for it.
    fn disconnected(&self, ending: Ending, reconnect: bool) {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        state.connected = false;
        state.outbox.push(ReconnectEvent::Disconnected {
            code: ending.code,
            reason: ending.reason,
            reconnect,
        });
        let outbox = &mut state.outbox;
        state
            .queue
            .disconnected(&mut |reason, message| outbox.dropped(reason, message));
    }
}

/// Registers the driver's waker, expires queued messages, and returns the
/// close the application asked for, if any.
fn poll_state(
    expiry: &mut Pin<Box<Sleep>>,
    cx: &mut Context<'_>,
    state: &mut State,
) -> Option<CloseFrame> {
    state.register_driver(cx.waker());
    while let Some(at) = state.queue.next_expiry() {
        if expiry.deadline() != at {
            expiry.as_mut().reset(at);
        }
        if expiry.as_mut().poll(cx).is_pending() {
            break;
        }
        let outbox = &mut state.outbox;
        state.queue.expire(Instant::now(), &mut |reason, message| {
            outbox.dropped(reason, message)
        });
    }
    state.close_request()
}

/// One open connection, from `Connected` to its end.
async fn connection(
    house: &mut Housekeeping,
    config: &ReconnectConfig,
    ws: WebSocket<MaybeTlsStream>,
    attempt: u32,
    response: http::Response<()>,
) -> Ending {
    let mut live = Live {
        ws,
        pinger: config.heartbeat.map(Pinger::new),
        need_flush: true,
        tracking: false,
        peer_close: None,
        error: None,
    };
    {
        let mut guard = house.shared.lock();
        let state = &mut *guard;
        state.connected = true;
        state.outbox.push(ReconnectEvent::Connected {
            attempt,
            response: Box::new(response),
        });
        // Before anything queued: the server replays what was missed first.
        for frame in state.subscriptions.resubscribe_frames() {
            if let Err(e) = live.ws.try_send(frame) {
                live.error.get_or_insert(e);
            }
        }
        live.tracking = !state.subscriptions.is_empty();
    }
    let close = match poll_fn(|cx| live.poll(cx, house)).await {
        Step::Ended(ending) => return ending,
        Step::Close(frame) => frame,
    };
    // The application closes: write what is queued, then the close handshake.
    if live.error.is_none() && live.ws.state() == sockeye_proto::State::Open {
        {
            let mut guard = house.shared.lock();
            let state = &mut *guard;
            let outbox = &mut state.outbox;
            let now = Instant::now();
            while let Some(message) = state
                .queue
                .pop(now, &mut |reason, message| outbox.dropped(reason, message))
            {
                if Pin::new(&mut live.ws).start_send(message).is_err() {
                    break;
                }
            }
        }
        // The close timeout bounds the handshake; the margin bounds a socket
        // that takes no bytes at all.
        let limit = config.websocket.protocol.close_timeout + std::time::Duration::from_secs(1);
        let _ = tokio::time::timeout(limit, live.ws.close(Some(close.clone()))).await;
    }
    Ending {
        code: close.code,
        reason: close.reason.as_str().to_string(),
        by_user: true,
    }
}

enum Step {
    /// The application asked to close, with this frame.
    Close(CloseFrame),
    Ended(Ending),
}

struct Live {
    ws: WebSocket<MaybeTlsStream>,
    pinger: Option<Pinger>,
    /// Something was written and not flushed yet.
    need_flush: bool,
    /// Some topic is subscribed: frames are parsed for positions.
    tracking: bool,
    /// The server's close frame, once it came.
    peer_close: Option<Option<CloseFrame>>,
    /// What ended the connection, if not a close frame.
    error: Option<Error>,
}

impl Live {
    fn poll(&mut self, cx: &mut Context<'_>, house: &mut Housekeeping) -> Poll<Step> {
        for _ in 0..BUDGET {
            let mut progress = false;
            let paused = {
                let mut guard = house.shared.lock();
                let state = &mut *guard;
                if let Some(frame) = poll_state(&mut house.expiry, cx, state) {
                    return Poll::Ready(Step::Close(frame));
                }
                self.tracking = !state.subscriptions.is_empty();
                state.outbox.is_full()
            };
            // While the application is behind on events, leave input in the
            // socket; reading its next event wakes the driver. A failed
            // connection is read to its end regardless.
            if !paused || self.error.is_some() {
                match Pin::new(&mut self.ws).poll_next(cx) {
                    Poll::Ready(Some(Ok(message))) => {
                        self.received(message, house);
                        progress = true;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        self.error.get_or_insert(e);
                        progress = true;
                    }
                    Poll::Ready(None) => return Poll::Ready(Step::Ended(self.ending())),
                    // A write failed and nothing more is there to read.
                    Poll::Pending if self.error.is_some() => {
                        return Poll::Ready(Step::Ended(self.ending()))
                    }
                    Poll::Pending => {}
                }
            }
            // Read before writing: a close frame already in the socket keeps
            // the queue for the next connection.
            self.write_queue(cx, &mut house.shared.lock());
            if self.need_flush && self.error.is_none() {
                match Pin::new(&mut self.ws).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.need_flush = false,
                    Poll::Ready(Err(e)) => self.error = Some(e),
                    Poll::Pending => {}
                }
            }
            if self.error.is_some() {
                // Once more round: the read above ends the connection.
                progress = true;
            }
            // After reading: a pong already in the socket counts.
            if let Some(pinger) = &mut self.pinger {
                if self.error.is_none() && self.ws.state() == sockeye_proto::State::Open {
                    match pinger.poll(cx, paused) {
                        PingStep::Send(payload) => {
                            if let Err(e) = self.ws.try_send(Message::Ping(payload)) {
                                self.error = Some(e);
                            }
                            self.need_flush = true;
                            progress = true;
                        }
                        PingStep::Dead(timeout) => {
                            return Poll::Ready(Step::Ended(Ending {
                                code: CloseCode::ABNORMAL,
                                reason: format!("no pong within {timeout:?}"),
                                by_user: false,
                            }));
                        }
                        PingStep::Wait => {}
                    }
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Out of budget: come back after the other tasks.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Hands queued messages to the connection while it takes them. Nothing
    /// is written after the server's close frame or a failure: those
    /// messages stay queued for the next connection.
    fn write_queue(&mut self, cx: &mut Context<'_>, state: &mut State) {
        if self.error.is_some() || self.ws.state() != sockeye_proto::State::Open {
            return;
        }
        while !state.queue.is_empty() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.error = Some(e);
                    return;
                }
                Poll::Pending => return,
            }
            let outbox = &mut state.outbox;
            let Some(message) = state.queue.pop(Instant::now(), &mut |reason, message| {
                outbox.dropped(reason, message)
            }) else {
                return;
            };
            // From here the message belongs to this connection (at-most-once).
            if let Err(e) = Pin::new(&mut self.ws).start_send(message) {
                self.error = Some(e);
                return;
            }
            self.need_flush = true;
        }
    }

    fn received(&mut self, message: Message, house: &Housekeeping) {
        match message {
            Message::Text(text) => {
                let parsed = if self.tracking {
                    resume::parse(text.as_str())
                } else {
                    None
                };
                let mut state = house.shared.lock();
                if let Some(parsed) = parsed {
                    state.subscriptions.apply(&parsed);
                }
                state
                    .outbox
                    .push(ReconnectEvent::Message(Message::Text(text)));
            }
            message @ Message::Binary(_) => {
                house
                    .shared
                    .lock()
                    .outbox
                    .push(ReconnectEvent::Message(message));
            }
            Message::Pong(payload) => {
                if let Some(pinger) = &mut self.pinger {
                    pinger.pong(&payload);
                }
            }
            // Answered by the connection itself.
            Message::Ping(_) => {}
            Message::Close(frame) => self.peer_close = Some(frame),
        }
    }

    fn ending(&mut self) -> Ending {
        let (code, reason) = match (self.peer_close.take(), self.error.take()) {
            (Some(Some(frame)), _) => (frame.code, frame.reason.as_str().to_string()),
            (Some(None), _) => (CloseCode::NO_STATUS, String::new()),
            (None, Some(Error::Protocol(e))) => (e.close_code(), e.to_string()),
            (None, Some(e)) => (CloseCode::ABNORMAL, e.to_string()),
            (None, None) => (
                CloseCode::ABNORMAL,
                "the connection closed without a close frame".to_string(),
            ),
        };
        Ending {
            code,
            reason,
            by_user: false,
        }
    }
}

/// The heartbeat of one connection: a ping every interval, at most one
/// unanswered at a time.
struct Pinger {
    config: Heartbeat,
    next_ping: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    /// The sequence number the pong must echo.
    outstanding: Option<u64>,
    sequence: u64,
    /// Reading was paused while a pong was due: the pong may be sitting
    /// unread, so the deadline restarts when reading resumes.
    paused: bool,
}

enum PingStep {
    Send(Bytes),
    Dead(std::time::Duration),
    Wait,
}

impl Pinger {
    fn new(config: Heartbeat) -> Self {
        let now = Instant::now();
        Pinger {
            config,
            next_ping: Box::pin(tokio::time::sleep_until(now + config.interval)),
            deadline: Box::pin(tokio::time::sleep_until(now + config.interval)),
            outstanding: None,
            sequence: 0,
            paused: false,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, paused: bool) -> PingStep {
        let now = Instant::now();
        if self.outstanding.is_some() {
            if paused {
                self.paused = true;
            } else {
                if std::mem::take(&mut self.paused) {
                    self.deadline.as_mut().reset(now + self.config.pong_timeout);
                }
                if self.deadline.as_mut().poll(cx).is_ready() {
                    return PingStep::Dead(self.config.pong_timeout);
                }
            }
        }
        if self.next_ping.as_mut().poll(cx).is_ready() {
            self.next_ping.as_mut().reset(now + self.config.interval);
            let _ = self.next_ping.as_mut().poll(cx);
            if self.outstanding.is_none() {
                self.sequence += 1;
                self.outstanding = Some(self.sequence);
                self.deadline.as_mut().reset(now + self.config.pong_timeout);
                return PingStep::Send(Bytes::copy_from_slice(&self.sequence.to_be_bytes()));
            }
        }
        PingStep::Wait
    }

    fn pong(&mut self, payload: &[u8]) {
        if self
            .outstanding
            .is_some_and(|sequence| payload == sequence.to_be_bytes())
        {
            self.outstanding = None;
        }
    }
}

//! The reconnecting client: one logical connection kept alive across
//! drops. The user-facing guide is the documentation of
//! [`ReconnectingClient`]; the parts are `backoff` (delays), `queue` (the
//! bounded outgoing queue), `resume` (the sockeye protocol's topics),
//! `driver` (the future that does the work) and `event` (what it reports).

mod backoff;
mod config;
mod driver;
mod event;
mod queue;
mod resume;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use sockeye_proto::{CloseCode, CloseFrame, Message};
use tokio::time::Instant;

pub use self::backoff::{Backoff, Jitter};
pub use self::config::{Heartbeat, ReconnectConfig};
pub use self::driver::ReconnectDriver;
pub use self::event::{DropReason, QueueError, ReconnectEvent};
pub use self::queue::{OverflowPolicy, QueueLimit, SendOptions};

use self::queue::Queue;
use self::resume::Subscriptions;

/// A WebSocket client that keeps one logical connection alive across drops.
///
/// ```text
///  ReconnectingClient ──send──► queue (bounded, TTL, overflow policy) ──┐
///   (cheap clones)     ──subscribe/close──► shared state                │ written in order
///                                                                        ▼
///  ReconnectDriver (a future you spawn): connect ─► re-subscribe ─► flush queue ─► read + ping
///        ▲      │                                                        │ drop / close
///        └──────┴── backoff delay ◄── Disconnected{code} ◄───────────────┘
///                           │
///  ReconnectEvents ◄────────┴── Connected, Message, Disconnected, Reconnecting, Dropped, GaveUp
/// ```
///
/// [`ReconnectingClient::new`] returns the three parts. The driver does all
/// the work and ends when the client is closed, gives up, or the server
/// closes with a code that does not call for a reconnect; spawn it. The
/// handle and the events share one `Mutex`ed state with the driver, never
/// held across an `.await`.
///
/// ```no_run
/// use sockeye::{ReconnectConfig, ReconnectEvent, ReconnectingClient};
///
/// # async fn demo() {
/// let (client, mut events, driver) =
///     ReconnectingClient::new("ws://127.0.0.1:3000/ws", ReconnectConfig::default());
/// tokio::spawn(driver);
/// client.subscribe("chat:lobby").unwrap();
/// client.send(r#"{"type":"publish","topic":"chat:lobby","data":"hi"}"#).unwrap();
/// while let Some(event) = events.recv().await {
///     match event {
///         ReconnectEvent::Message(message) => println!("{message:?}"),
///         ReconnectEvent::Disconnected { code, reconnect, .. } => {
///             println!("dropped ({code}), reconnecting: {reconnect}")
///         }
///         _ => {}
///     }
/// }
/// # }
/// ```
///
/// # What is delivered, and how often
///
/// WebSocket has no acknowledgements, so the client cannot know whether a
/// message written to a connection that then dropped reached the server.
/// It does not guess: **a message is written to at most one connection**
/// (at-most-once), and it is "sent" once it is handed to a live connection.
///
/// - A message sent while no connection is up waits in the queue and is
///   written, in order, right after the next connection opens (after the
///   re-subscriptions). None is lost or written twice, unless the queue's
///   own rules drop it: overflow, time-to-live, never-replay, or the client
///   ending first. Each such drop is reported as [`ReconnectEvent::Dropped`]
///   with the message; `send` returns an error only when it hands the
///   message back itself.
/// - A message sent while a connection is up is written to it. If that
///   connection is already dead but not yet known to be (no close frame, no
///   reset, the heartbeat not yet missed), the message is lost with it.
///   Applications that need at-least-once delivery acknowledge at their own
///   level (the sockeye protocol's `publish` is answered by an `ack` with
///   the request's `id`) and send again what was not acknowledged.
/// - Messages queued while the server's close frame is arriving stay queued
///   for the next connection: nothing is written after a close frame.
///
/// # When it reconnects
///
/// - After a drop without a close frame (1006), a missed pong, or a server
///   close with a code in [`ReconnectConfig::reconnect_codes`] (default
///   1001, 1011, 1012, 1013). Another server code (1000, 1008, ...) is
///   final: [`ReconnectEvent::Disconnected`] with `reconnect: false`, then
///   the events end.
/// - [`ReconnectingClient::close`] (1000) never leads to a reconnect; neither
///   does dropping every handle, which closes the same way.
/// - A failed attempt is retried with [`Backoff`], except a malformed URL or
///   an HTTP 4xx refusal other than 408 and 429: those would fail the same
///   way again, so the client gives up at once.
/// - A protocol error of the server's ends the connection with the code the
///   client sent (1002, 1007, 1009), which is final unless listed.
///
/// # Resuming topics of the sockeye protocol
///
/// [`ReconnectingClient::subscribe`] speaks the JSON protocol of `sockeye
/// serve`'s `/ws` (docs/PROTOCOL.md). The client remembers each topic and the
/// position of the last `message` frame seen on it (or the subscription's
/// `ack`, before any message), and a new connection subscribes again with
/// `since` before the queue is flushed: the server replays what was missed,
/// once each, in order. Only server frames that carry a position or a `gap`
/// are parsed, and only while some topic is subscribed; every frame still
/// reaches [`ReconnectEvents`] as it came.
///
/// # The handle
///
/// This is the handle: send, subscribe, close. Clones are cheap and share
/// the one logical connection; when the last one is dropped, the client
/// closes as [`ReconnectingClient::close`] does.
#[derive(Debug)]
pub struct ReconnectingClient {
    shared: Arc<Shared>,
}

/// The events of a reconnecting client, in order (a [`Stream`]); they end
/// after the driver has stopped. Dropping this discards later events.
#[derive(Debug)]
pub struct ReconnectEvents {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every update keeps the state consistent between statements that
        // can panic, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the handles, the events and the driver share.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) queue: Queue,
    pub(crate) subscriptions: Subscriptions,
    pub(crate) outbox: Outbox,
    /// A connection is open (between `Connected` and `Disconnected`).
    pub(crate) connected: bool,
    /// The close the application asked for.
    pub(crate) close: Option<CloseFrame>,
    /// Live [`ReconnectingClient`] handles.
    handles: usize,
    /// The driver has stopped (or was dropped).
    pub(crate) ended: bool,
    pub(crate) driver: Option<Waker>,
}

impl State {
    /// The close to perform: the application's, or 1000 once every handle is gone.
    pub(crate) fn close_request(&self) -> Option<CloseFrame> {
        match &self.close {
            Some(frame) => Some(frame.clone()),
            None if self.handles == 0 => Some(CloseFrame::new(CloseCode::NORMAL, "")),
            None => None,
        }
    }

    pub(crate) fn register_driver(&mut self, waker: &Waker) {
        if !self.driver.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.driver = Some(waker.clone());
        }
    }

    fn wake_driver(&mut self) {
        if let Some(waker) = &self.driver {
            waker.wake_by_ref();
        }
    }
}

/// Events on their way to [`ReconnectEvents`].
#[derive(Debug)]
pub(crate) struct Outbox {
    events: VecDeque<ReconnectEvent>,
    /// `Message` events among them; the driver stops reading at `max`.
    messages: usize,
    max: usize,
    /// The [`ReconnectEvents`] is alive; without it events are discarded.
    open: bool,
    reader: Option<Waker>,
}

impl Outbox {
    pub(crate) fn push(&mut self, event: ReconnectEvent) {
        if !self.open {
            return;
        }
        if matches!(event, ReconnectEvent::Message(_)) {
            self.messages += 1;
        }
        self.events.push_back(event);
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }

    /// Reports a queued message that will not be sent.
    pub(crate) fn dropped(&mut self, reason: DropReason, message: Message) {
        self.push(ReconnectEvent::Dropped { reason, message });
    }

    /// Too many received messages are waiting to be read.
    pub(crate) fn is_full(&self) -> bool {
        self.messages >= self.max
    }

    /// Wakes the reader so it sees the end.
    pub(crate) fn end(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }
}

impl ReconnectingClient {
    /// Makes a client for `url` (`ws://` or `wss://`). Nothing happens until
    /// the driver runs: spawn it (`tokio::spawn(driver)`). Messages sent
    /// before it connects are queued.
    pub fn new(
        url: impl Into<String>,
        config: ReconnectConfig,
    ) -> (ReconnectingClient, ReconnectEvents, ReconnectDriver) {
        let state = State {
            queue: Queue::new(config.queue_limit, config.overflow),
            subscriptions: Subscriptions::default(),
            outbox: Outbox {
                events: VecDeque::new(),
                messages: 0,
                max: config.max_pending_messages.max(1),
                open: true,
                reader: None,
            },
            connected: false,
            close: None,
            handles: 1,
            ended: false,
            driver: None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
        });
        let driver = ReconnectDriver::new(Arc::clone(&shared), url.into(), config);
        (
            ReconnectingClient {
                shared: Arc::clone(&shared),
            },
            ReconnectEvents { shared },
            driver,
        )
    }

    /// Sends `message` with the default [`SendOptions`]; see
    /// [`ReconnectingClient::send_with`].
    pub fn send(&self, message: impl Into<Message>) -> Result<(), QueueError> {
        self.send_with(message, SendOptions::default())
    }

    /// Queues `message` to be written, in order, to the current connection
    /// or the next one; does not wait.
    ///
    /// `Err` hands the message back: the queue is full under
    /// [`OverflowPolicy::Error`], or the client is closed. Every other
    /// message that ends up not sent is reported as
    /// [`ReconnectEvent::Dropped`]. A [`Message::Close`] is not queued: it
    /// closes the client with its frame, as [`ReconnectingClient::close_with`].
    pub fn send_with(
        &self,
        message: impl Into<Message>,
        options: SendOptions,
    ) -> Result<(), QueueError> {
        let message = message.into();
        if let Message::Close(frame) = message {
            self.close_with(frame.unwrap_or_else(|| CloseFrame::new(CloseCode::NORMAL, "")));
            return Ok(());
        }
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        if state.ended || state.close.is_some() {
            return Err(QueueError::Closed(message));
        }
        if options.never_replay && !state.connected {
            state.outbox.dropped(DropReason::NeverReplay, message);
            return Ok(());
        }
        let outbox = &mut state.outbox;
        state
            .queue
            .push(message, options, Instant::now(), &mut |reason, message| {
                outbox.dropped(reason, message)
            })
            .map_err(QueueError::Full)?;
        state.wake_driver();
        Ok(())
    }

    /// Subscribes to `topic` of the sockeye JSON protocol, now if connected
    /// (after what is already queued) and again on every new connection,
    /// from the last position seen (see
    /// [resuming topics](ReconnectingClient#resuming-topics-of-the-sockeye-protocol)). The
    /// server's `ack` arrives as a message. Subscribing twice changes
    /// nothing. `Err` when the client is closed (with the frame it would
    /// have sent).
    pub fn subscribe(&self, topic: &str) -> Result<(), QueueError> {
        let mut state = self.shared.lock();
        if state.ended || state.close.is_some() {
            return Err(QueueError::Closed(resume::subscribe_frame(topic, None)));
        }
        if state.subscriptions.subscribe(topic) && state.connected {
            state
                .queue
                .push_control(resume::subscribe_frame(topic, None));
            state.wake_driver();
        }
        Ok(())
    }

    /// Unsubscribes from `topic`: the server is told now if connected, and
    /// later connections do not subscribe to it.
    pub fn unsubscribe(&self, topic: &str) -> Result<(), QueueError> {
        let mut state = self.shared.lock();
        if state.ended || state.close.is_some() {
            return Err(QueueError::Closed(resume::unsubscribe_frame(topic)));
        }
        if state.subscriptions.unsubscribe(topic) && state.connected {
            state.queue.push_control(resume::unsubscribe_frame(topic));
            state.wake_driver();
        }
        Ok(())
    }

    /// Closes with 1000; see [`ReconnectingClient::close_with`].
    pub fn close(&self) {
        self.close_with(CloseFrame::new(CloseCode::NORMAL, ""));
    }

    /// Closes for good: if a connection is up, what is queued is written,
    /// then the close handshake runs with `frame`; if none is, the attempt
    /// or the wait in progress is abandoned and what is queued is reported
    /// as [`DropReason::Closed`]. Never followed by a reconnect; later sends
    /// fail. The driver finishes after it. A code that may not be sent
    /// (1005, 1006, 1015, ...) is sent as 1000.
    pub fn close_with(&self, mut frame: CloseFrame) {
        if !frame.code.is_sendable() {
            frame.code = CloseCode::NORMAL;
        }
        let mut state = self.shared.lock();
        if state.close.is_none() {
            state.close = Some(frame);
        }
        state.wake_driver();
    }

    /// Whether a connection is open right now.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Messages waiting to be written, and their payload bytes.
    pub fn queued(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (state.queue.len(), state.queue.bytes())
    }
}

impl Clone for ReconnectingClient {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        ReconnectingClient {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for ReconnectingClient {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.handles -= 1;
        if state.handles == 0 {
            state.wake_driver();
        }
    }
}

impl ReconnectEvents {
    /// The next event; `None` once the driver has stopped and every event
    /// has been read.
    pub async fn recv(&mut self) -> Option<ReconnectEvent> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next event.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ReconnectEvent>> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let outbox = &mut state.outbox;
        if let Some(event) = outbox.events.pop_front() {
            if matches!(event, ReconnectEvent::Message(_)) {
                outbox.messages -= 1;
                if outbox.messages + 1 == outbox.max {
                    // The driver may have stopped reading: it can go on.
                    state.wake_driver();
                }
            }
            return Poll::Ready(Some(event));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        if !outbox
            .reader
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            outbox.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Stream for ReconnectEvents {
    type Item = ReconnectEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ReconnectEvent>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for ReconnectEvents {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.outbox.open = false;
        state.outbox.events.clear();
        state.outbox.messages = 0;
        state.wake_driver();
    }
}

//! [`Conn`]: the handle to one WebSocket connection that handlers and the
//! hub use. Sends never wait: they go into the connection's bounded queue,
//! which its task writes to the socket.

mod task;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sockeye_proto::{CloseCode, CloseFrame, Message};
use tokio::sync::Notify;

use crate::endpoint::{BackpressurePolicy, EndpointShared};
use crate::hub::{ConnId, Delivery, Hub, Position, Publication, Resume, Subscriber};

pub(crate) use task::run;

/// What happened to a message given to [`Conn::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Queued; the connection is keeping up.
    Queued,
    /// Queued, but the connection is past its backpressure limit: slow down.
    Backpressure,
    /// Not queued: the connection's queue is full.
    Dropped,
    /// Not queued: the connection is closing.
    Closed,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The connection is at [`EndpointConfig::max_topics_per_connection`](crate::EndpointConfig).
    #[error("this connection already has {0} subscriptions, the most allowed")]
    TooManyTopics(usize),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] crate::hub::BrokerError),
}

pub(crate) enum Outbound {
    Message(Message),
    Publication(Arc<Publication>),
    Close(CloseFrame),
}

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Message(m) => m.len(),
            Outbound::Publication(p) => p
                .prepared
                .get()
                .map_or(p.payload.len(), |m| m.frame().len()),
            Outbound::Close(_) => 0,
        }
    }
}

#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) items: VecDeque<Outbound>,
    pub(crate) bytes: usize,
    /// While `Some`, publications wait here: a subscription's answer goes
    /// out before the messages it lets through (see [`Conn::hold`]).
    held: Option<Vec<Outbound>>,
}

/// A handle to one connection: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct Conn {
    pub(crate) shared: Arc<ConnShared>,
}

pub(crate) struct ConnShared {
    pub(crate) id: ConnId,
    pub(crate) endpoint: Arc<EndpointShared>,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) protocol: Option<String>,
    user: Mutex<Option<String>>,
    data: Mutex<http::Extensions>,
    pub(crate) queue: Mutex<Queue>,
    /// Bytes queued in the socket writer, updated by the task.
    pub(crate) socket_buffered: AtomicUsize,
    pub(crate) notify: Notify,
    /// Notified by [`Conn::close`]: ends the task's wait for a socket that
    /// takes nothing.
    pub(crate) close_requested: Notify,
    pub(crate) closing: AtomicBool,
    topics: Mutex<HashSet<String>>,
    rooms: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.shared.id)
            .field("user", &self.user())
            .field("remote", &self.shared.remote)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    pub(crate) fn new(
        id: ConnId,
        endpoint: Arc<EndpointShared>,
        remote: Option<SocketAddr>,
        protocol: Option<String>,
        user: Option<String>,
    ) -> Self {
        Conn {
            shared: Arc::new(ConnShared {
                id,
                endpoint,
                remote,
                protocol,
                user: Mutex::new(user),
                data: Mutex::new(http::Extensions::new()),
                queue: Mutex::new(Queue::default()),
                socket_buffered: AtomicUsize::new(0),
                notify: Notify::new(),
                close_requested: Notify::new(),
                closing: AtomicBool::new(false),
                topics: Mutex::new(HashSet::new()),
                rooms: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// The connection's id, unique in this process.
    pub fn id(&self) -> ConnId {
        self.shared.id
    }

    /// The user id the auth hook (or first-message authentication) attached.
    pub fn user(&self) -> Option<String> {
        lock(&self.shared.user).clone()
    }

    /// Attaches a user id (for first-message authentication).
    pub fn set_user(&self, user: impl Into<String>) {
        *lock(&self.shared.user) = Some(user.into());
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.shared.remote
    }

    /// The negotiated subprotocol.
    pub fn protocol(&self) -> Option<&str> {
        self.shared.protocol.as_deref()
    }

    /// Stores a value of type `T` on the connection (one per type).
    pub fn insert<T: Clone + Send + Sync + 'static>(&self, value: T) {
        lock(&self.shared.data).insert(value);
    }

    /// The value of type `T` stored on the connection.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        lock(&self.shared.data).get::<T>().cloned()
    }

    /// Runs `f` on the connection's value of type `T`, inserting `T::default()` first if absent.
    pub fn with<T: Default + Clone + Send + Sync + 'static, R>(
        &self,
        f: impl FnOnce(&mut T) -> R,
    ) -> R {
        let mut data = lock(&self.shared.data);
        if data.get::<T>().is_none() {
            data.insert(T::default());
        }
        f(data.get_mut::<T>().expect("inserted above"))
    }

    /// Bytes queued for this connection and not yet written.
    pub fn buffered_amount(&self) -> usize {
        lock(&self.shared.queue).bytes + self.shared.socket_buffered.load(Ordering::Relaxed)
    }

    /// Queues a message for the connection; never waits.
    pub fn send(&self, message: impl Into<Message>) -> SendStatus {
        self.push(Outbound::Message(message.into()))
    }

    /// Sends a text message; never waits.
    pub fn send_text(&self, text: impl Into<String>) -> SendStatus {
        self.send(Message::text(text.into()))
    }

    /// Closes the connection with `code` and `reason` (at most 123 bytes),
    /// after what was sent before. When the socket is not taking bytes (the
    /// peer stopped reading), what is still queued is dropped instead and
    /// the close takes at most the endpoint's close timeout (plus a second).
    pub fn close(&self, code: CloseCode, reason: &str) {
        let frame = CloseFrame::new(code, reason);
        let mut queue = lock(&self.shared.queue);
        queue.items.push_back(Outbound::Close(frame));
        self.shared.closing.store(true, Ordering::Relaxed);
        drop(queue);
        self.shared.notify.notify_one();
        self.shared.close_requested.notify_one();
    }

    /// Holds back publications (direct sends still go out) until
    /// [`Conn::release`], so that an answer sent in between precedes them.
    pub fn hold(&self) {
        let mut queue = lock(&self.shared.queue);
        if queue.held.is_none() {
            queue.held = Some(Vec::new());
        }
    }

    /// Lets held publications go, after whatever was sent meanwhile.
    pub fn release(&self) {
        let mut queue = lock(&self.shared.queue);
        if let Some(held) = queue.held.take() {
            queue.items.extend(held);
        }
        drop(queue);
        self.shared.notify.notify_one();
    }

    /// Like [`Conn::release`], dropping the held publications of `topic` at
    /// or before `seen`: a fresh subscription's ack carries the topic's
    /// latest position, and what it counts must not follow it.
    pub(crate) fn release_after(&self, topic: &str, seen: &Position) {
        let mut queue = lock(&self.shared.queue);
        if let Some(held) = queue.held.take() {
            for item in held {
                if let Outbound::Publication(p) = &item {
                    let counted = p
                        .position
                        .as_ref()
                        .is_some_and(|at| at.epoch == seen.epoch && at.offset <= seen.offset);
                    if counted && &*p.topic == topic {
                        queue.bytes = queue.bytes.saturating_sub(item.len());
                        continue;
                    }
                }
                queue.items.push_back(item);
            }
        }
        drop(queue);
        self.shared.notify.notify_one();
    }

    /// Whether the connection is subscribed to `topic` (or joined to it).
    pub(crate) fn is_subscribed(&self, topic: &str) -> bool {
        lock(&self.shared.topics).contains(topic)
    }

    /// Whether the connection is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::Relaxed)
    }

    fn push(&self, item: Outbound) -> SendStatus {
        if self.is_closing() {
            return SendStatus::Closed;
        }
        let config = &self.shared.endpoint.config;
        let len = item.len();
        let mut queue = lock(&self.shared.queue);
        let buffered = queue.bytes + self.shared.socket_buffered.load(Ordering::Relaxed);
        if buffered > 0 && buffered + len > config.max_queued_bytes {
            return SendStatus::Dropped;
        }
        queue.bytes += len;
        queue.items.push_back(item);
        drop(queue);
        self.shared.notify.notify_one();
        if buffered + len > config.backpressure_limit {
            SendStatus::Backpressure
        } else {
            SendStatus::Queued
        }
    }

    fn hub(&self) -> &Hub {
        &self.shared.endpoint.hub
    }

    fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(self.clone())
    }

    fn claim_topic(&self, topic: &str) -> Result<bool, SubscribeError> {
        let max = self.shared.endpoint.config.max_topics_per_connection;
        let mut topics = lock(&self.shared.topics);
        if topics.contains(topic) {
            return Ok(false);
        }
        if topics.len() >= max {
            return Err(SubscribeError::TooManyTopics(max));
        }
        topics.insert(topic.to_string());
        Ok(true)
    }

    /// Subscribes to `topic`; returns its latest position.
    pub async fn subscribe(&self, topic: &str) -> Result<Position, SubscribeError> {
        self.claim_topic(topic)?;
        let hub = self.hub().clone();
        Ok(hub.subscribe(topic, self.subscriber()).await?)
    }

    /// Subscribes to `topic` and first replays what was published after
    /// `since`, or reports a gap (the subscription happens either way).
    pub async fn subscribe_since(
        &self,
        topic: &str,
        since: &Position,
    ) -> Result<Resume, SubscribeError> {
        self.claim_topic(topic)?;
        let hub = self.hub().clone();
        Ok(hub.subscribe_since(topic, self.subscriber(), since).await?)
    }

    /// Unsubscribes from `topic`.
    pub fn unsubscribe(&self, topic: &str) -> bool {
        lock(&self.shared.topics).remove(topic);
        self.hub().unsubscribe(topic, self.id())
    }

    /// The topics this connection is subscribed to (rooms included).
    pub fn topics(&self) -> Vec<String> {
        lock(&self.shared.topics).iter().cloned().collect()
    }

    /// Joins `room` as this connection's user (or its id when anonymous);
    /// returns the number of members after.
    pub async fn join(&self, room: &str) -> Result<usize, SubscribeError> {
        self.claim_topic(room)?;
        lock(&self.shared.rooms).insert(room.to_string());
        let user = self.user_or_id();
        let hub = self.hub().clone();
        Ok(hub.join(room, &user, self.subscriber()).await?)
    }

    /// Joins `room` after replaying what was published there after `since`
    /// (or reporting a gap); returns the resume outcome and the member count.
    pub async fn join_since(
        &self,
        room: &str,
        since: &Position,
    ) -> Result<(Resume, usize), SubscribeError> {
        self.claim_topic(room)?;
        lock(&self.shared.rooms).insert(room.to_string());
        let hub = self.hub().clone();
        let resume = hub.subscribe_since(room, self.subscriber(), since).await?;
        let user = self.user_or_id();
        let count = hub.join(room, &user, self.subscriber()).await?;
        Ok((resume, count))
    }

    /// The latest position of `topic`.
    pub async fn latest(&self, topic: &str) -> Result<Position, crate::hub::BrokerError> {
        self.hub().latest(topic).await
    }

    /// Leaves `room`; returns the number of members after.
    pub async fn leave(&self, room: &str) -> Result<usize, SubscribeError> {
        lock(&self.shared.topics).remove(room);
        lock(&self.shared.rooms).remove(room);
        let user = self.user_or_id();
        let hub = self.hub().clone();
        Ok(hub.leave(room, &user, self.id()).await?)
    }

    /// The rooms this connection is in.
    pub fn rooms(&self) -> Vec<String> {
        lock(&self.shared.rooms).iter().cloned().collect()
    }

    /// Publishes to `topic` as this connection's user.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<bytes::Bytes>,
        text: bool,
    ) -> Result<Position, crate::hub::BrokerError> {
        let hub = self.hub().clone();
        hub.publish(topic, payload, text, self.user()).await
    }

    fn user_or_id(&self) -> String {
        self.user().unwrap_or_else(|| format!("anon-{}", self.id()))
    }

    /// Forgets every subscription and announces leaving every room.
    pub(crate) async fn leave_everything(&self) {
        let rooms: Vec<String> = lock(&self.shared.rooms).drain().collect();
        let user = self.user_or_id();
        for room in rooms {
            let _ = self.hub().leave(&room, &user, self.id()).await;
        }
        lock(&self.shared.topics).clear();
        self.hub().unsubscribe_all(self.id());
    }
}

impl Subscriber for Conn {
    fn id(&self) -> ConnId {
        self.shared.id
    }

    fn deliver(
        &self,
        publication: &Arc<Publication>,
        message: &sockeye_proto::PreparedMessage,
    ) -> Delivery {
        if self.is_closing() {
            return Delivery::Closed;
        }
        let endpoint = &self.shared.endpoint;
        if self.buffered_amount() > endpoint.config.backpressure_limit {
            return match endpoint.config.backpressure_policy {
                BackpressurePolicy::Drop => {
                    endpoint.metrics.backpressure_drop();
                    Delivery::Dropped
                }
                BackpressurePolicy::Close(code) => {
                    self.close(code, "too slow: outgoing queue past the backpressure limit");
                    Delivery::Closed
                }
            };
        }
        let len = message.frame().len();
        let mut queue = lock(&self.shared.queue);
        queue.bytes += len;
        let item = Outbound::Publication(Arc::clone(publication));
        match queue.held.as_mut() {
            Some(held) => held.push(item),
            None => queue.items.push_back(item),
        }
        drop(queue);
        self.shared.notify.notify_one();
        Delivery::Queued
    }
}

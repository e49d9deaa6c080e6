//! The pub/sub hub: topics, rooms with presence, and history for resuming.
//!
//! ```text
//!  Hub::publish ──► Broker ──(position, history)──► Deliver ──► Hub: one map lookup,
//!                   (LocalBroker, or Redis                       frame once (Encoder),
//!                    shared by many processes)                   Subscriber::deliver × N
//! ```
//!
//! Server code subscribes connections ([`Subscriber`]s) to topics and
//! publishes to them. The [`Broker`] numbers every message with a
//! [`Position`] and keeps a bounded history, so a connection that comes back
//! with the last position it saw gets what it missed
//! ([`Hub::subscribe_since`]). Rooms are topics with presence: [`Hub::join`]
//! and [`Hub::leave`] announce members to the room, and [`Hub::members`]
//! lists them.
//!
//! A publication is framed once, by the hub's [`Encoder`], and every
//! subscriber queues the same bytes.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use sockeye_proto::PreparedMessage;
//! use sockeye_server::hub::{ConnId, Delivery, Hub, HubConfig, Publication, Subscriber};
//!
//! struct Printer(ConnId, Mutex<Vec<String>>);
//! impl Subscriber for Printer {
//!     fn id(&self) -> ConnId { self.0 }
//!     fn deliver(&self, _: &Arc<Publication>, message: &PreparedMessage) -> Delivery {
//!         self.1.lock().unwrap().push(String::from_utf8_lossy(message.payload()).into_owned());
//!         Delivery::Queued
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let hub = Hub::new(HubConfig::default());
//! let printer = Arc::new(Printer(1, Mutex::default()));
//! hub.subscribe("news", printer.clone()).await?;
//! let position = hub.publish_text("news", "hello").await?;
//! assert_eq!(position.offset, 1);
//! assert_eq!(*printer.1.lock().unwrap(), ["hello"]);
//! # Ok::<(), sockeye_server::hub::BrokerError>(()) }).unwrap();
//! ```

pub mod broker;
mod local;
mod redis;
pub mod types;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use sockeye_proto::PreparedMessage;

pub use broker::{BoxFuture, Broker, BrokerError, Deliver};
pub use local::LocalBroker;
pub use redis::{RedisBroker, RedisConfig};
pub use types::*;

/// Live publications a resuming subscriber may hold back while it replays
/// history. Past this the hub stops holding them and reads history again
/// from where the replay stopped (they are in the broker's history), so the
/// limit bounds memory without losing messages.
const CATCH_UP_LIMIT: usize = 4096;

/// How the hub keeps history and frames publications.
#[derive(Clone)]
pub struct HubConfig {
    /// Messages a topic keeps for subscribers that resume
    /// ([`Hub::subscribe_since`]). More covers longer disconnections and
    /// costs memory per topic: the payloads stay alive as long as their
    /// history entry. 0 keeps none (every resume that missed something is a
    /// [`Resume::Gap`]). Default 1000.
    pub history_len: usize,
    /// How long a message stays in history, whatever the count. A client
    /// away longer than this gets a [`Resume::Gap`] and reloads its state,
    /// which after that long is usually cheaper than replaying. Default
    /// 5 minutes.
    pub history_age: Duration,
    /// Turns a publication into the frame subscribers receive, once per
    /// publication per process. Default [`raw_encoder`]: the payload as
    /// published, presence events as JSON.
    pub encoder: Encoder,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history_len: 1000,
            history_age: Duration::from_secs(5 * 60),
            encoder: raw_encoder(),
        }
    }
}

impl HubConfig {
    /// Sets [`HubConfig::history_len`].
    pub fn history_len(mut self, messages: usize) -> Self {
        self.history_len = messages;
        self
    }

    /// Sets [`HubConfig::history_age`].
    pub fn history_age(mut self, age: Duration) -> Self {
        self.history_age = age;
        self
    }

    /// Sets [`HubConfig::encoder`].
    pub fn encoder(mut self, encoder: Encoder) -> Self {
        self.encoder = encoder;
        self
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("history_len", &self.history_len)
            .field("history_age", &self.history_age)
            .field("encoder", &"Fn(&Publication) -> PreparedMessage")
            .finish()
    }
}

/// Topics, rooms and their subscribers in this process, in front of a
/// [`Broker`]. Cheap to clone: clones share one hub.
///
/// Lock discipline: the hub's locks are `std::sync` locks held only for
/// map work and for the fan-out loop, never across an `.await`.
/// [`Subscriber::deliver`] runs inside the fan-out loop, so it must not call
/// back into the hub (return [`Delivery::Closed`] to be forgotten instead).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    config: HubConfig,
    broker: Arc<dyn Broker>,
    local: Arc<Local>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("broker", &self.inner.broker)
            .field("topics", &self.topic_count())
            .finish()
    }
}

impl Hub {
    /// Publications that reached this process, and deliveries made to its
    /// subscribers, since the hub started.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.inner.local.publications.load(Ordering::Relaxed),
            self.inner.local.deliveries.load(Ordering::Relaxed),
        )
    }

    /// A hub with the embedded [`LocalBroker`] (history limits from `config`).
    pub fn new(config: HubConfig) -> Self {
        let broker = Arc::new(LocalBroker::new(config.history_len, config.history_age));
        Self::with_broker(config, broker)
    }

    /// A hub in front of `broker`; starts it (history limits are the
    /// broker's own, `config`'s apply to [`Hub::new`] only).
    pub fn with_broker(config: HubConfig, broker: Arc<dyn Broker>) -> Self {
        let local = Arc::new(Local {
            encoder: config.encoder.clone(),
            state: RwLock::new(State::default()),
            publications: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
        });
        // The broker holds the local side only, not the hub: no cycle.
        let sink = local.clone();
        broker.start(Arc::new(move |publication| sink.deliver(publication)));
        Hub {
            inner: Arc::new(Inner {
                config,
                broker,
                local,
            }),
        }
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The broker behind the hub.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Subscribes `sub` to `topic`, live from now; returns the topic's latest
    /// position (the one to resume from if nothing arrives before the
    /// connection drops). Subscribing the same connection again changes
    /// nothing.
    pub async fn subscribe(
        &self,
        topic: &str,
        sub: Arc<dyn Subscriber>,
    ) -> Result<Position, BrokerError> {
        let conn = sub.id();
        let added = self.inner.local.add(topic, sub, None);
        match self.inner.broker.latest(topic).await {
            Ok(position) => Ok(position),
            Err(e) => {
                if added {
                    self.unsubscribe(topic, conn);
                }
                Err(e)
            }
        }
    }

    /// Subscribes `sub` to `topic` and delivers what it missed after `since`,
    /// then live messages: in order, none twice, none lost in between.
    ///
    /// Returns what was replayed (so the caller can acknowledge it), or
    /// [`Resume::Gap`] when history no longer covers `since` (too old, or
    /// another epoch); the subscription is made either way, live from now
    /// after a gap. A connection already subscribed is resubscribed; on an
    /// error it is left unsubscribed.
    ///
    /// How: the subscriber is registered in a catching-up state that holds
    /// live publications back; history is read and delivered; then the held
    /// ones past the last replayed position are delivered and the
    /// subscriber goes live, all under the subscriber's own lock so a live
    /// delivery cannot slip in between.
    pub async fn subscribe_since(
        &self,
        topic: &str,
        sub: Arc<dyn Subscriber>,
        since: &Position,
    ) -> Result<Resume, BrokerError> {
        let local = &self.inner.local;
        let conn = sub.id();
        let catch_up = Arc::new(CatchUp::default());
        local.add(topic, sub.clone(), Some(catch_up.clone()));

        let encoder = &self.inner.config.encoder;
        let mut from = since.clone();
        let mut replayed = Vec::new();
        let mut gap = false;
        loop {
            match self.inner.broker.history(topic, &from).await {
                Ok(Resume::Gap) => gap = true,
                Ok(Resume::Replay(_)) if catch_up.is_cancelled() => {
                    return Ok(Resume::Replay(replayed))
                }
                Ok(Resume::Replay(list)) => {
                    for publication in list {
                        let message = publication.prepared.get_or_init(|| encoder(&publication));
                        if sub.deliver(&publication, message) == Delivery::Closed {
                            local.remove(topic, conn, Some(&catch_up));
                            replayed.push(publication);
                            return Ok(Resume::Replay(replayed));
                        }
                        if let Some(position) = &publication.position {
                            from = position.clone();
                        }
                        replayed.push(publication);
                    }
                }
                Err(e) => {
                    local.remove(topic, conn, Some(&catch_up));
                    return Err(e);
                }
            }
            let seen = (!gap).then_some(&from);
            match catch_up.go_live(&*sub, seen, encoder) {
                GoLive::Live => break,
                // Publications were not held back: read them from history.
                GoLive::Overflowed => continue,
                GoLive::Gone => {
                    return Ok(if gap {
                        Resume::Gap
                    } else {
                        Resume::Replay(replayed)
                    })
                }
                GoLive::Closed => {
                    local.remove(topic, conn, Some(&catch_up));
                    return Ok(if gap {
                        Resume::Gap
                    } else {
                        Resume::Replay(replayed)
                    });
                }
            }
        }
        local.settle(topic, conn, &catch_up, (!gap).then(|| Box::new(from)));
        Ok(if gap {
            Resume::Gap
        } else {
            Resume::Replay(replayed)
        })
    }

    /// Stops delivering `topic` to connection `conn`; false if it was not
    /// subscribed.
    pub fn unsubscribe(&self, topic: &str, conn: ConnId) -> bool {
        self.inner.local.remove(topic, conn, None)
    }

    /// Forgets connection `conn` in every topic. Announces no leaves: the
    /// connection's runtime calls [`Hub::leave`] for each room itself.
    pub fn unsubscribe_all(&self, conn: ConnId) {
        self.inner.local.remove_all(conn);
    }

    /// Publishes to `topic`; returns the message's position.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        text: bool,
        from: Option<String>,
    ) -> Result<Position, BrokerError> {
        self.inner
            .broker
            .publish(topic, payload.into(), text, from)
            .await
    }

    /// Publishes a text message from the server (no user).
    pub async fn publish_text(
        &self,
        topic: &str,
        text: impl Into<String>,
    ) -> Result<Position, BrokerError> {
        self.publish(topic, Bytes::from(text.into()), true, None)
            .await
    }

    /// The latest position of `topic` (offset 0 before its first message).
    pub async fn latest(&self, topic: &str) -> Result<Position, BrokerError> {
        self.inner.broker.latest(topic).await
    }

    /// Subscribes `sub` to `room` and records `user` as a member (announced
    /// to the room, `sub` included, when the user was not already in it);
    /// returns the member count.
    pub async fn join(
        &self,
        room: &str,
        user: &str,
        sub: Arc<dyn Subscriber>,
    ) -> Result<usize, BrokerError> {
        let conn = sub.id();
        let added = self.inner.local.add(room, sub, None);
        match self.inner.broker.join(room, user, conn).await {
            Ok(count) => Ok(count),
            Err(e) => {
                if added {
                    self.unsubscribe(room, conn);
                }
                Err(e)
            }
        }
    }

    /// Unsubscribes connection `conn` from `room` and removes it from
    /// `user`'s connections there (a leave is announced when it was the
    /// user's last); returns the member count.
    pub async fn leave(&self, room: &str, user: &str, conn: ConnId) -> Result<usize, BrokerError> {
        self.unsubscribe(room, conn);
        self.inner.broker.leave(room, user, conn).await
    }

    /// The distinct user ids in `room`.
    pub async fn members(&self, room: &str) -> Result<Vec<String>, BrokerError> {
        self.inner.broker.members(room).await
    }

    /// Subscribers of `topic` in this process.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        read(&self.inner.local.state)
            .topics
            .get(topic)
            .map_or(0, |t| t.entries.len())
    }

    /// Topics with at least one subscriber in this process.
    pub fn topic_count(&self) -> usize {
        read(&self.inner.local.state).topics.len()
    }

    /// The frame the hub's encoder makes for `publication` (made once, then
    /// shared), for callers that deliver publications themselves.
    pub fn prepare<'p>(&self, publication: &'p Publication) -> &'p PreparedMessage {
        publication
            .prepared
            .get_or_init(|| (self.inner.config.encoder)(publication))
    }
}

/// The subscribers of this process: what the broker's `Deliver` reaches.
struct Local {
    encoder: Encoder,
    state: RwLock<State>,
    publications: AtomicU64,
    deliveries: AtomicU64,
}

#[derive(Default)]
struct State {
    topics: HashMap<Arc<str>, Topic>,
    /// Each connection's topics, so forgetting a connection visits only them.
    conns: HashMap<ConnId, Vec<Arc<str>>>,
}

/// A topic's subscribers, dense for the fan-out loop, with an index for
/// O(1) removal (`swap_remove`).
#[derive(Default)]
struct Topic {
    entries: Vec<Entry>,
    index: HashMap<ConnId, usize>,
}

struct Entry {
    conn: ConnId,
    sub: Arc<dyn Subscriber>,
    /// Present while the subscriber replays history.
    catch_up: Option<Arc<CatchUp>>,
    /// The last replayed position: a broker whose live feed lags behind its
    /// history may still deliver what was replayed, and it is skipped.
    replayed: Option<Box<Position>>,
}

impl Entry {
    fn deliver(&self, publication: &Arc<Publication>, message: &PreparedMessage) -> Delivery {
        if let Some(catch_up) = &self.catch_up {
            return catch_up.offer(&*self.sub, publication, message);
        }
        if already_seen(self.replayed.as_deref(), publication) {
            return Delivery::Queued;
        }
        self.sub.deliver(publication, message)
    }
}

/// Whether `publication` is at or before `seen` in the same epoch.
fn already_seen(seen: Option<&Position>, publication: &Publication) -> bool {
    match (seen, &publication.position) {
        (Some(seen), Some(at)) => at.offset <= seen.offset && at.epoch == seen.epoch,
        _ => false,
    }
}

impl Local {
    /// The hot path: one map lookup, one frame, one `deliver` per subscriber.
    fn deliver(&self, publication: Publication) {
        self.publications.fetch_add(1, Ordering::Relaxed);
        let (publication, closed) = {
            let state = read(&self.state);
            let Some(topic) = state.topics.get(&*publication.topic) else {
                return;
            };
            let publication = Arc::new(publication);
            let message = publication
                .prepared
                .get_or_init(|| (self.encoder)(&publication));
            // Allocates only when a subscriber is closing.
            let mut closed = Vec::new();
            self.deliveries
                .fetch_add(topic.entries.len() as u64, Ordering::Relaxed);
            for entry in &topic.entries {
                if entry.deliver(&publication, message) == Delivery::Closed {
                    closed.push((entry.conn, entry.sub.clone()));
                }
            }
            if closed.is_empty() {
                return;
            }
            (publication, closed)
        };
        let mut state = write(&self.state);
        let state = &mut *state;
        for (conn, sub) in closed {
            // Only the subscriber that said Closed, not a newer one on the same id.
            let same = state
                .topics
                .get(&*publication.topic)
                .and_then(|t| {
                    t.index
                        .get(&conn)
                        .map(|&i| Arc::ptr_eq(&t.entries[i].sub, &sub))
                })
                .unwrap_or(false);
            if same {
                state.remove(&publication.topic, conn);
            }
        }
    }

    /// Adds (or, when `catch_up` is given, replaces) `sub`'s entry; true
    /// when the connection was not subscribed before.
    fn add(&self, topic: &str, sub: Arc<dyn Subscriber>, catch_up: Option<Arc<CatchUp>>) -> bool {
        let conn = sub.id();
        let mut state = write(&self.state);
        let state = &mut *state;
        let name = match state.topics.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(topic);
                state.topics.insert(name.clone(), Topic::default());
                name
            }
        };
        let topic = state.topics.get_mut(&name).expect("inserted above");
        if let Some(&i) = topic.index.get(&conn) {
            if catch_up.is_some() {
                let old = std::mem::replace(
                    &mut topic.entries[i],
                    Entry {
                        conn,
                        sub,
                        catch_up,
                        replayed: None,
                    },
                );
                if let Some(old) = old.catch_up {
                    old.cancel();
                }
            }
            return false;
        }
        topic.index.insert(conn, topic.entries.len());
        topic.entries.push(Entry {
            conn,
            sub,
            catch_up,
            replayed: None,
        });
        state.conns.entry(conn).or_default().push(name);
        true
    }

    /// Removes `conn` from `topic`; with `catch_up`, only if that is still
    /// its entry's (a newer subscription is left alone).
    fn remove(&self, topic: &str, conn: ConnId, catch_up: Option<&Arc<CatchUp>>) -> bool {
        let mut state = write(&self.state);
        if let Some(catch_up) = catch_up {
            let current = state
                .topics
                .get(topic)
                .and_then(|t| t.index.get(&conn).map(|&i| &t.entries[i]))
                .and_then(|e| e.catch_up.as_ref())
                .is_some_and(|c| Arc::ptr_eq(c, catch_up));
            if !current {
                return false;
            }
        }
        state.remove(topic, conn)
    }

    fn remove_all(&self, conn: ConnId) {
        let mut state = write(&self.state);
        let Some(names) = state.conns.remove(&conn) else {
            return;
        };
        for name in names {
            if let Some(topic) = state.topics.get_mut(&name) {
                topic.remove(conn);
                if topic.entries.is_empty() {
                    state.topics.remove(&name);
                }
            }
        }
    }

    /// Ends a catch-up: the entry delivers directly from now on.
    fn settle(
        &self,
        topic: &str,
        conn: ConnId,
        catch_up: &Arc<CatchUp>,
        replayed: Option<Box<Position>>,
    ) {
        let mut state = write(&self.state);
        let Some(topic) = state.topics.get_mut(topic) else {
            return;
        };
        let Some(&i) = topic.index.get(&conn) else {
            return;
        };
        let entry = &mut topic.entries[i];
        if entry
            .catch_up
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, catch_up))
        {
            entry.catch_up = None;
            entry.replayed = replayed;
        }
    }
}

impl State {
    fn remove(&mut self, name: &str, conn: ConnId) -> bool {
        let Some(topic) = self.topics.get_mut(name) else {
            return false;
        };
        if !topic.remove(conn) {
            return false;
        }
        if topic.entries.is_empty() {
            self.topics.remove(name);
        }
        if let Some(names) = self.conns.get_mut(&conn) {
            if let Some(i) = names.iter().position(|n| &**n == name) {
                names.swap_remove(i);
            }
            if names.is_empty() {
                self.conns.remove(&conn);
            }
        }
        true
    }
}

impl Topic {
    fn remove(&mut self, conn: ConnId) -> bool {
        let Some(i) = self.index.remove(&conn) else {
            return false;
        };
        let entry = self.entries.swap_remove(i);
        if let Some(catch_up) = entry.catch_up {
            catch_up.cancel();
        }
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(moved.conn, i);
        }
        true
    }
}

/// A resuming subscriber's held-back live publications.
#[derive(Default)]
struct CatchUp {
    state: Mutex<CatchUpState>,
}

#[derive(Default)]
struct CatchUpState {
    held: Vec<Arc<Publication>>,
    /// Publications arrived that were not held (past [`CATCH_UP_LIMIT`]).
    overflowed: bool,
    /// Delivering directly; `seen` filters what was replayed.
    live: bool,
    seen: Option<Position>,
    /// Unsubscribed meanwhile: deliver nothing more.
    cancelled: bool,
}

enum GoLive {
    Live,
    Overflowed,
    Gone,
    Closed,
}

impl CatchUp {
    fn offer(
        &self,
        sub: &dyn Subscriber,
        publication: &Arc<Publication>,
        message: &PreparedMessage,
    ) -> Delivery {
        let mut state = lock(&self.state);
        if state.live {
            if already_seen(state.seen.as_ref(), publication) {
                return Delivery::Queued;
            }
            // Under the lock: ordered after the held ones.
            return sub.deliver(publication, message);
        }
        if state.held.len() < CATCH_UP_LIMIT {
            state.held.push(publication.clone());
        } else {
            state.overflowed = true;
        }
        Delivery::Queued
    }

    /// Delivers the held publications after `seen` and goes live; or, when
    /// some were not held, forgets them all (to read history again).
    fn go_live(&self, sub: &dyn Subscriber, seen: Option<&Position>, encoder: &Encoder) -> GoLive {
        let mut state = lock(&self.state);
        if state.cancelled {
            return GoLive::Gone;
        }
        let held = std::mem::take(&mut state.held);
        // After a gap there is no position to read history from again: what
        // was not held is part of the gap.
        if std::mem::take(&mut state.overflowed) && seen.is_some() {
            return GoLive::Overflowed;
        }
        for publication in held {
            if already_seen(seen, &publication) {
                continue;
            }
            let message = publication.prepared.get_or_init(|| encoder(&publication));
            if sub.deliver(&publication, message) == Delivery::Closed {
                state.cancelled = true;
                return GoLive::Closed;
            }
        }
        state.live = true;
        state.seen = seen.cloned();
        GoLive::Live
    }

    fn cancel(&self) {
        lock(&self.state).cancelled = true;
    }

    fn is_cancelled(&self) -> bool {
        lock(&self.state).cancelled
    }
}

// A subscriber that panicked in `deliver` must not wedge the hub for
// everyone: the maps stay consistent (no invariant spans a deliver call).
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        id: ConnId,
        got: Mutex<Vec<Arc<Publication>>>,
        closing: std::sync::atomic::AtomicBool,
    }

    impl Recorder {
        fn new(id: ConnId) -> Arc<Self> {
            Arc::new(Recorder {
                id,
                got: Mutex::new(Vec::new()),
                closing: Default::default(),
            })
        }

        fn offsets(&self) -> Vec<u64> {
            lock(&self.got)
                .iter()
                .map(|p| p.position.as_ref().unwrap().offset)
                .collect()
        }
    }

    impl Subscriber for Recorder {
        fn id(&self) -> ConnId {
            self.id
        }
        fn deliver(&self, publication: &Arc<Publication>, _: &PreparedMessage) -> Delivery {
            if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return Delivery::Closed;
            }
            lock(&self.got).push(publication.clone());
            Delivery::Queued
        }
    }

    type Hook = Box<dyn FnOnce(&LocalBroker) + Send>;

    /// A local broker that runs hooks around its next history read.
    struct Hooked {
        inner: LocalBroker,
        before: Mutex<Option<Hook>>,
        after: Mutex<Option<Hook>>,
    }

    impl Hooked {
        fn new(history_len: usize) -> Arc<Self> {
            Arc::new(Hooked {
                inner: LocalBroker::new(history_len, Duration::from_secs(60)),
                before: Mutex::new(None),
                after: Mutex::new(None),
            })
        }
    }

    impl fmt::Debug for Hooked {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Hooked")
                .field("inner", &self.inner)
                .finish_non_exhaustive()
        }
    }

    impl Broker for Hooked {
        fn start(&self, deliver: Deliver) {
            self.inner.start(deliver)
        }
        fn publish<'a>(
            &'a self,
            topic: &'a str,
            payload: Bytes,
            text: bool,
            from: Option<String>,
        ) -> BoxFuture<'a, Result<Position, BrokerError>> {
            self.inner.publish(topic, payload, text, from)
        }
        fn latest<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Position, BrokerError>> {
            self.inner.latest(topic)
        }
        fn history<'a>(
            &'a self,
            topic: &'a str,
            since: &'a Position,
        ) -> BoxFuture<'a, Result<Resume, BrokerError>> {
            Box::pin(async move {
                let before = lock(&self.before).take();
                if let Some(hook) = before {
                    hook(&self.inner);
                }
                let history = self.inner.history(topic, since).await;
                let after = lock(&self.after).take();
                if let Some(hook) = after {
                    hook(&self.inner);
                }
                history
            })
        }
        fn join<'a>(
            &'a self,
            room: &'a str,
            user: &'a str,
            conn: u64,
        ) -> BoxFuture<'a, Result<usize, BrokerError>> {
            self.inner.join(room, user, conn)
        }
        fn leave<'a>(
            &'a self,
            room: &'a str,
            user: &'a str,
            conn: u64,
        ) -> BoxFuture<'a, Result<usize, BrokerError>> {
            self.inner.leave(room, user, conn)
        }
        fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<String>, BrokerError>> {
            self.inner.members(room)
        }
    }

    fn publish_many(count: usize) -> Hook {
        Box::new(move |broker: &LocalBroker| {
            for _ in 0..count {
                broker.publish_now("t", Bytes::from_static(b"x"), false, None);
            }
        })
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// The hub's maps agree with each other.
    fn check_consistent(hub: &Hub) {
        let state = read(&hub.inner.local.state);
        let mut pairs = 0;
        for (name, topic) in &state.topics {
            assert!(!topic.entries.is_empty());
            assert_eq!(topic.entries.len(), topic.index.len());
            for (i, entry) in topic.entries.iter().enumerate() {
                assert_eq!(topic.index[&entry.conn], i);
                assert!(state.conns[&entry.conn].contains(name));
                pairs += 1;
            }
        }
        assert_eq!(pairs, state.conns.values().map(Vec::len).sum::<usize>());
    }

    #[test]
    fn removal_keeps_the_index_consistent() {
        block_on(async {
            let hub = Hub::new(HubConfig::default());
            let subs: Vec<_> = (1..=5).map(Recorder::new).collect();
            for sub in &subs {
                hub.subscribe("t", sub.clone()).await.unwrap();
                hub.subscribe(&format!("own {}", sub.id), sub.clone())
                    .await
                    .unwrap();
            }
            check_consistent(&hub);
            for conn in [2, 4, 5, 1] {
                assert!(hub.unsubscribe("t", conn));
                check_consistent(&hub);
            }
            hub.publish_text("t", "x").await.unwrap();
            assert_eq!(
                subs.iter().map(|s| s.offsets().len()).collect::<Vec<_>>(),
                [0, 0, 1, 0, 0]
            );
            hub.unsubscribe_all(3);
            check_consistent(&hub);
            assert_eq!(hub.topic_count(), 4);
            subs[0]
                .closing
                .store(true, std::sync::atomic::Ordering::SeqCst);
            hub.publish_text("own 1", "x").await.unwrap();
            check_consistent(&hub);
            assert_eq!(hub.topic_count(), 3);
        });
    }

    #[test]
    fn held_back_publications_past_the_limit_are_read_from_history_again() {
        block_on(async {
            let broker = Hooked::new(2 * CATCH_UP_LIMIT);
            let hub = Hub::with_broker(HubConfig::default(), broker.clone());
            let start = hub.publish_text("t", "1").await.unwrap();
            hub.publish_text("t", "2").await.unwrap();
            *lock(&broker.before) = Some(publish_many(5));
            // More than can be held: the last 10 are not held, only counted.
            *lock(&broker.after) = Some(publish_many(CATCH_UP_LIMIT + 10));
            let sub = Recorder::new(1);
            let resume = hub.subscribe_since("t", sub.clone(), &start).await.unwrap();
            let last = 7 + CATCH_UP_LIMIT as u64 + 10;
            let Resume::Replay(replayed) = resume else {
                panic!("a gap")
            };
            assert_eq!(replayed.len() as u64, last - 1, "two history reads");
            assert_eq!(sub.offsets(), (2..=last).collect::<Vec<_>>());
            hub.publish_text("t", "live").await.unwrap();
            assert_eq!(sub.offsets().last(), Some(&(last + 1)));
            assert!(read(&hub.inner.local.state).topics["t"].entries[0]
                .catch_up
                .is_none());
        });
    }

    #[test]
    fn unsubscribing_during_catch_up_delivers_nothing_more() {
        block_on(async {
            let broker = Hooked::new(100);
            let hub = Hub::with_broker(HubConfig::default(), broker.clone());
            let start = hub.publish_text("t", "1").await.unwrap();
            hub.publish_text("t", "2").await.unwrap();
            let other = hub.clone();
            *lock(&broker.before) = Some(Box::new(move |broker: &LocalBroker| {
                broker.publish_now("t", Bytes::from_static(b"3"), true, None);
                assert!(other.unsubscribe("t", 1));
                broker.publish_now("t", Bytes::from_static(b"4"), true, None);
            }));
            let sub = Recorder::new(1);
            hub.subscribe_since("t", sub.clone(), &start).await.unwrap();
            hub.publish_text("t", "5").await.unwrap();
            assert_eq!(sub.offsets(), Vec::<u64>::new());
            assert_eq!(hub.topic_count(), 0);
        });
    }

    #[test]
    fn resuming_an_existing_subscription_replays_and_then_delivers_once() {
        block_on(async {
            let hub = Hub::new(HubConfig::default());
            let sub = Recorder::new(1);
            let start = hub.subscribe("t", sub.clone()).await.unwrap();
            for i in 1..=3 {
                hub.publish_text("t", format!("{i}")).await.unwrap();
            }
            let since = Position { offset: 1, ..start };
            hub.subscribe_since("t", sub.clone(), &since).await.unwrap();
            hub.publish_text("t", "4").await.unwrap();
            assert_eq!(sub.offsets(), [1, 2, 3, 2, 3, 4]);
            assert_eq!(hub.subscriber_count("t"), 1);
            check_consistent(&hub);
        });
    }

    #[test]
    fn a_subscriber_closing_during_replay_is_removed() {
        block_on(async {
            let hub = Hub::new(HubConfig::default());
            let start = hub.latest("t").await.unwrap();
            hub.publish_text("t", "1").await.unwrap();
            let sub = Recorder::new(1);
            sub.closing.store(true, std::sync::atomic::Ordering::SeqCst);
            hub.subscribe_since("t", sub.clone(), &start).await.unwrap();
            assert_eq!(hub.subscriber_count("t"), 0);
            check_consistent(&hub);
        });
    }

    #[test]
    fn replayed_history_is_framed_once_and_shared() {
        block_on(async {
            let hub = Hub::new(HubConfig::default());
            let start = hub.latest("t").await.unwrap();
            hub.publish_text("t", "kept").await.unwrap();
            let (a, b) = (Recorder::new(1), Recorder::new(2));
            let Resume::Replay(first) = hub.subscribe_since("t", a, &start).await.unwrap() else {
                panic!()
            };
            let Resume::Replay(second) = hub.subscribe_since("t", b, &start).await.unwrap() else {
                panic!()
            };
            assert!(Arc::ptr_eq(&first[0], &second[0]));
            let frame = hub.prepare(&first[0]).frame().as_ptr();
            assert_eq!(frame, second[0].prepared.get().unwrap().frame().as_ptr());
        });
    }

    #[test]
    fn config_debug_and_defaults() {
        let config = HubConfig::default()
            .history_len(7)
            .history_age(Duration::from_secs(1));
        assert_eq!(
            (config.history_len, config.history_age),
            (7, Duration::from_secs(1))
        );
        assert!(format!("{:?}", Hub::new(config)).contains("history_len: 7"));
        let default = HubConfig::default();
        assert_eq!(
            (default.history_len, default.history_age),
            (1000, Duration::from_secs(300))
        );
    }
}

//! The embedded broker: positions, history and presence for one process.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::broker::{BoxFuture, Broker, BrokerError, Deliver};
use super::types::{ConnId, Kind, Position, Publication, Resume};
use super::{lock, read, write};

/// The broker a [`Hub`](super::Hub) uses when it is alone: everything lives
/// in this process's memory.
///
/// Each topic gets a random epoch the first time this process sees it (so a
/// restart is a new epoch, and resuming across it is a [`Resume::Gap`]), an
/// offset counter and a history ring bounded by count and age (pruned when
/// publishing and when history is read). Rooms count distinct users; a user
/// with several connections joins when the first arrives and leaves when the
/// last goes.
///
/// Publishing, presence changes and history reads of one topic are
/// serialized by that topic's lock, and [`Deliver`] is called under it: so
/// deliveries of a topic come in position order, and a publication that a
/// history read returns has already been delivered.
pub struct LocalBroker {
    history_len: usize,
    history_age: Duration,
    clock: Arc<dyn Fn() -> Instant + Send + Sync>,
    deliver: OnceLock<Deliver>,
    topics: RwLock<HashMap<Arc<str>, Arc<Mutex<Log>>>>,
}

/// One topic: its stream and its members.
struct Log {
    name: Arc<str>,
    epoch: String,
    offset: u64,
    /// Contiguous offsets, oldest first.
    history: VecDeque<Stored>,
    /// user -> the connections through which they joined.
    members: HashMap<String, Vec<ConnId>>,
}

struct Stored {
    at: Instant,
    publication: Arc<Publication>,
}

impl fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBroker")
            .field("history_len", &self.history_len)
            .field("history_age", &self.history_age)
            .field("topics", &read(&self.topics).len())
            .field("started", &self.deliver.get().is_some())
            .finish()
    }
}

impl LocalBroker {
    /// A broker keeping at most `history_len` messages per topic, none older
    /// than `history_age`.
    pub fn new(history_len: usize, history_age: Duration) -> Self {
        Self::with_clock(history_len, history_age, Instant::now)
    }

    /// As [`LocalBroker::new`], reading the time from `now` (tests move time
    /// forward instead of sleeping).
    pub fn with_clock(
        history_len: usize,
        history_age: Duration,
        now: impl Fn() -> Instant + Send + Sync + 'static,
    ) -> Self {
        LocalBroker {
            history_len,
            history_age,
            clock: Arc::new(now),
            deliver: OnceLock::new(),
            topics: RwLock::new(HashMap::new()),
        }
    }

    /// Topics this process has seen (their epochs and counters are kept for
    /// the life of the broker; their history ages out).
    pub fn topic_count(&self) -> usize {
        read(&self.topics).len()
    }

    /// The topic's log, made with a new epoch on first sight.
    fn log(&self, topic: &str) -> Arc<Mutex<Log>> {
        if let Some(log) = read(&self.topics).get(topic) {
            return log.clone();
        }
        let mut topics = write(&self.topics);
        if let Some(log) = topics.get(topic) {
            return log.clone();
        }
        let name: Arc<str> = Arc::from(topic);
        let log = Arc::new(Mutex::new(Log {
            name: name.clone(),
            epoch: format!("{:016x}", rand::random::<u64>()),
            offset: 0,
            history: VecDeque::new(),
            members: HashMap::new(),
        }));
        topics.insert(name, log.clone());
        log
    }

    fn existing(&self, topic: &str) -> Option<Arc<Mutex<Log>>> {
        read(&self.topics).get(topic).cloned()
    }

    fn deliver(&self, publication: Publication) {
        if let Some(deliver) = self.deliver.get() {
            deliver(publication);
        }
    }

    pub(super) fn publish_now(
        &self,
        topic: &str,
        payload: Bytes,
        text: bool,
        from: Option<String>,
    ) -> Position {
        let log = self.log(topic);
        let mut log = lock(&log);
        let now = (self.clock)();
        log.offset += 1;
        let position = Position {
            epoch: log.epoch.clone(),
            offset: log.offset,
        };
        let name = log.name.clone();
        if self.history_len > 0 {
            let stored = Publication::new(
                name.clone(),
                Some(position.clone()),
                payload.clone(),
                text,
                from.clone(),
                Kind::Message,
            );
            log.history.push_back(Stored {
                at: now,
                publication: Arc::new(stored),
            });
        }
        log.prune(now, self.history_len, self.history_age);
        self.deliver(Publication::new(
            name,
            Some(position.clone()),
            payload,
            text,
            from,
            Kind::Message,
        ));
        position
    }

    fn history_now(&self, topic: &str, since: &Position) -> Resume {
        let log = self.log(topic);
        let mut log = lock(&log);
        log.prune((self.clock)(), self.history_len, self.history_age);
        if since.epoch != log.epoch || since.offset > log.offset {
            return Resume::Gap;
        }
        // The history holds offsets first..=log.offset (empty: none).
        let first = log.offset + 1 - log.history.len() as u64;
        if since.offset + 1 < first {
            return Resume::Gap;
        }
        let skip = (since.offset + 1 - first) as usize;
        Resume::Replay(
            log.history
                .range(skip..)
                .map(|s| s.publication.clone())
                .collect(),
        )
    }

    fn join_now(&self, room: &str, user: &str, conn: ConnId) -> usize {
        let log = self.log(room);
        let mut log = lock(&log);
        let conns = log.members.entry(user.to_owned()).or_default();
        if conns.contains(&conn) {
            return log.members.len();
        }
        conns.push(conn);
        let first = conns.len() == 1;
        let count = log.members.len();
        if first {
            let kind = Kind::Join {
                user: user.to_owned(),
                count,
            };
            self.deliver(Publication::new(
                log.name.clone(),
                None,
                Bytes::new(),
                false,
                Some(user.to_owned()),
                kind,
            ));
        }
        count
    }

    fn leave_now(&self, room: &str, user: &str, conn: ConnId) -> usize {
        let Some(log) = self.existing(room) else {
            return 0;
        };
        let mut log = lock(&log);
        let Some(conns) = log.members.get_mut(user) else {
            return log.members.len();
        };
        let Some(i) = conns.iter().position(|&c| c == conn) else {
            return log.members.len();
        };
        conns.swap_remove(i);
        if !conns.is_empty() {
            return log.members.len();
        }
        log.members.remove(user);
        let count = log.members.len();
        let kind = Kind::Leave {
            user: user.to_owned(),
            count,
        };
        self.deliver(Publication::new(
            log.name.clone(),
            None,
            Bytes::new(),
            false,
            Some(user.to_owned()),
            kind,
        ));
        count
    }
}

impl Log {
    fn prune(&mut self, now: Instant, len: usize, age: Duration) {
        while self.history.len() > len {
            self.history.pop_front();
        }
        while self
            .history
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) >= age)
        {
            self.history.pop_front();
        }
    }
}

impl Broker for LocalBroker {
    fn start(&self, deliver: Deliver) {
        if self.deliver.set(deliver).is_err() {
            tracing::warn!("LocalBroker started twice; it keeps delivering to the first hub");
        }
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        payload: Bytes,
        text: bool,
        from: Option<String>,
    ) -> BoxFuture<'a, Result<Position, BrokerError>> {
        Box::pin(async move { Ok(self.publish_now(topic, payload, text, from)) })
    }

    fn latest<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Position, BrokerError>> {
        Box::pin(async move {
            let log = self.log(topic);
            let log = lock(&log);
            Ok(Position {
                epoch: log.epoch.clone(),
                offset: log.offset,
            })
        })
    }

    fn history<'a>(
        &'a self,
        topic: &'a str,
        since: &'a Position,
    ) -> BoxFuture<'a, Result<Resume, BrokerError>> {
        Box::pin(async move { Ok(self.history_now(topic, since)) })
    }

    fn join<'a>(
        &'a self,
        room: &'a str,
        user: &'a str,
        conn: u64,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move { Ok(self.join_now(room, user, conn)) })
    }

    fn leave<'a>(
        &'a self,
        room: &'a str,
        user: &'a str,
        conn: u64,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move { Ok(self.leave_now(room, user, conn)) })
    }

    fn members<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<String>, BrokerError>> {
        Box::pin(async move {
            let Some(log) = self.existing(room) else {
                return Ok(Vec::new());
            };
            let mut users: Vec<String> = lock(&log).members.keys().cloned().collect();
            users.sort_unstable();
            Ok(users)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock the test moves by hand.
    fn manual_clock() -> (Arc<AtomicU64>, impl Fn() -> Instant + Send + Sync + 'static) {
        let base = Instant::now();
        let millis = Arc::new(AtomicU64::new(0));
        let read = millis.clone();
        (millis, move || {
            base + Duration::from_millis(read.load(Ordering::SeqCst))
        })
    }

    fn recording(broker: &LocalBroker) -> Arc<Mutex<Vec<Publication>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        broker.start(Arc::new(move |p| sink.lock().unwrap().push(p)));
        seen
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn offsets(resume: Resume) -> Vec<u64> {
        match resume {
            Resume::Replay(list) => list
                .iter()
                .map(|p| p.position.as_ref().unwrap().offset)
                .collect(),
            Resume::Gap => panic!("a gap"),
        }
    }

    #[test]
    fn positions_count_from_one_in_one_epoch_per_topic() {
        block_on(async {
            let broker = LocalBroker::new(10, Duration::from_secs(60));
            let seen = recording(&broker);
            assert_eq!(broker.latest("a").await.unwrap().offset, 0);
            let a1 = broker
                .publish("a", Bytes::from_static(b"x"), true, None)
                .await
                .unwrap();
            let a2 = broker
                .publish("a", Bytes::from_static(b"y"), true, None)
                .await
                .unwrap();
            let b1 = broker
                .publish("b", Bytes::from_static(b"z"), false, Some("u".into()))
                .await
                .unwrap();
            assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
            assert_eq!(a1.epoch, a2.epoch);
            assert_ne!(a1.epoch, b1.epoch);
            assert_eq!(a1.epoch.len(), 16);
            assert_eq!(broker.latest("a").await.unwrap(), a2);
            // Deliver is called exactly once per publication, with its position.
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 3);
            assert_eq!(seen[2].position, Some(b1));
            assert_eq!(seen[2].from.as_deref(), Some("u"));
            assert!(!seen[2].text);
        });
    }

    #[test]
    fn history_is_bounded_by_count() {
        block_on(async {
            let broker = LocalBroker::new(3, Duration::from_secs(60));
            for i in 0..5 {
                broker
                    .publish("t", Bytes::from(format!("{i}")), true, None)
                    .await
                    .unwrap();
            }
            let epoch = broker.latest("t").await.unwrap().epoch;
            let at = |offset| Position {
                epoch: epoch.clone(),
                offset,
            };
            assert_eq!(
                offsets(broker.history("t", &at(2)).await.unwrap()),
                [3, 4, 5]
            );
            assert_eq!(offsets(broker.history("t", &at(4)).await.unwrap()), [5]);
            assert_eq!(
                offsets(broker.history("t", &at(5)).await.unwrap()),
                Vec::<u64>::new()
            );
            assert!(matches!(
                broker.history("t", &at(1)).await.unwrap(),
                Resume::Gap
            ));
            assert!(matches!(
                broker.history("t", &at(0)).await.unwrap(),
                Resume::Gap
            ));
            // A position from the future of this epoch is not ours.
            assert!(matches!(
                broker.history("t", &at(6)).await.unwrap(),
                Resume::Gap
            ));
        });
    }

    #[test]
    fn history_is_bounded_by_age_on_read_and_on_publish() {
        block_on(async {
            let (millis, clock) = manual_clock();
            let broker = LocalBroker::with_clock(100, Duration::from_secs(10), clock);
            broker
                .publish("t", Bytes::from_static(b"1"), true, None)
                .await
                .unwrap();
            millis.store(5_000, Ordering::SeqCst);
            broker
                .publish("t", Bytes::from_static(b"2"), true, None)
                .await
                .unwrap();
            let epoch = broker.latest("t").await.unwrap().epoch;
            let start = Position { epoch, offset: 0 };
            assert_eq!(offsets(broker.history("t", &start).await.unwrap()), [1, 2]);
            // At 10 s the first is 10 s old: gone when history is read.
            millis.store(10_000, Ordering::SeqCst);
            assert!(matches!(
                broker.history("t", &start).await.unwrap(),
                Resume::Gap
            ));
            let after_first = Position {
                offset: 1,
                ..start.clone()
            };
            assert_eq!(
                offsets(broker.history("t", &after_first).await.unwrap()),
                [2]
            );
            // Later everything has aged out; a caught-up client still resumes.
            millis.store(60_000, Ordering::SeqCst);
            broker
                .publish("t", Bytes::from_static(b"3"), true, None)
                .await
                .unwrap();
            assert_eq!(lock(&broker.log("t")).history.len(), 1, "pruned on publish");
            let caught_up = Position {
                offset: 3,
                ..start.clone()
            };
            assert_eq!(
                offsets(broker.history("t", &caught_up).await.unwrap()),
                Vec::<u64>::new()
            );
            assert!(matches!(
                broker.history("t", &after_first).await.unwrap(),
                Resume::Gap
            ));
        });
    }

    #[test]
    fn another_epoch_is_a_gap() {
        block_on(async {
            let broker = LocalBroker::new(10, Duration::from_secs(60));
            broker
                .publish("t", Bytes::from_static(b"1"), true, None)
                .await
                .unwrap();
            let foreign = Position {
                epoch: "0123456789abcdef".into(),
                offset: 0,
            };
            assert!(matches!(
                broker.history("t", &foreign).await.unwrap(),
                Resume::Gap
            ));
            // An unknown topic too: this process has never numbered it.
            assert!(matches!(
                broker.history("new", &foreign).await.unwrap(),
                Resume::Gap
            ));
        });
    }

    #[test]
    fn no_history_kept_when_its_length_is_zero() {
        block_on(async {
            let broker = LocalBroker::new(0, Duration::from_secs(60));
            let p = broker
                .publish("t", Bytes::from_static(b"1"), true, None)
                .await
                .unwrap();
            let before = Position {
                offset: 0,
                ..p.clone()
            };
            assert!(matches!(
                broker.history("t", &before).await.unwrap(),
                Resume::Gap
            ));
            assert_eq!(
                offsets(broker.history("t", &p).await.unwrap()),
                Vec::<u64>::new()
            );
        });
    }

    #[test]
    fn presence_counts_distinct_users_and_announces_first_join_and_last_leave() {
        block_on(async {
            let broker = LocalBroker::new(10, Duration::from_secs(60));
            let seen = recording(&broker);
            assert_eq!(broker.join("r", "alice", 1).await.unwrap(), 1);
            assert_eq!(broker.join("r", "alice", 2).await.unwrap(), 1);
            assert_eq!(
                broker.join("r", "alice", 2).await.unwrap(),
                1,
                "the same connection again"
            );
            assert_eq!(broker.join("r", "bob", 3).await.unwrap(), 2);
            assert_eq!(broker.members("r").await.unwrap(), ["alice", "bob"]);
            assert_eq!(broker.leave("r", "alice", 1).await.unwrap(), 2);
            assert_eq!(
                broker.leave("r", "alice", 9).await.unwrap(),
                2,
                "a connection that never joined"
            );
            assert_eq!(broker.leave("r", "alice", 2).await.unwrap(), 1);
            assert_eq!(broker.members("r").await.unwrap(), ["bob"]);
            assert_eq!(broker.leave("nowhere", "bob", 3).await.unwrap(), 0);
            assert!(broker.members("nowhere").await.unwrap().is_empty());
            let kinds: Vec<Kind> = seen
                .lock()
                .unwrap()
                .iter()
                .map(|p| p.kind.clone())
                .collect();
            assert_eq!(
                kinds,
                [
                    Kind::Join {
                        user: "alice".into(),
                        count: 1
                    },
                    Kind::Join {
                        user: "bob".into(),
                        count: 2
                    },
                    Kind::Leave {
                        user: "alice".into(),
                        count: 1
                    },
                ]
            );
            assert!(seen.lock().unwrap().iter().all(|p| p.position.is_none()));
            // Presence does not move the message stream.
            assert_eq!(broker.latest("r").await.unwrap().offset, 0);
        });
    }
}

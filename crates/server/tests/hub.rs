//! The pub/sub hub through its public API: fan-out shares one frame, history
//! and resuming (in order, none twice, none lost, gaps), presence, and no
//! allocation per subscriber.
//!
//! This binary counts allocations with a global allocator, which counts the
//! whole process: every test takes the `SERIAL` lock so the counting test measures
//! only itself.

use std::alloc::System;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// In a module named after the file, so `cargo test hub` selects these tests.
mod hub {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use sockeye_proto::PreparedMessage;
    use sockeye_server::hub::{
        BoxFuture, Broker, BrokerError, ConnId, Deliver, Delivery, Hub, HubConfig, Kind,
        LocalBroker, Position, Publication, Resume, Subscriber,
    };
    use stats_alloc::Region;

    use super::GLOBAL;

    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
        SERIAL.lock().await
    }

    /// A subscriber that records every delivery.
    struct Recorder {
        id: ConnId,
        got: Mutex<Vec<(Arc<Publication>, Bytes)>>,
        closing: AtomicBool,
    }

    impl Recorder {
        fn new(id: ConnId) -> Arc<Self> {
            Arc::new(Recorder {
                id,
                got: Mutex::new(Vec::new()),
                closing: AtomicBool::new(false),
            })
        }

        fn offsets(&self) -> Vec<u64> {
            let got = self.got.lock().unwrap();
            got.iter()
                .map(|(p, _)| p.position.as_ref().expect("a message").offset)
                .collect()
        }

        fn payloads(&self) -> Vec<String> {
            let got = self.got.lock().unwrap();
            got.iter()
                .map(|(_, frame)| String::from_utf8_lossy(&frame[2..]).into_owned())
                .collect()
        }

        fn kinds(&self) -> Vec<Kind> {
            self.got
                .lock()
                .unwrap()
                .iter()
                .map(|(p, _)| p.kind.clone())
                .collect()
        }

        fn count(&self) -> usize {
            self.got.lock().unwrap().len()
        }
    }

    impl Subscriber for Recorder {
        fn id(&self) -> ConnId {
            self.id
        }

        fn deliver(&self, publication: &Arc<Publication>, message: &PreparedMessage) -> Delivery {
            if self.closing.load(Ordering::SeqCst) {
                return Delivery::Closed;
            }
            self.got
                .lock()
                .unwrap()
                .push((publication.clone(), message.frame().clone()));
            Delivery::Queued
        }
    }

    fn offsets(resume: &Resume) -> Vec<u64> {
        match resume {
            Resume::Replay(list) => list
                .iter()
                .map(|p| p.position.as_ref().unwrap().offset)
                .collect(),
            Resume::Gap => panic!("a gap"),
        }
    }

    fn range(from: u64, to: u64) -> Vec<u64> {
        (from..=to).collect()
    }

    #[tokio::test]
    async fn fan_out_to_1000_subscribers_shares_one_frame() {
        let _serial = serial().await;
        let hub = Hub::new(HubConfig::default());
        let subs: Vec<_> = (0..1000).map(Recorder::new).collect();
        for sub in &subs {
            hub.subscribe("news", sub.clone()).await.unwrap();
        }
        assert_eq!(hub.subscriber_count("news"), 1000);
        let position = hub.publish_text("news", "extra, extra").await.unwrap();
        assert_eq!(position.offset, 1);

        let first = subs[0].got.lock().unwrap()[0].clone();
        assert_eq!(&first.1[..], b"\x81\x0cextra, extra");
        for sub in &subs {
            let got = sub.got.lock().unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(
                got[0].1.as_ptr(),
                first.1.as_ptr(),
                "every subscriber queues the same bytes"
            );
            assert!(
                Arc::ptr_eq(&got[0].0, &first.0),
                "and sees the same publication"
            );
            assert_eq!(got[0].0.position.as_ref(), Some(&position));
        }
    }

    #[tokio::test]
    async fn unsubscribe_stops_delivery() {
        let _serial = serial().await;
        let hub = Hub::new(HubConfig::default());
        let (a, b, c) = (Recorder::new(1), Recorder::new(2), Recorder::new(3));
        for sub in [&a, &b, &c] {
            hub.subscribe("t", sub.clone()).await.unwrap();
        }
        hub.subscribe("other", a.clone()).await.unwrap();
        // Idempotent per (topic, connection).
        hub.subscribe("t", a.clone()).await.unwrap();
        assert_eq!(hub.subscriber_count("t"), 3);
        assert_eq!(hub.topic_count(), 2);

        hub.publish_text("t", "one").await.unwrap();
        assert!(hub.unsubscribe("t", 2));
        assert!(!hub.unsubscribe("t", 2), "not subscribed any more");
        hub.publish_text("t", "two").await.unwrap();
        assert_eq!(a.payloads(), ["one", "two"]);
        assert_eq!(b.payloads(), ["one"]);
        assert_eq!(c.payloads(), ["one", "two"]);

        hub.unsubscribe_all(1);
        hub.publish_text("t", "three").await.unwrap();
        hub.publish_text("other", "elsewhere").await.unwrap();
        assert_eq!(a.payloads(), ["one", "two"]);
        assert_eq!(c.payloads(), ["one", "two", "three"]);
        assert_eq!(
            hub.topic_count(),
            1,
            "a topic without subscribers is forgotten"
        );
        assert!(hub.unsubscribe("t", 3));
        assert_eq!((hub.topic_count(), hub.subscriber_count("t")), (0, 0));
    }

    #[tokio::test]
    async fn a_closed_subscriber_is_removed() {
        let _serial = serial().await;
        let hub = Hub::new(HubConfig::default());
        let (open, closing) = (Recorder::new(1), Recorder::new(2));
        hub.subscribe("t", open.clone()).await.unwrap();
        hub.subscribe("t", closing.clone()).await.unwrap();
        closing.closing.store(true, Ordering::SeqCst);
        hub.publish_text("t", "a").await.unwrap();
        assert_eq!(hub.subscriber_count("t"), 1);
        closing.closing.store(false, Ordering::SeqCst);
        hub.publish_text("t", "b").await.unwrap();
        assert_eq!(open.payloads(), ["a", "b"]);
        assert_eq!(closing.count(), 0);
    }

    #[tokio::test]
    async fn resuming_replays_what_was_missed_then_goes_live() {
        let _serial = serial().await;
        let hub = Hub::new(HubConfig::default().history_len(5));
        let first = hub.subscribe("t", Recorder::new(9)).await.unwrap();
        assert_eq!(first.offset, 0);
        for i in 1..=8 {
            hub.publish_text("t", format!("m{i}")).await.unwrap();
        }
        let at = |offset| Position {
            epoch: first.epoch.clone(),
            offset,
        };

        // Offsets 4..=8 are kept: resuming after 3 is covered, after 2 is not.
        let sub = Recorder::new(1);
        let resume = hub.subscribe_since("t", sub.clone(), &at(3)).await.unwrap();
        assert_eq!(offsets(&resume), range(4, 8));
        hub.publish_text("t", "m9").await.unwrap();
        assert_eq!(sub.offsets(), range(4, 9));
        assert_eq!(sub.payloads(), ["m4", "m5", "m6", "m7", "m8", "m9"]);

        let caught_up = Recorder::new(2);
        let resume = hub
            .subscribe_since("t", caught_up.clone(), &at(9))
            .await
            .unwrap();
        assert_eq!(offsets(&resume), Vec::<u64>::new());

        let late = Recorder::new(3);
        let resume = hub
            .subscribe_since("t", late.clone(), &at(2))
            .await
            .unwrap();
        assert!(matches!(resume, Resume::Gap));
        assert_eq!(late.count(), 0, "nothing replayed after a gap");
        hub.publish_text("t", "m10").await.unwrap();
        assert_eq!(late.offsets(), [10], "but subscribed, live from now");
        assert_eq!(caught_up.offsets(), [10]);
    }

    #[tokio::test]
    async fn another_epoch_is_a_gap() {
        let _serial = serial().await;
        let hub = Hub::new(HubConfig::default());
        hub.publish_text("t", "before").await.unwrap();
        let sub = Recorder::new(1);
        // As after a restart: the epoch the client knew no longer exists.
        let foreign = Position {
            epoch: "feedfacecafebeef".into(),
            offset: 1,
        };
        let resume = hub
            .subscribe_since("t", sub.clone(), &foreign)
            .await
            .unwrap();
        assert!(matches!(resume, Resume::Gap));
        hub.publish_text("t", "after").await.unwrap();
        assert_eq!(sub.payloads(), ["after"]);
    }

    #[tokio::test]
    async fn history_ages_out() {
        let _serial = serial().await;
        let base = Instant::now();
        let millis = Arc::new(AtomicU64::new(0));
        let clock = {
            let millis = millis.clone();
            move || base + Duration::from_millis(millis.load(Ordering::SeqCst))
        };
        let broker = Arc::new(LocalBroker::with_clock(
            1000,
            Duration::from_secs(60),
            clock,
        ));
        let hub = Hub::with_broker(HubConfig::default(), broker);
        let p1 = hub.publish_text("t", "old").await.unwrap();
        millis.store(30_000, Ordering::SeqCst);
        hub.publish_text("t", "newer").await.unwrap();
        let start = Position {
            offset: 0,
            ..p1.clone()
        };

        let resume = hub
            .subscribe_since("t", Recorder::new(1), &start)
            .await
            .unwrap();
        assert_eq!(offsets(&resume), [1, 2]);
        millis.store(61_000, Ordering::SeqCst);
        let resume = hub
            .subscribe_since("t", Recorder::new(2), &start)
            .await
            .unwrap();
        assert!(
            matches!(resume, Resume::Gap),
            "the first message is over a minute old"
        );
        let resume = hub
            .subscribe_since("t", Recorder::new(3), &p1)
            .await
            .unwrap();
        assert_eq!(offsets(&resume), [2]);
    }

    /// Resumes from `k` while another task is publishing 1,000 messages: the
    /// subscriber sees exactly k+1..=1000, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn resuming_while_publishing_loses_nothing_and_repeats_nothing() {
        let _serial = serial().await;
        let mut overlapped = 0;
        for round in 0..20u64 {
            let hub = Hub::new(HubConfig::default().history_len(2000));
            let epoch = hub.latest("feed").await.unwrap().epoch;
            let halfway = Arc::new(tokio::sync::Notify::new());
            let publisher = {
                let hub = hub.clone();
                let halfway = halfway.clone();
                tokio::spawn(async move {
                    for i in 1..=1000u64 {
                        hub.publish_text("feed", format!("m{i}")).await.unwrap();
                        if i == 500 {
                            halfway.notify_one();
                        }
                        if i > 500 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            };
            halfway.notified().await;
            let k = 100 + round * 20;
            let sub = Recorder::new(1);
            let resume = hub
                .subscribe_since(
                    "feed",
                    sub.clone(),
                    &Position {
                        epoch: epoch.clone(),
                        offset: k,
                    },
                )
                .await
                .unwrap();
            publisher.await.unwrap();

            let replayed = offsets(&resume);
            assert_eq!(
                replayed,
                range(k + 1, k + replayed.len() as u64),
                "round {round}: replay in order"
            );
            assert_eq!(sub.offsets(), range(k + 1, 1000), "round {round}");
            if replayed.last() != Some(&1000) {
                overlapped += 1;
            }
        }
        eprintln!("{overlapped} of 20 rounds went live while the publisher was still publishing");
    }

    /// A broker that publishes while the hub reads history: some messages are
    /// both in the history read and held back as live, some only live.
    #[derive(Debug)]
    struct Interleaving {
        inner: LocalBroker,
        during: AtomicBool,
    }

    impl Broker for Interleaving {
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
                if !self.during.swap(false, Ordering::SeqCst) {
                    return self.inner.history(topic, since).await;
                }
                for i in 0..3 {
                    self.inner
                        .publish(topic, Bytes::from(format!("before read {i}")), true, None)
                        .await?;
                }
                let history = self.inner.history(topic, since).await;
                for i in 0..3 {
                    self.inner
                        .publish(topic, Bytes::from(format!("after read {i}")), true, None)
                        .await?;
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

    #[tokio::test]
    async fn publications_during_the_history_read_arrive_once_in_order() {
        let _serial = serial().await;
        let broker = Arc::new(Interleaving {
            inner: LocalBroker::new(100, Duration::from_secs(60)),
            during: AtomicBool::new(false),
        });
        let hub = Hub::with_broker(HubConfig::default(), broker.clone());
        for i in 1..=4 {
            hub.publish_text("t", format!("m{i}")).await.unwrap();
        }
        let epoch = hub.latest("t").await.unwrap().epoch;
        broker.during.store(true, Ordering::SeqCst);
        let sub = Recorder::new(1);
        let resume = hub
            .subscribe_since("t", sub.clone(), &Position { epoch, offset: 2 })
            .await
            .unwrap();
        // History was read after 5..=7 were published (and held back as live).
        assert_eq!(offsets(&resume), range(3, 7));
        assert_eq!(sub.offsets(), range(3, 10));
        hub.publish_text("t", "m11").await.unwrap();
        assert_eq!(sub.offsets(), range(3, 11));
    }

    /// A broker whose live feed lags behind its history (as a network broker
    /// can): publications reach the hub only when the test says so.
    struct Lagging {
        inner: LocalBroker,
        queue: Arc<Mutex<Vec<Publication>>>,
        deliver: OnceLock<Deliver>,
    }

    impl Lagging {
        fn new() -> Arc<Self> {
            let broker = Lagging {
                inner: LocalBroker::new(100, Duration::from_secs(60)),
                queue: Arc::default(),
                deliver: OnceLock::new(),
            };
            let queue = broker.queue.clone();
            broker
                .inner
                .start(Arc::new(move |p| queue.lock().unwrap().push(p)));
            Arc::new(broker)
        }

        fn catch_up(&self) {
            let queued = std::mem::take(&mut *self.queue.lock().unwrap());
            for publication in queued {
                (self.deliver.get().unwrap())(publication);
            }
        }
    }

    impl std::fmt::Debug for Lagging {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Lagging")
                .field("inner", &self.inner)
                .finish_non_exhaustive()
        }
    }

    impl Broker for Lagging {
        fn start(&self, deliver: Deliver) {
            self.deliver.set(deliver).ok().unwrap();
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
            self.inner.history(topic, since)
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

    #[tokio::test]
    async fn a_replayed_message_arriving_late_on_the_live_feed_is_not_repeated() {
        let _serial = serial().await;
        let broker = Lagging::new();
        let hub = Hub::with_broker(HubConfig::default(), broker.clone());
        let live = Recorder::new(1);
        let start = hub.subscribe("t", live.clone()).await.unwrap();
        for i in 1..=5 {
            hub.publish_text("t", format!("m{i}")).await.unwrap();
        }
        // Still in flight: the resuming subscriber gets 1..=5 from history...
        let resumed = Recorder::new(2);
        let resume = hub
            .subscribe_since("t", resumed.clone(), &start)
            .await
            .unwrap();
        assert_eq!(offsets(&resume), range(1, 5));
        // ...and not again when the live feed catches up.
        broker.catch_up();
        hub.publish_text("t", "m6").await.unwrap();
        broker.catch_up();
        assert_eq!(live.offsets(), range(1, 6));
        assert_eq!(resumed.offsets(), range(1, 6));
    }

    #[tokio::test]
    async fn presence_announces_members_and_counts_users_once() {
        let _serial = serial().await;
        let hub = Hub::new(HubConfig::default());
        let watcher = Recorder::new(100);
        hub.subscribe("lobby", watcher.clone()).await.unwrap();
        let (alice_1, alice_2, bob) = (Recorder::new(1), Recorder::new(2), Recorder::new(3));

        assert_eq!(
            hub.join("lobby", "alice", alice_1.clone()).await.unwrap(),
            1
        );
        assert_eq!(
            hub.join("lobby", "alice", alice_2.clone()).await.unwrap(),
            1,
            "a second tab"
        );
        assert_eq!(hub.join("lobby", "bob", bob.clone()).await.unwrap(), 2);
        assert_eq!(hub.members("lobby").await.unwrap(), ["alice", "bob"]);
        assert_eq!(hub.subscriber_count("lobby"), 4);

        // Members are subscribers: they get messages and each other's presence.
        hub.publish("lobby", "hi", true, Some("bob".into()))
            .await
            .unwrap();
        assert_eq!(alice_2.payloads().last().map(String::as_str), Some("hi"));
        assert_eq!(
            alice_1.kinds()[..2],
            [
                Kind::Join {
                    user: "alice".into(),
                    count: 1
                },
                Kind::Join {
                    user: "bob".into(),
                    count: 2
                }
            ]
        );

        assert_eq!(
            hub.leave("lobby", "alice", 1).await.unwrap(),
            2,
            "alice is still here on her second tab"
        );
        assert_eq!(hub.members("lobby").await.unwrap(), ["alice", "bob"]);
        assert_eq!(hub.leave("lobby", "alice", 2).await.unwrap(), 1);
        assert_eq!(hub.members("lobby").await.unwrap(), ["bob"]);
        assert_eq!(hub.subscriber_count("lobby"), 2);

        let expected = [
            Kind::Join {
                user: "alice".into(),
                count: 1,
            },
            Kind::Join {
                user: "bob".into(),
                count: 2,
            },
            Kind::Message,
            Kind::Leave {
                user: "alice".into(),
                count: 1,
            },
        ];
        assert_eq!(watcher.kinds(), expected);
        assert_eq!(bob.kinds(), expected[1..]);
        let leave: serde_json::Value = serde_json::from_str(&watcher.payloads()[3]).unwrap();
        assert_eq!(
            leave,
            serde_json::json!({"type": "presence", "room": "lobby", "event": "leave", "user": "alice", "count": 1})
        );
        assert!(watcher
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.kind != Kind::Message)
            .all(|(p, _)| p.position.is_none()));
    }

    /// A subscriber that only counts, so the test's own bookkeeping allocates
    /// nothing.
    struct Counter(ConnId, AtomicUsize);

    impl Subscriber for Counter {
        fn id(&self) -> ConnId {
            self.0
        }
        fn deliver(&self, _: &Arc<Publication>, _: &PreparedMessage) -> Delivery {
            self.1.fetch_add(1, Ordering::Relaxed);
            Delivery::Queued
        }
    }

    #[test]
    fn publishing_allocates_per_message_not_per_subscriber() {
        let _serial = SERIAL.blocking_lock();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let hub = Hub::new(HubConfig::default().history_len(16));
            let subs: Vec<_> = (0..10_000)
                .map(|id| Arc::new(Counter(id, AtomicUsize::new(0))))
                .collect();
            for sub in &subs[..10] {
                hub.subscribe("few", sub.clone()).await.unwrap();
            }
            for sub in &subs {
                hub.subscribe("many", sub.clone()).await.unwrap();
            }
            let payload = Bytes::from_static(b"a message of some length");
            // Warm up: the history rings reach their steady size.
            for _ in 0..100 {
                hub.publish("few", payload.clone(), true, None)
                    .await
                    .unwrap();
                hub.publish("many", payload.clone(), true, None)
                    .await
                    .unwrap();
            }

            let region = Region::new(GLOBAL);
            hub.publish("few", payload.clone(), true, None)
                .await
                .unwrap();
            let few = region.change().allocations;
            let region = Region::new(GLOBAL);
            hub.publish("many", payload.clone(), true, None)
                .await
                .unwrap();
            let many = region.change().allocations;

            assert_eq!(subs[9_999].1.load(Ordering::Relaxed), 101);
            assert_eq!(many, few, "allocations for 10,000 subscribers as for 10");
            assert!(many <= 10, "{many} allocations for one publication");
        });
    }
}

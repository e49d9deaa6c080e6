//! The Redis broker against a real `redis-server`: two brokers in one test
//! are two processes of a cluster. Each test starts its own server on a free
//! loopback port and kills it when done (even when the test fails).
//!
//! `redis-server` must be on PATH: `scripts/test.sh` installs Debian's
//! package when it is missing. Without it these tests fail, on purpose: a
//! skipped cluster test would look like a passing one.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sockeye_server::hub::{
    Broker, Deliver, Kind, Position, Publication, RedisBroker, RedisConfig, Resume,
};

// ---------------------------------------------------------------------------
// a redis-server of our own
// ---------------------------------------------------------------------------

/// A `redis-server` child process, killed (by its PID) when dropped.
struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    fn start() -> Self {
        let port = {
            let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .expect("bind a probe socket on 127.0.0.1:0");
            probe.local_addr().unwrap().port()
        };
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().expect("a temporary directory for redis-server"),
            child: None,
        };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = self.log_path();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (not on PATH). The test command (scripts/test.sh) installs \
                 Debian's `redis-server` package when it is missing; by hand: apt-get install redis-server"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls with PING until the server answers (bounded).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(self.port) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "redis-server exited ({status}) before answering; its log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients, data gone).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new server on the same port (empty: nothing was saved).
    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs one command on a connection of its own.
    async fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn)
            .await
            .expect("command on the test redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether something on `port` answers `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A port nothing listens on.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------
// nodes and what they deliver
// ---------------------------------------------------------------------------

/// Records what a broker delivers.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Publication>>>);

impl Recorder {
    fn deliver(&self) -> Deliver {
        let got = self.0.clone();
        Arc::new(move |publication| got.lock().unwrap().push(publication))
    }

    /// `(payload, offset)` of the messages delivered for `topic`, in order.
    fn messages(&self, topic: &str) -> Vec<(String, u64)> {
        let got = self.0.lock().unwrap();
        got.iter()
            .filter(|p| &*p.topic == topic && p.kind == Kind::Message)
            .map(|p| {
                (
                    String::from_utf8_lossy(&p.payload).into_owned(),
                    p.position
                        .as_ref()
                        .expect("a message has a position")
                        .offset,
                )
            })
            .collect()
    }

    /// The presence events delivered for `room`, in order.
    fn presence(&self, room: &str) -> Vec<Kind> {
        let got = self.0.lock().unwrap();
        got.iter()
            .filter(|p| &*p.topic == room && p.kind != Kind::Message)
            .map(|p| p.kind.clone())
            .collect()
    }

    fn has(&self, topic: &str, payload: &str) -> bool {
        self.messages(topic).iter().any(|(p, _)| p == payload)
    }

    /// Waits (polling, bounded) until `payload` was delivered on `topic`.
    async fn wait_for(&self, topic: &str, payload: &str) {
        let this = self.clone();
        let (topic2, payload2) = (topic.to_owned(), payload.to_owned());
        eventually(
            Duration::from_secs(10),
            &format!("{payload:?} delivered on {topic:?}"),
            move || this.has(&topic2, &payload2),
        )
        .await;
    }
}

/// Polls `done` every 10 ms until it holds; fails after `limit`.
async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A started broker (one process of the cluster) and what it delivered.
async fn node(server: &RedisServer, config: RedisConfig) -> (RedisBroker, Recorder) {
    logs(); // capture the broker's logs from here on
    let broker = RedisBroker::connect(&server.url(), config)
        .await
        .expect("connect to the test redis-server");
    let recorder = Recorder::default();
    broker.start(recorder.deliver());
    (broker, recorder)
}

fn config() -> RedisConfig {
    RedisConfig::default().command_timeout(Duration::from_secs(1))
}

fn text(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The broker's logs, for the tests that check what it says.
fn logs() -> String {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buffer = LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("sockeye_server=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .try_init();
        buffer
    });
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_reach_every_node_once_in_position_order() {
    let server = RedisServer::start();
    let (a, got_a) = node(&server, config()).await;
    let (b, got_b) = node(&server, config()).await;

    let mut positions = Vec::new();
    for i in 0..10 {
        let (publisher, from) = if i % 2 == 0 {
            (&a, "alice")
        } else {
            (&b, "bob")
        };
        positions.push(
            publisher
                .publish(
                    "chat:lobby",
                    text(&format!("m{i}")),
                    true,
                    Some(from.into()),
                )
                .await
                .unwrap(),
        );
    }
    let epoch = positions[0].epoch.clone();
    assert!(
        positions.iter().all(|p| p.epoch == epoch),
        "one epoch: {positions:?}"
    );
    assert_eq!(
        positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    b.publish("other", text("elsewhere"), true, None)
        .await
        .unwrap();
    // Everything a node gets comes in channel order: once "end" is there,
    // any duplicate of an earlier message would be there too.
    a.publish("chat:lobby", text("end"), true, None)
        .await
        .unwrap();
    got_a.wait_for("chat:lobby", "end").await;
    got_b.wait_for("chat:lobby", "end").await;

    let mut expected: Vec<(String, u64)> = (0..10).map(|i| (format!("m{i}"), i + 1)).collect();
    expected.push(("end".into(), 11));
    assert_eq!(got_a.messages("chat:lobby"), expected);
    assert_eq!(got_b.messages("chat:lobby"), expected);
    assert_eq!(got_a.messages("other"), [("elsewhere".to_owned(), 1)]);
    assert_eq!(got_b.messages("other"), [("elsewhere".to_owned(), 1)]);

    let got = got_b.0.lock().unwrap();
    let third = got.iter().find(|p| &*p.payload == b"m2").unwrap();
    assert_eq!((third.from.as_deref(), third.text), (Some("alice"), true));
    assert_eq!(third.position, Some(Position { epoch, offset: 3 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_payloads_cross_unchanged() {
    let server = RedisServer::start();
    let (a, _) = node(&server, config()).await;
    let (_b, got_b) = node(&server, config()).await;
    let payload = Bytes::from_static(b"\x00S1 - 0\n{\"x\":1}\n\xff\xfe\r\n");
    let position = a
        .publish("bin", payload.clone(), false, None)
        .await
        .unwrap();
    a.publish("bin", text("end"), true, None).await.unwrap();
    got_b.wait_for("bin", "end").await;

    {
        let got = got_b.0.lock().unwrap();
        assert_eq!(got[0].payload, payload);
        assert!(!got[0].text);
        assert_eq!(got[0].from, None);
    }
    let Resume::Replay(replay) = a
        .history(
            "bin",
            &Position {
                offset: 0,
                ..position
            },
        )
        .await
        .unwrap()
    else {
        panic!("history covers the topic")
    };
    assert_eq!(
        (replay[0].payload.clone(), replay[0].text),
        (payload, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_replays_after_a_position_and_gaps_otherwise() {
    let server = RedisServer::start();
    let (a, _) = node(&server, config().history_len(5)).await;
    let (b, _) = node(&server, config().history_len(5)).await;

    let start = b.latest("news").await.unwrap();
    assert_eq!(start.offset, 0);
    for i in 1..=8 {
        let position = a
            .publish("news", text(&format!("p{i}")), true, Some("alice".into()))
            .await
            .unwrap();
        assert_eq!(
            position,
            Position {
                epoch: start.epoch.clone(),
                offset: i
            },
            "the epoch `latest` made is kept"
        );
    }
    assert_eq!(
        b.latest("news").await.unwrap(),
        Position {
            epoch: start.epoch.clone(),
            offset: 8
        }
    );

    let at = |offset| Position {
        epoch: start.epoch.clone(),
        offset,
    };
    let replay = |resume: Resume| match resume {
        Resume::Replay(list) => list
            .iter()
            .map(|p| {
                assert_eq!(&*p.topic, "news");
                assert_eq!(p.from.as_deref(), Some("alice"));
                (
                    String::from_utf8_lossy(&p.payload).into_owned(),
                    p.position.as_ref().unwrap().offset,
                )
            })
            .collect::<Vec<_>>(),
        Resume::Gap => panic!("expected a replay, got a gap"),
    };
    assert_eq!(
        replay(b.history("news", &at(5)).await.unwrap()),
        [("p6".into(), 6), ("p7".into(), 7), ("p8".into(), 8)]
    );
    assert_eq!(replay(b.history("news", &at(8)).await.unwrap()), []);
    assert_eq!(
        replay(b.history("news", &at(3)).await.unwrap()).len(),
        5,
        "history_len messages are kept"
    );
    for (what, since) in [
        ("older than the history kept", at(2)),
        ("from the start, which history no longer has", at(0)),
        ("ahead of the latest offset", at(9)),
        (
            "another epoch",
            Position {
                epoch: "not-this-one".into(),
                offset: 5,
            },
        ),
    ] {
        assert!(
            matches!(b.history("news", &since).await.unwrap(), Resume::Gap),
            "gap for a position {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_ages_out() {
    let server = RedisServer::start();
    let (a, _) = node(&server, config().history_age(Duration::from_secs(1))).await;
    let first = a.publish("ticks", text("t1"), true, None).await.unwrap();
    let from_start = Position {
        offset: 0,
        ..first.clone()
    };
    assert!(
        matches!(a.history("ticks", &from_start).await.unwrap(), Resume::Replay(list) if list.len() == 1)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(a.history("ticks", &from_start).await.unwrap(), Resume::Gap) {
        assert!(
            Instant::now() < deadline,
            "a message older than history_age is still replayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing missed is still nothing missed, however old.
    assert!(
        matches!(a.history("ticks", &first).await.unwrap(), Resume::Replay(list) if list.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_users_across_nodes() {
    let server = RedisServer::start();
    let (a, got_a) = node(&server, config()).await;
    let (b, got_b) = node(&server, config()).await;
    let room = "chat:lobby";

    assert_eq!(a.members(room).await.unwrap(), Vec::<String>::new());
    assert_eq!(a.join(room, "alice", 1).await.unwrap(), 1);
    assert_eq!(b.join(room, "bob", 1).await.unwrap(), 2);
    assert_eq!(
        b.join(room, "alice", 2).await.unwrap(),
        2,
        "alice's second connection, on another node"
    );
    assert_eq!(
        a.join(room, "alice", 1).await.unwrap(),
        2,
        "the same connection again"
    );
    assert_eq!(a.members(room).await.unwrap(), ["alice", "bob"]);
    assert_eq!(b.members(room).await.unwrap(), ["alice", "bob"]);

    assert_eq!(
        a.leave(room, "alice", 1).await.unwrap(),
        2,
        "alice is still there through node b"
    );
    assert_eq!(b.leave(room, "alice", 2).await.unwrap(), 1);
    assert_eq!(
        a.leave(room, "nobody", 9).await.unwrap(),
        1,
        "leaving without joining changes nothing"
    );
    assert_eq!(a.members(room).await.unwrap(), ["bob"]);

    a.publish(room, text("end"), true, None).await.unwrap();
    let expected = [
        Kind::Join {
            user: "alice".into(),
            count: 1,
        },
        Kind::Join {
            user: "bob".into(),
            count: 2,
        },
        Kind::Leave {
            user: "alice".into(),
            count: 1,
        },
    ];
    for got in [&got_a, &got_b] {
        got.wait_for(room, "end").await;
        assert_eq!(got.presence(room), expected);
    }
    let got = got_a.0.lock().unwrap();
    let join = got.iter().find(|p| p.kind != Kind::Message).unwrap();
    assert_eq!(
        (join.position.as_ref(), join.from.as_deref()),
        (None, Some("alice")),
        "presence has no position"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_members_expire() {
    let server = RedisServer::start();
    let ttl = Duration::from_secs(1);
    let quick = || config().presence(ttl, Duration::from_millis(200));
    let (a, got_a) = node(&server, quick()).await;
    let (b, _) = node(&server, quick()).await;
    a.join("room", "alice", 1).await.unwrap();
    b.join("room", "bob", 1).await.unwrap();

    // A live node keeps its members past the TTL by refreshing them.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(a.members("room").await.unwrap(), ["alice", "bob"]);

    drop(b); // stops its tasks without leaving: a crash, to the others
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.members("room").await.unwrap() != ["alice"] {
        assert!(
            Instant::now() < deadline,
            "bob of the crashed node is still a member"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leave = Kind::Leave {
        user: "bob".into(),
        count: 1,
    };
    let got = got_a.clone();
    eventually(Duration::from_secs(5), "bob's leave announced", move || {
        got.presence("room").contains(&leave)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_pubsub_connection_loses_no_message() {
    let server = RedisServer::start();
    let (a, got_a) = node(&server, config()).await;
    let (b, got_b) = node(&server, config()).await;
    a.publish("t", text("m1"), true, None).await.unwrap();
    got_a.wait_for("t", "m1").await;
    got_b.wait_for("t", "m1").await;

    // Redis drops both nodes' subscriptions and keeps its data; what is
    // published before they are back comes from history.
    server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    for i in 2..=30 {
        b.publish("t", text(&format!("m{i}")), true, None)
            .await
            .unwrap();
    }
    let expected: Vec<(String, u64)> = (1..=30).map(|i| (format!("m{i}"), i)).collect();
    for got in [&got_a, &got_b] {
        got.wait_for("t", "m30").await;
        assert_eq!(got.messages("t"), expected);
    }
    // And live delivery goes on.
    a.publish("t", text("m31"), true, None).await.unwrap();
    got_b.wait_for("t", "m31").await;
    assert_eq!(got_b.messages("t").len(), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_secs(2);
    let quick = || {
        config()
            .command_timeout(timeout)
            .presence(Duration::from_secs(3), Duration::from_secs(1))
    };
    let (a, got_a) = node(&server, quick()).await;
    let (b, got_b) = node(&server, quick()).await;
    let before = a.publish("t", text("before"), true, None).await.unwrap();
    got_b.wait_for("t", "before").await;
    b.join("room", "bob", 1).await.unwrap();

    server.kill();
    for attempt in 0..3 {
        let started = Instant::now();
        let result = a.publish("t", text("lost"), true, None).await;
        let took = started.elapsed();
        let error = result
            .expect_err("publishing without Redis fails")
            .to_string();
        assert!(
            error.contains("Redis unavailable"),
            "attempt {attempt}: {error}"
        );
        assert!(
            took < timeout * 3,
            "attempt {attempt}: the error took {took:?}"
        );
    }
    assert!(b.latest("t").await.is_err());
    assert!(b.members("room").await.is_err());
    assert!(b.history("t", &before).await.is_err());

    server.restart();
    // The first publish once Redis answers again works (the command
    // connection reconnects on demand), and reaches both nodes exactly once:
    // live, or, for a node whose subscription came back after it, from the
    // new epoch's history.
    let position = a.publish("t", text("after"), true, None).await.unwrap();
    assert_ne!(
        position.epoch, before.epoch,
        "Redis lost the topic: a new epoch"
    );
    assert_eq!(position.offset, 1);
    b.publish("t", text("after 2"), true, None).await.unwrap();
    for got in [&got_a, &got_b] {
        got.wait_for("t", "after 2").await;
        assert_eq!(
            got.messages("t"),
            [
                ("before".to_owned(), 1),
                ("after".to_owned(), 1),
                ("after 2".to_owned(), 2)
            ]
        );
    }
    assert!(
        matches!(a.history("t", &before).await.unwrap(), Resume::Gap),
        "resuming from before the loss is a gap"
    );
    b.publish("t", text("from b"), true, None).await.unwrap();
    got_a.wait_for("t", "from b").await;

    // Node b put its member back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.members("room").await.unwrap() != ["bob"] {
        assert!(
            Instant::now() < deadline,
            "bob did not come back after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let logs = logs();
    for node in [a.node_id(), b.node_id()] {
        let said = |what: &str| {
            logs.lines()
                .any(|line| line.contains(what) && line.contains(node))
        };
        assert!(
            said("lost Redis connection"),
            "node {node} logged no loss:\n{logs}"
        );
        assert!(
            said("reconnected to Redis"),
            "node {node} logged no reconnect:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_a_clear_error_at_startup() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let error = RedisBroker::connect(&url, config())
        .await
        .expect_err("nothing listens there")
        .to_string();
    assert!(
        error.contains(&format!("cannot reach Redis at {url}")),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    let error = RedisBroker::connect("http://example.invalid", config())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("invalid Redis URL"), "{error}");
}

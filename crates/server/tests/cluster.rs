//! A cluster at the process level: a real `redis-server` and two `sockeye
//! serve --redis` processes, with JSON-protocol clients on each. Checks
//! cross-node delivery (exactly once), presence across nodes, and what
//! happens when Redis restarts: both nodes stay up, log a clear warning
//! that names Redis, reconnect, and deliver across nodes again.
//!
//! Needs, and fails with a message saying so when they are missing:
//! - `redis-server` on PATH (`scripts/test.sh` installs Debian's package;
//!   by hand: `apt-get install redis-server`);
//! - the `sockeye` binary of the profile the tests run in, built first:
//!   `cargo build -p sockeye-cli` for `cargo test`, `cargo build --release
//!   -p sockeye-cli` for `cargo test --release` (`scripts/test.sh` builds the
//!   release binaries before it runs the tests). Cargo does not build another
//!   crate's binary for this crate's tests, so a stale binary is what runs
//!   when it was not rebuilt.
//!
//! Every child process is killed by its PID when its guard drops, even when
//! the test fails.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sockeye::{MaybeTlsStream, Message};

const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LIMIT:?}"))
}

// ---------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------

/// A `redis-server` child process on a free loopback port, killed (by its
/// PID) when dropped.
struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.spawn();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (not on PATH), and the cluster test needs a real one. \
                 scripts/test.sh installs Debian's `redis-server` package; by hand: apt-get install redis-server"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_ping(self.port) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "redis-server exited ({status}) before answering:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// SIGKILL: Redis is gone at once, with everything it held.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut tcp) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    tcp.write_all(b"PING\r\n").is_ok()
        && tcp.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

// ---------------------------------------------------------------------------
// sockeye serve
// ---------------------------------------------------------------------------

/// The `sockeye` binary of the profile these tests were built in.
fn sockeye_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(dir)
            }
        })
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let (profile, build) = if cfg!(debug_assertions) {
        ("debug", "cargo build -p sockeye-cli")
    } else {
        ("release", "cargo build --release -p sockeye-cli")
    };
    let binary = target.join(profile).join("sockeye");
    assert!(
        binary.is_file(),
        "{} is missing: the cluster test runs the real `sockeye` binary, which cargo does not \
         build for this crate's tests. Build it first: `{build}` (scripts/test.sh does)",
        binary.display()
    );
    binary
}

/// A `sockeye serve` child process; its stderr (the log) is collected line
/// by line. Killed by its PID when dropped.
struct Node {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

/// Removes ANSI colour sequences (ESC [ ... letter).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Node {
    fn start(name: &'static str, redis: &Redis) -> Self {
        let mut child = Command::new(sockeye_binary())
            .args(["serve", "--addr", "127.0.0.1:0", "--redis", &redis.url()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sockeye serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = plain(&line);
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = addr_tx.send(addr.parse::<SocketAddr>());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut node = Node {
            name,
            child,
            log,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(addr)) => node.addr = addr,
            Ok(Err(e)) => panic!("node {name}: bad address in its log ({e}):\n{}", node.log()),
            Err(_) => panic!(
                "node {name} did not log \"listening on http://ADDR\" within 20 s (exit: {:?}); its log:\n{}",
                node.child.try_wait(),
                node.log()
            ),
        }
        node
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "node {} exited ({status}); its log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Waits (bounded) for a log line that satisfies `wanted`.
    async fn logged(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| wanted(l)) {
                return line.clone();
            }
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "node {} did not log {what} within {LIMIT:?}; its log:\n{}",
                self.name,
                self.log()
            );
            // The log arrives from another process: poll it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn client(&self, user: &str) -> Client {
        let url = format!("ws://{}/ws?user={user}", self.addr);
        let (ws, _) = bounded("connect", sockeye::connect(&url))
            .await
            .unwrap_or_else(|e| panic!("connect to node {}: {e}", self.name));
        let mut client = Client { ws };
        assert_eq!(client.next().await["type"], "welcome");
        client
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON-protocol client.
struct Client {
    ws: sockeye::WebSocket<MaybeTlsStream>,
}

impl Client {
    async fn send(&mut self, request: Value) {
        bounded("send", self.ws.send(request.to_string()))
            .await
            .unwrap();
    }

    async fn next(&mut self) -> Value {
        self.next_within(LIMIT)
            .await
            .unwrap_or_else(|| panic!("no frame within {LIMIT:?}"))
    }

    /// The next frame, or `None` when none comes within `limit`.
    async fn next_within(&mut self, limit: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(limit, self.ws.recv()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(serde_json::from_str(text.as_str()).unwrap())
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    async fn request(&mut self, request: Value) -> Value {
        self.send(request).await;
        self.next().await
    }

    async fn close(mut self) {
        bounded("close", self.ws.close(None)).await.unwrap();
    }
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_others_publications_once_and_share_presence() {
    let redis = Redis::start();
    let mut a = Node::start("A", &redis);
    let mut b = Node::start("B", &redis);
    assert_ne!(a.addr, b.addr);

    let mut alice = a.client("alice").await;
    let ack = alice
        .request(json!({"type": "subscribe", "id": 1, "topic": "chat:x"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let mut bob = b.client("bob").await;
    for i in 1..=3 {
        let ack = bob
            .request(json!({"type": "publish", "id": i, "topic": "chat:x", "data": {"n": i}}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let mut last = 0;
    for i in 1..=3 {
        let m = alice.next().await;
        assert_eq!(m["type"], "message", "{m}");
        assert_eq!(m["data"], json!({"n": i}), "in order, once each: {m}");
        assert_eq!(m["from"], "bob");
        let offset = m["position"]["offset"].as_u64().unwrap();
        assert!(offset > last, "positions grow: {offset} after {last}");
        last = offset;
    }
    // Nothing twice: the next frame is the next message, not a copy.
    bob.request(json!({"type": "publish", "topic": "chat:x", "data": "sentinel"}))
        .await;
    assert_eq!(alice.next().await["data"], "sentinel");

    // Presence across nodes.
    alice
        .request(json!({"type": "join", "room": "chat:room"}))
        .await;
    assert_eq!(alice.next().await["user"], "alice");
    bob.request(json!({"type": "join", "room": "chat:room"}))
        .await;
    let bob_joined = json!({"type": "presence", "room": "chat:room", "event": "join", "user": "bob", "count": 2});
    assert_eq!(bob.next().await, bob_joined);
    assert_eq!(alice.next().await, bob_joined, "node A hears node B's join");
    for client in [&mut alice, &mut bob] {
        let members = client
            .request(json!({"type": "members", "room": "chat:room"}))
            .await;
        assert_eq!(members["users"], json!(["alice", "bob"]), "{members}");
    }
    bob.close().await;
    assert_eq!(
        alice.next().await,
        json!({"type": "presence", "room": "chat:room", "event": "leave", "user": "bob", "count": 1}),
        "node A hears bob leave when his connection on B closes"
    );

    alice.close().await;
    a.assert_alive();
    b.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived_with_a_clear_log_and_delivery_resumes() {
    let mut redis = Redis::start();
    let mut a = Node::start("A", &redis);
    let mut b = Node::start("B", &redis);
    let mut alice = a.client("alice").await;
    alice
        .request(json!({"type": "subscribe", "topic": "chat:r"}))
        .await;
    let mut bob = b.client("bob").await;
    bob.request(json!({"type": "publish", "topic": "chat:r", "data": "before"}))
        .await;
    assert_eq!(alice.next().await["data"], "before");

    redis.kill();
    for node in [&mut a, &mut b] {
        let line = node
            .logged("a warning about Redis", |l| {
                l.contains("WARN") && l.contains("Redis")
            })
            .await;
        assert!(line.contains("lost Redis connection"), "{line}");
        node.assert_alive();
    }
    // Without Redis a publish is refused with a clear error; the
    // connection stays open.
    let answer = bob
        .request(json!({"type": "publish", "id": "down", "topic": "chat:r", "data": "lost"}))
        .await;
    assert_eq!(
        (&answer["type"], &answer["code"]),
        (&json!("error"), &json!("unavailable")),
        "{answer}"
    );
    assert!(
        answer["message"].as_str().unwrap().contains("Redis"),
        "the error names Redis: {answer}"
    );

    redis.spawn();
    // Publish until one reaches node A: that is A's subscription back.
    let deadline = Instant::now() + LIMIT;
    let mut attempt = 0;
    let delivered = loop {
        assert!(
            Instant::now() < deadline,
            "no publication crossed nodes within {LIMIT:?} after Redis came back;\nA:\n{}\nB:\n{}",
            a.log(),
            b.log()
        );
        attempt += 1;
        let data = format!("after {attempt}");
        let answer = bob
            .request(json!({"type": "publish", "topic": "chat:r", "data": data}))
            .await;
        if answer["type"] != "ack" {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if let Some(m) = alice.next_within(Duration::from_millis(500)).await {
            assert_eq!(m["type"], "message", "{m}");
            break m;
        }
    };
    assert!(
        delivered["data"].as_str().unwrap().starts_with("after "),
        "{delivered}"
    );
    for node in [&mut a, &mut b] {
        node.logged("that it reconnected to Redis", |l| {
            l.contains("reconnected to Redis")
        })
        .await;
        node.assert_alive();
        assert!(!node.log().contains("panicked"), "{}", node.log());
    }
    // And the other way round (alice first leaves chat:r, whose late
    // copies from the retries could otherwise come in between).
    alice
        .send(json!({"type": "unsubscribe", "id": "u", "topic": "chat:r"}))
        .await;
    while alice.next().await["id"] != "u" {}
    let mut carol = b.client("carol").await;
    carol
        .request(json!({"type": "subscribe", "topic": "chat:back"}))
        .await;
    alice
        .request(json!({"type": "publish", "topic": "chat:back", "data": "from A"}))
        .await;
    assert_eq!(carol.next().await["data"], "from A");

    alice.close().await;
    bob.close().await;
    carol.close().await;
}

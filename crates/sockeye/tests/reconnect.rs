//! The reconnecting client against real servers that die, restart, close
//! with every kind of code, stop answering pings, or lose the client's
//! connection while publishing goes on.
//!
//! A "killed" server runs in a tokio runtime of its own that is shut down:
//! every socket it holds closes at once, as when a process exits. It comes
//! back on the same address. Backoff sequences are checked with paused time
//! (`start_paused`), so no test waits out a real delay.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bounded;
use sockeye::{
    Backoff, CloseCode, CloseFrame, Jitter, Message, OverflowPolicy, QueueError, QueueLimit,
    ReconnectConfig, ReconnectEvent, ReconnectEvents, ReconnectingClient, SendOptions, WebSocket,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// Servers

/// Binds `addr` with SO_REUSEADDR, so a restarted server gets the port back
/// while the killed one's connections sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

/// An address nothing listens on (yet), for a server that will be killed
/// and started again on it.
///
/// The port comes from below the kernel's ephemeral range: a port the kernel
/// handed out (bind to port 0) could be handed out again, to another test's
/// outgoing connection, while the server is down, and the restart would
/// then fail to bind.
async fn free_addr() -> SocketAddr {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16.min(ephemeral_low / 2);
    let span = u32::from(ephemeral_low - low);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id().rotate_left(16);
    for i in 0..span {
        let port = low + u16::try_from((seed.wrapping_add(i)) % span).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        if socket.bind(addr).is_ok() && socket.listen(1).is_ok() {
            return addr;
        }
    }
    panic!("no free port between {low} and {ephemeral_low}");
}

/// A server in a runtime of its own: killing it drops every task, and so
/// closes the listener and every connection, without close frames.
struct Process {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
}

impl Process {
    async fn start<F, Fut>(addr: SocketAddr, serve: F) -> Process
    where
        F: FnOnce(TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let listener = bind(addr);
            let _ = tx.send(listener.local_addr().unwrap());
            serve(listener).await;
        });
        let addr = bounded("server start", rx).await.unwrap();
        Process {
            runtime: Some(runtime),
            addr,
        }
    }

    /// sockeye-server's echo endpoint at /echo.
    async fn echo(addr: SocketAddr) -> Process {
        Process::start(addr, |listener| async move {
            let server = sockeye_server::EchoServer::new(sockeye_server::ServeConfig::default());
            server.run(listener, std::future::pending()).await;
        })
        .await
    }

    /// Stops the runtime and waits until its tasks (and sockets) are gone.
    async fn kill(mut self) {
        let runtime = self.runtime.take().unwrap();
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(5)))
            .await
            .unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Accepts WebSocket connections in this runtime and hands each, numbered
/// from 0, to `handle` in a task of its own. Counts the connections.
fn scripted<F, Fut>(listener: TcpListener, handle: F) -> (Arc<AtomicUsize>, JoinHandle<()>)
where
    F: Fn(usize, WebSocket<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(ws) = sockeye::accept(tcp).await else {
                continue;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            connections.spawn(handle(n, ws));
        }
    });
    (count, task)
}

/// Echoes text and binary messages until the connection ends; returns the
/// client's close frame, if one came.
async fn echo(mut ws: WebSocket<TcpStream>) -> Option<CloseFrame> {
    let mut close = None;
    while let Some(Ok(message)) = ws.recv().await {
        if let Message::Close(frame) = message {
            close = frame;
        } else if message.is_data() && ws.send(message).await.is_err() {
            break;
        }
    }
    close
}

async fn close_with(mut ws: WebSocket<TcpStream>, code: u16) {
    let _ = ws
        .close(Some(CloseFrame::new(CloseCode(code), "bye")))
        .await;
}

// ---------------------------------------------------------------------------
// The client side

/// Small delays, no jitter, no heartbeat: the tests decide what happens.
fn quick() -> ReconnectConfig {
    ReconnectConfig::default()
        .backoff(
            Backoff::default()
                .exponential(Duration::from_millis(10), 2.0, Duration::from_millis(100))
                .jitter(Jitter::None),
        )
        .no_heartbeat()
}

fn start(
    url: String,
    config: ReconnectConfig,
) -> (ReconnectingClient, ReconnectEvents, JoinHandle<()>) {
    let (client, events, driver) = ReconnectingClient::new(url, config);
    (client, events, tokio::spawn(driver))
}

async fn next(events: &mut ReconnectEvents) -> ReconnectEvent {
    bounded("the next event", events.recv())
        .await
        .expect("the events ended")
}

fn text(message: &Message) -> &str {
    match message {
        Message::Text(t) => t.as_str(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// A short name for an event, to compare sequences.
fn name(event: &ReconnectEvent) -> String {
    match event {
        ReconnectEvent::Connected { attempt, .. } => format!("connected {attempt}"),
        ReconnectEvent::Message(m) => format!("message {}", text(m)),
        ReconnectEvent::Disconnected {
            code, reconnect, ..
        } => format!("disconnected {code} reconnect={reconnect}"),
        ReconnectEvent::ConnectFailed { attempt, .. } => format!("failed {attempt}"),
        ReconnectEvent::Reconnecting { attempt, delay } => {
            format!("reconnecting {attempt} after {}ms", delay.as_millis())
        }
        ReconnectEvent::Dropped { reason, message } => {
            format!("dropped {reason:?} {}", text(message))
        }
        ReconnectEvent::GaveUp { attempts } => format!("gave up after {attempts}"),
        other => format!("{other:?}"),
    }
}

/// Events until one whose name starts with `prefix` (returned); the others
/// are kept in `log`.
async fn until(
    events: &mut ReconnectEvents,
    prefix: &str,
    log: &mut Vec<String>,
) -> ReconnectEvent {
    loop {
        let event = next(events).await;
        if name(&event).starts_with(prefix) {
            return event;
        }
        log.push(name(&event));
    }
}

/// Echoed texts until `texts` has `n`; other events go to `log`.
async fn collect(
    events: &mut ReconnectEvents,
    n: usize,
    texts: &mut Vec<String>,
    log: &mut Vec<String>,
) {
    while texts.len() < n {
        match next(events).await {
            ReconnectEvent::Message(m) => texts.push(text(&m).to_string()),
            other => log.push(name(&other)),
        }
    }
}

/// Every remaining event, once the client has ended.
async fn rest(events: &mut ReconnectEvents) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(event) = bounded("the end of the events", events.recv()).await {
        names.push(name(&event));
    }
    names
}

// ---------------------------------------------------------------------------
// Queued messages survive server restarts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_server_gets_every_queued_message_once_in_order() {
    let server = Process::echo("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let (client, mut events, driver) = start(format!("ws://{addr}/echo"), quick());
    let mut log = Vec::new();
    until(&mut events, "connected 0", &mut log).await;

    let mut echoed = Vec::new();
    for i in 1..=30 {
        client.send(i.to_string()).unwrap();
    }
    collect(&mut events, 30, &mut echoed, &mut log).await;

    server.kill().await;
    until(&mut events, "disconnected 1006 reconnect=true", &mut log).await;
    for i in 31..=60 {
        client.send(i.to_string()).unwrap();
    }
    assert_eq!(client.queued().0, 30, "sent while down: queued");
    let server = Process::echo(addr).await;
    collect(&mut events, 60, &mut echoed, &mut log).await;

    server.kill().await;
    until(&mut events, "disconnected 1006 reconnect=true", &mut log).await;
    for i in 61..=100 {
        client.send(i.to_string()).unwrap();
    }
    let _server = Process::echo(addr).await;
    collect(&mut events, 100, &mut echoed, &mut log).await;

    let want: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    assert_eq!(echoed, want, "every message once, in order");
    assert!(
        log.iter().all(|e| !e.starts_with("dropped")),
        "nothing dropped: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|e| e.starts_with("connected")).count(),
        2,
        "two reconnections: {log:?}"
    );

    client.close();
    let end = rest(&mut events).await;
    assert_eq!(end, ["disconnected 1000 reconnect=false"]);
    bounded("driver", driver).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_server_restart_closes_with_1001_and_the_client_comes_back() {
    // sockeye-server's App: its shutdown closes every WebSocket with 1001.
    async fn app(addr: SocketAddr) -> (Process, tokio::sync::oneshot::Sender<()>) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let process = Process::start(addr, |listener| async move {
            let config = sockeye_server::DemoConfig {
                simulations: false,
                ..Default::default()
            };
            let app = sockeye_server::demo_app(&config).await.unwrap();
            app.serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        })
        .await;
        (process, stop)
    }
    let (server, stop) = app("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let (client, mut events, driver) = start(format!("ws://{addr}/echo"), quick());
    let mut log = Vec::new();
    until(&mut events, "connected 0", &mut log).await;
    client.send("before").unwrap();
    let mut echoed = Vec::new();
    collect(&mut events, 1, &mut echoed, &mut log).await;

    stop.send(()).unwrap();
    until(&mut events, "disconnected 1001 reconnect=true", &mut log).await;
    server.kill().await;
    client.send("while down").unwrap();
    let (_server, _stop) = app(addr).await;
    until(&mut events, "connected", &mut log).await;
    client.send("after").unwrap();
    collect(&mut events, 3, &mut echoed, &mut log).await;
    assert_eq!(echoed, ["before", "while down", "after"]);

    client.close();
    assert_eq!(
        rest(&mut events).await,
        ["disconnected 1000 reconnect=false"]
    );
    bounded("driver", driver).await.unwrap();
}

// ---------------------------------------------------------------------------
// Backoff: the sequence, the reset after a stable connection, giving up

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_backoff_sequence() {
    let addr = free_addr().await;
    let config = ReconnectConfig::default()
        .backoff(
            Backoff::default()
                .exponential(Duration::from_millis(100), 2.0, Duration::from_millis(300))
                .jitter(Jitter::None)
                .max_attempts(4),
        )
        .no_heartbeat();
    let (client, mut events, driver) = start(format!("ws://{addr}/"), config);
    client.send("never sent").unwrap();
    let started = Instant::now();
    let names = rest(&mut events).await;
    assert_eq!(
        names,
        [
            "failed 0",
            "reconnecting 1 after 100ms",
            "failed 1",
            "reconnecting 2 after 200ms",
            "failed 2",
            "reconnecting 3 after 300ms",
            "failed 3",
            "reconnecting 4 after 300ms",
            "failed 4",
            "gave up after 4",
            "dropped Closed never sent",
        ]
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    bounded("driver", driver).await.unwrap();
    assert!(matches!(client.send("late"), Err(QueueError::Closed(_))));
}

#[tokio::test(start_paused = true)]
async fn full_jitter_with_a_seed_is_reproducible() {
    async fn delays(seed: u64) -> Vec<Duration> {
        let addr = free_addr().await;
        let backoff = Backoff::default()
            .exponential(Duration::from_millis(100), 2.0, Duration::from_secs(1))
            .max_attempts(6)
            .seed(seed);
        let config = ReconnectConfig::default().backoff(backoff).no_heartbeat();
        let (_client, mut events, _driver) = start(format!("ws://{addr}/"), config);
        let mut delays = Vec::new();
        while let Some(event) = bounded("events", events.recv()).await {
            if let ReconnectEvent::Reconnecting { delay, .. } = event {
                delays.push(delay);
            }
        }
        delays
    }
    let first = delays(42).await;
    assert_eq!(first.len(), 6);
    assert_eq!(first, delays(42).await, "same seed, same delays");
    assert_ne!(first, delays(43).await, "another seed, other delays");
    let base =
        Backoff::default().exponential(Duration::from_millis(100), 2.0, Duration::from_secs(1));
    for (n, delay) in (1..).zip(&first) {
        assert!(
            *delay < base.base(n),
            "retry {n}: {delay:?} not below {:?}",
            base.base(n)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_stable_connection_resets_the_backoff() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    // Two connections closed at once, one that lasts 10 s, then one that stays.
    let (_count, _server) = scripted(listener, |n, ws| async move {
        match n {
            0 | 1 => close_with(ws, 1013).await,
            2 => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                close_with(ws, 1013).await
            }
            _ => {
                echo(ws).await;
            }
        }
    });
    let config = ReconnectConfig::default()
        .backoff(
            Backoff::default()
                .exponential(Duration::from_millis(100), 2.0, Duration::from_secs(5))
                .jitter(Jitter::None),
        )
        .stable_after(Duration::from_secs(5))
        .no_heartbeat();
    let (client, mut events, driver) = start(format!("ws://{addr}/"), config);
    let mut names = Vec::new();
    let mut reconnecting_at = Instant::now();
    loop {
        let event = next(&mut events).await;
        let now = Instant::now();
        match &event {
            ReconnectEvent::Reconnecting { .. } => reconnecting_at = now,
            ReconnectEvent::Connected { attempt, .. } if *attempt > 0 => {
                let waited = now - reconnecting_at;
                names.push(format!("(waited {}ms)", waited.as_millis()));
            }
            _ => {}
        }
        names.push(name(&event));
        if names.len() > 2
            && name(&event) == "connected 1"
            && names.contains(&"connected 2".to_string())
        {
            break;
        }
    }
    assert_eq!(
        names,
        [
            "connected 0",
            "disconnected 1013 reconnect=true",
            "reconnecting 1 after 100ms",
            "(waited 100ms)",
            "connected 1",
            "disconnected 1013 reconnect=true",
            "reconnecting 2 after 200ms",
            "(waited 200ms)",
            "connected 2",
            // Up for 10 s > stable_after: back to the first delay.
            "disconnected 1013 reconnect=true",
            "reconnecting 1 after 100ms",
            "(waited 100ms)",
            "connected 1",
        ]
    );
    client.close();
    assert_eq!(
        rest(&mut events).await,
        ["disconnected 1000 reconnect=false"]
    );
    bounded("driver", driver).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn short_lived_connections_count_toward_max_attempts() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    let (count, _server) = scripted(listener, |_, ws| close_with(ws, 1013));
    let config = quick().backoff(
        Backoff::default()
            .exponential(Duration::from_millis(10), 2.0, Duration::from_millis(100))
            .jitter(Jitter::None)
            .max_attempts(2),
    );
    let (_client, mut events, driver) = start(format!("ws://{addr}/"), config);
    let names = rest(&mut events).await;
    assert_eq!(
        names,
        [
            "connected 0",
            "disconnected 1013 reconnect=true",
            "reconnecting 1 after 10ms",
            "connected 1",
            "disconnected 1013 reconnect=true",
            "reconnecting 2 after 20ms",
            "connected 2",
            "disconnected 1013 reconnect=true",
            "gave up after 2",
        ]
    );
    bounded("driver", driver).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------
// The queue's rules: overflow, time-to-live, never-replay

#[tokio::test]
async fn overflow_policies_while_the_server_is_down() {
    for policy in [
        OverflowPolicy::DropOldest,
        OverflowPolicy::DropNewest,
        OverflowPolicy::Error,
    ] {
        let addr = free_addr().await;
        let limit = QueueLimit {
            messages: 3,
            bytes: 1 << 20,
        };
        let (client, mut events, _driver) =
            start(format!("ws://{addr}/echo"), quick().queue(limit, policy));
        let mut refused = Vec::new();
        for i in 1..=5 {
            match client.send(i.to_string()) {
                Ok(()) => {}
                Err(QueueError::Full(m)) => refused.push(text(&m).to_string()),
                Err(e) => panic!("{policy:?}: {e}"),
            }
        }
        let _server = Process::echo(addr).await;
        let mut log = Vec::new();
        let mut echoed = Vec::new();
        until(&mut events, "connected", &mut log).await;
        collect(&mut events, 3, &mut echoed, &mut log).await;
        let dropped: Vec<_> = log
            .iter()
            .filter(|e| e.starts_with("dropped"))
            .cloned()
            .collect();
        match policy {
            OverflowPolicy::DropOldest => {
                assert_eq!(echoed, ["3", "4", "5"]);
                assert_eq!(dropped, ["dropped Overflow 1", "dropped Overflow 2"]);
                assert!(refused.is_empty());
            }
            OverflowPolicy::DropNewest => {
                assert_eq!(echoed, ["1", "2", "3"]);
                assert_eq!(dropped, ["dropped Overflow 4", "dropped Overflow 5"]);
                assert!(refused.is_empty());
            }
            OverflowPolicy::Error => {
                assert_eq!(echoed, ["1", "2", "3"]);
                assert!(dropped.is_empty(), "{dropped:?}");
                assert_eq!(refused, ["4", "5"]);
            }
        }
    }
}

#[tokio::test]
async fn a_message_whose_ttl_runs_out_while_down_is_reported_not_sent() {
    let addr = free_addr().await;
    let (client, mut events, _driver) = start(format!("ws://{addr}/echo"), quick());
    let ttl = SendOptions::default().ttl(Duration::from_millis(50));
    client.send_with("stale", ttl).unwrap();
    client.send("kept").unwrap();
    client
        .send_with("fresh", SendOptions::default().ttl(Duration::from_secs(60)))
        .unwrap();
    let mut log = Vec::new();
    until(&mut events, "dropped Expired stale", &mut log).await;
    assert_eq!(client.queued().0, 2);

    let _server = Process::echo(addr).await;
    until(&mut events, "connected", &mut log).await;
    client.send("marker").unwrap();
    let mut echoed = Vec::new();
    collect(&mut events, 3, &mut echoed, &mut log).await;
    assert_eq!(echoed, ["kept", "fresh", "marker"]);
}

#[tokio::test]
async fn never_replay_messages_are_not_sent_on_a_later_connection() {
    let addr = free_addr().await;
    let (client, mut events, _driver) = start(format!("ws://{addr}/echo"), quick());
    let once = SendOptions::default().never_replay();
    client.send_with("while down", once).unwrap();
    client.send("queued").unwrap();
    let mut log = Vec::new();
    until(&mut events, "dropped NeverReplay while down", &mut log).await;

    let _server = Process::echo(addr).await;
    until(&mut events, "connected", &mut log).await;
    client.send_with("while up", once).unwrap();
    let mut echoed = Vec::new();
    collect(&mut events, 2, &mut echoed, &mut log).await;
    assert_eq!(echoed, ["queued", "while up"]);
    assert!(log.iter().all(|e| !e.starts_with("dropped")), "{log:?}");
}

// ---------------------------------------------------------------------------
// Close codes: who closed, and with what, decides whether to come back

#[tokio::test]
async fn a_close_by_the_user_never_reconnects() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    let closes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&closes);
    let (count, _server) = scripted(listener, move |_, ws| {
        let seen = Arc::clone(&seen);
        async move {
            let close = echo(ws).await;
            seen.lock().unwrap().push(close.map(|f| f.code));
        }
    });
    let (client, mut events, driver) = start(format!("ws://{addr}/"), quick());
    let mut log = Vec::new();
    until(&mut events, "connected 0", &mut log).await;
    client.send("last").unwrap();
    client.close();
    assert!(matches!(
        client.send("after close"),
        Err(QueueError::Closed(_))
    ));
    let names = rest(&mut events).await;
    assert_eq!(
        names,
        ["disconnected 1000 reconnect=false"],
        "queued before the close: sent, not echoed back"
    );
    bounded("driver", driver).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1, "no second connection");
    assert_eq!(*closes.lock().unwrap(), [Some(CloseCode::NORMAL)]);
}

#[tokio::test]
async fn dropping_every_handle_closes_like_close() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    let (count, _server) = scripted(listener, |_, ws| async move {
        echo(ws).await;
    });
    let (client, mut events, driver) = start(format!("ws://{addr}/"), quick());
    let second = client.clone();
    let mut log = Vec::new();
    until(&mut events, "connected 0", &mut log).await;
    drop(client);
    second.send("still open").unwrap();
    let mut echoed = Vec::new();
    collect(&mut events, 1, &mut echoed, &mut log).await;
    drop(second);
    assert_eq!(
        rest(&mut events).await,
        ["disconnected 1000 reconnect=false"]
    );
    bounded("driver", driver).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_closes_with_1001_1011_1012_1013_reconnect() {
    for code in [1001, 1011, 1012, 1013] {
        let listener = bind("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let (_count, _server) = scripted(listener, move |n, ws| async move {
            if n == 0 {
                close_with(ws, code).await
            } else {
                echo(ws).await;
            }
        });
        let (client, mut events, _driver) = start(format!("ws://{addr}/"), quick());
        let mut log = Vec::new();
        until(&mut events, "connected 0", &mut log).await;
        let event = until(&mut events, "disconnected", &mut log).await;
        match event {
            ReconnectEvent::Disconnected {
                code: got,
                reason,
                reconnect,
            } => {
                assert_eq!(got, CloseCode(code));
                assert_eq!(reason, "bye");
                assert!(reconnect, "{code} reconnects");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(name(&next(&mut events).await), "reconnecting 1 after 10ms");
        assert_eq!(name(&next(&mut events).await), "connected 1");
        client.send("back").unwrap();
        let mut echoed = Vec::new();
        collect(&mut events, 1, &mut echoed, &mut log).await;
        assert_eq!(echoed, ["back"], "after {code}");
    }
}

#[tokio::test]
async fn an_abrupt_drop_is_1006_and_reconnects() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    let (_count, _server) = scripted(listener, |n, ws| async move {
        if n == 0 {
            drop(ws); // no close frame: the TCP connection just ends
        } else {
            echo(ws).await;
        }
    });
    let (_client, mut events, _driver) = start(format!("ws://{addr}/"), quick());
    let names: Vec<_> = {
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(name(&next(&mut events).await));
        }
        names
    };
    assert_eq!(
        names,
        [
            "connected 0",
            "disconnected 1006 reconnect=true",
            "reconnecting 1 after 10ms",
            "connected 1"
        ]
    );
}

#[tokio::test]
async fn server_closes_with_1000_or_1008_are_final() {
    for code in [1000, 1008] {
        let listener = bind("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let (count, _server) = scripted(listener, move |_, ws| close_with(ws, code));
        let (client, mut events, driver) = start(format!("ws://{addr}/"), quick());
        let mut log = Vec::new();
        until(&mut events, "connected 0", &mut log).await;
        client.send("unsent").unwrap();
        let names = rest(&mut events).await;
        // The message may have left before the close frame arrived (it is
        // then lost with the connection, at-most-once) or still be queued.
        let names: Vec<_> = names
            .into_iter()
            .filter(|n| n != "dropped Closed unsent")
            .collect();
        assert_eq!(names, [format!("disconnected {code} reconnect=false")]);
        bounded("driver", driver).await.unwrap();
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "{code}: no second connection"
        );
        assert!(matches!(client.send("late"), Err(QueueError::Closed(_))));
    }
}

#[tokio::test]
async fn the_reconnect_codes_are_configurable() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    let (_count, _server) = scripted(listener, |n, ws| async move {
        if n == 0 {
            close_with(ws, 1000).await
        } else {
            echo(ws).await;
        }
    });
    let config = quick().reconnect_codes([CloseCode::NORMAL, CloseCode::ABNORMAL]);
    let (_client, mut events, _driver) = start(format!("ws://{addr}/"), config);
    let mut log = Vec::new();
    until(&mut events, "disconnected 1000 reconnect=true", &mut log).await;
    until(&mut events, "connected 1", &mut log).await;
}

#[tokio::test]
async fn a_4xx_refusal_gives_up_at_once_and_a_5xx_is_retried() {
    for (status, gives_up) in [(403u16, true), (503u16, false)] {
        let listener = bind("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = sockeye::accept_with(tcp, &sockeye::Config::default(), |_| {
                        Err(sockeye::text_response(
                            http::StatusCode::from_u16(status).unwrap(),
                            "no",
                        ))
                    })
                    .await;
                });
            }
        });
        let config = quick().backoff(
            Backoff::default()
                .exponential(Duration::from_millis(10), 2.0, Duration::from_millis(100))
                .jitter(Jitter::None)
                .max_attempts(1),
        );
        let (_client, mut events, _driver) = start(format!("ws://{addr}/"), config);
        let names = rest(&mut events).await;
        if gives_up {
            assert_eq!(names, ["failed 0", "gave up after 0"], "{status}");
        } else {
            assert_eq!(
                names,
                [
                    "failed 0",
                    "reconnecting 1 after 10ms",
                    "failed 1",
                    "gave up after 1"
                ],
                "{status}"
            );
        }
    }
}

#[test]
fn the_parts_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<ReconnectingClient>();
    send_sync::<ReconnectEvents>();
    send::<sockeye::ReconnectDriver>();
    send::<ReconnectEvent>();
}

#[tokio::test]
async fn headers_and_subprotocols_go_with_every_attempt() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        let server_config = sockeye::Config::default().protocols(["chat.v2"]);
        for n in 0.. {
            let (tcp, _) = listener.accept().await.unwrap();
            let record = Arc::clone(&record);
            let (ws, request) = sockeye::accept_with(tcp, &server_config, |_| Ok(()))
                .await
                .unwrap();
            let token = request.headers().get("x-token").cloned();
            let offered = request.headers().get("sec-websocket-protocol").cloned();
            record.lock().unwrap().push((token, offered));
            tokio::spawn(async move {
                if n == 0 {
                    close_with(ws, 1012).await
                } else {
                    echo(ws).await;
                }
            });
        }
    });
    let websocket = sockeye::Config::default().protocols(["chat.v2"]).header(
        http::HeaderName::from_static("x-token"),
        http::HeaderValue::from_static("s3cret"),
    );
    let (_client, mut events, _driver) =
        start(format!("ws://{addr}/"), quick().websocket(websocket));
    for attempt in 0..2 {
        let mut log = Vec::new();
        match until(&mut events, "connected", &mut log).await {
            ReconnectEvent::Connected { response, .. } => {
                let chosen = response.headers().get("sec-websocket-protocol");
                assert_eq!(chosen.unwrap(), "chat.v2", "attempt {attempt}");
            }
            other => panic!("{other:?}"),
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (token, offered) in seen {
        assert_eq!(token.unwrap(), "s3cret");
        assert_eq!(offered.unwrap(), "chat.v2");
    }
}

#[tokio::test]
async fn a_slow_reader_pauses_reading_and_loses_nothing() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let sent_tx = Mutex::new(Some(sent_tx));
    let (_count, _server) = scripted(listener, move |_, mut ws| {
        let sent_tx = sent_tx.lock().unwrap().take();
        async move {
            for i in 1..=50 {
                ws.send(i.to_string()).await.unwrap();
            }
            let _ = sent_tx.unwrap().send(());
            close_with(ws, 1000).await;
        }
    });
    let mut config = quick();
    config.max_pending_messages = 4;
    let (_client, mut events, driver) = start(format!("ws://{addr}/"), config);
    // Nothing is read until the server has written everything: the driver
    // holds four messages and leaves the rest in the socket.
    bounded("the server sending", sent_rx).await.unwrap();
    let mut log = Vec::new();
    let mut got = Vec::new();
    until(&mut events, "connected 0", &mut log).await;
    collect(&mut events, 50, &mut got, &mut log).await;
    assert_eq!(got, (1..=50).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(
        rest(&mut events).await,
        ["disconnected 1000 reconnect=false"]
    );
    bounded("driver", driver).await.unwrap();
}

// ---------------------------------------------------------------------------
// Heartbeat

#[tokio::test]
async fn a_server_that_stops_answering_pings_is_dropped_and_reconnected() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    // Accepts, then never reads: pings go unanswered.
    let (count, _server) = scripted(listener, |_, ws| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(ws);
    });
    let config = quick().heartbeat(Duration::from_millis(50), Duration::from_millis(100));
    let (_client, mut events, _driver) = start(format!("ws://{addr}/"), config);
    let mut log = Vec::new();
    until(&mut events, "connected 0", &mut log).await;
    let started = std::time::Instant::now();
    match until(&mut events, "disconnected", &mut log).await {
        ReconnectEvent::Disconnected {
            code,
            reason,
            reconnect,
        } => {
            assert_eq!(code, CloseCode::ABNORMAL);
            assert!(reason.contains("pong"), "{reason}");
            assert!(reconnect);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "interval + timeout"
    );
    until(&mut events, "connected 1", &mut log).await;
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(
        log.is_empty() || log == ["reconnecting 1 after 10ms"],
        "{log:?}"
    );
}

#[tokio::test]
async fn a_server_that_answers_pings_stays_connected() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    let (count, _server) = scripted(listener, |_, ws| async move {
        echo(ws).await;
    });
    let config = quick().heartbeat(Duration::from_millis(10), Duration::from_millis(200));
    let (client, mut events, _driver) = start(format!("ws://{addr}/"), config);
    let mut log = Vec::new();
    until(&mut events, "connected 0", &mut log).await;
    // Twenty ping intervals; every pong arrives well within the timeout.
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.send("still here").unwrap();
    let mut echoed = Vec::new();
    collect(&mut events, 1, &mut echoed, &mut log).await;
    assert!(log.is_empty(), "{log:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// Resuming subscriptions of the sockeye JSON protocol

/// A TCP relay between the client and the server; `cut` drops every
/// connection through it (both sides), as a flaky network would, while the
/// server keeps running.
struct Relay {
    addr: SocketAddr,
    connections: Arc<Mutex<JoinSet<()>>>,
    _accept: JoinHandle<()>,
}

impl Relay {
    fn new(to: SocketAddr) -> Relay {
        let listener = bind("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let set = Arc::clone(&connections);
        let accept = tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                set.lock().unwrap().spawn(async move {
                    let mut outbound = TcpStream::connect(to).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Relay {
            addr,
            connections,
            _accept: accept,
        }
    }

    fn cut(&self) {
        self.connections.lock().unwrap().abort_all();
    }
}

fn json(message: &Message) -> serde_json::Value {
    serde_json::from_str(text(message)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_resume_from_the_last_position_across_drops() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let server_addr = listener.local_addr().unwrap();
    let config = sockeye_server::DemoConfig {
        simulations: false,
        ..Default::default()
    };
    let app = sockeye_server::demo_app(&config).await.unwrap();
    let _server = tokio::spawn(app.serve(listener, std::future::pending()));
    let relay = Relay::new(server_addr);

    let (client, mut events, _driver) = start(format!("ws://{}/ws", relay.addr), quick());
    client.subscribe("chat:resume").unwrap();
    let mut log = Vec::new();
    // The subscription's ack: from here every message of the topic counts.
    loop {
        match next(&mut events).await {
            ReconnectEvent::Message(m) if json(&m)["type"] == "ack" => break,
            other => log.push(name(&other)),
        }
    }

    // A publisher straight to the server, unaffected by the cuts.
    const TOTAL: u64 = 60;
    let publisher = tokio::spawn(async move {
        let (mut ws, _) = sockeye::connect(&format!("ws://{server_addr}/ws"))
            .await
            .unwrap();
        for i in 1..=TOTAL {
            let frame = serde_json::json!({"type":"publish","id":i,"topic":"chat:resume","data":i});
            ws.send(frame.to_string()).await.unwrap();
            // Wait for the ack: published, with its position.
            loop {
                let Some(Ok(Message::Text(t))) = ws.recv().await else {
                    panic!("publisher lost its connection");
                };
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "ack" && v["id"] == i {
                    break;
                }
                assert_ne!(v["type"], "error", "{v}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let mut received: Vec<(u64, String, u64)> = Vec::new(); // (data, epoch, offset)
    let mut cuts = 0;
    let mut connects = 0;
    while received.len() < TOTAL as usize {
        let event = tokio::time::timeout(common::LIMIT, events.recv()).await;
        let Ok(Some(event)) = event else {
            let data: Vec<u64> = received.iter().map(|r| r.0).collect();
            panic!("stalled after {data:?}; other events: {log:?}");
        };
        match event {
            ReconnectEvent::Message(m) => {
                let v = json(&m);
                assert_ne!(v["type"], "gap", "no gap on resume: {v}");
                if v["type"] == "message" {
                    received.push((
                        v["data"].as_u64().unwrap(),
                        v["position"]["epoch"].as_str().unwrap().to_string(),
                        v["position"]["offset"].as_u64().unwrap(),
                    ));
                    // Cut the client's connection twice, mid-stream.
                    if (received.len() == 15 && cuts == 0) || (received.len() == 35 && cuts == 1) {
                        relay.cut();
                        cuts += 1;
                    }
                }
            }
            ReconnectEvent::Connected { .. } => connects += 1,
            other => log.push(name(&other)),
        }
    }
    bounded("publisher", publisher).await.unwrap();

    let data: Vec<u64> = received.iter().map(|r| r.0).collect();
    assert_eq!(
        data,
        (1..=TOTAL).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert!(received.iter().all(|r| r.1 == received[0].1), "one epoch");
    for pair in received.windows(2) {
        assert_eq!(pair[1].2, pair[0].2 + 1, "consecutive positions");
    }
    assert_eq!(connects, 2, "reconnected after each cut: {log:?}");
    assert_eq!(
        log.iter()
            .filter(|e| e.starts_with("disconnected 1006 reconnect=true"))
            .count(),
        2,
        "{log:?}"
    );
}

#[tokio::test]
async fn unsubscribed_topics_are_not_resumed() {
    let listener = bind("127.0.0.1:0".parse().unwrap());
    let server_addr = listener.local_addr().unwrap();
    let config = sockeye_server::DemoConfig {
        simulations: false,
        ..Default::default()
    };
    let app = sockeye_server::demo_app(&config).await.unwrap();
    let _server = tokio::spawn(app.serve(listener, std::future::pending()));
    let relay = Relay::new(server_addr);
    let (client, mut events, _driver) = start(format!("ws://{}/ws", relay.addr), quick());
    client.subscribe("a").unwrap();
    client.subscribe("b").unwrap();
    client.unsubscribe("a").unwrap();
    let mut acks = Vec::new();
    let mut log = Vec::new();
    while acks.is_empty() {
        if let ReconnectEvent::Message(m) = next(&mut events).await {
            let v = json(&m);
            if v["type"] == "ack" {
                acks.push(format!("{} {}", v["op"], v["topic"]));
            }
        }
    }
    relay.cut();
    until(&mut events, "connected 1", &mut log).await;
    while acks.len() < 2 {
        if let ReconnectEvent::Message(m) = next(&mut events).await {
            let v = json(&m);
            if v["type"] == "ack" {
                acks.push(format!("{} {}", v["op"], v["topic"]));
            }
        }
    }
    // Subscribed while down: only "b", on both connections.
    assert_eq!(acks, [r#""subscribe" "b""#, r#""subscribe" "b""#]);
    // Live: the change goes out at once.
    client.unsubscribe("b").unwrap();
    loop {
        if let ReconnectEvent::Message(m) = next(&mut events).await {
            let v = json(&m);
            if v["type"] == "ack" {
                assert_eq!(
                    (v["op"].as_str(), v["topic"].as_str()),
                    (Some("unsubscribe"), Some("b"))
                );
                break;
            }
        }
    }
}

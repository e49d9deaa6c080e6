//! The endpoint policies against bad input, over real TCP: each bad client
//! gets a clear refusal or close, and the other connections carry on. Every
//! test keeps one healthy connection open and echoing from start to end
//! ([`Healthy`]), and checks it last.
//!
//! Timers that are what a test checks (heartbeat, idle, authentication,
//! close timeouts) are configured short; nothing sleeps to wait for an
//! event: the handlers report through channels.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sockeye::{CloseCode, CloseFrame, Config, MaybeTlsStream, Message};
use sockeye_server::{
    App, AuthRejection, BackpressurePolicy, Conn, Endpoint, EndpointConfig, RateLimit,
    RateLimitAction,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(20);

type Ws = sockeye::WebSocket<MaybeTlsStream>;

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LIMIT:?}"))
}

async fn next_data<S>(ws: &mut sockeye::WebSocket<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match bounded("recv", ws.recv()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The close frame the server sent (data before it skipped); then the end.
async fn closed_with<S>(ws: &mut sockeye::WebSocket<S>) -> CloseFrame
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match bounded("recv until close", ws.recv()).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert!(bounded("recv after close", ws.recv()).await.is_none());
                return frame;
            }
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn header(name: http::HeaderName, value: &str) -> Config {
    Config::default().header(name, http::HeaderValue::from_str(value).unwrap())
}

/// What the handlers saw.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Open {
        id: u64,
        user: Option<String>,
        protocol: Option<String>,
    },
    Close {
        id: u64,
        code: u16,
        reason: String,
    },
}

/// Handler events, and the `Conn` of every connection that opened. Events
/// of connections nobody asked about yet wait in `pending`.
struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
    conns: mpsc::UnboundedReceiver<Conn>,
    pending: Vec<Event>,
}

impl Events {
    /// The first event (pending or new) that `wanted` accepts; the others stay pending.
    async fn take(&mut self, wanted: impl Fn(&Event) -> bool) -> Event {
        if let Some(i) = self.pending.iter().position(&wanted) {
            return self.pending.remove(i);
        }
        loop {
            let event = bounded("a handler event", self.rx.recv())
                .await
                .expect("the endpoint is alive");
            if wanted(&event) {
                return event;
            }
            self.pending.push(event);
        }
    }

    /// Waits for the next connection to open; its id, user and handle.
    async fn opened(&mut self) -> (u64, Option<String>, Conn) {
        match self.take(|e| matches!(e, Event::Open { .. })).await {
            Event::Open { id, user, .. } => {
                let conn = bounded("the conn", self.conns.recv()).await.unwrap();
                assert_eq!(conn.id(), id);
                (id, user, conn)
            }
            _ => unreachable!(),
        }
    }

    /// The subprotocol of the next connection to open.
    async fn opened_protocol(&mut self) -> Option<String> {
        match self.take(|e| matches!(e, Event::Open { .. })).await {
            Event::Open { protocol, .. } => {
                let _ = self.conns.recv().await;
                protocol
            }
            _ => unreachable!(),
        }
    }

    /// Waits for connection `id` to close; its code and reason.
    async fn closed(&mut self, id: u64) -> (u16, String) {
        match self
            .take(|e| matches!(e, Event::Close { id: got, .. } if *got == id))
            .await
        {
            Event::Close { code, reason, .. } => (code, reason),
            _ => unreachable!(),
        }
    }

    /// Events so far, without waiting.
    fn drain(&mut self) -> Vec<Event> {
        let mut seen = std::mem::take(&mut self.pending);
        while let Ok(e) = self.rx.try_recv() {
            seen.push(e);
        }
        seen
    }
}

/// An echo endpoint that reports open and close. Text "whoami" is answered
/// with the connection's user; text "subscribe" subscribes it to topic
/// "firehose" and answers "subscribed".
fn endpoint(config: EndpointConfig) -> (Endpoint, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (conn_tx, conns) = mpsc::unbounded_channel();
    let close = tx.clone();
    let endpoint = Endpoint::new(config)
        .on_open(move |conn| {
            let _ = tx.send(Event::Open {
                id: conn.id(),
                user: conn.user(),
                protocol: conn.protocol().map(str::to_owned),
            });
            let _ = conn_tx.send(conn);
            async {}
        })
        .on_message(|conn, message| async move {
            match &message {
                Message::Text(t) if t.as_str() == "whoami" => {
                    conn.send_text(conn.user().unwrap_or_else(|| "nobody".into()));
                }
                Message::Text(t) if t.as_str() == "subscribe" => {
                    conn.subscribe("firehose").await.unwrap();
                    conn.send_text("subscribed");
                }
                _ => {
                    conn.send(message);
                }
            }
        })
        .on_close(move |conn, code, reason| {
            let _ = close.send(Event::Close {
                id: conn.id(),
                code: code.0,
                reason,
            });
            async {}
        });
    (
        endpoint,
        Events {
            rx,
            conns,
            pending: Vec::new(),
        },
    )
}

/// A running app.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(app: App) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        bounded("serve after shutdown", &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The connection every test keeps open: a reader task answers pings (so
/// heartbeats find it alive) and hands over what arrives; `check` sends a
/// message and expects its echo.
struct Healthy {
    writer: sockeye::WriteHalf<MaybeTlsStream>,
    received: mpsc::UnboundedReceiver<Message>,
    sent: u32,
}

impl Healthy {
    async fn connect(url: &str, config: &Config) -> Self {
        let (ws, _) = bounded("connect", sockeye::connect_with(url, config))
            .await
            .expect("the healthy connection is accepted");
        let (mut reader, writer) = ws.split();
        let (tx, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = reader.recv().await {
                match event {
                    Ok(Message::Ping(_) | Message::Pong(_)) => {}
                    Ok(message) => {
                        let _ = tx.send(message);
                    }
                    Err(e) => {
                        let _ = tx.send(Message::text(format!("error: {e}")));
                    }
                }
            }
        });
        let mut healthy = Healthy {
            writer,
            received,
            sent: 0,
        };
        healthy.check().await;
        healthy
    }

    async fn check(&mut self) {
        self.sent += 1;
        let text = format!("healthy #{}", self.sent);
        bounded("healthy send", self.writer.send(text.as_str()))
            .await
            .expect("the healthy connection is still open");
        let got = bounded("healthy echo", self.received.recv()).await;
        assert_eq!(
            got,
            Some(Message::text(text)),
            "the healthy connection echoes"
        );
    }

    async fn close(mut self) {
        bounded("healthy close", self.writer.close(None))
            .await
            .unwrap();
    }
}

/// Opens a WebSocket on a raw socket and returns it right after the 101:
/// a client that will never read or answer anything again.
async fn raw_upgrade(addr: SocketAddr, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = bounded("read the 101", tcp.read(&mut byte)).await.unwrap();
        assert_eq!(n, 1, "the server closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

fn refused(result: Result<(Ws, http::Response<()>), sockeye::Error>) -> (u16, String) {
    match result {
        Err(sockeye::Error::Refused { status, body, .. }) => (status, body),
        Ok((_, response)) => panic!("expected a refusal, got {}", response.status()),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_disallowed_origin_is_refused_with_403_before_any_upgrade() {
    let (ep, mut events) = endpoint(EndpointConfig::default().origins(["https://good.example"]));
    let server = Server::start(App::new().endpoint("/ws", ep)).await;
    let url = server.url("/ws");
    let good = header(http::header::ORIGIN, "https://good.example");
    let mut healthy = Healthy::connect(&url, &good).await;
    events.opened().await;

    let evil = header(http::header::ORIGIN, "https://evil.example");
    let (status, body) = refused(bounded("connect", sockeye::connect_with(&url, &evil)).await);
    assert_eq!(status, 403);
    assert!(body.contains("https://evil.example"), "{body:?}");
    assert!(body.contains("not allowed"), "{body:?}");

    // A near miss is a miss: origins match exactly.
    let near = header(http::header::ORIGIN, "https://good.example.evil.example");
    assert_eq!(
        refused(bounded("connect", sockeye::connect_with(&url, &near)).await).0,
        403
    );
    // No Origin at all, on an endpoint that requires one.
    let (status, body) = refused(bounded("connect", sockeye::connect(&url)).await);
    assert_eq!(status, 403);
    assert!(body.contains("Origin"), "{body:?}");

    healthy.check().await;
    // The refused ones never reached the handlers.
    assert_eq!(events.drain(), []);
    healthy.close().await;
    server.stop().await;
}

/// The auth hook of the tests: a token from `?token=`, `Authorization:
/// Bearer`, or a `session` cookie; "t-alice" and "t-bob" are known.
fn token_auth(ep: Endpoint) -> Endpoint {
    ep.auth(|request| async move {
        let token = request
            .query("token")
            .or_else(|| request.bearer_token())
            .or_else(|| request.cookie("session"));
        match token.as_deref() {
            None => Err(AuthRejection::unauthorized(
                "missing token: pass ?token=, an Authorization bearer token or a session cookie",
            )),
            Some("t-alice") => Ok(Some("alice".to_string())),
            Some("t-bob") => Ok(Some("bob".to_string())),
            Some(other) => Err(AuthRejection::forbidden(format!(
                "token {other:?} is not accepted here"
            ))),
        }
    })
}

#[tokio::test]
async fn the_auth_hook_refuses_bad_credentials_and_attaches_the_user() {
    let (ep, mut events) = endpoint(EndpointConfig::default());
    let server = Server::start(App::new().endpoint("/ws", token_auth(ep))).await;
    let url = server.url("/ws");
    let mut healthy = Healthy::connect(&format!("{url}?token=t-alice"), &Config::default()).await;
    let (_, user, _) = events.opened().await;
    assert_eq!(user.as_deref(), Some("alice"));

    // Missing: 401 with the hook's message.
    let (status, body) = refused(bounded("connect", sockeye::connect(&url)).await);
    assert_eq!(status, 401);
    assert!(body.contains("missing token"), "{body:?}");
    // Wrong, each way it can come: 403 with the hook's message.
    let wrong = [
        (format!("{url}?token=t-mallory"), Config::default()),
        (
            url.clone(),
            header(http::header::AUTHORIZATION, "Bearer t-mallory"),
        ),
        (
            url.clone(),
            header(http::header::COOKIE, "theme=dark; session=t-mallory"),
        ),
    ];
    for (target, config) in &wrong {
        let (status, body) =
            refused(bounded("connect", sockeye::connect_with(target, config)).await);
        assert_eq!(status, 403, "{target}");
        assert!(body.contains("\"t-mallory\" is not accepted"), "{body:?}");
    }
    // Right, each way: the user is on the connection.
    let right = [
        (
            url.clone(),
            header(http::header::AUTHORIZATION, "Bearer t-bob"),
            "bob",
        ),
        (
            url.clone(),
            header(http::header::COOKIE, "theme=dark; session=t-alice"),
            "alice",
        ),
        (format!("{url}?token=t-bob"), Config::default(), "bob"),
    ];
    for (target, config, expected) in &right {
        let (mut ws, _) = bounded("connect", sockeye::connect_with(target, config))
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        let (_, user, conn) = events.opened().await;
        assert_eq!(user.as_deref(), Some(*expected));
        assert_eq!(conn.user().as_deref(), Some(*expected));
        ws.send("whoami").await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text(*expected));
        bounded("close", ws.close(None)).await.unwrap();
    }

    healthy.check().await;
    healthy.close().await;
    server.stop().await;
}

#[tokio::test]
async fn max_connections_refuses_the_next_one_with_503() {
    let (ep, mut events) = endpoint(EndpointConfig::default().max_connections(2));
    let app = App::new().endpoint("/ws", ep).metrics_route("/metrics");
    let metrics = app.metrics().clone();
    let server = Server::start(app).await;
    let url = server.url("/ws");
    let mut healthy = Healthy::connect(&url, &Config::default()).await;
    events.opened().await;
    let (mut second, _) = bounded("connect", sockeye::connect(&url)).await.unwrap();
    let (second_id, _, _) = events.opened().await;

    for _ in 0..3 {
        let (status, body) = refused(bounded("connect", sockeye::connect(&url)).await);
        assert_eq!(status, 503);
        assert!(body.contains("too many connections"), "{body:?}");
    }
    let text = metrics.render();
    assert_eq!(
        metric(
            &text,
            r#"sockeye_upgrades_refused_total{endpoint="/ws",reason="too_many_connections"}"#
        ),
        Some(3.0),
        "{text}"
    );

    // A connection leaves: its place is free again.
    bounded("close", second.close(None)).await.unwrap();
    events.closed(second_id).await;
    let mut third = bounded("a free place", async {
        loop {
            match sockeye::connect(&url).await {
                Ok((ws, _)) => break ws,
                // The place frees right after on_close returns.
                Err(sockeye::Error::Refused { status: 503, .. }) => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    third.send("in").await.unwrap();
    assert_eq!(next_data(&mut third).await, Message::text("in"));

    healthy.check().await;
    bounded("close", third.close(None)).await.unwrap();
    healthy.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_terminated_after_the_heartbeat_timeout() {
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_millis(100);
    let (ep, mut events) = endpoint(EndpointConfig::default().heartbeat(interval, timeout));
    let server = Server::start(App::new().endpoint("/ws", ep)).await;
    let mut healthy = Healthy::connect(&server.url("/ws"), &Config::default()).await;
    events.opened().await;

    let started = Instant::now();
    let mut silent = raw_upgrade(server.addr, "/ws").await;
    let (silent_id, _, _) = events.opened().await;
    let (code, reason) = events.closed(silent_id).await;
    let took = started.elapsed();
    assert_eq!(code, 1006, "{reason}");
    assert!(reason.contains("pong"), "{reason}");
    assert!(
        took >= interval + timeout,
        "terminated after {took:?}, before a ping had its time to be answered"
    );
    // The server sent pings and then dropped the socket: what is left to
    // read ends with EOF (or a reset), not more data.
    let mut rest = Vec::new();
    let _ = bounded("the socket to end", silent.read_to_end(&mut rest)).await;
    assert!(!rest.is_empty(), "the server pinged");
    assert_eq!(rest[0], 0x89, "a ping frame came first");

    // The healthy connection answered its pings all along: it stays.
    healthy.check().await;
    healthy.close().await;
    server.stop().await;
}

fn rate_limit(action: RateLimitAction) -> RateLimit {
    RateLimit {
        messages_per_second: 10.0,
        bytes_per_second: 1e6,
        action,
    }
}

#[tokio::test]
async fn a_flood_past_the_rate_limit_is_closed_with_1008() {
    let config = EndpointConfig::default().rate_limit(rate_limit(RateLimitAction::Close));
    let (ep, mut events) = endpoint(config);
    let server = Server::start(App::new().endpoint("/ws", ep)).await;
    let url = server.url("/ws");
    let mut healthy = Healthy::connect(&url, &Config::default()).await;
    events.opened().await;

    let (mut flood, _) = bounded("connect", sockeye::connect(&url)).await.unwrap();
    let (flood_id, _, _) = events.opened().await;
    for i in 0..100 {
        if flood.feed(format!("flood {i}")).await.is_err() {
            break;
        }
    }
    let _ = flood.flush().await;
    // The burst allowance (a second's worth) is echoed, then the close.
    let mut echoed = 0;
    let frame = loop {
        match bounded("recv", flood.recv()).await {
            Some(Ok(Message::Text(_))) => echoed += 1,
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            other => panic!("expected echoes then a close, got {other:?}"),
        }
    };
    // (Reading on sends the close reply.)
    assert!(bounded("the end", flood.recv()).await.is_none());
    assert_eq!(frame.code, CloseCode::POLICY);
    assert!(frame.reason.as_str().contains("rate limit"), "{frame:?}");
    assert!(
        (1..=11).contains(&echoed),
        "{echoed} messages echoed before the close"
    );
    assert_eq!(events.closed(flood_id).await.0, 1008);

    healthy.check().await;
    healthy.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_flood_past_the_rate_limit_gets_errors_and_stays_open_with_reply() {
    let config = EndpointConfig::default().rate_limit(rate_limit(RateLimitAction::Reply));
    let (ep, mut events) = endpoint(config);
    let server = Server::start(App::new().endpoint("/ws", ep)).await;
    let url = server.url("/ws");
    let mut healthy = Healthy::connect(&url, &Config::default()).await;
    events.opened().await;

    let (mut flood, _) = bounded("connect", sockeye::connect(&url)).await.unwrap();
    events.opened().await;
    for i in 0..50 {
        flood.feed(format!("flood {i}")).await.unwrap();
    }
    flood.flush().await.unwrap();
    // Every message is answered: an echo, or the rate_limited error.
    let (mut echoed, mut limited) = (0, 0);
    for _ in 0..50 {
        match next_data(&mut flood).await {
            Message::Text(t) if t.as_str().starts_with("flood ") => echoed += 1,
            Message::Text(t) => {
                let error: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(error["type"], "error");
                assert_eq!(error["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        echoed >= 1 && limited >= 30,
        "{echoed} echoed, {limited} limited"
    );
    // Still open: a ping is answered (pings are not rate limited).
    flood
        .send(Message::Ping("still there?".into()))
        .await
        .unwrap();
    loop {
        match bounded("pong", flood.recv()).await {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"still there?");
                break;
            }
            Some(Ok(Message::Text(_))) => {}
            other => panic!("expected the pong, got {other:?}"),
        }
    }
    assert!(
        !events
            .drain()
            .iter()
            .any(|e| matches!(e, Event::Close { .. })),
        "nothing closed"
    );

    healthy.check().await;
    bounded("close", flood.close(None)).await.unwrap();
    healthy.close().await;
    server.stop().await;
}

const BACKPRESSURE_LIMIT: usize = 16 * 1024;
/// A backpressure limit past the writer's buffer and what the kernel's
/// socket buffers take on loopback, so that the writer stalls.
const BIG_LIMIT: usize = 8 << 20;
/// The sockeye writer's own buffer: it writes to the socket past 64 KiB
/// (`Config::write_buffer_high`), so it holds at most that plus one message.
const WRITER_BUFFER: usize = 64 * 1024;

/// A client that subscribes to "firehose" and then reads nothing, over a
/// socket with a small receive buffer (so the server's writes stall soon).
async fn slow_subscriber(
    addr: SocketAddr,
    path: &str,
    events: &mut Events,
) -> (sockeye::WebSocket<TcpStream>, u64, Conn) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let uri: http::Uri = format!("ws://{addr}{path}").parse().unwrap();
    let (mut ws, _) = bounded(
        "handshake",
        sockeye::client_handshake(tcp, &uri, &Config::default()),
    )
    .await
    .unwrap();
    let (id, _, conn) = events.opened().await;
    ws.send("subscribe").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("subscribed"));
    (ws, id, conn)
}

/// A 4 KiB message numbered `i`.
fn numbered(i: usize) -> String {
    format!("{i:08}:{}", "x".repeat(4096 - 9))
}

/// The frame of a 4 KiB text message: payload plus a 4-byte header.
const FRAME: usize = 4096 + 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_publications_dropped_and_server_memory_stays_bounded() {
    let config =
        EndpointConfig::default().backpressure(BACKPRESSURE_LIMIT, BackpressurePolicy::Drop);
    let (ep, mut events) = endpoint(config);
    let app = App::new().endpoint("/ws", ep).metrics_route("/metrics");
    let hub = app.hub().clone();
    let metrics = app.metrics().clone();
    let server = Server::start(app).await;
    let mut healthy = Healthy::connect(&server.url("/ws"), &Config::default()).await;
    events.opened().await;
    let (mut slow, _, conn) = slow_subscriber(server.addr, "/ws", &mut events).await;

    let drops = || {
        metric(
            &metrics.render(),
            r#"sockeye_backpressure_drops_total{endpoint="/ws"}"#,
        )
        .unwrap_or(0.0)
    };
    let bound = BACKPRESSURE_LIMIT + FRAME + WRITER_BUFFER + FRAME;
    let mut published = 0;
    let mut most = 0;
    bounded("drops to be counted", async {
        while drops() < 100.0 {
            for _ in 0..50 {
                hub.publish("firehose", numbered(published), true, None)
                    .await
                    .unwrap();
                published += 1;
                let buffered = conn.buffered_amount();
                most = most.max(buffered);
                assert!(
                    buffered <= bound,
                    "{buffered} bytes buffered for a slow reader after {published} publications"
                );
                tokio::task::yield_now().await;
            }
            assert!(
                published < 100_000,
                "no drop after {published} publications"
            );
        }
    })
    .await;
    assert!(most > BACKPRESSURE_LIMIT, "the queue did fill ({most})");
    // The drops show in /metrics.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let text = http_body(tcp, "/metrics").await;
    assert!(
        metric(&text, r#"sockeye_backpressure_drops_total{endpoint="/ws"}"#)
            .is_some_and(|d| d >= 100.0),
        "{text}"
    );
    healthy.check().await;

    // The reader wakes up: what it gets is in order, with holes, and once
    // it has caught up, publications reach it again.
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = slow.recv().await {
            if let Message::Text(t) = message {
                let _ = seen_tx.send(t.as_str()[..8].to_string());
            }
        }
    });
    let mut last = None;
    let mut got = 0;
    let caught_up = bounded("publications to reach the reader again", async {
        let mut attempt = 0usize;
        loop {
            // Publish a marker; it gets through once the backlog is gone.
            let marker = format!("{:08}", 90_000_000 + attempt);
            hub.publish("firehose", format!("{marker}:marker"), true, None)
                .await
                .unwrap();
            attempt += 1;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
            while let Ok(Some(n)) = tokio::time::timeout_at(deadline, seen.recv()).await {
                let n: usize = n.parse().unwrap();
                if n >= 90_000_000 {
                    return attempt;
                }
                assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
                last = Some(n);
                got += 1;
            }
        }
    })
    .await;
    assert!(got < published, "some were dropped ({got} of {published})");
    assert!(caught_up >= 1);
    assert!(!conn.is_closing(), "Drop does not close the connection");

    healthy.check().await;
    reader.abort();
    healthy.close().await;
    server.stop().await;
}

/// Regression: the count of bytes in the connection's writer was refreshed
/// when the task handed it a message, not when the socket took the bytes
/// (that happens while the task waits). After one publication bigger than
/// the backpressure limit, a reader that had read everything still looked
/// slow, and every later publication to it was dropped, for good.
#[tokio::test]
async fn a_reader_that_caught_up_gets_publications_again() {
    let config =
        EndpointConfig::default().backpressure(BACKPRESSURE_LIMIT, BackpressurePolicy::Drop);
    let (ep, mut events) = endpoint(config);
    let app = App::new().endpoint("/ws", ep);
    let hub = app.hub().clone();
    let server = Server::start(app).await;
    let mut healthy = Healthy::connect(&server.url("/ws"), &Config::default()).await;
    events.opened().await;
    let (mut ws, _) = bounded("connect", sockeye::connect(&server.url("/ws")))
        .await
        .unwrap();
    let (_, _, conn) = events.opened().await;
    ws.send("subscribe").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("subscribed"));

    // One message twice the limit: queued (nothing was buffered), and read.
    let big = "b".repeat(2 * BACKPRESSURE_LIMIT);
    hub.publish("firehose", big.clone(), true, None)
        .await
        .unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text(big));
    // The reader has it all; the next ones reach it.
    for i in 0..3 {
        hub.publish("firehose", numbered(i), true, None)
            .await
            .unwrap();
        assert_eq!(
            next_data(&mut ws).await,
            Message::text(numbered(i)),
            "publication {i} after the reader caught up (buffered: {})",
            conn.buffered_amount()
        );
    }

    healthy.check().await;
    bounded("close", ws.close(None)).await.unwrap();
    healthy.close().await;
    server.stop().await;
}

async fn http_body(mut tcp: TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    bounded("HTTP response", tcp.read_to_end(&mut raw))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// Publishes to "firehose" until `conn` is closing; checks the memory bound
/// on the way.
async fn publish_until_closing(hub: &sockeye_server::Hub, conn: &Conn, limit: usize) {
    let bound = limit + FRAME + WRITER_BUFFER + FRAME;
    bounded("the slow reader to be closed", async {
        let mut published = 0;
        while !conn.is_closing() {
            hub.publish("firehose", numbered(published), true, None)
                .await
                .unwrap();
            published += 1;
            let buffered = conn.buffered_amount();
            assert!(buffered <= bound, "{buffered} bytes buffered");
            assert!(published < 100_000, "not closed after {published}");
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_closed_with_1013_under_the_close_policy() {
    let config = EndpointConfig::default().backpressure(
        BACKPRESSURE_LIMIT,
        BackpressurePolicy::Close(CloseCode::TRY_AGAIN_LATER),
    );
    let (ep, mut events) = endpoint(config);
    let app = App::new().endpoint("/ws", ep);
    let hub = app.hub().clone();
    let server = Server::start(app).await;
    let mut healthy = Healthy::connect(&server.url("/ws"), &Config::default()).await;
    events.opened().await;
    let (mut slow, slow_id, conn) = slow_subscriber(server.addr, "/ws", &mut events).await;

    publish_until_closing(&hub, &conn, BACKPRESSURE_LIMIT).await;
    // The client reads again: what was on its way, then the close.
    let frame = closed_with(&mut slow).await;
    assert_eq!(frame.code, CloseCode::TRY_AGAIN_LATER);
    assert!(frame.reason.as_str().contains("too slow"), "{frame:?}");
    assert_eq!(events.closed(slow_id).await.0, 1013);

    healthy.check().await;
    healthy.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_that_never_reads_again_is_dropped_after_the_close_timeout() {
    // A limit past what the socket buffers and the writer (64 KiB) hold:
    // the writer is stalled when the policy closes the connection.
    let mut config = EndpointConfig::default().backpressure(
        BIG_LIMIT,
        BackpressurePolicy::Close(CloseCode::TRY_AGAIN_LATER),
    );
    config.close_timeout = Duration::from_millis(300);
    let (ep, mut events) = endpoint(config);
    let mut app = App::new();
    let handle = app.add_endpoint("/ws", ep);
    let hub = app.hub().clone();
    let server = Server::start(app).await;
    let mut healthy = Healthy::connect(&server.url("/ws"), &Config::default()).await;
    events.opened().await;
    let (slow, slow_id, conn) = slow_subscriber(server.addr, "/ws", &mut events).await;

    publish_until_closing(&hub, &conn, BIG_LIMIT).await;
    // The client never reads: the server cannot finish the close handshake
    // and gives up after its close timeout instead of waiting forever.
    let (code, _) = events.closed(slow_id).await;
    assert_eq!(code, 1013);
    bounded("the connection to be forgotten", async {
        while handle.connection_count() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(slow);

    healthy.check().await;
    healthy.close().await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let (ep, mut events) = endpoint(EndpointConfig::default().max_payload_length(1024));
    let server = Server::start(App::new().endpoint("/ws", ep)).await;
    let url = server.url("/ws");
    let mut healthy = Healthy::connect(&url, &Config::default()).await;
    events.opened().await;

    let (mut big, _) = bounded("connect", sockeye::connect(&url)).await.unwrap();
    let (big_id, _, _) = events.opened().await;
    big.send(vec![1u8; 1024]).await.unwrap();
    assert_eq!(next_data(&mut big).await, Message::binary(vec![1u8; 1024]));
    big.send("y".repeat(1025)).await.unwrap();
    assert_eq!(closed_with(&mut big).await.code, CloseCode::TOO_BIG);
    assert_eq!(events.closed(big_id).await.0, 1009);

    healthy.check().await;
    healthy.close().await;
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_1001() {
    let idle_after = Duration::from_millis(200);
    let (idle_ep, mut events) = endpoint(EndpointConfig::default().idle_timeout(Some(idle_after)));
    let (echo, mut echo_events) = endpoint(EndpointConfig::default());
    let app = App::new()
        .endpoint("/idle", idle_ep)
        .endpoint("/echo", echo);
    let server = Server::start(app).await;
    let mut healthy = Healthy::connect(&server.url("/echo"), &Config::default()).await;
    echo_events.opened().await;

    let started = Instant::now();
    let (mut idle, _) = bounded("connect", sockeye::connect(&server.url("/idle")))
        .await
        .unwrap();
    let (id, _, _) = events.opened().await;
    // Talking keeps it open...
    idle.send("one").await.unwrap();
    assert_eq!(next_data(&mut idle).await, Message::text("one"));
    // ...silence closes it.
    let frame = closed_with(&mut idle).await;
    assert_eq!(frame.code, CloseCode::GOING_AWAY);
    assert_eq!(frame.reason.as_str(), "idle timeout");
    assert!(started.elapsed() >= idle_after);
    assert_eq!(events.closed(id).await, (1001, "idle timeout".to_string()));

    healthy.check().await;
    healthy.close().await;
    server.stop().await;
}

#[tokio::test]
async fn first_message_authentication() {
    let timeout = Duration::from_millis(200);
    let (ep, mut events) = endpoint(EndpointConfig::default());
    let ep = ep.first_message_auth(timeout, |_conn, message| async move {
        match message {
            Message::Text(t) if t.as_str() == r#"{"token":"t-alice"}"# => Ok("alice".to_string()),
            _ => Err("bad credentials".to_string()),
        }
    });
    let server = Server::start(App::new().endpoint("/ws", ep)).await;
    let url = server.url("/ws");

    // A good first message authenticates; the handlers never see it.
    let mut healthy = Healthy::connect_authenticated(&url).await;
    let (_, user, conn) = events.opened().await;
    assert_eq!(user, None, "no user before the first message");
    healthy.writer.send("whoami").await.unwrap();
    assert_eq!(
        bounded("whoami", healthy.received.recv()).await,
        Some(Message::text("alice"))
    );
    assert_eq!(conn.user().as_deref(), Some("alice"));
    healthy.check().await;

    // A bad first message: 1008 with the check's reason.
    let (mut bad, _) = bounded("connect", sockeye::connect(&url)).await.unwrap();
    let (bad_id, _, _) = events.opened().await;
    bad.send(r#"{"token":"t-mallory"}"#).await.unwrap();
    let frame = closed_with(&mut bad).await;
    assert_eq!(frame.code, CloseCode::POLICY);
    assert_eq!(frame.reason.as_str(), "bad credentials");
    assert_eq!(events.closed(bad_id).await.0, 1008);

    // Silence: 1008 after the timeout.
    let started = Instant::now();
    let (mut silent, _) = bounded("connect", sockeye::connect(&url)).await.unwrap();
    let (silent_id, _, _) = events.opened().await;
    let frame = closed_with(&mut silent).await;
    assert_eq!(frame.code, CloseCode::POLICY);
    assert!(frame.reason.as_str().contains("timeout"), "{frame:?}");
    assert!(started.elapsed() >= timeout);
    assert_eq!(events.closed(silent_id).await.0, 1008);

    healthy.check().await;
    healthy.close().await;
    server.stop().await;
}

impl Healthy {
    /// Like `connect`, sending the good first-message credentials first.
    async fn connect_authenticated(url: &str) -> Self {
        let (ws, _) = bounded("connect", sockeye::connect(url)).await.unwrap();
        let (mut reader, mut writer) = ws.split();
        writer.send(r#"{"token":"t-alice"}"#).await.unwrap();
        let (tx, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) = reader.recv().await {
                if message.is_data() {
                    let _ = tx.send(message);
                }
            }
        });
        Healthy {
            writer,
            received,
            sent: 0,
        }
    }
}

#[tokio::test]
async fn subprotocols_are_chosen_from_the_clients_list_and_extra_headers_arrive() {
    let (chat, mut chat_events) = endpoint(
        EndpointConfig::default()
            .protocols(["v2.chat", "v1.chat"])
            .header(
                http::HeaderName::from_static("x-served-by"),
                http::HeaderValue::from_static("sockeye-tests"),
            ),
    );
    let (any, mut any_events) = endpoint(EndpointConfig::default().protocols(["*"]));
    let app = App::new().endpoint("/chat", chat).endpoint("/any", any);
    let server = Server::start(app).await;
    let mut healthy = Healthy::connect(
        &server.url("/chat"),
        &Config::default().protocols(["v2.chat"]),
    )
    .await;
    chat_events.opened().await;

    let chosen = |response: &http::Response<()>| {
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string())
    };
    // The first of the client's list that the endpoint speaks.
    let config = Config::default().protocols(["v3.chat", "v1.chat", "v2.chat"]);
    let (mut ws, response) = bounded(
        "connect",
        sockeye::connect_with(&server.url("/chat"), &config),
    )
    .await
    .unwrap();
    assert_eq!(chosen(&response).as_deref(), Some("v1.chat"));
    assert_eq!(
        response.headers().get("x-served-by").unwrap(),
        "sockeye-tests"
    );
    assert_eq!(
        chat_events.opened_protocol().await.as_deref(),
        Some("v1.chat")
    );
    ws.send("hi").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("hi"));
    bounded("close", ws.close(None)).await.unwrap();

    // "*": the client's first, whatever it is.
    let config = Config::default().protocols(["mqtt", "graphql-ws"]);
    let (mut ws, response) = bounded(
        "connect",
        sockeye::connect_with(&server.url("/any"), &config),
    )
    .await
    .unwrap();
    assert_eq!(chosen(&response).as_deref(), Some("mqtt"));
    assert!(response.headers().get("x-served-by").is_none());
    assert_eq!(any_events.opened_protocol().await.as_deref(), Some("mqtt"));
    bounded("close", ws.close(None)).await.unwrap();

    // Nothing offered: nothing chosen.
    let (mut ws, response) = bounded("connect", sockeye::connect(&server.url("/chat")))
        .await
        .unwrap();
    assert_eq!(chosen(&response), None);
    bounded("close", ws.close(None)).await.unwrap();

    healthy.check().await;
    healthy.close().await;
    server.stop().await;
}

//! `App` end to end, over real TCP on 127.0.0.1:0: HTTP routes and WebSocket
//! endpoints on one port, the router mounted in a user's own axum app, the
//! handlers and what they are given, per-connection state, broadcast,
//! graceful shutdown, TLS, and `/metrics`.
//!
//! Every test is bounded by a timeout; none sleeps to wait for something:
//! events come from the handlers through channels.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use sockeye::{CloseCode, CloseFrame, Config, Message, PreparedMessage};
use sockeye_server::{App, Conn, Endpoint, EndpointConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(20);

type Ws = sockeye::WebSocket<sockeye::MaybeTlsStream>;

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LIMIT:?}"))
}

/// The next text or binary message (pings and pongs skipped).
async fn next_data(ws: &mut Ws) -> Message {
    loop {
        match bounded("recv", ws.recv()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The close frame the server sent (messages before it skipped), then the end.
async fn closed_with(ws: &mut Ws) -> CloseFrame {
    loop {
        match bounded("recv until close", ws.recv()).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert!(
                    bounded("recv after close", ws.recv()).await.is_none(),
                    "nothing after the close frame"
                );
                return frame;
            }
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn connect(url: &str) -> Ws {
    connect_with(url, &Config::default()).await
}

async fn connect_with(url: &str, config: &Config) -> Ws {
    bounded("connect", sockeye::connect_with(url, config))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
        .0
}

/// An HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    head: String,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `GET path` with `Connection: close` and reads the whole response.
async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    path: &str,
    extra: &str,
) -> HttpResponse {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n");
    bounded("write request", io.write_all(request.as_bytes()))
        .await
        .unwrap();
    let mut raw = Vec::new();
    // A TLS peer may end without close_notify; what was read is enough.
    let _ = bounded("read response", io.read_to_end(&mut raw)).await;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete HTTP head in {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let mut response = HttpResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        response.body = unchunk(body);
    }
    response
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

async fn get_plain(addr: SocketAddr, path: &str) -> HttpResponse {
    let tcp = bounded("connect", TcpStream::connect(addr)).await.unwrap();
    http_get(tcp, path, "").await
}

/// Serves `app` on a fresh loopback port; returns the address, the shutdown
/// trigger and `serve`'s task.
async fn serve(
    app: App,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

fn echo_endpoint(config: EndpointConfig) -> Endpoint {
    Endpoint::new(config).on_message(|conn, message| async move {
        conn.send(message);
    })
}

/// What the handlers saw, in the order they saw it.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Open {
        id: u64,
        remote: Option<SocketAddr>,
        protocol: Option<String>,
    },
    Message(u64, Message),
    Close(u64, u16, String),
    Error(u64, String),
}

/// An echo endpoint whose handlers report every event.
fn recording_endpoint(config: EndpointConfig) -> (Endpoint, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (open, message, close, error) = (tx.clone(), tx.clone(), tx.clone(), tx);
    let endpoint = Endpoint::new(config)
        .on_open(move |conn| {
            let _ = open.send(Event::Open {
                id: conn.id(),
                remote: conn.remote_addr(),
                protocol: conn.protocol().map(str::to_owned),
            });
            async {}
        })
        .on_message(move |conn, m| {
            let _ = message.send(Event::Message(conn.id(), m.clone()));
            conn.send(m);
            async {}
        })
        .on_close(move |conn, code, reason| {
            let _ = close.send(Event::Close(conn.id(), code.0, reason));
            async {}
        })
        .on_error(move |conn, e| {
            let _ = error.send(Event::Error(conn.id(), e.to_string()));
            async {}
        });
    (endpoint, rx)
}

async fn event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    bounded("a handler event", rx.recv())
        .await
        .expect("the endpoint is alive")
}

async fn opened(rx: &mut mpsc::UnboundedReceiver<Event>) -> u64 {
    match event(rx).await {
        Event::Open { id, .. } => id,
        other => panic!("expected on_open, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn http_routes_and_websocket_endpoints_share_one_port() {
    let own = axum::Router::new().route("/api/hello", get(|| async { "hello from my router" }));
    let app = App::new()
        .route("/health", get(|| async { "ok" }))
        .endpoint("/echo", echo_endpoint(EndpointConfig::default()))
        .merge(own);
    let (addr, stop, server) = serve(app).await;

    let health = get_plain(addr, "/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let hello = get_plain(addr, "/api/hello").await;
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "hello from my router")
    );
    assert_eq!(get_plain(addr, "/nowhere").await.status, 404);
    // Plain HTTP to the WebSocket endpoint is a client error, not a hang.
    let plain = get_plain(addr, "/echo").await;
    assert!(
        (400..500).contains(&plain.status),
        "GET /echo without an upgrade: {plain:?}"
    );

    let mut ws = connect(&format!("ws://{addr}/echo")).await;
    ws.send("over the same port").await.unwrap();
    assert_eq!(
        next_data(&mut ws).await,
        Message::text("over the same port")
    );
    // HTTP keeps working while a WebSocket is open.
    assert_eq!(get_plain(addr, "/health").await.status, 200);
    ws.send(vec![1u8, 2, 3]).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(vec![1u8, 2, 3]));
    bounded("close", ws.close(None)).await.unwrap();

    stop.send(()).unwrap();
    bounded("serve", server).await.unwrap().unwrap();
}

/// Reads this thread's CPU time (user + system), in clock ticks.
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses): utime is the
    // 14th field of the line, stime the 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[tokio::test]
async fn the_router_mounted_in_my_own_axum_app_serves_websockets() {
    let (endpoint, mut events) = recording_endpoint(EndpointConfig::default());
    let app = App::new().endpoint("/ws", endpoint);
    let shutdown = app.shutdown_signal();
    let mine = axum::Router::new()
        .route("/", get(|| async { "my own app" }))
        .merge(app.router());
    // The App itself is not needed any more: only its router and the
    // shutdown sender live on, as in a user's main().
    drop(app);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            mine.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let index = get_plain(addr, "/").await;
    assert_eq!((index.status, index.body.as_str()), (200, "my own app"));

    let mut ws = connect(&format!("ws://{addr}/ws")).await;
    match event(&mut events).await {
        Event::Open { remote, .. } => {
            let remote = remote.expect("ConnectInfo gives the endpoint the peer's address");
            assert!(remote.ip().is_loopback(), "{remote}");
        }
        other => panic!("expected on_open, got {other:?}"),
    }
    ws.send("through axum::serve").await.unwrap();
    assert_eq!(
        next_data(&mut ws).await,
        Message::text("through axum::serve")
    );

    // Shutdown is the user's to run: the sender closes every WebSocket.
    shutdown.send(true).unwrap();
    let frame = closed_with(&mut ws).await;
    assert_eq!(frame.code, CloseCode::GOING_AWAY);
    assert_eq!(frame.reason.as_str(), "server shutting down");
    server.abort();
}

/// Regression: with the `App` (and so its shutdown sender) dropped after
/// `router()`, each connection task saw `changed()` fail at once, forever,
/// and spun.
#[tokio::test]
async fn a_router_outliving_its_app_costs_no_cpu_while_idle() {
    let (endpoint, mut events) = recording_endpoint(EndpointConfig::default());
    let router = App::new().endpoint("/ws", endpoint).router();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let mut ws = connect(&format!("ws://{addr}/ws")).await;
    opened(&mut events).await;
    ws.send("warm up").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("warm up"));

    // The current-thread runtime runs every task of this test on this
    // thread, so the thread's CPU time is theirs. Time is what is measured
    // here, so this test waits for it to pass.
    let before = thread_cpu_ticks().expect("/proc/thread-self/stat");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = thread_cpu_ticks().unwrap() - before;
    // Clock ticks are 10 ms: a busy loop burns most of 50.
    assert!(
        used < 10,
        "an idle connection used {used} ticks of CPU in 500 ms"
    );
    ws.send("still fine").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("still fine"));
    bounded("close", ws.close(None)).await.unwrap();
    server.abort();
}

#[tokio::test]
async fn handlers_fire_with_the_right_values() {
    let (endpoint, mut events) = recording_endpoint(
        EndpointConfig::default()
            .max_payload_length(1024)
            .protocols(["chat.v2", "chat.v1"]),
    );
    let (addr, stop, server) = serve(App::new().endpoint("/ws", endpoint)).await;
    let url = format!("ws://{addr}/ws");

    // Open: the connection's id, its peer and its subprotocol.
    let mut ws = connect_with(&url, &Config::default().protocols(["chat.v1"])).await;
    let local = match ws.get_ref() {
        sockeye::MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap(),
        other => panic!("plain TCP expected, got {other:?}"),
    };
    let id = match event(&mut events).await {
        Event::Open {
            id,
            remote,
            protocol,
        } => {
            assert_eq!(remote, Some(local), "the peer address is the client's");
            assert_eq!(protocol.as_deref(), Some("chat.v1"));
            id
        }
        other => panic!("expected on_open, got {other:?}"),
    };

    // Message: each one, in order, as sent.
    ws.send("first").await.unwrap();
    ws.send(vec![0u8, 255]).await.unwrap();
    assert_eq!(
        event(&mut events).await,
        Event::Message(id, Message::text("first"))
    );
    assert_eq!(
        event(&mut events).await,
        Event::Message(id, Message::binary(vec![0u8, 255]))
    );
    assert_eq!(next_data(&mut ws).await, Message::text("first"));
    assert_eq!(next_data(&mut ws).await, Message::binary(vec![0u8, 255]));

    // Close: the client's code and reason.
    bounded(
        "close",
        ws.close(Some(CloseFrame::new(CloseCode(4001), "bye for now"))),
    )
    .await
    .unwrap();
    assert_eq!(
        event(&mut events).await,
        Event::Close(id, 4001, "bye for now".into())
    );

    // Error, then close: a message over the limit.
    let mut big = connect(&url).await;
    let id = opened(&mut events).await;
    big.send(vec![7u8; 2048]).await.unwrap();
    match event(&mut events).await {
        Event::Error(got, error) => {
            assert_eq!(got, id);
            assert!(error.contains("exceeds the limit"), "{error}");
        }
        other => panic!("expected on_error, got {other:?}"),
    }
    match event(&mut events).await {
        Event::Close(got, 1009, _) => assert_eq!(got, id),
        other => panic!("expected on_close with 1009, got {other:?}"),
    }
    assert_eq!(closed_with(&mut big).await.code, CloseCode::TOO_BIG);

    // A connection that just drops: on_close with 1006.
    let gone = connect(&url).await;
    let id = opened(&mut events).await;
    drop(gone);
    match event(&mut events).await {
        // The socket failed: on_error first, then on_close.
        Event::Error(got, error) => {
            assert_eq!(got, id);
            assert!(error.contains("1006"), "{error}");
        }
        other => panic!("expected on_error, got {other:?}"),
    }
    match event(&mut events).await {
        Event::Close(got, 1006, _) => assert_eq!(got, id),
        other => panic!("expected on_close with 1006, got {other:?}"),
    }

    stop.send(()).unwrap();
    bounded("serve", server).await.unwrap().unwrap();
}

#[derive(Debug, Clone, Default)]
struct Counter(u32);

#[derive(Debug, Clone)]
struct Name(String);

#[tokio::test]
async fn per_connection_state_survives_across_messages() {
    let endpoint =
        Endpoint::new(EndpointConfig::default()).on_message(|conn: Conn, m| async move {
            let Message::Text(text) = m else { return };
            let count = conn.with(|c: &mut Counter| {
                c.0 += 1;
                c.0
            });
            if let Some(name) = text.as_str().strip_prefix("name:") {
                conn.insert(Name(name.to_string()));
            }
            let name = conn.get::<Name>().map_or("nobody".to_string(), |n| n.0);
            conn.send_text(format!("{name} #{count}"));
        });
    let (addr, stop, server) = serve(App::new().endpoint("/state", endpoint)).await;
    let url = format!("ws://{addr}/state");
    let mut alice = connect(&url).await;
    let mut bob = connect(&url).await;

    alice.send("hello").await.unwrap();
    assert_eq!(next_data(&mut alice).await, Message::text("nobody #1"));
    alice.send("name:alice").await.unwrap();
    assert_eq!(next_data(&mut alice).await, Message::text("alice #2"));
    bob.send("name:bob").await.unwrap();
    assert_eq!(next_data(&mut bob).await, Message::text("bob #1"));
    alice.send("again").await.unwrap();
    assert_eq!(next_data(&mut alice).await, Message::text("alice #3"));
    bob.send("again").await.unwrap();
    assert_eq!(next_data(&mut bob).await, Message::text("bob #2"));

    // A new connection starts with nothing.
    let mut carol = connect(&url).await;
    carol.send("hi").await.unwrap();
    assert_eq!(next_data(&mut carol).await, Message::text("nobody #1"));

    // (Dropped, not left unread: shutdown would wait for their close replies.)
    drop((alice, bob, carol));
    stop.send(()).unwrap();
    bounded("serve", server).await.unwrap().unwrap();
}

#[tokio::test]
async fn broadcast_reaches_every_connection_and_the_count_is_right() {
    let (endpoint, mut events) = recording_endpoint(EndpointConfig::default());
    let mut app = App::new();
    let handle = app.add_endpoint("/live", endpoint);
    let (addr, stop, server) = serve(app).await;
    let url = format!("ws://{addr}/live");
    assert_eq!(handle.connection_count(), 0);

    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(connect(&url).await);
        opened(&mut events).await;
    }
    assert_eq!(handle.connection_count(), 5);
    assert_eq!(handle.connections().len(), 5);

    let reached = handle.broadcast(PreparedMessage::text("to everyone"));
    assert_eq!(reached, 5);
    for ws in &mut clients {
        assert_eq!(next_data(ws).await, Message::text("to everyone"));
    }

    // Two leave; the count follows, and the next broadcast reaches three.
    for mut ws in clients.drain(..2) {
        bounded("close", ws.close(None)).await.unwrap();
    }
    for _ in 0..2 {
        assert!(matches!(event(&mut events).await, Event::Close(_, 1000, _)));
    }
    // The count drops right after on_close returns: wait for that, bounded.
    bounded("the count to drop to 3", async {
        while handle.connection_count() != 3 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(handle.broadcast(PreparedMessage::binary(vec![9u8; 3])), 3);
    for ws in &mut clients {
        assert_eq!(next_data(ws).await, Message::binary(vec![9u8; 3]));
    }

    drop(clients);
    stop.send(()).unwrap();
    bounded("serve", server).await.unwrap().unwrap();
}

#[tokio::test]
async fn graceful_shutdown_closes_every_connection_with_1001() {
    let (endpoint, mut events) = recording_endpoint(EndpointConfig::default());
    let app = App::new()
        .route("/health", get(|| async { "ok" }))
        .endpoint("/ws", endpoint);
    let (addr, stop, server) = serve(app).await;
    let url = format!("ws://{addr}/ws");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&url).await);
        opened(&mut events).await;
    }
    clients[0].send("still talking").await.unwrap();
    assert_eq!(
        next_data(&mut clients[0]).await,
        Message::text("still talking")
    );

    stop.send(()).unwrap();
    for ws in &mut clients {
        let frame = closed_with(ws).await;
        assert_eq!(frame.code, CloseCode::GOING_AWAY);
        assert_eq!(frame.reason.as_str(), "server shutting down");
    }
    // serve() returns once every close handshake is done.
    bounded("serve after shutdown", server)
        .await
        .unwrap()
        .unwrap();
    let mut closes = 0;
    while let Ok(e) = events.try_recv() {
        if let Event::Close(_, code, reason) = e {
            assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
            closes += 1;
        }
    }
    assert_eq!(
        closes, 3,
        "on_close ran for every connection before serve returned"
    );

    // Nobody listens any more.
    match bounded("connect after shutdown", sockeye::connect(&url)).await {
        Err(sockeye::Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("expected a refused connection, got {other:?}"),
    }
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "plain HTTP is refused too");
}

#[tokio::test]
async fn serve_tls_answers_https_and_wss() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    let server_tls = sockeye_server::tls::server_config(&cert_path, &key_path).unwrap();
    let client_tls = sockeye::tls::client_config_with_ca_pem(cert_pem.as_bytes()).unwrap();

    let app = App::new()
        .route("/health", get(|| async { "ok over tls" }))
        .endpoint("/echo", echo_endpoint(EndpointConfig::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_tls(listener, server_tls, async {
        let _ = stopped.await;
    }));

    // https GET
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&client_tls));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = bounded("TLS handshake", connector.connect(name, tcp))
        .await
        .expect("TLS handshake with the self-signed certificate");
    let response = http_get(tls, "/health", "").await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "ok over tls")
    );

    // Plain HTTP to the TLS port is not served.
    let plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut plain = plain;
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = bounded("plain read", plain.read_to_end(&mut raw)).await;
    assert!(
        !String::from_utf8_lossy(&raw).contains("ok over tls"),
        "plain HTTP must not be answered on the TLS port"
    );

    // wss
    let config = Config::default().tls(client_tls);
    let mut ws = connect_with(&format!("wss://localhost:{port}/echo"), &config).await;
    assert!(matches!(ws.get_ref(), sockeye::MaybeTlsStream::Tls(_)));
    ws.send("secret").await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("secret"));

    stop.send(()).unwrap();
    assert_eq!(closed_with(&mut ws).await.code, CloseCode::GOING_AWAY);
    bounded("serve_tls", server).await.unwrap().unwrap();
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_connections_messages_and_refusals() {
    let endpoint = echo_endpoint(EndpointConfig::default().origins(["http://good.example"]));
    let app = App::new()
        .endpoint("/echo", endpoint)
        .metrics_route("/metrics");
    let (addr, stop, server) = serve(app).await;
    let url = format!("ws://{addr}/echo");
    let good = Config::default().header(
        http::header::ORIGIN,
        http::HeaderValue::from_static("http://good.example"),
    );

    let mut a = connect_with(&url, &good).await;
    let mut b = connect_with(&url, &good).await;
    for i in 0..3 {
        for ws in [&mut a, &mut b] {
            ws.send(format!("message {i}")).await.unwrap();
            assert_eq!(next_data(ws).await, Message::text(format!("message {i}")));
        }
    }
    // Refusals: a foreign origin, twice; a plain GET (bad handshake), once.
    let evil = Config::default().header(
        http::header::ORIGIN,
        http::HeaderValue::from_static("http://evil.example"),
    );
    for _ in 0..2 {
        let refused = bounded("connect", sockeye::connect_with(&url, &evil)).await;
        assert!(matches!(
            refused,
            Err(sockeye::Error::Refused { status: 403, .. })
        ));
    }
    assert_eq!(get_plain(addr, "/echo").await.status / 100, 4);

    let response = get_plain(addr, "/metrics").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.contains("text")),
        "{response:?}"
    );
    let text = &response.body;
    let expect = [
        (r#"sockeye_connections_open{endpoint="/echo"}"#, 2.0),
        (r#"sockeye_connections_total{endpoint="/echo"}"#, 2.0),
        (r#"sockeye_messages_in_total{endpoint="/echo"}"#, 6.0),
        (r#"sockeye_messages_out_total{endpoint="/echo"}"#, 6.0),
        (r#"sockeye_bytes_in_total{endpoint="/echo"}"#, 54.0),
        (
            r#"sockeye_upgrades_refused_total{endpoint="/echo",reason="origin"}"#,
            2.0,
        ),
        (
            r#"sockeye_upgrades_refused_total{endpoint="/echo",reason="bad_handshake"}"#,
            1.0,
        ),
    ];
    for (series, value) in expect {
        assert_eq!(metric(text, series), Some(value), "{series} in:\n{text}");
    }

    // A closed connection leaves the gauge and shows up by close code.
    bounded("close", a.close(None)).await.unwrap();
    bounded("the gauge to drop", async {
        loop {
            let text = get_plain(addr, "/metrics").await.body;
            if metric(&text, r#"sockeye_connections_open{endpoint="/echo"}"#) == Some(1.0) {
                assert_eq!(
                    metric(
                        &text,
                        r#"sockeye_closes_total{endpoint="/echo",code="1000"}"#
                    ),
                    Some(1.0),
                    "{text}"
                );
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;

    drop(b);
    stop.send(()).unwrap();
    bounded("serve", server).await.unwrap().unwrap();
}

//! `sockeye connect` end to end: the binary against servers, TLS servers and
//! proxies run in this process on 127.0.0.1:0.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockeye::{CloseCode, CloseFrame, Config, DeflateConfig, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_sockeye");

// ---------------------------------------------------------------------------
// running the binary
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Output {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Output {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `sockeye connect ARGS` with `stdin` piped in (then closed).
async fn connect(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = tokio::process::Command::new(BIN)
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .spawn()
        .expect("run the sockeye binary");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    tokio::spawn(async move {
        let _ = input.write_all(&data).await;
    });
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("sockeye connect did not exit within 30 s")
        .unwrap();
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// servers
// ---------------------------------------------------------------------------

/// What a test server does with each connection.
#[derive(Debug, Clone)]
enum Behavior {
    /// Echo text and binary messages.
    Echo,
    /// Send this first, then echo.
    Send(Message),
    /// Close at once with this code and reason.
    Close(u16, &'static str),
    /// Refuse the upgrade with this status and body.
    Refuse(u16, &'static str),
}

/// What a server saw of one connection's upgrade request.
#[derive(Debug)]
struct Seen {
    path: String,
    headers: http::HeaderMap,
    compressed: bool,
}

struct Server {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    pings: Arc<AtomicUsize>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), self.seen.recv())
            .await
            .expect("the server saw no request")
            .unwrap()
    }
}

async fn server(config: Config, behavior: Behavior) -> Server {
    serve(config, behavior, None).await
}

async fn serve(
    config: Config,
    behavior: Behavior,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let pings = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pings);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (config, behavior, seen) = (config.clone(), behavior.clone(), seen_tx.clone());
            let (tls, pings) = (tls.clone(), Arc::clone(&counter));
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            handle(stream, &config, behavior, seen, pings).await;
                        }
                    }
                    None => handle(tcp, &config, behavior, seen, pings).await,
                }
            });
        }
    });
    Server { addr, seen, pings }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    config: &Config,
    behavior: Behavior,
    seen: mpsc::UnboundedSender<Seen>,
    pings: Arc<AtomicUsize>,
) {
    let mut request = None;
    let accepted = sockeye::accept_with(io, config, |req| {
        request = Some((req.uri().path().to_string(), req.headers().clone()));
        match behavior {
            Behavior::Refuse(status, body) => Err(sockeye::text_response(
                http::StatusCode::from_u16(status).unwrap(),
                body,
            )),
            _ => Ok(()),
        }
    })
    .await;
    let Ok((mut ws, _)) = accepted else { return };
    let (path, headers) = request.unwrap();
    let _ = seen.send(Seen {
        path,
        headers,
        compressed: ws.is_compressed(),
    });
    match behavior {
        Behavior::Close(code, reason) => {
            let _ = ws
                .close(Some(CloseFrame::new(CloseCode(code), reason)))
                .await;
            return;
        }
        Behavior::Send(message) => {
            if ws.send(message).await.is_err() {
                return;
            }
        }
        Behavior::Echo | Behavior::Refuse(..) => {}
    }
    while let Some(Ok(message)) = ws.recv().await {
        if matches!(message, Message::Ping(_)) {
            pings.fetch_add(1, Ordering::SeqCst);
        }
        let echo = matches!(message, Message::Text(_) | Message::Binary(_));
        if echo && ws.send(message).await.is_err() {
            return;
        }
    }
}

/// A wss server with a self-signed certificate for `localhost`; returns it
/// and the certificate's PEM.
async fn tls_server() -> (Server, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let server = serve(Config::default(), Behavior::Echo, Some(acceptor)).await;
    (server, cert_pem)
}

// ---------------------------------------------------------------------------
// proxies
// ---------------------------------------------------------------------------

/// An HTTP CONNECT proxy; with `credentials` ("user:pw" base64) it answers
/// 407 to requests without them. Counts the tunnels it opened.
async fn http_proxy(credentials: Option<&'static str>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&tunnels);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8(head).unwrap();
                let target = head.split_whitespace().nth(1).unwrap().to_string();
                assert!(head.starts_with("CONNECT "), "{head}");
                if let Some(credentials) = credentials {
                    let expected =
                        format!("proxy-authorization: basic {}", credentials.to_lowercase());
                    if !head.to_lowercase().contains(&expected) {
                        let body = "proxy credentials required";
                        let response = format!(
                            "HTTP/1.1 407 Proxy Authentication Required\r\n\
                             Proxy-Authenticate: Basic realm=\"test\"\r\n\
                             Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(response.as_bytes()).await;
                        return;
                    }
                }
                let Ok(mut upstream) = TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, tunnels)
}

/// A SOCKS5 proxy without authentication; reports each target asked for
/// ("1.2.3.4:80" or "name:80").
async fn socks5_proxy() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (targets_tx, targets) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let targets = targets_tx.clone();
            tokio::spawn(async move {
                let mut greeting = [0u8; 2];
                client.read_exact(&mut greeting).await.unwrap();
                assert_eq!(greeting[0], 5);
                let mut methods = vec![0u8; usize::from(greeting[1])];
                client.read_exact(&mut methods).await.unwrap();
                assert!(methods.contains(&0));
                client.write_all(&[5, 0]).await.unwrap();
                let mut request = [0u8; 4];
                client.read_exact(&mut request).await.unwrap();
                assert_eq!(&request[..3], &[5, 1, 0]);
                let host = match request[3] {
                    1 => {
                        let mut ip = [0u8; 4];
                        client.read_exact(&mut ip).await.unwrap();
                        std::net::Ipv4Addr::from(ip).to_string()
                    }
                    3 => {
                        let mut len = [0u8; 1];
                        client.read_exact(&mut len).await.unwrap();
                        let mut name = vec![0u8; usize::from(len[0])];
                        client.read_exact(&mut name).await.unwrap();
                        String::from_utf8(name).unwrap()
                    }
                    other => panic!("address type {other}"),
                };
                let mut port = [0u8; 2];
                client.read_exact(&mut port).await.unwrap();
                let target = format!("{host}:{}", u16::from_be_bytes(port));
                let _ = targets.send(target.clone());
                let mut upstream = TcpStream::connect(&target).await.unwrap();
                client
                    .write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, targets)
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// pipe mode and -x
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn piped_line_is_echoed_to_stdout() {
    let server = server(Config::default(), Behavior::Echo).await;
    let out = connect(&[&server.url("/echo")], b"hi\n").await;
    assert_eq!((out.code, out.stdout().as_str()), (0, "hi\n"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_stdin_line_is_a_message_in_order() {
    let server = server(Config::default(), Behavior::Echo).await;
    let out = connect(&[&server.url("/")], b"one\r\ntwo\n\nthree").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout(), "one\ntwo\n\nthree\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn sockeye_servers_echo_endpoint_works_too() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = sockeye_server::EchoServer::new(sockeye_server::ServeConfig::default());
    tokio::spawn(async move { echo.run(listener, std::future::pending()).await });
    let out = connect(&[&format!("ws://{addr}/echo"), "--compress"], b"hi\n").await;
    assert_eq!((out.code, out.stdout().as_str()), (0, "hi\n"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_sends_prints_replies_for_wait_then_exits() {
    let server = server(Config::default(), Behavior::Echo).await;
    let started = Instant::now();
    let out = connect(
        &[
            &server.url("/"),
            "-x",
            "hello",
            "-x",
            "world",
            "--wait",
            "0.5",
        ],
        b"",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "hello\nworld\n"),
        "{out:?}"
    );
    assert!(took >= Duration::from_millis(500), "exited after {took:?}");
    assert!(took < Duration::from_secs(5), "exited after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_sends_stdin_whole_and_writes_replies_raw() {
    let server = server(Config::default(), Behavior::Echo).await;
    let data = [0u8, 1, 2, 0xff, b'\n', 0x80, b'\n'];
    let out = connect(&[&server.url("/"), "--binary"], &data).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, data);
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_messages_are_hex_without_binary() {
    let server = server(
        Config::default(),
        Behavior::Send(Message::binary(vec![0xca, 0xfe])),
    )
    .await;
    let out = connect(&[&server.url("/"), "-x", "x", "--wait", "0.3"], b"").await;
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "cafe\nx\n"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_is_pretty_printed() {
    let server = server(Config::default(), Behavior::Echo).await;
    let out = connect(
        &[
            &server.url("/"),
            "--json",
            "-x",
            r#"{"a":1,"b":[true]}"#,
            "--wait",
            "0.3",
        ],
        b"",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout(),
        "{\n  \"a\": 1,\n  \"b\": [\n    true\n  ]\n}\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_interval_sends_pings() {
    let server = server(Config::default(), Behavior::Echo).await;
    let out = connect(
        &[
            &server.url("/"),
            "--ping-interval",
            "100ms",
            "-x",
            "hi",
            "--wait",
            "0.65",
        ],
        b"",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let pings = server.pings.load(Ordering::SeqCst);
    assert!(
        (3..=8).contains(&pings),
        "{pings} pings in 0.65 s at 100 ms"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_size_refuses_bigger_messages() {
    let big = "x".repeat(2000);
    let server = server(Config::default(), Behavior::Send(Message::text(big))).await;
    let out = connect(
        &[
            &server.url("/"),
            "--max-size",
            "1000",
            "-x",
            "hi",
            "--wait",
            "2",
        ],
        b"",
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("received a message over the limit (--max-size)"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

// ---------------------------------------------------------------------------
// what reaches the server
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn headers_origin_and_subprotocol_reach_the_server() {
    let config = Config::default().protocols(["chat.v2"]);
    let mut server = server(config, Behavior::Echo).await;
    let out = connect(
        &[
            &server.url("/room?id=7"),
            "-H",
            "X-Trace: abc123",
            "-H",
            "X-Other:two",
            "--origin",
            "https://app.example",
            "--subprotocol",
            "chat.v2",
            "--show-headers",
            "-x",
            "hi",
            "--wait",
            "0.2",
        ],
        b"",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let seen = server.next_seen().await;
    assert_eq!(seen.path, "/room");
    assert_eq!(seen.headers["x-trace"], "abc123");
    assert_eq!(seen.headers["x-other"], "two");
    assert_eq!(seen.headers["origin"], "https://app.example");
    assert_eq!(seen.headers["sec-websocket-protocol"], "chat.v2");
    assert!(
        out.stderr.contains("sec-websocket-protocol: chat.v2"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_sends_basic_credentials() {
    let mut server = server(Config::default(), Behavior::Echo).await;
    let out = connect(
        &[
            &server.url("/"),
            "--auth",
            "alice:s3cret",
            "-x",
            "hi",
            "--wait",
            "0.1",
        ],
        b"",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let seen = server.next_seen().await;
    assert_eq!(seen.headers["authorization"], "Basic YWxpY2U6czNjcmV0");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_the_url_become_basic_auth() {
    let mut server = server(Config::default(), Behavior::Echo).await;
    let url = format!("ws://bob:pw@{}/", server.addr);
    let out = connect(&[&url, "-x", "hi", "--wait", "0.1"], b"").await;
    assert_eq!(out.code, 0, "{out:?}");
    let seen = server.next_seen().await;
    assert_eq!(seen.headers["authorization"], "Basic Ym9iOnB3");
    assert_eq!(seen.headers["host"], server.addr.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn show_headers_prints_the_101() {
    let server = server(Config::default(), Behavior::Echo).await;
    let out = connect(&[&server.url("/"), "--show-headers"], b"hi\n").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.starts_with("HTTP/1.1 101 Switching Protocols\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("upgrade: websocket\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("sec-websocket-accept: "),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout(), "hi\n", "headers stay off stdout");
}

#[tokio::test(flavor = "multi_thread")]
async fn compress_negotiates_permessage_deflate() {
    let config = Config::default().deflate(DeflateConfig::default());
    let mut server = server(config.clone(), Behavior::Echo).await;
    let out = connect(&[&server.url("/"), "--compress"], b"squeeze me\n").await;
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "squeeze me\n"),
        "{out:?}"
    );
    assert!(server.next_seen().await.compressed);

    // Without the flag, nothing is offered.
    let mut plain = self::server(config, Behavior::Echo).await;
    let out = connect(&[&plain.url("/")], b"x\n").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!plain.next_seen().await.compressed);
}

// ---------------------------------------------------------------------------
// errors and exit codes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn bad_url_is_exit_2() {
    for (url, says) in [
        ("localhost:3000/echo", "missing ws:// or wss://"),
        ("http://localhost/", "use ws:// or wss://"),
        ("ws://", "invalid URL"),
    ] {
        let out = connect(&[url], b"").await;
        assert_eq!(out.code, 2, "{url}: {out:?}");
        assert!(out.stderr.contains(says), "{url}: {}", out.stderr);
    }
    let out = connect(&["ws://h/", "--proxy", "ftp://p:1"], b"").await;
    assert_eq!(out.code, 2, "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unresolvable_host_is_exit_3() {
    let out = connect(&["ws://nonexistent.invalid/"], b"").await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot resolve host \"nonexistent.invalid\""),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_port_is_exit_4() {
    let port = closed_port().await;
    let out = connect(&[&format!("ws://127.0.0.1:{port}/")], b"").await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "cannot connect to 127.0.0.1:{port}: connection refused"
        )),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_certificate_is_exit_5_with_the_reason() {
    let (server, _) = tls_server().await;
    let url = format!("wss://localhost:{}/", server.addr.port());
    let out = connect(&[&url], b"").await;
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr.contains("TLS handshake with localhost:"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("UnknownIssuer"), "{}", out.stderr);
    assert!(out.stderr.contains("--ca FILE"), "a hint: {}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_file_makes_the_tls_server_trusted() {
    let (server, cert_pem) = tls_server().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert_pem).unwrap();
    let url = format!("wss://localhost:{}/", server.addr.port());
    let out = connect(&[&url, "--ca", ca.to_str().unwrap()], b"over tls\n").await;
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "over tls\n"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_accepts_the_self_signed_certificate() {
    let (server, _) = tls_server().await;
    let url = format!("wss://localhost:{}/", server.addr.port());
    let out = connect(&[&url, "--insecure"], b"anything goes\n").await;
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "anything goes\n"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_handshake_is_exit_6_with_status_and_body() {
    let server = server(
        Config::default(),
        Behavior::Refuse(403, "members only, sorry"),
    )
    .await;
    let out = connect(&[&server.url("/"), "--show-headers"], b"").await;
    assert_eq!(out.code, 6, "{out:?}");
    assert!(
        out.stderr
            .contains("the server refused the WebSocket upgrade: HTTP 403 Forbidden"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("members only, sorry"), "{}", out.stderr);
    assert!(
        out.stderr.starts_with("HTTP/1.1 403 Forbidden\n"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn close_by_peer_with_1008_is_exit_7_with_code_and_reason() {
    let server = server(Config::default(), Behavior::Close(1008, "no bots allowed")).await;
    let started = Instant::now();
    let out = connect(&[&server.url("/"), "-x", "hi", "--wait", "10"], b"").await;
    assert_eq!(out.code, 7, "{out:?}");
    assert!(
        out.stderr
            .contains("closed by the peer: 1008 (policy violation): no bots allowed"),
        "{}",
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "did not wait out --wait"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn close_by_peer_with_1000_is_exit_0() {
    let server = server(Config::default(), Behavior::Close(1000, "bye")).await;
    let out = connect(&[&server.url("/"), "-x", "hi", "--wait", "10"], b"").await;
    assert_eq!(out.code, 0, "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_help_has_the_exit_code_table() {
    let out = connect(&["--help"], b"").await;
    assert_eq!(out.code, 0, "{out:?}");
    let help = out.stdout();
    for line in [
        "Exit codes:",
        "0  ok",
        "2  bad usage or URL",
        "3  DNS",
        "4  refused",
        "5  TLS failure",
        "6  handshake refused",
        "7  closed by the peer",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

// ---------------------------------------------------------------------------
// proxies
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn http_connect_proxy_carries_the_connection() {
    let server = server(Config::default(), Behavior::Echo).await;
    let (proxy, tunnels) = http_proxy(None).await;
    let out = connect(
        &[&server.url("/"), "--proxy", &format!("http://{proxy}")],
        b"via proxy\n",
    )
    .await;
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "via proxy\n"),
        "{out:?}"
    );
    assert_eq!(tunnels.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_proxy_auth_407_without_credentials_ok_with() {
    let server = server(Config::default(), Behavior::Echo).await;
    // base64("user:pw")
    let (proxy, tunnels) = http_proxy(Some("dXNlcjpwdw==")).await;

    let out = connect(
        &[&server.url("/"), "--proxy", &format!("http://{proxy}")],
        b"x\n",
    )
    .await;
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("HTTP 407"), "{}", out.stderr);
    assert!(
        out.stderr.contains("proxy credentials required"),
        "{}",
        out.stderr
    );

    let out = connect(
        &[
            &server.url("/"),
            "--proxy",
            &format!("http://user:pw@{proxy}"),
        ],
        b"let me in\n",
    )
    .await;
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "let me in\n"),
        "{out:?}"
    );
    assert_eq!(tunnels.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_that_is_not_there_is_exit_4() {
    let port = closed_port().await;
    let out = connect(
        &[
            "ws://127.0.0.1:1/",
            "--proxy",
            &format!("http://127.0.0.1:{port}"),
        ],
        b"",
    )
    .await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("the proxy http://127.0.0.1:"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn socks5_proxy_carries_the_connection() {
    let server = server(Config::default(), Behavior::Echo).await;
    let (proxy, mut targets) = socks5_proxy().await;
    let out = connect(
        &[&server.url("/"), "--proxy", &format!("socks5://{proxy}")],
        b"via socks\n",
    )
    .await;
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "via socks\n"),
        "{out:?}"
    );
    assert_eq!(targets.recv().await.unwrap(), server.addr.to_string());

    // socks5h: the name goes to the proxy, which resolves it.
    let url = format!("ws://localhost:{}/", server.addr.port());
    let out = connect(
        &[&url, "--proxy", &format!("socks5h://{proxy}")],
        b"by name\n",
    )
    .await;
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "by name\n"),
        "{out:?}"
    );
    assert_eq!(
        targets.recv().await.unwrap(),
        format!("localhost:{}", server.addr.port())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wss_through_a_proxy_checks_the_servers_certificate() {
    let (server, cert_pem) = tls_server().await;
    let (proxy, tunnels) = http_proxy(None).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert_pem).unwrap();
    let url = format!("wss://localhost:{}/", server.addr.port());
    let proxy = format!("http://{proxy}");
    let out = connect(&[&url, "--proxy", &proxy], b"").await;
    assert_eq!(out.code, 5, "{out:?}");
    let out = connect(
        &[&url, "--proxy", &proxy, "--ca", ca.to_str().unwrap()],
        b"tls in a tunnel\n",
    )
    .await;
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "tls in a tunnel\n"),
        "{out:?}"
    );
    assert_eq!(tunnels.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------
// interactive, in a real terminal (tmux)
// ---------------------------------------------------------------------------

/// tmux on a private socket, so that no one else's sessions are touched.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "connect"])
    }

    /// Waits until the screen shows `text` `times` times.
    async fn wait_for(&self, text: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} x{times} never showed:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "connect"];
        args.extend_from_slice(keys);
        self.run(&args);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_prompt_in_a_real_terminal() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        panic!("tmux is needed for this test (apt-get install tmux)");
    }
    let server = server(
        Config::default(),
        Behavior::Send(Message::text(r#"{"hello":"you"}"#)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status");
    let tmux = Tmux {
        socket: format!("sockeye-connect-test-{}", std::process::id()),
    };
    let command = format!(
        "{BIN} connect {} --json; echo \"exit=$?\" > {}; sleep 60",
        server.url("/"),
        status.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "connect",
        "-x",
        "100",
        "-y",
        "40",
        &command,
    ]);

    tmux.wait_for("connected to ws://", 1).await;
    // A JSON message from the server, pretty-printed under its marker.
    tmux.wait_for("< {\n    \"hello\": \"you\"\n  }", 1).await;

    tmux.keys(&["hello there", "Enter"]);
    let screen = tmux.wait_for("< hello there", 1).await;
    assert!(
        screen.contains("> hello there"),
        "the sent line stays:\n{screen}"
    );

    tmux.keys(&["/ping abc", "Enter"]);
    tmux.wait_for("< [pong] abc (", 1).await;

    // History: Up twice recalls "hello there".
    tmux.keys(&["Up", "Up", "Enter"]);
    tmux.wait_for("< hello there", 2).await;

    tmux.keys(&["/binary 0102ff", "Enter"]);
    tmux.wait_for("< [binary, 3 bytes] 0102ff", 1).await;

    tmux.keys(&["/nonsense", "Enter"]);
    tmux.wait_for("error: unknown command /nonsense", 1).await;

    tmux.keys(&["/close 4000 done here", "Enter"]);
    tmux.wait_for("< [close] 4000", 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit:\n{}",
            tmux.screen()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.trim(), "exit=0", "{}", tmux.screen());
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_reports_the_peers_close_and_restores_the_terminal() {
    let server = server(Config::default(), Behavior::Close(1008, "kicked")).await;
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status");
    let tmux = Tmux {
        socket: format!("sockeye-connect-test2-{}", std::process::id()),
    };
    // After sockeye exits, `stty -a` shows whether the terminal is back in
    // cooked mode (icanon and echo on).
    let command = format!(
        "{BIN} connect {}; echo \"exit=$?\" > {status}; stty -a >> {status}; sleep 60",
        server.url("/"),
        status = status.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "connect",
        "-x",
        "100",
        "-y",
        "40",
        &command,
    ]);
    let screen = tmux
        .wait_for(
            "connection closed by the peer: 1008 (policy violation): kicked",
            1,
        )
        .await;
    assert!(
        screen.contains("< [close] 1008 (policy violation): kicked"),
        "{screen}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        match std::fs::read_to_string(&status) {
            Ok(text) if text.contains("icanon") => break text,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "did not exit:\n{}",
            tmux.screen()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(report.starts_with("exit=7\n"), "{report}");
    assert!(
        report.contains(" icanon") && report.contains(" echo "),
        "raw mode left on: {report}"
    );
}

// ---------------------------------------------------------------------------
// --reconnect
// ---------------------------------------------------------------------------

/// Connection 0 gets "one" and a close with 1012 (restart); later ones get
/// "two" and a close with `last_code`.
async fn restarting_server(last_code: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            let (text, code, reason) = match n {
                0 => ("one", 1012, "restarting"),
                _ => ("two", last_code, "done"),
            };
            n += 1;
            tokio::spawn(async move {
                let Ok(mut ws) = sockeye::accept(tcp).await else {
                    return;
                };
                let _ = ws.send(text).await;
                let _ = ws
                    .close(Some(CloseFrame::new(CloseCode(code), reason)))
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_comes_back_after_a_restart_close() {
    let addr = restarting_server(1000).await;
    let out = connect(
        &[
            &format!("ws://{addr}/"),
            "--reconnect",
            "-x",
            "hello",
            "--wait",
            "8",
        ],
        b"",
    )
    .await;
    assert_eq!(
        (out.code, out.stdout().as_str()),
        (0, "one\ntwo\n"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("disconnected (1012: restarting)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("reconnecting in "), "{}", out.stderr);
    assert!(
        out.stderr.contains("reconnected to ws://"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_stops_at_a_policy_close_with_exit_7() {
    let addr = restarting_server(1008).await;
    let out = connect(
        &[
            &format!("ws://{addr}/"),
            "--reconnect",
            "-x",
            "hello",
            "--wait",
            "8",
        ],
        b"",
    )
    .await;
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.stdout(), "one\ntwo\n");
    assert!(
        out.stderr
            .contains("closed by the peer: 1008 (policy violation): done"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_waits_for_the_server_and_sends_what_was_queued() {
    let port = closed_port().await;
    let mut child = tokio::process::Command::new(BIN)
        .args(["connect", &format!("ws://127.0.0.1:{port}/"), "--reconnect"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"sent while down\n").await.unwrap();
    stdin.flush().await.unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap());
    // Wait until it has tried and failed once, then start the server there.
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !line.contains("connection refused") {
        line.clear();
        let read = tokio::time::timeout_at(
            deadline.into(),
            tokio::io::AsyncBufReadExt::read_line(&mut stderr, &mut line),
        );
        assert!(
            read.await.expect("no refusal noted").unwrap() > 0,
            "stderr ended"
        );
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let echo = sockeye_server::EchoServer::new(sockeye_server::ServeConfig {
        echo_path: "/".into(),
        ..Default::default()
    });
    tokio::spawn(async move { echo.run(listener, std::future::pending()).await });

    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut echoed = String::new();
    let read = tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut echoed);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(echoed, "sent while down\n");
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("did not exit after stdin closed")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

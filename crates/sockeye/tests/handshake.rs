//! Bad opening handshakes against `accept_with`: each is answered with a
//! readable HTTP refusal, and none disturbs the connections already open.

// `accept_with`'s check returns a whole `http::Response` as its error.
#![allow(clippy::result_large_err)]

mod common;

use std::time::Duration;

use common::{bounded, next, serve_many, Outcome};
use sockeye::proto::handshake::HandshakeError;
use sockeye::{Config, Error, MaybeTlsStream, Message, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A request head: the request line, then `headers`, then the blank line.
fn head(request_line: &str, headers: &[&str]) -> String {
    let mut head = format!("{request_line}\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// The headers of a valid upgrade, minus any whose name starts with one of `without`.
fn upgrade_headers(without: &[&str]) -> Vec<String> {
    [
        "Host: localhost".to_string(),
        "Upgrade: websocket".to_string(),
        "Connection: Upgrade".to_string(),
        format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13".to_string(),
    ]
    .into_iter()
    .filter(|h| !without.iter().any(|w| h.starts_with(w)))
    .collect()
}

/// A raw HTTP response: status, headers (names lowercased) and body.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete head in {text:?}"));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        Response {
            status,
            headers,
            body: body.to_string(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` on a new connection and reads the whole answer (the
/// server closes after a refusal; a reset after the response is tolerated).
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Response {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(request).await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match bounded("read the response", tcp.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    Response::parse(&raw)
}

/// The accept outcome of the next connection to end, which must be a handshake error.
async fn next_failure(outcomes: &mut UnboundedReceiver<Outcome>) -> Error {
    match bounded("server outcome", outcomes.recv()).await {
        Some(Err(e)) => e,
        Some(Ok(_)) => panic!("a bad handshake was accepted"),
        None => panic!("the server stopped"),
    }
}

/// A healthy client kept open across the bad requests.
async fn good_client(addr: std::net::SocketAddr) -> WebSocket<MaybeTlsStream> {
    let (ws, _) = bounded("connect", sockeye::connect(&format!("ws://{addr}/echo")))
        .await
        .unwrap();
    ws
}

async fn still_echoes(ws: &mut WebSocket<MaybeTlsStream>, text: &str) {
    ws.send(text).await.unwrap();
    assert_eq!(
        next(ws).await,
        Message::text(text),
        "the good connection stopped echoing"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_right_status_and_a_readable_body() {
    let (addr, mut outcomes) = serve_many(Config::default()).await;
    let mut good = good_client(addr).await;
    still_echoes(&mut good, "before").await;

    // No Sec-WebSocket-Key: 400 naming the header.
    let headers = upgrade_headers(&["Sec-WebSocket-Key"]);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let response = exchange(addr, head("GET /echo HTTP/1.1", &headers).as_bytes()).await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(response.body.contains("Sec-WebSocket-Key"), "{response:?}");
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    assert!(matches!(
        next_failure(&mut outcomes).await,
        Error::Handshake(HandshakeError::MissingKey)
    ));
    still_echoes(&mut good, "after a missing key").await;

    // Version 8: 426 announcing the version we speak.
    let mut headers = upgrade_headers(&["Sec-WebSocket-Version"]);
    headers.push("Sec-WebSocket-Version: 8".to_string());
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let response = exchange(addr, head("GET /echo HTTP/1.1", &headers).as_bytes()).await;
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(
        response.header("sec-websocket-version"),
        Some("13"),
        "{response:?}"
    );
    assert!(
        response.body.contains('8') && response.body.contains("13"),
        "{response:?}"
    );
    assert!(matches!(
        next_failure(&mut outcomes).await,
        Error::Handshake(HandshakeError::UnsupportedVersion(v)) if v == "8"
    ));
    still_echoes(&mut good, "after version 8").await;

    // POST: 405 with Allow: GET.
    let headers = upgrade_headers(&[]);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let response = exchange(addr, head("POST /echo HTTP/1.1", &headers).as_bytes()).await;
    assert_eq!(response.status, 405, "{response:?}");
    assert_eq!(response.header("allow"), Some("GET"));
    assert!(response.body.contains("GET"), "{response:?}");
    next_failure(&mut outcomes).await;
    still_echoes(&mut good, "after a POST").await;

    // A plain HTTP request: 426, with Upgrade: websocket.
    let response = exchange(
        addr,
        head("GET /echo HTTP/1.1", &["Host: localhost"]).as_bytes(),
    )
    .await;
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(response.header("upgrade"), Some("websocket"));
    next_failure(&mut outcomes).await;

    // Not HTTP at all: 400.
    let response = exchange(addr, b"\x16\x03\x01 this is not HTTP\r\n\r\n").await;
    assert_eq!(response.status, 400, "{response:?}");
    next_failure(&mut outcomes).await;
    still_echoes(&mut good, "after garbage").await;

    bounded("close", good.close(None)).await.unwrap();
    let (_, seen) = bounded("good outcome", outcomes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.echoed, 5);
}

#[tokio::test]
async fn oversized_heads_are_refused_with_431() {
    let (addr, mut outcomes) = serve_many(Config::default()).await;
    let mut good = good_client(addr).await;

    // One header making the head larger than 16 KiB.
    let filler = format!("X-Filler: {}", "a".repeat(17 * 1024));
    let mut headers = upgrade_headers(&[]);
    headers.push(filler);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let response = exchange(addr, head("GET /echo HTTP/1.1", &headers).as_bytes()).await;
    assert_eq!(response.status, 431, "{response:?}");
    assert!(response.body.contains("16384"), "{response:?}");
    assert!(matches!(
        next_failure(&mut outcomes).await,
        Error::Handshake(HandshakeError::HeadersTooLarge { limit: 16384 })
    ));
    still_echoes(&mut good, "after a big head").await;

    // Too many header lines, each small.
    let mut headers = upgrade_headers(&[]);
    headers.extend((0..100).map(|i| format!("X-Line-{i}: {i}")));
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let response = exchange(addr, head("GET /echo HTTP/1.1", &headers).as_bytes()).await;
    assert_eq!(response.status, 431, "{response:?}");
    next_failure(&mut outcomes).await;
    still_echoes(&mut good, "after many headers").await;
    good.close(None).await.unwrap();
}

#[tokio::test]
async fn a_route_check_refusal_is_sent_as_is() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        sockeye::accept_with(tcp, &Config::default(), |request| {
            Err(sockeye::text_response(
                http::StatusCode::NOT_FOUND,
                &format!("nothing at {}", request.uri().path()),
            ))
        })
        .await
        .map(|_| ())
    });
    let headers = upgrade_headers(&[]);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let response = exchange(addr, head("GET /nowhere HTTP/1.1", &headers).as_bytes()).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.body, "nothing at /nowhere\n");
    match server.await.unwrap() {
        Err(Error::Refused {
            status: 404, body, ..
        }) => assert_eq!(body, "nothing at /nowhere\n"),
        other => panic!("expected Refused(404), got {other:?}"),
    }
}

/// Over TCP with a real (short) timeout: a client that stalls mid-request
/// is answered 408 and dropped, while an open connection keeps working.
#[tokio::test]
async fn a_stalled_request_times_out_without_disturbing_others() {
    let timeout = Duration::from_millis(300);
    let (addr, mut outcomes) = serve_many(Config::default().handshake_timeout(timeout)).await;
    let mut good = good_client(addr).await;

    let mut staller = TcpStream::connect(addr).await.unwrap();
    staller
        .write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    // Meanwhile the good connection is served.
    still_echoes(&mut good, "while someone stalls").await;
    let mut raw = Vec::new();
    bounded("408", staller.read_to_end(&mut raw)).await.unwrap();
    assert!(start.elapsed() >= timeout - Duration::from_millis(50));
    let response = Response::parse(&raw);
    assert_eq!(response.status, 408, "{response:?}");
    assert!(!response.body.is_empty());
    assert!(
        matches!(next_failure(&mut outcomes).await, Error::HandshakeTimeout(t) if t == timeout)
    );
    still_echoes(&mut good, "after the staller").await;
    good.close(None).await.unwrap();
}

/// The same on an in-memory pipe with paused time: nothing is answered
/// before the timeout, 408 right at it.
#[tokio::test(start_paused = true)]
async fn a_stalled_request_is_answered_408_at_the_handshake_timeout() {
    let timeout = Duration::from_secs(10);
    let (mut client, server_io) = tokio::io::duplex(4096);
    let config = Config::default().handshake_timeout(timeout);
    let server = tokio::spawn(async move {
        sockeye::accept_with(server_io, &config, |_| Ok(()))
            .await
            .map(|_| ())
    });
    let start = tokio::time::Instant::now();
    client
        .write_all(b"GET /echo HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let mut raw = Vec::new();
    client.read_to_end(&mut raw).await.unwrap();
    assert_eq!(
        start.elapsed(),
        timeout,
        "answered at the timeout, not before or after"
    );
    let response = Response::parse(&raw);
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(matches!(server.await.unwrap(), Err(Error::HandshakeTimeout(t)) if t == timeout));
}

/// A client that trickles a valid request in, one byte at a time, is
/// accepted: the limit is on the whole handshake, not on each read.
#[tokio::test(start_paused = true)]
async fn a_request_arriving_byte_by_byte_is_accepted() {
    let (mut client, server_io) = tokio::io::duplex(4096);
    let server = tokio::spawn(async move {
        let ws = sockeye::accept(server_io).await.expect("accept");
        common::echo(ws).await
    });
    let headers = upgrade_headers(&[]);
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let request = head("GET /echo HTTP/1.1", &headers);
    for byte in request.as_bytes() {
        client.write_all(std::slice::from_ref(byte)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut buf = vec![0u8; 1024];
    let n = client.read(&mut buf).await.unwrap();
    let response = Response::parse(&buf[..n]);
    assert_eq!(response.status, 101);
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    drop(client);
    let seen = server.await.unwrap();
    assert!(matches!(seen.error, Some(Error::AbnormalClosure)));
}

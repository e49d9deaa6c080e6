//! What `connect` reports when it cannot open a WebSocket.

// `accept_with`'s check returns a whole `http::Response` as its error.
#![allow(clippy::result_large_err)]

mod common;

use common::bounded;
use sockeye::{Config, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn nothing_listening_is_an_io_error() {
    // A port that was free a moment ago.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    match bounded(
        "connect",
        sockeye::connect(&format!("ws://127.0.0.1:{port}/")),
    )
    .await
    {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

#[tokio::test]
async fn unusable_urls_are_url_errors() {
    for url in [
        "http://127.0.0.1:1/echo",
        "https://127.0.0.1:1/echo",
        "127.0.0.1:1/echo",
        "ws://",
        "ws:///echo",
        "ws://exa mple.com/",
        "",
    ] {
        match bounded("connect", sockeye::connect(url)).await {
            Err(Error::Url { url: got, reason }) => {
                assert_eq!(got, url);
                assert!(!reason.is_empty());
            }
            other => panic!("{url:?}: expected Error::Url, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_refusal_from_accept_with_reaches_the_client_with_its_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        sockeye::accept_with(tcp, &Config::default(), |request| {
            if request.headers().contains_key("authorization") {
                Ok(())
            } else {
                Err(sockeye::text_response(
                    http::StatusCode::FORBIDDEN,
                    "no entry without a token",
                ))
            }
        })
        .await
        .map(|_| ())
    });
    match bounded("connect", sockeye::connect(&format!("ws://{addr}/private"))).await {
        Err(Error::Refused {
            status,
            body,
            response,
        }) => {
            assert_eq!(status, 403);
            assert!(body.contains("no entry without a token"), "{body:?}");
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected Refused(403), got {other:?}"),
    }
    assert!(matches!(
        server.await.unwrap(),
        Err(Error::Refused { status: 403, .. })
    ));
}

/// A server that answers 403 with a Content-Length body and keeps the
/// socket open: the client reads the body it announced and stops there.
#[tokio::test]
async fn a_refusal_that_keeps_the_socket_open_is_read_by_its_length() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        let body = "Forbidden: this origin may not connect";
        let response = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(response.as_bytes()).await.unwrap();
        // Keep the socket open until the test is over.
        let _ = done_rx.await;
    });
    let start = std::time::Instant::now();
    match bounded("connect", sockeye::connect(&format!("ws://{addr}/"))).await {
        Err(Error::Refused { status, body, .. }) => {
            assert_eq!(status, 403);
            assert_eq!(body, "Forbidden: this origin may not connect");
        }
        other => panic!("expected Refused(403), got {other:?}"),
    }
    // read_body gives up after 2 s at most; with a Content-Length it need not wait.
    assert!(
        start.elapsed() < std::time::Duration::from_millis(1500),
        "waited for EOF"
    );
    let _ = done_tx.send(());
}

#[tokio::test]
async fn a_handshake_that_never_completes_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and then says nothing.
    let silent = tokio::spawn(async move { listener.accept().await.map(|(tcp, _)| tcp) });
    let config = Config::default().handshake_timeout(std::time::Duration::from_millis(200));
    match bounded(
        "connect",
        sockeye::connect_with(&format!("ws://{addr}/"), &config),
    )
    .await
    {
        Err(Error::HandshakeTimeout(t)) => assert_eq!(t, std::time::Duration::from_millis(200)),
        other => panic!("expected HandshakeTimeout, got {other:?}"),
    }
    drop(silent);
}

//! The close handshake from both sides, the close timeout, and what
//! `recv`/`send` do once a connection is closed.

mod common;

use std::time::Duration;

use common::bounded;
use sockeye::proto::Connection;
use sockeye::{CloseCode, CloseFrame, Config, Error, Message, Role, WebSocket};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::net::TcpListener;

async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    (listener, url)
}

#[tokio::test]
async fn client_close_with_a_reason_reaches_the_server_and_ends_both_sides() {
    let (listener, url) = listen().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = sockeye::accept(tcp).await.unwrap();
        let first = ws.recv().await;
        let second = ws.recv().await;
        let third = ws.recv().await;
        let send = ws.send("too late").await;
        (first, second, third, send)
    });
    let (mut ws, _) = sockeye::connect(&url).await.unwrap();
    let frame = CloseFrame::new(CloseCode::NORMAL, "bye");
    bounded("close", ws.close(Some(frame))).await.unwrap();
    assert!(ws.recv().await.is_none(), "recv after close");
    assert!(ws.recv().await.is_none(), "recv after close, again");
    assert!(matches!(ws.send("too late").await, Err(Error::Closed)));
    assert!(matches!(ws.try_send("too late"), Err(Error::Closed)));

    let (first, second, third, send) = bounded("server", server).await.unwrap();
    match first {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::NORMAL);
            assert_eq!(frame.reason, "bye");
        }
        other => panic!("server expected Close(1000, \"bye\"), got {other:?}"),
    }
    assert!(second.is_none(), "server recv after the close: {second:?}");
    assert!(third.is_none(), "server recv after the end: {third:?}");
    assert!(
        matches!(send, Err(Error::Closed)),
        "server send after close: {send:?}"
    );
}

#[tokio::test]
async fn server_initiated_close_reaches_the_client() {
    let (listener, url) = listen().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = sockeye::accept(tcp).await.unwrap();
        ws.send("last words").await.unwrap();
        let frame = CloseFrame::new(CloseCode::GOING_AWAY, "restarting");
        let closed = ws.close(Some(frame)).await;
        let after = ws.recv().await;
        let send = ws.send("too late").await;
        (closed, after, send)
    });
    let (mut ws, _) = sockeye::connect(&url).await.unwrap();
    assert_eq!(common::next(&mut ws).await, Message::text("last words"));
    match common::next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::GOING_AWAY);
            assert_eq!(frame.reason, "restarting");
        }
        other => panic!("expected Close(1001), got {other:?}"),
    }
    // Sending after the peer's close fails, before and after the end.
    assert!(matches!(ws.send("too late").await, Err(Error::Closed)));
    assert!(bounded("recv", ws.recv()).await.is_none());
    assert!(ws.recv().await.is_none());

    let (closed, after, send) = bounded("server", server).await.unwrap();
    closed.expect("server close() completes once the client answers");
    assert!(after.is_none());
    assert!(matches!(send, Err(Error::Closed)));
}

/// A peer that reads everything and never writes: our close frame is never answered.
fn silent_peer(io: DuplexStream) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut io = io;
        let mut got = Vec::new();
        let _ = io.read_to_end(&mut got).await;
        got
    })
}

fn with_close_timeout(timeout: Duration) -> Config {
    let mut config = Config::default();
    config.protocol.close_timeout = timeout;
    config
}

/// Checks that `wire` (what we sent to a silent peer) ends in a close frame
/// with `code`, as `peer_role` would read it.
fn assert_sent_close(wire: &[u8], peer_role: Role, code: CloseCode) {
    let mut peer = Connection::new(peer_role, sockeye::proto::Config::default());
    peer.receive(wire);
    match peer.poll_message() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, code),
        other => panic!("expected a close frame on the wire, got {other:?}"),
    }
}

async fn close_against_a_silent_peer(role: Role) {
    let timeout = Duration::from_secs(3);
    let (ours, theirs) = tokio::io::duplex(4096);
    let peer = silent_peer(theirs);
    let mut ws = WebSocket::from_raw(ours, role, with_close_timeout(timeout), None);
    let start = tokio::time::Instant::now();
    ws.close(None).await.expect("close gives up cleanly");
    let took = start.elapsed();
    assert!(
        took >= timeout,
        "{role:?}: close returned after {took:?}, before the timeout"
    );
    assert!(
        took < timeout + Duration::from_millis(500),
        "{role:?}: close took {took:?}, far past the {timeout:?} close timeout"
    );
    assert!(ws.recv().await.is_none());
    assert!(matches!(ws.send("x").await, Err(Error::Closed)));
    let peer_role = if role == Role::Client {
        Role::Server
    } else {
        Role::Client
    };
    // The socket was shut down: the silent peer's read ends.
    let wire = peer.await.unwrap();
    assert_sent_close(&wire, peer_role, CloseCode::NORMAL);
}

#[tokio::test(start_paused = true)]
async fn client_close_returns_after_the_close_timeout_when_the_peer_never_answers() {
    close_against_a_silent_peer(Role::Client).await;
}

#[tokio::test(start_paused = true)]
async fn server_close_returns_after_the_close_timeout_when_the_peer_never_answers() {
    close_against_a_silent_peer(Role::Server).await;
}

/// A client whose server answered the close frame but keeps the socket
/// open waits for it to close the socket (RFC 6455 7.1.1), up to the close
/// timeout, and no longer.
#[tokio::test(start_paused = true)]
async fn client_waits_at_most_the_close_timeout_for_the_server_to_close_the_socket() {
    let timeout = Duration::from_secs(3);
    let (ours, mut theirs) = tokio::io::duplex(4096);
    let mut ws = WebSocket::from_raw(ours, Role::Client, with_close_timeout(timeout), None);
    let peer = tokio::spawn(async move {
        // Answer the close, then keep the socket open and read on.
        let mut server = Connection::new(Role::Server, sockeye::proto::Config::default());
        let mut buf = [0u8; 256];
        loop {
            let n = theirs.read(&mut buf).await.unwrap();
            assert!(n > 0, "EOF before the close frame");
            server.receive(&buf[..n]);
            if let Some(Ok(Message::Close(_))) = server.poll_message() {
                break;
            }
        }
        tokio::io::AsyncWriteExt::write_all(&mut theirs, &server.take_transmit())
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = theirs.read_to_end(&mut rest).await;
        rest
    });
    let start = tokio::time::Instant::now();
    ws.close(None).await.unwrap();
    let took = start.elapsed();
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "took {took:?}"
    );
    assert!(
        peer.await.unwrap().is_empty(),
        "nothing after the close frame"
    );
}

#[tokio::test]
async fn a_peer_that_vanishes_without_a_close_frame_is_an_abnormal_closure() {
    let (ours, theirs) = tokio::io::duplex(4096);
    let mut ws = WebSocket::from_raw(ours, Role::Client, Config::default(), None);
    drop(theirs);
    assert!(matches!(
        bounded("recv", ws.recv()).await,
        Some(Err(Error::AbnormalClosure))
    ));
    assert!(ws.recv().await.is_none());
}

/// Runs `test` on a runtime of its own in a thread of its own, so that a
/// poll that never returns (which no tokio timeout can interrupt) fails
/// the test instead of hanging it.
fn on_a_watched_thread<T: Send + 'static>(
    test: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(runtime.block_on(test));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the test hung (a poll that never returns)")
}

/// Regression: `close()` on a socket that fails every write spun forever
/// inside one poll (each `recv` step returned the write error and
/// `close` retried at once).
#[test]
fn close_on_a_socket_that_fails_to_write_returns_the_error() {
    let (close, after) = on_a_watched_thread(async {
        let (ours, theirs) = tokio::io::duplex(4096);
        drop(theirs);
        let mut ws = WebSocket::from_raw(ours, Role::Client, Config::default(), None);
        let close = ws.close(None).await;
        let after = ws.recv().await;
        (close, after)
    });
    match close {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("expected the write error, got {other:?}"),
    }
    assert!(after.is_none(), "recv after a failed close: {after:?}");
}

/// Regression: once the socket failed, every `recv` returned the same
/// error again, so a loop that logs errors and goes on never ended.
#[test]
fn recv_ends_after_reporting_a_socket_error() {
    let results = on_a_watched_thread(async {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let mut ws = WebSocket::from_raw(ours, Role::Client, Config::default(), None);
        // A ping from the server queues a pong; then the server vanishes.
        let mut server = Connection::new(Role::Server, sockeye::proto::Config::default());
        server.send_ping("hi").unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut theirs, &server.take_transmit())
            .await
            .unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::Ping("hi".into())
        );
        drop(theirs);
        let mut results = Vec::new();
        while let Some(result) = ws.recv().await {
            results.push(format!("{result:?}"));
            if results.len() > 5 {
                break;
            }
        }
        results
    });
    assert_eq!(results.len(), 1, "one error, then the end: {results:?}");
}

/// Closing a connection the peer already closed finishes it quietly,
/// with or without a frame of our own.
#[tokio::test]
async fn close_after_the_peer_closed_is_not_an_error() {
    for frame in [None, Some(CloseFrame::new(CloseCode::NORMAL, "me too"))] {
        let (listener, url) = listen().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = sockeye::accept(tcp).await.unwrap();
            ws.close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "")))
                .await
        });
        let (mut ws, _) = sockeye::connect(&url).await.unwrap();
        assert!(matches!(common::next(&mut ws).await, Message::Close(_)));
        bounded("close", ws.close(frame.clone()))
            .await
            .unwrap_or_else(|e| panic!("close({frame:?}): {e}"));
        assert!(ws.recv().await.is_none());
        bounded("server", server).await.unwrap().unwrap();
    }
}

//! `split()`: the reading and the writing half in two tasks, with the peer
//! pinging while the writer is busy.

mod common;

use bytes::Bytes;
use common::bounded;
use sockeye::{Config, Message, Role, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

const MESSAGES: usize = 10_000;
const PING_EVERY: usize = 1_000;

/// The peer: echoes every data message and sends a ping halfway through
/// every `PING_EVERY` of them; returns the pings it sent and the pongs it
/// got back. (Not after the last one: a client that has sent its close
/// frame no longer answers pings.)
async fn echo_and_ping<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocket<S>,
) -> (Vec<Bytes>, Vec<Bytes>) {
    let (mut pings, mut pongs) = (Vec::new(), Vec::new());
    let mut count = 0;
    while let Some(message) = ws.recv().await {
        match message.expect("peer recv") {
            message @ (Message::Text(_) | Message::Binary(_)) => {
                ws.feed(message).await.expect("peer feed");
                count += 1;
                if count % PING_EVERY == PING_EVERY / 2 {
                    let payload = Bytes::from(format!("ping {count}"));
                    pings.push(payload.clone());
                    ws.feed(Message::Ping(payload)).await.expect("peer ping");
                }
            }
            Message::Pong(payload) => pongs.push(payload),
            _ => {}
        }
    }
    (pings, pongs)
}

/// Splits `ws`, sends `MESSAGES` messages of `size` bytes from one task and
/// receives the echoes in another, then checks order, pings and pongs.
async fn send_and_receive_in_two_tasks<S>(ws: WebSocket<S>, size: usize) -> usize
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = ws.split();
    // The writer closes once every echo is in, so that no ping of the peer
    // crosses our close frame.
    let (all_in, wait_all_in) = tokio::sync::oneshot::channel();
    let writer_task = tokio::spawn(async move {
        for i in 0..MESSAGES {
            let mut text = format!("message {i:05} ");
            while text.len() < size {
                text.push('.');
            }
            writer.send(text).await.expect("writer send");
        }
        wait_all_in.await.expect("reader signals");
        writer.close(None).await.expect("writer close");
        writer
    });
    let reader_task = tokio::spawn(async move {
        let (mut received, mut pings) = (0, 0);
        let mut all_in = Some(all_in);
        while let Some(message) = reader.recv().await {
            match message.expect("reader recv") {
                Message::Text(text) => {
                    let want = format!("message {received:05} ");
                    assert!(
                        text.as_str().starts_with(&want),
                        "out of order: {text} (want {want})"
                    );
                    assert_eq!(text.len(), size.max(want.len()));
                    received += 1;
                    if received == MESSAGES {
                        let _ = all_in.take().expect("once").send(());
                    }
                }
                Message::Ping(_) => pings += 1,
                Message::Close(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        (received, pings)
    });
    let writer = bounded("writer task", writer_task)
        .await
        .expect("writer task");
    let (received, pings) = bounded("reader task", reader_task)
        .await
        .expect("reader task");
    assert_eq!(received, MESSAGES);
    assert_eq!(writer.buffered_amount(), 0);
    pings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_in_two_tasks_over_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = sockeye::accept(tcp).await.unwrap();
        echo_and_ping(ws).await
    });
    let (ws, _) = sockeye::connect(&format!("ws://{addr}/")).await.unwrap();
    let pings = send_and_receive_in_two_tasks(ws, 20).await;
    let (sent, pongs) = bounded("peer", peer).await.unwrap();
    assert_eq!(pings, MESSAGES / PING_EVERY);
    assert_eq!(
        pongs, sent,
        "every ping is answered with its payload, in order"
    );
}

/// A 1 KiB in-memory pipe with 1 KiB messages: both halves find the
/// socket full all the time, and the reader writes pongs too, so the
/// socket's one write wakeup must be handed between them.
///
/// Regression: the reader's flush used to overwrite the parked writer's
/// waker with its own, and the writer slept forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_under_constant_backpressure() {
    let (client_io, server_io) = tokio::io::duplex(1024);
    let peer = tokio::spawn(async move {
        let ws = sockeye::accept(server_io).await.unwrap();
        echo_and_ping(ws).await
    });
    let uri: http::Uri = "ws://localhost/".parse().unwrap();
    let (ws, _) = sockeye::client_handshake(client_io, &uri, &Config::default())
        .await
        .unwrap();
    let pings = send_and_receive_in_two_tasks(ws, 1024).await;
    let (sent, pongs) = bounded("peer", peer).await.unwrap();
    assert_eq!(pings, MESSAGES / PING_EVERY);
    assert_eq!(pongs, sent);
}

/// Same, with the tasks on one thread: the halves can only make progress
/// by handing wakeups to each other.
#[tokio::test]
async fn split_halves_under_backpressure_on_one_thread() {
    let (client_io, server_io) = tokio::io::duplex(1024);
    let peer = tokio::spawn(async move {
        echo_and_ping(WebSocket::from_raw(
            server_io,
            Role::Server,
            Config::default(),
            None,
        ))
        .await
    });
    let ws = WebSocket::from_raw(client_io, Role::Client, Config::default(), None);
    let pings = send_and_receive_in_two_tasks(ws, 1024).await;
    let (sent, pongs) = bounded("peer", peer).await.unwrap();
    assert_eq!(pings, MESSAGES / PING_EVERY);
    assert_eq!(pongs, sent);
}

/// The peer closes while our writer is stuck behind a full pipe: the
/// reader's close reply waits behind the writer's backlog, both halves
/// write to finish, and both must be woken to end.
async fn peer_closes_while_the_writer_is_blocked() {
    let (client_io, server_io) = tokio::io::duplex(1024);
    let peer = tokio::spawn(async move {
        let mut ws = WebSocket::from_raw(server_io, Role::Server, Config::default(), None);
        for _ in 0..100 {
            match ws.recv().await {
                Some(Ok(Message::Binary(_))) => {}
                other => panic!("peer expected data, got {other:?}"),
            }
        }
        ws.close(Some(sockeye::CloseFrame::new(
            sockeye::CloseCode::GOING_AWAY,
            "enough",
        )))
        .await
    });
    let ws = WebSocket::from_raw(client_io, Role::Client, Config::default(), None);
    let (mut reader, mut writer) = ws.split();
    let writer_task = tokio::spawn(async move {
        let payload = Bytes::from(vec![9u8; 1024]);
        let mut sent = 0usize;
        loop {
            match writer.send(payload.clone()).await {
                Ok(()) => sent += 1,
                Err(e) => return (sent, e),
            }
        }
    });
    let reader_task = tokio::spawn(async move {
        let mut close = None;
        while let Some(message) = reader.recv().await {
            if let Message::Close(frame) = message.expect("reader recv") {
                close = frame;
            }
        }
        close
    });
    let close = bounded("reader", reader_task)
        .await
        .unwrap()
        .expect("a close frame");
    assert_eq!(close.code, sockeye::CloseCode::GOING_AWAY);
    let (sent, error) = bounded("writer", writer_task).await.unwrap();
    assert!(sent >= 100);
    assert!(matches!(error, sockeye::Error::Closed), "{error:?}");
    bounded("peer", peer).await.unwrap().expect("peer close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_close_while_the_writer_is_blocked_ends_both_halves() {
    for _ in 0..20 {
        peer_closes_while_the_writer_is_blocked().await;
    }
}

#[tokio::test]
async fn peer_close_while_the_writer_is_blocked_ends_both_halves_on_one_thread() {
    for _ in 0..20 {
        peer_closes_while_the_writer_is_blocked().await;
    }
}

//! Helpers shared by the integration tests: a time bound for every test,
//! echo peers over real TCP, and payload makers.

// `accept_with`'s check returns a whole `http::Response` as its error.
#![allow(dead_code, unreachable_pub, clippy::result_large_err)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use sockeye::{CloseFrame, Config, Error, Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long any one step of a test may take before it counts as a hang.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`LIMIT`].
pub async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIMIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {LIMIT:?}"),
    }
}

/// What an echo peer saw of one connection.
#[derive(Debug, Default)]
pub struct Seen {
    /// Data messages echoed.
    pub echoed: usize,
    /// The peer's close frame, if one arrived (`Some(None)`: a close without status).
    pub close: Option<Option<CloseFrame>>,
    /// The error `recv` reported, if any.
    pub error: Option<Error>,
    /// Whether permessage-deflate was negotiated.
    pub compressed: bool,
}

/// Echoes every text and binary message until the connection ends.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) -> Seen {
    let mut seen = Seen {
        compressed: ws.is_compressed(),
        ..Seen::default()
    };
    while let Some(message) = ws.recv().await {
        match message {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                seen.echoed += 1;
                if let Err(e) = ws.feed(message).await {
                    seen.error = Some(e);
                    break;
                }
            }
            Ok(Message::Close(frame)) => seen.close = Some(frame),
            Ok(_) => {}
            // Keep polling: the next recv flushes the close frame and ends.
            Err(e) => seen.error = Some(e),
        }
    }
    seen
}

/// The result of one accepted connection: the request and what the echo saw.
pub type Outcome = Result<(http::Request<()>, Seen), Error>;

/// An echo server on 127.0.0.1:0 that accepts one connection with `config`.
pub async fn serve_one(config: Config) -> (SocketAddr, JoinHandle<Outcome>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let (ws, request) = sockeye::accept_with(tcp, &config, |_| Ok(())).await?;
        Ok((request, echo(ws).await))
    });
    (addr, task)
}

/// An echo server on 127.0.0.1:0 that accepts connections until dropped;
/// each connection's outcome arrives on the channel when it ends.
pub async fn serve_many(config: Config) -> (SocketAddr, mpsc::UnboundedReceiver<Outcome>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (config, tx) = (config.clone(), tx.clone());
            tokio::spawn(async move {
                let outcome = match sockeye::accept_with(tcp, &config, |_| Ok(())).await {
                    Ok((ws, request)) => Ok((request, echo(ws).await)),
                    Err(e) => Err(e),
                };
                let _ = tx.send(outcome);
            });
        }
    });
    (addr, rx)
}

/// `len` bytes of a repeating pattern (compresses well).
pub fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// `len` pseudo-random bytes (does not compress).
pub fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// The next message, which must arrive and be Ok.
pub async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Message {
    match bounded("recv", ws.recv()).await {
        Some(Ok(message)) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Asserts that `got` is a binary message equal to `want`, without
/// printing megabytes on failure.
pub fn assert_binary(got: Message, want: &Bytes) {
    match got {
        Message::Binary(got) => {
            assert_eq!(got.len(), want.len(), "binary echo has the wrong length");
            assert!(got == *want, "binary echo of {} bytes differs", want.len());
        }
        other => panic!(
            "expected a binary message of {} bytes, got {other:?}",
            want.len()
        ),
    }
}

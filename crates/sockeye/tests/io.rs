//! What reaches the socket: coalesced writes, buffer accounting,
//! backpressure, and payloads that are not copied.

mod common;

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::bounded;
use sockeye::proto::Connection;
use sockeye::{Config, Error, Message, Role, WebSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};

/// Counts the calls that write to the stream it wraps.
#[derive(Debug)]
struct CountingWrites<S> {
    inner: S,
    writes: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads everything from `io` until EOF and decodes it as `role` would.
async fn decode_all(mut io: DuplexStream, role: Role) -> Vec<Message> {
    let mut wire = Vec::new();
    io.read_to_end(&mut wire).await.unwrap();
    let mut conn = Connection::new(role, sockeye::proto::Config::default());
    conn.receive(&wire);
    let mut messages = Vec::new();
    while let Some(message) = conn.poll_message() {
        messages.push(message.expect("valid frames"));
    }
    messages
}

#[tokio::test]
async fn fed_messages_leave_in_a_few_writes_on_flush() {
    for role in [Role::Server, Role::Client] {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let io = CountingWrites {
            inner: ours,
            writes: writes.clone(),
        };
        let mut ws = WebSocket::from_raw(io, role, Config::default(), None);
        let reader = tokio::spawn(decode_all(theirs, role.other()));

        let mut last = 0;
        for i in 0..1000 {
            ws.feed(format!("message {i:04}")).await.unwrap();
            let now = ws.buffered_amount();
            assert!(
                now > last,
                "{role:?}: buffered_amount did not grow with feed #{i}"
            );
            last = now;
        }
        // 12-byte payloads: 2 header bytes, plus a 4-byte mask from a client.
        let frame = if role == Role::Server { 14 } else { 18 };
        assert_eq!(ws.buffered_amount(), 1000 * frame);
        assert_eq!(
            writes.load(Ordering::Relaxed),
            0,
            "{role:?}: feed wrote before the high-water mark"
        );
        ws.flush().await.unwrap();
        assert_eq!(ws.buffered_amount(), 0);
        let n = writes.load(Ordering::Relaxed);
        assert!(n < 20, "{role:?}: 1000 messages took {n} writes");

        drop(ws);
        let messages = bounded("reader", reader).await.unwrap();
        assert_eq!(messages.len(), 1000);
        for (i, message) in messages.into_iter().enumerate() {
            assert_eq!(message, Message::text(format!("message {i:04}")));
        }
    }
}

trait Other {
    fn other(self) -> Self;
}

impl Other for Role {
    fn other(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}

#[tokio::test]
async fn feed_writes_by_itself_past_the_high_water_mark() {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let io = CountingWrites {
        inner: ours,
        writes: writes.clone(),
    };
    let config = Config {
        write_buffer_high: 16 * 1024,
        ..Config::default()
    };
    let mut ws = WebSocket::from_raw(io, Role::Server, config, None);
    let reader = tokio::spawn(decode_all(theirs, Role::Client));
    let payload = Bytes::from(vec![7u8; 1000]);
    for _ in 0..200 {
        ws.feed(payload.clone()).await.unwrap();
        assert!(
            ws.buffered_amount() <= 16 * 1024 + 1004,
            "the queue grew past the mark"
        );
    }
    let before_flush = writes.load(Ordering::Relaxed);
    assert!(before_flush > 0, "200 KB were fed and nothing was written");
    assert!(before_flush < 50, "{before_flush} writes for 200 KB");
    ws.flush().await.unwrap();
    drop(ws);
    let messages = bounded("reader", reader).await.unwrap();
    assert_eq!(messages.len(), 200);
    assert!(messages
        .iter()
        .all(|m| *m == Message::Binary(payload.clone())));
}

#[tokio::test(start_paused = true)]
async fn try_send_gives_the_message_back_when_the_queue_is_full() {
    // A peer that reads nothing, behind a 1 KiB pipe.
    let (ours, mut theirs) = tokio::io::duplex(1024);
    let config = Config {
        max_write_buffer: 8 * 1024,
        ..Config::default()
    };
    let mut ws = WebSocket::from_raw(ours, Role::Server, config, None);

    let mut accepted = 0u8;
    let refused = loop {
        let message = Message::binary(vec![accepted; 1024]);
        match ws.try_send(message) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "try_send never refused");
    };
    let queued = ws.buffered_amount();
    match refused {
        Error::BufferFull {
            message,
            buffered,
            limit,
        } => {
            assert_eq!(
                *message,
                Message::binary(vec![accepted; 1024]),
                "the same message comes back"
            );
            assert_eq!(buffered, queued);
            assert_eq!(limit, 8 * 1024);
            assert!(buffered + 1024 > limit && buffered <= limit);
        }
        other => panic!("expected BufferFull, got {other:?}"),
    }
    assert_eq!(accepted, 7);
    assert_eq!(
        ws.buffered_amount(),
        queued,
        "a refused message leaves the queue alone"
    );

    // flush cannot finish while the peer reads nothing...
    let stalled = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
    assert!(
        stalled.is_err(),
        "flush finished although the peer reads nothing"
    );
    assert!(
        ws.buffered_amount() >= queued - 1024,
        "more left than the pipe holds"
    );

    // ...and finishes once it reads.
    let reader = tokio::spawn(async move {
        let mut wire = Vec::new();
        theirs.read_to_end(&mut wire).await.unwrap();
        wire
    });
    bounded("flush", ws.flush()).await.unwrap();
    assert_eq!(ws.buffered_amount(), 0);
    ws.try_send(Message::binary(vec![accepted; 1024]))
        .expect("room again");
    ws.flush().await.unwrap();
    drop(ws);
    let wire = reader.await.unwrap();
    let mut peer = Connection::new(Role::Client, sockeye::proto::Config::default());
    peer.receive(&wire);
    for i in 0..=accepted {
        assert_eq!(
            peer.poll_message(),
            Some(Ok(Message::binary(vec![i; 1024])))
        );
    }
    assert_eq!(peer.poll_message(), None);
}

#[tokio::test(start_paused = true)]
async fn feed_waits_while_the_peer_reads_nothing() {
    let (ours, mut theirs) = tokio::io::duplex(1024);
    let config = Config {
        write_buffer_high: 4096,
        ..Config::default()
    };
    let mut ws = WebSocket::from_raw(ours, Role::Server, config, None);
    let payload = Bytes::from(vec![1u8; 1000]);
    let mut fed = 0;
    let blocked = loop {
        match tokio::time::timeout(Duration::from_secs(1), ws.feed(payload.clone())).await {
            Ok(result) => {
                result.unwrap();
                fed += 1;
            }
            Err(_) => break fed,
        }
        assert!(fed < 100, "feed never waited");
    };
    assert!(ws.buffered_amount() >= 4096);
    let reader = tokio::spawn(async move {
        let mut wire = Vec::new();
        theirs.read_to_end(&mut wire).await.unwrap();
        wire
    });
    bounded("feed", ws.feed(payload.clone())).await.unwrap();
    ws.flush().await.unwrap();
    drop(ws);
    let wire = reader.await.unwrap();
    assert_eq!(wire.len(), (blocked + 1) * 1004);
}

/// A stream that serves scripted reads and records where it wrote them,
/// and accepts every write, recording the slices it was given.
#[derive(Debug, Default)]
struct Recorder {
    reads: Vec<Bytes>,
    /// Address ranges the reads were copied into.
    read_into: Arc<Mutex<Vec<(usize, usize)>>>,
    /// (address, length) of every slice written.
    written: Arc<Mutex<Vec<(usize, usize)>>>,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.reads.is_empty() {
            return Poll::Pending;
        }
        let chunk = self.reads.remove(0);
        assert!(
            chunk.len() <= buf.remaining(),
            "the test's read is larger than the buffer offered"
        );
        let start = buf.filled().len();
        buf.put_slice(&chunk);
        let at = buf.filled()[start..].as_ptr() as usize;
        self.read_into.lock().unwrap().push((at, at + chunk.len()));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written
            .lock()
            .unwrap()
            .push((buf.as_ptr() as usize, buf.len()));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut written = self.written.lock().unwrap();
        for buf in bufs {
            written.push((buf.as_ptr() as usize, buf.len()));
        }
        Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A large payload in one frame reaches the application in the memory the
/// socket read it into: unmasked in place, not copied.
#[tokio::test]
async fn a_large_received_payload_is_not_copied() {
    for role in [Role::Client, Role::Server] {
        let payload: Bytes = (0..8192u32)
            .map(|i| (i % 256) as u8)
            .collect::<Vec<u8>>()
            .into();
        let mut sender = Connection::new(role.other(), sockeye::proto::Config::default());
        sender.send_binary(payload.clone()).unwrap();
        let recorder = Recorder {
            reads: vec![sender.take_transmit()],
            ..Recorder::default()
        };
        let read_into = recorder.read_into.clone();
        let mut ws = WebSocket::from_raw(recorder, role, Config::default(), None);
        let got = match bounded("recv", ws.recv()).await {
            Some(Ok(Message::Binary(got))) => got,
            other => panic!("expected the binary message, got {other:?}"),
        };
        assert!(got == payload);
        let (start, end) = read_into.lock().unwrap()[0];
        let at = got.as_ptr() as usize;
        assert!(
            at >= start && at + got.len() <= end,
            "{role:?}: the payload was copied out of the read buffer"
        );
    }
}

/// A server's large outgoing payload goes to the socket from the
/// application's own buffer.
#[tokio::test]
async fn a_large_sent_payload_is_not_copied() {
    let recorder = Recorder::default();
    let written = recorder.written.clone();
    let mut ws = WebSocket::from_raw(recorder, Role::Server, Config::default(), None);
    let payload = Bytes::from(vec![42u8; 64 * 1024]);
    ws.send(payload.clone()).await.unwrap();
    let written = written.lock().unwrap();
    assert!(
        written.contains(&(payload.as_ptr() as usize, payload.len())),
        "the payload's own memory was not handed to the socket: {written:?}"
    );
}

//! The event-loop server against real clients on loopback: sockeye's tokio
//! client for WebSocket traffic, raw TCP for what a client library would
//! not send.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::StreamExt;
use sockeye::{CloseCode, CloseFrame, Message};
use sockeye_loop::{Config, ConnId, Handle, Handler, Server, Socket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq)]
enum Seen {
    Open(ConnId),
    Message(ConnId, Message),
    Close(ConnId, u16, String),
}

/// Echoes data messages; closes with 4000 on "close me"; tells the test
/// everything it sees.
struct Recorder {
    seen: mpsc::Sender<Seen>,
}

impl Handler for Recorder {
    fn open(&mut self, socket: &mut Socket<'_>) {
        // None once the peer has reset the connection.
        assert!(socket.peer_addr().is_none_or(|a| a.ip().is_loopback()));
        let _ = self.seen.send(Seen::Open(socket.id()));
    }

    fn message(&mut self, socket: &mut Socket<'_>, message: Message) {
        let _ = self.seen.send(Seen::Message(socket.id(), message.clone()));
        if message == Message::text("close me") {
            socket.close(CloseCode(4000), "asked to").unwrap();
        } else if message.is_data() {
            socket.send(message).unwrap();
        }
    }

    fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let _ = self.seen.send(Seen::Close(id, code.0, reason.to_owned()));
    }
}

struct Running {
    url: String,
    addr: std::net::SocketAddr,
    handle: Handle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    seen: mpsc::Receiver<Seen>,
}

impl Running {
    fn start(config: Config) -> Running {
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
        let addr = server.local_addr();
        let handle = server.handle();
        let (tx, seen) = mpsc::channel();
        let thread = std::thread::spawn(move || server.run(|| Recorder { seen: tx.clone() }));
        Running {
            url: format!("ws://{addr}/echo"),
            addr,
            handle,
            thread: Some(thread),
            seen,
        }
    }

    /// The next thing the handler saw.
    fn next(&self) -> Seen {
        self.seen
            .recv_timeout(STEP)
            .expect("the handler saw nothing")
    }

    /// Stops the server and waits for `run` to return.
    fn stop(&mut self) -> std::io::Result<()> {
        self.handle.stop();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

fn config() -> Config {
    Config::default().threads(2).path("/echo")
}

/// Sends `bytes` on a raw socket and returns all the server answered
/// before it closed.
async fn raw_bytes(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    timeout(STEP, tcp.read_to_end(&mut answer))
        .await
        .expect("the server did not close")
        .unwrap();
    answer
}

/// [`raw_bytes`], as text.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    String::from_utf8_lossy(&raw_bytes(addr, request).await).into_owned()
}

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_messages_and_reports_open_and_close() {
    let running = Running::start(config());
    let (mut ws, response) = sockeye::connect(&running.url).await.unwrap();
    assert_eq!(response.status(), 101);
    let Seen::Open(id) = running.next() else {
        panic!("no open")
    };
    ws.send(Message::text("hello")).await.unwrap();
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let big = Message::binary(vec![7u8; 300_000]);
    ws.send(big.clone()).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    assert_eq!(ws.next().await.unwrap().unwrap(), big);
    assert_eq!(running.next(), Seen::Message(id, Message::text("hello")));
    assert_eq!(
        running.next(),
        Seen::Message(id, Message::binary(vec![1u8, 2, 3]))
    );
    assert_eq!(running.next(), Seen::Message(id, big));
    ws.close(Some(CloseFrame::new(CloseCode::NORMAL, "bye")))
        .await
        .unwrap();
    assert_eq!(running.next(), Seen::Close(id, 1000, "bye".into()));
    // Nothing after the close, not even when the server stops.
    let mut running = running;
    running.stop().unwrap();
    assert_eq!(running.seen.try_recv().ok(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once_each_get_their_own_echoes() {
    let running = Running::start(config());
    let clients = (0..50).map(|i| {
        let url = running.url.clone();
        tokio::spawn(async move {
            let (mut ws, _) = sockeye::connect(&url).await.unwrap();
            for n in 0..20 {
                let text = format!("client {i} message {n}");
                ws.send(Message::text(text.clone())).await.unwrap();
                assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
            }
            ws.close(None).await.unwrap();
        })
    });
    for client in clients.collect::<Vec<_>>() {
        timeout(STEP, client).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_can_close_and_hears_the_answer() {
    let running = Running::start(config());
    let (mut ws, _) = sockeye::connect(&running.url).await.unwrap();
    ws.send(Message::text("close me")).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode(4000));
            assert_eq!(frame.reason, "asked to");
        }
        other => panic!("expected the server's close, got {other:?}"),
    }
    // Reading on sends the client's answer and sees the stream end.
    assert!(ws.next().await.is_none());
    let Seen::Open(id) = running.next() else {
        panic!("no open")
    };
    assert!(matches!(running.next(), Seen::Message(..)));
    // sockeye's client answers with the same code and no reason.
    assert_eq!(running.next(), Seen::Close(id, 4000, String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_closes_with_1009() {
    let mut config = config();
    config.websocket = config.websocket.max_message_size(1024);
    let running = Running::start(config);
    let (mut ws, _) = sockeye::connect(&running.url).await.unwrap();
    ws.send(Message::binary(vec![0u8; 2048])).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::TOO_BIG),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    let Seen::Open(id) = running.next() else {
        panic!("no open")
    };
    match running.next() {
        Seen::Close(closed, 1009, reason) => {
            assert_eq!(closed, id);
            assert!(reason.contains("1024"), "{reason}");
        }
        other => panic!("expected the handler to hear 1009, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_closes_with_1002() {
    let running = Running::start(config());
    // A text frame "hi" without a mask, which clients must not send, in the
    // same write as the request: it waits behind the handshake.
    let mut bytes = upgrade_request("/echo").into_bytes();
    bytes.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
    let answer = raw_bytes(running.addr, &bytes).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    // The close frame: opcode 8, then the code 1002.
    assert_eq!(answer[head_end], 0x88, "{:?}", &answer[head_end..]);
    assert_eq!(&answer[head_end + 2..head_end + 4], &1002u16.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_is_wrong() {
    let mut config = config();
    config.max_header_size = 1024;
    config.handshake_timeout = Duration::from_millis(300);
    let running = Running::start(config);
    let addr = running.addr;

    let other = raw(addr, upgrade_request("/other").as_bytes()).await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert!(other.contains("no WebSocket endpoint at /other; this server upgrades /echo"));

    let post = upgrade_request("/echo").replacen("GET", "POST", 1);
    let post = raw(addr, post.as_bytes()).await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    assert!(post.to_ascii_lowercase().contains("allow: get"), "{post}");

    let plain = raw(addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");

    let huge = format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let huge = raw(addr, huge.as_bytes()).await;
    assert!(huge.starts_with("HTTP/1.1 431"), "{huge}");

    // Half a request, then nothing: 408 once the handshake timeout passes.
    let slow = raw(addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n").await;
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    assert!(slow.contains("did not arrive within 300ms"), "{slow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_limit_is_503() {
    let mut config = config().threads(1);
    config.max_connections = 1;
    let running = Running::start(config);
    let (mut ws, _) = sockeye::connect(&running.url).await.unwrap();
    let refused = raw(running.addr, upgrade_request("/echo").as_bytes()).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("limit of 1 connections"), "{refused}");
    // The connection held is unaffected.
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_sends_going_away_and_run_returns() {
    let mut running = Running::start(config());
    let (mut ws, _) = sockeye::connect(&running.url).await.unwrap();
    let Seen::Open(id) = running.next() else {
        panic!("no open")
    };
    let stopped = tokio::task::spawn_blocking({
        let handle = running.handle.clone();
        let thread = running.thread.take().unwrap();
        move || {
            handle.stop();
            thread.join().unwrap()
        }
    });
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::GOING_AWAY);
            assert_eq!(frame.reason, "server shutting down");
        }
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    timeout(STEP, stopped).await.unwrap().unwrap().unwrap();
    assert_eq!(
        running.next(),
        Seen::Close(id, 1001, "server shutting down".into())
    );
}

#[test]
fn a_busy_port_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let error = Server::bind(taken.local_addr().unwrap(), config()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
}

/// Answers "ping" with "pong" and drops everything else.
struct Ponger;

impl Handler for Ponger {
    fn message(&mut self, socket: &mut Socket<'_>, message: Message) {
        if message == Message::text("ping") {
            socket.send(Message::text("pong")).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_its_socket_full_does_not_starve_the_others() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config().threads(1)).unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run(|| Ponger));

    // The flooder: 64 KiB binary frames (mask key 0) written without pause.
    let mut flood = TcpStream::connect(addr).await.unwrap();
    flood
        .write_all(upgrade_request("/echo").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(flood.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let mut frames = Vec::new();
    for _ in 0..16 {
        frames.extend_from_slice(&[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        frames.extend(std::iter::repeat_n(7u8, 1 << 16));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut sent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                flood.write_all(&frames).await.unwrap();
                sent += frames.len();
            }
            sent
        }
    });

    // Another connection on the same loop gets its answers meanwhile.
    let url = format!("ws://{addr}/echo");
    let talker = async {
        let (mut ws, _) = sockeye::connect(&url).await.unwrap();
        for _ in 0..50 {
            ws.send(Message::text("ping")).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("pong"));
        }
    };
    timeout(STEP, talker)
        .await
        .expect("the other connection was starved");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = timeout(STEP, flooding).await.unwrap().unwrap();
    assert!(sent >= 1 << 20, "the flooder wrote only {sent} bytes");
    handle.stop();
    thread.join().unwrap().unwrap();
}

/// A masked (key 0) client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_and_vanishes_at_once_is_reported() {
    let running = Running::start(config());
    // The request, a message and the end of stream arrive together.
    let mut tcp = TcpStream::connect(running.addr).await.unwrap();
    let mut bytes = upgrade_request("/echo").into_bytes();
    bytes.extend(client_frame(0x1, b"last words"));
    tcp.write_all(&bytes).await.unwrap();
    drop(tcp);
    let Seen::Open(id) = running.next() else {
        panic!("no open")
    };
    assert_eq!(
        running.next(),
        Seen::Message(id, Message::text("last words"))
    );
    // 1006: the end of stream, or the reset that writing the echo met.
    match running.next() {
        Seen::Close(closed, 1006, _) => assert_eq!(closed, id),
        other => panic!("expected 1006, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_answer_our_close_is_dropped_after_the_timeout() {
    let mut config = config();
    config.websocket = config.websocket.close_timeout(Duration::from_millis(200));
    let running = Running::start(config);
    let mut bytes = upgrade_request("/echo").into_bytes();
    bytes.extend(client_frame(0x1, b"close me"));
    // Read the 101 and the server's close, answer nothing, and see the end.
    let answer = raw_bytes(running.addr, &bytes).await;
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(answer[head_end], 0x88, "a close frame after the 101");
    assert_eq!(&answer[head_end + 2..head_end + 4], &4000u16.to_be_bytes());
    let Seen::Open(id) = running.next() else {
        panic!("no open")
    };
    assert!(matches!(running.next(), Seen::Message(..)));
    assert_eq!(
        running.next(),
        Seen::Close(id, 1006, "the peer did not answer our close in time".into())
    );
}

/// Echoes, noting the most bytes it ever saw waiting to be written.
struct BacklogEcho {
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Handler for BacklogEcho {
    fn message(&mut self, socket: &mut Socket<'_>, message: Message) {
        self.most.fetch_max(
            socket.buffered_amount(),
            std::sync::atomic::Ordering::Relaxed,
        );
        socket.send(message).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_limit_holds_and_loses_nothing() {
    const BACKLOG: usize = 64 * 1024;
    let mut config = config().threads(1);
    config.max_backlog = BACKLOG;
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let url = format!("ws://{}/echo", server.local_addr());
    let handle = server.handle();
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let thread = std::thread::spawn({
        let most = most.clone();
        move || server.run(|| BacklogEcho { most: most.clone() })
    });
    let (ws, _) = sockeye::connect(&url).await.unwrap();
    let (mut reader, mut writer) = ws.split();
    // 32 MiB, more than the kernel's socket buffers hold, echoed while read.
    let message = |i: u32| Message::binary([i.to_be_bytes().as_slice(), &[7u8; 65532]].concat());
    let writing = tokio::spawn(async move {
        for i in 0..512 {
            writer.send(message(i)).await.unwrap();
        }
        writer
    });
    for i in 0..512 {
        let echo = timeout(STEP, reader.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echo, message(i), "echo {i}");
    }
    timeout(STEP, writing).await.unwrap().unwrap();
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        most <= BACKLOG,
        "{most} bytes waited while a message was handled"
    );
    handle.stop();
    thread.join().unwrap().unwrap();
}

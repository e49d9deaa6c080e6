//! Interop: sockeye against two independent implementations, Python
//! `websockets` and Node `ws` (interop/), all on loopback.
//!
//! - the sockeye library client against each peer's echo server, plain and
//!   with permessage-deflate: text, binary, a 16 MiB message, a close with
//!   code and reason;
//! - `sockeye connect` (pipe mode) against each echo server, plain and with
//!   `--compress`;
//! - `sockeye proxy` between one peer's client and the other's server.
//!
//! The peers are installed by scripts/test.sh (ensure_npm_packages,
//! ensure_python_interop): `npm ci` in interop/node, and a venv with
//! `websockets` whose python is $SOCKEYE_INTEROP_PYTHON (default
//! ${XDG_CACHE_HOME:-~/.cache}/sockeye/interop-venv/bin/python).

use std::hash::{DefaultHasher, Hasher};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use sockeye::{Config, DeflateConfig, Message};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_sockeye");
/// Bound on each step that waits for a process or the network.
const STEP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// the peers
// ---------------------------------------------------------------------------

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

/// The venv's python: $SOCKEYE_INTEROP_PYTHON, else where scripts/test.sh puts it.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("SOCKEYE_INTEROP_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    let path = cache.join("sockeye/interop-venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh (ensure_python_interop) or set SOCKEYE_INTEROP_PYTHON \
         to a python with `websockets`",
        path.display()
    );
    path
}

fn node_dir() -> PathBuf {
    let dir = interop_dir().join("node");
    assert!(
        dir.join("node_modules/ws").exists(),
        "{}/node_modules/ws is missing: run scripts/test.sh (ensure_npm_packages) or `npm ci` there",
        dir.display()
    );
    dir
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Python,
    Node,
}

impl Peer {
    fn command(self, script: &str) -> Command {
        let mut command = match self {
            Peer::Python => {
                let mut c = Command::new(python());
                c.arg(interop_dir().join("python").join(script));
                c
            }
            Peer::Node => {
                let mut c = Command::new("node");
                c.arg(node_dir().join(script));
                c
            }
        };
        command
            .stdin(Stdio::null())
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy");
        command
    }

    fn echo_server(self) -> &'static str {
        match self {
            Peer::Python => "echo_server.py",
            Peer::Node => "echo-server.mjs",
        }
    }

    fn client(self) -> &'static str {
        match self {
            Peer::Python => "client.py",
            Peer::Node => "client.mjs",
        }
    }
}

/// A child process, killed (by its PID) when dropped.
struct Guard {
    child: Child,
    what: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGKILL to this child's PID only (tokio reaps it).
        if self.child.id().is_some() {
            let _ = self.child.start_kill();
        }
    }
}

/// A peer's echo server, listening on 127.0.0.1:`port`.
struct EchoServer {
    port: u16,
    _guard: Guard,
}

impl EchoServer {
    async fn start(peer: Peer, compress: bool) -> EchoServer {
        let mut command = peer.command(peer.echo_server());
        if compress {
            command.arg("--compress");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {peer:?} echo server: {e}"));
        let stdout = child.stdout.take().unwrap();
        let guard = Guard {
            child,
            what: format!("{peer:?} echo server"),
        };
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(STEP, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: no \"listening on\" line within {STEP:?}", guard.what))
            .unwrap()
            .unwrap_or_else(|| panic!("{}: exited before listening", guard.what));
        let port = line
            .strip_prefix("listening on ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: unexpected first line {line:?}", guard.what));
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        EchoServer {
            port,
            _guard: guard,
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

/// `sockeye proxy --listen 127.0.0.1:0 --to BACKEND`, at the address its log gives.
struct Proxy {
    addr: String,
    _guard: Guard,
}

impl Proxy {
    async fn start(backend: &str) -> Proxy {
        let mut child = Command::new(BIN)
            .args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--to",
                backend,
                "--threads",
                "1",
            ])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run sockeye proxy");
        let stderr = child.stderr.take().unwrap();
        let guard = Guard {
            child,
            what: "sockeye proxy".into(),
        };
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let addr = tokio::time::timeout(STEP, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let line = strip_ansi(&line);
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    return rest.split_whitespace().next().map(str::to_owned);
                }
                seen.push(line);
            }
            None
        })
        .await
        .unwrap_or_else(|_| panic!("sockeye proxy: no \"listening on\" log line within {STEP:?}"))
        .unwrap_or_else(|| {
            panic!(
                "sockeye proxy exited before listening; its log:\n{}",
                seen.join("\n")
            )
        });
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Proxy {
            addr,
            _guard: guard,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// the sockeye library client against each echo server
// ---------------------------------------------------------------------------

fn hash(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(data);
    h.finish()
}

/// `len` bytes, half compressible: xorshift output masked to 6 bits.
fn payload(len: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&(x & 0x3f3f_3f3f_3f3f_3f3f).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

async fn recv<S>(ws: &mut sockeye::WebSocket<S>, what: &str) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(STEP, ws.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: nothing within {STEP:?}"))
            .unwrap_or_else(|| panic!("{what}: the connection ended"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        match message {
            Message::Ping(_) | Message::Pong(_) => continue,
            message => return message,
        }
    }
}

async fn library_client(peer: Peer, compress: bool) {
    let server = EchoServer::start(peer, compress).await;
    let mut config = Config::default().max_message_size(32 << 20);
    config.max_write_buffer = 64 << 20;
    if compress {
        config = config.deflate(DeflateConfig::default());
    }
    let (mut ws, _) = tokio::time::timeout(STEP, sockeye::connect_with(&server.url(), &config))
        .await
        .expect("connect: timed out")
        .unwrap_or_else(|e| panic!("connect to the {peer:?} echo server: {e}"));
    assert_eq!(
        ws.is_compressed(),
        compress,
        "permessage-deflate negotiated?"
    );

    // text
    let text = "héllo from sockeye ☃ interop";
    ws.send(Message::text(text)).await.unwrap();
    match recv(&mut ws, "text echo").await {
        Message::Text(t) => assert_eq!(t.as_str(), text),
        other => panic!("text echo: got {other:?}"),
    }

    // binary, including bytes that are not UTF-8
    let binary = Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<_>>());
    ws.send(Message::Binary(binary.clone())).await.unwrap();
    match recv(&mut ws, "binary echo").await {
        Message::Binary(b) => assert!(b == binary, "binary echo differs ({} bytes)", b.len()),
        other => panic!("binary echo: got {:?}", kind(&other)),
    }

    // 16 MiB
    let big = payload(16 << 20);
    let (len, digest) = (big.len(), hash(&big));
    tokio::time::timeout(STEP, ws.send(Message::Binary(big)))
        .await
        .expect("send 16 MiB: timed out")
        .unwrap();
    match recv(&mut ws, "16 MiB echo").await {
        Message::Binary(b) => {
            assert_eq!(b.len(), len, "16 MiB echo: length");
            assert_eq!(hash(&b), digest, "16 MiB echo: content");
        }
        other => panic!("16 MiB echo: got {:?}", kind(&other)),
    }

    // the server closes with the code and reason we ask for
    ws.send(Message::text("close:4001:bye")).await.unwrap();
    match recv(&mut ws, "close").await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!(
            "close: expected Close(4001, \"bye\"), got {:?}",
            kind(&other)
        ),
    }
    // Then the connection ends.
    let end =
        tokio::time::timeout(STEP, async { while let Some(Ok(_)) = ws.recv().await {} }).await;
    assert!(end.is_ok(), "the connection did not end after the close");
}

fn kind(message: &Message) -> String {
    match message {
        Message::Text(t) => format!("Text({} bytes)", t.len()),
        Message::Binary(b) => format!("Binary({} bytes)", b.len()),
        Message::Ping(_) => "Ping".into(),
        Message::Pong(_) => "Pong".into(),
        Message::Close(frame) => format!("Close({frame:?})"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn library_client_python_plain() {
    library_client(Peer::Python, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn library_client_python_compressed() {
    library_client(Peer::Python, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn library_client_node_plain() {
    library_client(Peer::Node, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn library_client_node_compressed() {
    library_client(Peer::Node, true).await;
}

// ---------------------------------------------------------------------------
// `sockeye connect` (pipe mode) against each echo server
// ---------------------------------------------------------------------------

async fn connect_pipe(peer: Peer, compress: bool) {
    let server = EchoServer::start(peer, compress).await;
    let mut command = Command::new(BIN);
    command.arg("connect");
    if compress {
        command.arg("--compress");
    }
    let mut child = command
        .arg(server.url())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run sockeye connect");
    // As `printf 'hello\nsecond line\n' | sockeye connect URL`: input ends at
    // once. Pipe mode must still print the echoes, although a server may
    // answer the close before it sends them (Python `websockets` does).
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ =
            tokio::io::AsyncReadExt::read_to_string(&mut BufReader::new(stderr), &mut text).await;
        text
    });
    stdin.write_all(b"hello\nsecond line\n").await.unwrap();
    drop(stdin);
    let mut printed = Vec::new();
    let echoes = tokio::time::timeout(STEP, async {
        while printed.len() < 2 {
            match stdout.next_line().await.unwrap() {
                Some(line) => printed.push(line),
                None => break,
            }
        }
    })
    .await;
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .expect("sockeye connect did not exit after its input ended")
        .unwrap();
    let stderr = stderr.await.unwrap();
    assert!(
        echoes.is_ok(),
        "no echoes within {STEP:?}; printed {printed:?}, stderr {stderr:?}"
    );
    assert_eq!(printed, ["hello", "second line"], "stderr: {stderr}");
    if let Ok(Some(line)) = stdout.next_line().await {
        panic!("unexpected output after the echoes: {line:?}");
    }
    assert!(
        status.success(),
        "sockeye connect exited with {status:?}; stderr {stderr:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_pipe_python_plain() {
    connect_pipe(Peer::Python, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_pipe_python_compressed() {
    connect_pipe(Peer::Python, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_pipe_node_plain() {
    connect_pipe(Peer::Node, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_pipe_node_compressed() {
    connect_pipe(Peer::Node, true).await;
}

// ---------------------------------------------------------------------------
// `sockeye proxy` between one peer's client and the other's server
// ---------------------------------------------------------------------------

async fn through_proxy(client: Peer, server: Peer, compress: bool) {
    let server = EchoServer::start(server, compress).await;
    let proxy = Proxy::start(&server.url()).await;
    let child = client
        .command(client.client())
        .arg(proxy.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run the {client:?} client: {e}"));
    let output = tokio::time::timeout(STEP + Duration::from_secs(5), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the {client:?} client did not exit in time"))
        .unwrap();
    assert!(
        output.status.success(),
        "the {client:?} client through sockeye proxy failed ({:?}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_node_client_to_python_server() {
    through_proxy(Peer::Node, Peer::Python, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_node_client_to_python_server_compressed() {
    through_proxy(Peer::Node, Peer::Python, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_python_client_to_node_server() {
    through_proxy(Peer::Python, Peer::Node, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_python_client_to_node_server_compressed() {
    through_proxy(Peer::Python, Peer::Node, true).await;
}

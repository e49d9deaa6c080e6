//! Shared by the tunnel's integration tests: a tunnel server, agents, local
//! servers (WebSocket echo, HTTP), and an HTTP client that sets `Host`.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sockeye::{Message, WebSocket};
use sockeye_tunnel::{Agent, AgentConfig, AgentHandle, ServerConfig, TunnelConfig, TunnelServer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

pub const DOMAIN: &str = "tunnel.localhost";
pub const TOKEN: &str = "test-token";

/// Every test step waits at most this long.
pub const STEP: Duration = Duration::from_secs(10);

pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("step timed out")
}

/// A tunnel server on 127.0.0.1:0, stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub server: TunnelServer,
    _stop: oneshot::Sender<()>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn host(&self, name: &str) -> String {
        format!("{name}.{DOMAIN}:{}", self.addr.port())
    }
}

pub async fn server(config: ServerConfig) -> Server {
    server_at("127.0.0.1:0".parse().unwrap(), config).await
}

/// A tunnel server on `addr` (a port freed by a stopped one, say).
pub async fn server_at(addr: SocketAddr, config: ServerConfig) -> Server {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = TunnelServer::new(config).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = server.clone();
    tokio::spawn(async move {
        let _ = serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Server {
        addr,
        server,
        _stop: stop,
    }
}

pub async fn default_server() -> Server {
    server(ServerConfig::new(DOMAIN).token(TOKEN)).await
}

/// A running agent; dropping it stops it (as a killed process: the link
/// just ends).
pub struct RunningAgent {
    pub handle: AgentHandle,
    task: tokio::task::JoinHandle<Result<(), sockeye_tunnel::Error>>,
}

impl RunningAgent {
    pub fn kill(self) {
        self.task.abort();
    }
    /// Waits for the agent to stop and returns why.
    pub async fn stopped(mut self) -> Result<(), sockeye_tunnel::Error> {
        within(&mut self.task).await.unwrap()
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn agent_config(server: &Server, tunnels: Vec<TunnelConfig>) -> AgentConfig {
    let mut config = AgentConfig::new(&server.url()).token(TOKEN).inspect(None);
    config.status_line = false;
    config.tunnels = tunnels;
    config
}

/// Starts an agent that stops gracefully when the sender is used (or dropped).
pub fn start_agent_until(config: AgentConfig) -> (RunningAgent, oneshot::Sender<()>) {
    let agent = Agent::new(config).unwrap();
    let handle = agent.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));
    (RunningAgent { handle, task }, stop)
}

pub fn start_agent(config: AgentConfig) -> RunningAgent {
    let agent = Agent::new(config).unwrap();
    let handle = agent.handle();
    let task = tokio::spawn(agent.run(std::future::pending()));
    RunningAgent { handle, task }
}

/// A WebSocket server on 127.0.0.1:0: offers `chat`, accepts deflate,
/// reports every upgrade request, echoes at any path but `/stall` (which
/// never reads).
pub struct Local {
    pub addr: SocketAddr,
    pub requests: mpsc::UnboundedReceiver<http::Request<()>>,
}

pub async fn ws_local() -> Local {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::unbounded_channel();
    let config = sockeye::Config::default()
        .protocols(["chat"])
        .deflate(sockeye::DeflateConfig::default());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let config = config.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut path = String::new();
                let accepted = sockeye::accept_with(tcp, &config, |req| {
                    path = req.uri().path().to_owned();
                    let _ = tx.send(req.clone());
                    Ok(())
                })
                .await;
                let Ok((ws, _)) = accepted else { return };
                if path == "/close" {
                    let mut ws = ws;
                    let _ = ws.recv().await;
                    let frame = sockeye::CloseFrame::new(sockeye::CloseCode(4001), "server done");
                    let _ = ws.close(Some(frame)).await;
                } else if path == "/stall" {
                    // Holds the connection without reading a byte.
                    let _keep = ws;
                    std::future::pending::<()>().await;
                } else {
                    echo(ws).await;
                }
            });
        }
    });
    Local { addr, requests }
}

pub async fn echo(mut ws: WebSocket<TcpStream>) {
    while let Some(Ok(message)) = ws.recv().await {
        if message.is_data() && ws.send(message).await.is_err() {
            break;
        }
    }
}

/// An HTTP server on 127.0.0.1:0 (axum): `/hello`, `/headers` (echoes the
/// request's headers as text), `/stream` (five chunks, one per event),
/// `POST /upload` (answers the byte count and a checksum).
pub async fn http_local() -> SocketAddr {
    http_local_with_gate().await.0
}

/// [`http_local`], plus `/live`: sends `first` at once, then `second` only
/// once the returned gate is opened (so a client that sees `first` before
/// opening it proves the response is streamed, not buffered).
pub async fn http_local_with_gate() -> (SocketAddr, Arc<tokio::sync::Notify>) {
    use axum::routing::{get, post};
    let gate = Arc::new(tokio::sync::Notify::new());
    let live_gate = Arc::clone(&gate);
    let app = axum::Router::new()
        .route(
            "/live",
            get(move || {
                let gate = Arc::clone(&live_gate);
                async move {
                    let chunks = futures_util::stream::unfold(0, move |step| {
                        let gate = Arc::clone(&gate);
                        async move {
                            match step {
                                0 => Some((Ok::<_, std::io::Error>(Bytes::from("first\n")), 1)),
                                1 => {
                                    gate.notified().await;
                                    Some((Ok(Bytes::from("second\n")), 2))
                                }
                                _ => None,
                            }
                        }
                    });
                    axum::body::Body::from_stream(chunks)
                }
            }),
        )
        .route("/hello", get(|| async { "hello from the laptop" }))
        .route(
            "/headers",
            get(|headers: http::HeaderMap| async move {
                let mut out = String::new();
                for (name, value) in &headers {
                    out.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                }
                out
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::iter(
                    (0..5).map(|i| Ok::<_, std::io::Error>(Bytes::from(format!("chunk {i}\n")))),
                );
                axum::body::Body::from_stream(chunks)
            }),
        )
        .route(
            "/upload",
            post(|body: Bytes| async move {
                let sum: u64 = body.iter().map(|&b| b as u64).sum();
                format!("{} bytes, sum {sum}", body.len())
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, gate)
}

/// An HTTP/1.1 connection to `addr` for requests with an explicit Host.
pub struct HttpClient {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl HttpClient {
    pub async fn connect(addr: SocketAddr) -> HttpClient {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        HttpClient { sender }
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Response<hyper::body::Incoming> {
        within(self.sender.ready()).await.unwrap();
        within(self.sender.send_request(request)).await.unwrap()
    }

    /// GET `path` at `host`, with extra headers; the status and whole body.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (http::StatusCode, http::HeaderMap, String) {
        let mut request = Request::get(path).header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.send(request.body(Full::default()).unwrap()).await;
        let (parts, body) = response.into_parts();
        let body = within(body.collect()).await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

/// One GET on a fresh connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> (http::StatusCode, String) {
    let (status, _, body) = HttpClient::connect(addr).await.get(host, path, &[]).await;
    (status, body)
}

/// Connects a WebSocket to `path` through the server, as `host`.
pub async fn ws_connect(
    server: &Server,
    name: &str,
    path: &str,
    config: sockeye::Config,
) -> Result<(WebSocket<sockeye::MaybeTlsStream>, http::Response<()>), sockeye::Error> {
    let config = config.header(
        http::header::HOST,
        http::HeaderValue::from_str(&server.host(name)).unwrap(),
    );
    within(sockeye::connect_with(
        &format!("ws://{}{path}", server.addr),
        &config,
    ))
    .await
}

/// The next data or close message, skipping pings and pongs.
pub async fn next_data(ws: &mut WebSocket<sockeye::MaybeTlsStream>) -> Message {
    loop {
        match within(ws.recv()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Waits until `check` holds (polling, for what has no event to await).
pub async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

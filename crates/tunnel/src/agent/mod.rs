//! The agent: `sockeye http PORT` and `sockeye start`.
//!
//! ```text
//!   agent ══ one WebSocket to the server (yamux inside) ══► server
//!     each inbound stream: preamble (tunnel, client) ──► that tunnel's Proxy
//!       ──serve_connection──► http://127.0.0.1:PORT (the local server)
//!       Observer: counters for the status line ──► the inspector
//!   link lost ──► Reconnecting (backoff) ──► same session, same names
//! ```

mod status;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sockeye::{Message, WebSocket};
use sockeye_proxy::{Backend, ConnectFuture, Connector, Proxy, ProxyConfig};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::inspect::{Inspector, InspectorConfig, LinkStatus, TunnelInfo};
use crate::link::WsIo;
use crate::mux::{self, SPLIT_SEND_SIZE};
use crate::protocol::{
    self, Granted, Hello, ServerMessage, TunnelRequest, CONTROL_PATH, MAX_CONTROL_MESSAGE, VERSION,
};
use crate::Error;
use status::{Counters, Counting};

/// One tunnel of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// The subdomain to ask for; `None`: a random one.
    pub subdomain: Option<String>,
    /// The local server: a port (`8080`), `host:port`, or an
    /// `http://host:port` URL. Requests go there over plain TCP.
    pub local: String,
    /// `user:pass`: the server asks the public for these (HTTP basic auth)
    /// before anything reaches this machine.
    pub auth: Option<String>,
    /// The `Host` the local server sees: `None` (the default) keeps the
    /// public one (`ws-app.tunnel.example.com`), `rewrite` sends the local
    /// address (`127.0.0.1:8080`), anything else is sent as given.
    pub host_header: Option<String>,
    /// Keep a timeline of messages per WebSocket in the inspector.
    pub capture_frames: bool,
}

impl TunnelConfig {
    /// A tunnel to `local` (a port, `host:port` or a URL).
    pub fn new(local: impl Into<String>) -> TunnelConfig {
        TunnelConfig {
            subdomain: None,
            local: local.into(),
            auth: None,
            host_header: None,
            capture_frames: false,
        }
    }

    /// Asks for this subdomain.
    pub fn subdomain(mut self, name: &str) -> Self {
        self.subdomain = Some(name.to_owned());
        self
    }

    /// Requires basic auth (`user:pass`) from the public.
    pub fn auth(mut self, credentials: &str) -> Self {
        self.auth = Some(credentials.to_owned());
        self
    }

    /// The local server's URL (`http://host:port`).
    fn local_url(&self) -> Result<String, Error> {
        let local = self.local.trim();
        let url = if local.bytes().all(|b| b.is_ascii_digit()) && !local.is_empty() {
            format!("http://127.0.0.1:{local}")
        } else if local.contains("://") {
            local.to_owned()
        } else {
            format!("http://{local}")
        };
        let backend: Backend = url.parse().map_err(|e| {
            Error::Config(format!(
                "the local server {:?} is not usable: {e}",
                self.local
            ))
        })?;
        if backend.is_secure() {
            return Err(Error::Config(format!(
                "the local server {:?} must be plain http:// (the tunnel's public side does TLS)",
                self.local
            )));
        }
        Ok(url)
    }
}

/// How the agent reaches the server and what it exposes.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The tunnel server: `https://tunnel.example.com` (or `http://`,
    /// `ws://`, `wss://`); the agent connects to its `/_sockeye/tunnel`.
    pub server: String,
    /// The token the server's operator gave out.
    pub token: Option<String>,
    /// The tunnels, all over one link.
    pub tunnels: Vec<TunnelConfig>,
    /// Where the inspector listens. Default `127.0.0.1:4040`; `None`: off.
    pub inspect: Option<SocketAddr>,
    /// Open the inspector in a browser once it listens.
    pub open_browser: bool,
    /// The link is pinged after this long without a byte from the server,
    /// and given up (then reconnected) after three times this. Default 15 s.
    pub keepalive: Duration,
    /// The longest wait between reconnection attempts. Default 30 s; the
    /// first is 250 ms, doubling with jitter.
    pub max_backoff: Duration,
    /// TLS settings for `https://`/`wss://` servers. Default: webpki and
    /// platform roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Keep a status line on stderr when it is a terminal. Default true.
    pub status_line: bool,
    /// Reach the server through this HTTP `CONNECT` or SOCKS5 proxy.
    /// Default `None`: directly (no environment variable is read).
    pub proxy: Option<sockeye::ProxyConfig>,
}

impl AgentConfig {
    /// An agent for `server` with no tunnels yet.
    pub fn new(server: &str) -> AgentConfig {
        AgentConfig {
            server: server.to_owned(),
            token: None,
            tunnels: Vec::new(),
            inspect: Some(SocketAddr::from(([127, 0, 0, 1], 4040))),
            open_browser: false,
            keepalive: Duration::from_secs(15),
            max_backoff: Duration::from_secs(30),
            tls: None,
            status_line: true,
            proxy: None,
        }
    }

    /// Adds a tunnel.
    pub fn tunnel(mut self, tunnel: TunnelConfig) -> Self {
        self.tunnels.push(tunnel);
        self
    }

    /// Sets the token.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Sets (or turns off) the inspector's address.
    pub fn inspect(mut self, addr: Option<SocketAddr>) -> Self {
        self.inspect = addr;
        self
    }

    /// The control WebSocket's URL.
    fn control_url(&self) -> Result<String, Error> {
        let server = self.server.trim().trim_end_matches('/');
        let (scheme, rest) = server.split_once("://").ok_or_else(|| {
            Error::Config(format!(
                "the server {server:?} must be a URL such as https://tunnel.example.com"
            ))
        })?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => "ws",
            "https" | "wss" => "wss",
            _ => {
                return Err(Error::Config(format!(
                    "the server {server:?} must start with https:// or http://"
                )))
            }
        };
        Ok(format!("{scheme}://{rest}{CONTROL_PATH}"))
    }
}

/// What the agent is doing, as [`AgentHandle`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    /// The link.
    pub link: LinkStatus,
    /// The tunnels granted by the last successful handshake.
    pub tunnels: Vec<Granted>,
}

/// Watches a running agent.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    status: watch::Receiver<AgentStatus>,
    counters: Arc<Counters>,
}

impl AgentHandle {
    /// Waits until the link is up; returns the tunnels granted. Fails if
    /// the agent stops first.
    pub async fn connected(&mut self) -> Result<Vec<Granted>, Error> {
        let status = self
            .status
            .wait_for(|s| s.link == LinkStatus::Connected)
            .await
            .map_err(|_| Error::Link("the agent stopped before connecting".into()))?;
        Ok(status.tunnels.clone())
    }

    /// Waits until the status satisfies `check` (it is checked now, then
    /// at every change); fails if the agent stops first.
    pub async fn wait_for(
        &mut self,
        check: impl FnMut(&AgentStatus) -> bool,
    ) -> Result<AgentStatus, Error> {
        self.status
            .wait_for(check)
            .await
            .map(|status| status.clone())
            .map_err(|_| Error::Link("the agent stopped".into()))
    }

    /// The status now.
    pub fn status(&self) -> AgentStatus {
        self.status.borrow().clone()
    }

    /// Requests forwarded so far, and WebSockets open now.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.requests.load(Ordering::Relaxed),
            self.counters.websockets.load(Ordering::Relaxed),
        )
    }
}

/// The agent: one link to the server, one proxy per tunnel.
///
/// ```no_run
/// # async fn demo() -> Result<(), sockeye_tunnel::Error> {
/// use sockeye_tunnel::{Agent, AgentConfig, TunnelConfig};
///
/// let config = AgentConfig::new("https://tunnel.example.com")
///     .token("s3cret")
///     .tunnel(TunnelConfig::new("8080").subdomain("ws-app"));
/// Agent::new(config)?
///     .run(async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    control_url: String,
    status: watch::Sender<AgentStatus>,
    counters: Arc<Counters>,
}

/// A tunnel once granted: its proxy.
#[derive(Debug, Clone)]
struct Serving {
    proxy: Proxy,
}

impl Agent {
    /// An agent with `config`; fails on a setting that cannot work.
    pub fn new(config: AgentConfig) -> Result<Agent, Error> {
        let control_url = config.control_url()?;
        if config.tunnels.is_empty() {
            return Err(Error::Config("no tunnel to open".into()));
        }
        for tunnel in &config.tunnels {
            tunnel.local_url()?;
            if let Some(name) = &tunnel.subdomain {
                protocol::check_subdomain(name)?;
            }
            if let Some(auth) = &tunnel.auth {
                if !auth.contains(':') {
                    return Err(Error::Config(
                        "--auth must be user:pass (a colon between them)".into(),
                    ));
                }
            }
        }
        let (status, _) = watch::channel(AgentStatus {
            link: LinkStatus::Connecting,
            tunnels: Vec::new(),
        });
        Ok(Agent {
            config,
            control_url,
            status,
            counters: Arc::new(Counters::default()),
        })
    }

    /// A handle that watches this agent.
    pub fn handle(&self) -> AgentHandle {
        AgentHandle {
            status: self.status.subscribe(),
            counters: Arc::clone(&self.counters),
        }
    }

    /// Runs until `shutdown` completes (Ok) or the server refuses the agent
    /// for good (a bad token, a subdomain in use: Err). A lost link is
    /// reconnected with backoff, asking for the same subdomains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(shutdown);
        let inspector = Inspector::new(InspectorConfig::default());
        if let Some(addr) = self.config.inspect {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    let url = format!("http://{}", listener.local_addr()?);
                    eprintln!("inspector: {url}");
                    tokio::spawn(inspector.clone().serve(listener, std::future::pending()));
                    if self.config.open_browser {
                        open_browser(&url);
                    }
                }
                Err(e) => warn!("inspector not started: cannot listen on {addr}: {e}"),
            }
        }
        let session = session_secret();
        let mut requests: Vec<TunnelRequest> = self
            .config
            .tunnels
            .iter()
            .map(|t| TunnelRequest {
                name: t.subdomain.clone(),
                auth: t.auth.clone(),
            })
            .collect();
        let mut serving: Option<Arc<HashMap<String, Serving>>> = None;
        let status_line = self.config.status_line && {
            use std::io::IsTerminal;
            std::io::stderr().is_terminal()
        };
        if status_line {
            tokio::spawn(status::status_line(
                self.status.subscribe(),
                Arc::clone(&self.counters),
            ));
        }
        let stopping = CancellationToken::new();
        let mut backoff = Duration::from_millis(250);
        let mut printed: Vec<Granted> = Vec::new();
        loop {
            // The link borrows the loop's state; it ends with this block.
            let outcome = {
                let link = async {
                    let (ws, granted) = self.handshake(&session, &requests).await?;
                    let map = match &serving {
                        Some(map) => Arc::clone(map),
                        None => {
                            let map = Arc::new(self.proxies(&granted, &inspector)?);
                            serving = Some(Arc::clone(&map));
                            map
                        }
                    };
                    // Reconnections ask for the names granted, random ones included.
                    for (request, granted) in requests.iter_mut().zip(&granted) {
                        request.name = Some(granted.name.clone());
                    }
                    if printed != granted {
                        for (tunnel, config) in granted.iter().zip(&self.config.tunnels) {
                            println!("{} -> {}", tunnel.url, config.local_url()?);
                        }
                        printed = granted.clone();
                    }
                    for tunnel in &granted {
                        inspector.set_status(&tunnel.name, LinkStatus::Connected);
                    }
                    let connected_at = tokio::time::Instant::now();
                    self.status.send_replace(AgentStatus {
                        link: LinkStatus::Connected,
                        tunnels: granted.clone(),
                    });
                    let ended = self.serve_link(ws, map, &stopping).await;
                    Ok::<_, Error>((ended, connected_at.elapsed()))
                };
                tokio::pin!(link);
                tokio::select! {
                    _ = &mut shutdown => {
                        stopping.cancel();
                        // Bounded by the proxies' shutdown timeout (10 s).
                        let _ = tokio::time::timeout(Duration::from_secs(11), link).await;
                        return Ok(());
                    }
                    outcome = &mut link => outcome,
                }
            };
            let reason = match outcome {
                Ok((reason, lasted)) => {
                    if lasted > Duration::from_secs(10) {
                        backoff = Duration::from_millis(250);
                    }
                    reason
                }
                Err(e) if e.is_fatal() => {
                    self.status.send_replace(AgentStatus {
                        link: LinkStatus::Reconnecting {
                            reason: e.to_string(),
                        },
                        tunnels: Vec::new(),
                    });
                    return Err(e);
                }
                Err(e) => e.to_string(),
            };
            info!("tunnel link lost ({reason}); reconnecting in {backoff:?}");
            let status = LinkStatus::Reconnecting {
                reason: reason.clone(),
            };
            for tunnel in &printed {
                inspector.set_status(&tunnel.name, status.clone());
            }
            self.status.send_modify(|s| s.link = status);
            let jitter = rand::random_range(0.8..1.2);
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// Opens the link and says hello; the server's welcome names the tunnels.
    async fn handshake(
        &self,
        session: &str,
        requests: &[TunnelRequest],
    ) -> Result<(WebSocket<sockeye::MaybeTlsStream>, Vec<Granted>), Error> {
        let mut config = sockeye::Config::default();
        config.protocol.max_message_size = 1 << 20;
        config.handshake_timeout = Duration::from_secs(10);
        config.tls = self.config.tls.clone();
        config.proxy = self.config.proxy.clone();
        let (mut ws, _) = sockeye::connect_with(&self.control_url, &config)
            .await
            .map_err(|source| Error::Connect {
                url: self.control_url.clone(),
                source,
            })?;
        let hello = Hello {
            version: VERSION,
            token: self.config.token.clone(),
            session: session.to_owned(),
            tunnels: requests.to_vec(),
        };
        let json = serde_json::to_string(&hello).map_err(|e| Error::Link(e.to_string()))?;
        ws.send(Message::text(json))
            .await
            .map_err(|e| Error::Link(format!("sending hello: {e}")))?;
        let answer = tokio::time::timeout(Duration::from_secs(10), ws.recv())
            .await
            .map_err(|_| Error::Link("the server did not answer the hello within 10 s".into()))?;
        let text = match answer {
            Some(Ok(Message::Text(text))) if text.len() <= MAX_CONTROL_MESSAGE => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(Error::Link(format!(
                    "the server closed the link: {frame:?}"
                )))
            }
            Some(Ok(_)) => return Err(Error::Link("the server's answer is not a welcome".into())),
            Some(Err(e)) => return Err(Error::Link(e.to_string())),
            None => return Err(Error::Link("the server closed the link".into())),
        };
        match serde_json::from_str::<ServerMessage>(text.as_str()) {
            Ok(ServerMessage::Welcome { tunnels }) if tunnels.len() == requests.len() => {
                Ok((ws, tunnels))
            }
            Ok(ServerMessage::Welcome { .. }) => Err(Error::Link(
                "the server granted a different number of tunnels".into(),
            )),
            Ok(ServerMessage::Refused { reason, retry }) => Err(Error::Refused { reason, retry }),
            Err(e) => Err(Error::Link(format!("the server's answer is not JSON: {e}"))),
        }
    }

    /// One proxy per tunnel, reporting to the inspector.
    fn proxies(
        &self,
        granted: &[Granted],
        inspector: &Inspector,
    ) -> Result<HashMap<String, Serving>, Error> {
        let mut map = HashMap::new();
        for (tunnel, config) in granted.iter().zip(&self.config.tunnels) {
            let local = config.local_url()?;
            let observer = inspector.tunnel(TunnelInfo {
                name: tunnel.name.clone(),
                public_url: tunnel.url.clone(),
                local: local.clone(),
                host_header: config.host_header.clone(),
                capture_frames: config.capture_frames,
            });
            let observer = Arc::new(Counting {
                counters: Arc::clone(&self.counters),
                inner: observer,
            });
            let proxy_config = ProxyConfig::default()
                .observer(observer)
                .metrics_path(None)
                .max_connections(100_000)
                .max_per_ip(100_000)
                .keepalive(Some(Duration::from_secs(30)));
            let proxy_config = match config.host_header.as_deref() {
                None => proxy_config.to(&local)?.preserve_host(true),
                Some("rewrite") => proxy_config.to(&local)?.preserve_host(false),
                Some(host) => {
                    let backend: Backend = local.parse()?;
                    proxy_config
                        .to(&format!("http://{host}"))
                        .map_err(|e| Error::Config(format!("--host-header {host:?}: {e}")))?
                        .preserve_host(false)
                        .connector(Arc::new(LocalConnector { local: backend }))
                }
            };
            map.insert(
                tunnel.name.clone(),
                Serving {
                    proxy: Proxy::new(proxy_config)?,
                },
            );
        }
        Ok(map)
    }

    /// Runs the multiplexer until the link ends; says why.
    async fn serve_link(
        &self,
        ws: WebSocket<sockeye::MaybeTlsStream>,
        serving: Arc<HashMap<String, Serving>>,
        stopping: &CancellationToken,
    ) -> String {
        let io = WsIo::new(ws, Some(self.config.keepalive));
        let batching = io.batching();
        let (_opener, requests) = mux::channel();
        let mut config = yamux::Config::default();
        // The server bounds the streams; the agent takes what it opens.
        config
            .set_max_connection_receive_window(None)
            .set_max_num_streams(1 << 20)
            .set_split_send_size(SPLIT_SEND_SIZE);
        let inbound = Arc::clone(&serving);
        let driven = mux::drive(
            io,
            batching,
            config,
            yamux::Mode::Client,
            requests,
            move |stream| {
                tokio::spawn(serve_stream(stream, Arc::clone(&inbound)));
            },
        );
        tokio::pin!(driven);
        let ended = tokio::select! {
            ended = &mut driven => ended,
            _ = stopping.cancelled() => {
                // Close every relayed WebSocket with 1001 on both sides while
                // the link still carries the close frames, then stop.
                let closing = futures_util::future::join_all(
                    serving.values().map(|tunnel| tunnel.proxy.shutdown()),
                );
                tokio::select! {
                    _ = closing => {}
                    _ = &mut driven => {}
                }
                return "shutting down".to_owned();
            }
        };
        match ended {
            Ok(()) => "the server closed the link".to_owned(),
            Err(e) => format!("link failed: {e}"),
        }
    }
}

/// Reads a stream's preamble, then serves HTTP on it with its tunnel's proxy.
async fn serve_stream(stream: yamux::Stream, serving: Arc<HashMap<String, Serving>>) {
    let mut stream = stream.compat();
    let preamble = async {
        let mut read_part = async || -> std::io::Result<String> {
            let len = stream.read_u8().await? as usize;
            let mut bytes = vec![0; len];
            stream.read_exact(&mut bytes).await?;
            String::from_utf8(bytes).map_err(std::io::Error::other)
        };
        let name = read_part().await?;
        let client = read_part().await?;
        Ok::<_, std::io::Error>((name, client))
    };
    let (name, client) = match tokio::time::timeout(Duration::from_secs(10), preamble).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) => return debug!("stream without a preamble: {e}"),
        Err(_) => return debug!("stream without a preamble within 10 s"),
    };
    let Some(tunnel) = serving.get(&name) else {
        return debug!("stream for unknown tunnel {name:?}");
    };
    let client = client
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    tunnel.proxy.serve_connection(stream, client).await
}

/// Dials the local server whatever the backend's name (for `--host-header
/// VALUE`, where the route's URL only supplies the `Host`).
#[derive(Debug)]
struct LocalConnector {
    local: Backend,
}

impl Connector for LocalConnector {
    fn connect(&self, _backend: &Backend) -> ConnectFuture {
        let local = self.local.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect((local.host(), local.port()))
                .await
                .map_err(|source| sockeye_proxy::Error::Connect {
                    backend: local.authority(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp) as Box<dyn sockeye_proxy::BackendIo>)
        })
    }
}

fn session_secret() -> String {
    (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect()
}

/// Opens `url` in a browser, best effort.
fn open_browser(url: &str) {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    match std::process::Command::new(program)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => warn!("cannot open a browser ({program}: {e}); visit {url}"),
    }
}

//! The public side: `sockeye tunnel-server`.
//!
//! ```text
//!   public client ──HTTP/1.1 (TLS)──► gate: Host → subdomain → 404 / 502 / 401
//!                                       │ passes
//!                                       ▼
//!                           sockeye-proxy (forward_to, frame relay, keepalive)
//!                                       │ TunnelConnector: a new yamux stream
//!                                       ▼
//!   agent ══ WebSocket at /_sockeye/tunnel (yamux in binary messages) ══ driver
//! ```

mod control;
mod registry;
mod throttle;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sockeye_proxy::{Backend, ConnectFuture, Connector, Proxy, ProxyBody, ProxyConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::protocol::{self, CONTROL_PATH};
use crate::Error;
use registry::{Lookup, Registry};
use throttle::Limited;

tokio::task_local! {
    /// The public client of the request being forwarded (the connector
    /// writes it into the stream's preamble for the agent).
    static CLIENT: SocketAddr;
}

/// The highest [`ServerConfig::max_streams_per_agent`] accepted.
pub const MAX_STREAMS_PER_AGENT: usize = 1 << 16;

/// How the tunnel server admits agents and serves the public.
///
/// ```
/// use sockeye_tunnel::ServerConfig;
///
/// let config = ServerConfig::new("tunnel.example.com")
///     .token("s3cret")
///     .max_agents(100)
///     .bytes_per_second(Some(10 << 20));
/// assert_eq!(config.tokens.len(), 1);
/// ```
#[derive(Clone)]
pub struct ServerConfig {
    /// The domain whose subdomains are tunnels: `ws-app.tunnel.example.com`
    /// is the tunnel `ws-app` of `tunnel.example.com`.
    pub domain: String,
    /// The port the public uses, for the URLs given to agents. Default
    /// `None`: the listener's own port (left out when it is 80 or 443).
    /// Set it when a load balancer forwards 443 to the server's port.
    pub public_port: Option<u16>,
    /// Tokens an agent may present. Default empty: any agent is admitted
    /// (fine on a private network; never on the internet).
    pub tokens: Vec<String>,
    /// TLS for the public port (and the agents' `wss://`): URLs are then
    /// `https://`. Default `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The most agents connected at once; the next is refused (and retries
    /// later). Default 1 000.
    pub max_agents: usize,
    /// The most streams (HTTP requests in flight and open WebSockets) per
    /// agent; past it the public gets 502 naming the limit. Default 4 096.
    /// Each stream may buffer up to its 256 KiB yamux window, so this also
    /// bounds the memory one agent can pin on the server.
    pub max_streams_per_agent: usize,
    /// Bytes per second per tunnel, both directions together. Default
    /// `None`: unlimited.
    pub bytes_per_second: Option<u64>,
    /// The link is pinged after this long without a byte from the agent,
    /// and declared dead (its subdomains released) after three times this.
    /// Public WebSockets are pinged after this long idle, too. Default 15 s.
    pub keepalive: Duration,
    /// After an agent's link ends, its subdomains are kept this long for an
    /// agent with the same token. Default 60 s.
    pub reclaim_grace: Duration,
    /// The most public connections at once (HTTP requests in flight and
    /// open WebSockets, all tunnels). Default 100 000.
    pub max_connections: usize,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("domain", &self.domain)
            .field("public_port", &self.public_port)
            .field("tokens", &format_args!("[{} hidden]", self.tokens.len()))
            .field("tls", &self.tls.is_some())
            .field("max_agents", &self.max_agents)
            .field("max_streams_per_agent", &self.max_streams_per_agent)
            .field("bytes_per_second", &self.bytes_per_second)
            .field("keepalive", &self.keepalive)
            .field("reclaim_grace", &self.reclaim_grace)
            .finish()
    }
}

impl ServerConfig {
    /// Defaults for `domain`.
    pub fn new(domain: &str) -> ServerConfig {
        ServerConfig {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            public_port: None,
            tokens: Vec::new(),
            tls: None,
            max_agents: 1_000,
            max_streams_per_agent: 4_096,
            bytes_per_second: None,
            keepalive: Duration::from_secs(15),
            reclaim_grace: Duration::from_secs(60),
            max_connections: 100_000,
        }
    }

    /// Admits agents presenting `token` (repeatable).
    pub fn token(mut self, token: &str) -> Self {
        self.tokens.push(token.to_owned());
        self
    }

    /// Serves TLS.
    pub fn tls(mut self, tls: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the limit on agents.
    pub fn max_agents(mut self, n: usize) -> Self {
        self.max_agents = n;
        self
    }

    /// Sets the limit on streams per agent (1 to [`MAX_STREAMS_PER_AGENT`]).
    pub fn max_streams_per_agent(mut self, n: usize) -> Self {
        self.max_streams_per_agent = n.clamp(1, MAX_STREAMS_PER_AGENT);
        self
    }

    /// Sets the bandwidth limit per tunnel.
    pub fn bytes_per_second(mut self, rate: Option<u64>) -> Self {
        self.bytes_per_second = rate;
        self
    }

    /// Sets the keepalive interval.
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = interval;
        self
    }

    /// Sets the public port used in URLs.
    pub fn public_port(mut self, port: Option<u16>) -> Self {
        self.public_port = port;
        self
    }
}

/// The tunnel server.
///
/// ```no_run
/// # async fn demo() -> Result<(), sockeye_tunnel::Error> {
/// use sockeye_tunnel::{ServerConfig, TunnelServer};
///
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
/// TunnelServer::new(ServerConfig::new("tunnel.example.com").token("s3cret"))?
///     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TunnelServer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ServerConfig,
    registry: Arc<Registry>,
    proxy: Proxy,
    /// `scheme://` and `:port` around `NAME.domain` in public URLs, set when
    /// serving starts.
    url_parts: std::sync::OnceLock<(&'static str, String)>,
    shutdown: CancellationToken,
    links: TaskTracker,
}

/// Opens a yamux stream to the agent serving the backend's host (the
/// subdomain), within its stream limit and its tunnel's bandwidth.
#[derive(Debug)]
struct TunnelConnector {
    registry: Arc<Registry>,
    max_streams: usize,
}

impl Connector for TunnelConnector {
    fn connect(&self, backend: &Backend) -> ConnectFuture {
        let name = backend.host().to_owned();
        let client = CLIENT
            .try_with(|client| client.to_string())
            .unwrap_or_default();
        let lookup = self.registry.lookup(&name);
        let max_streams = self.max_streams;
        Box::pin(async move {
            let unavailable = |reason: String| sockeye_proxy::Error::Connect {
                backend: format!("tunnel {name}"),
                source: std::io::Error::other(reason),
            };
            let Lookup::Live(tunnel) = lookup else {
                return Err(unavailable("its agent has disconnected".to_owned()));
            };
            let slot = Arc::clone(&tunnel.slots).try_acquire_owned().map_err(|_| {
                unavailable(format!(
                    "its agent has {max_streams} streams open, the server's limit per agent"
                ))
            })?;
            let stream = tunnel.opener.open().await.map_err(unavailable)?;
            let mut stream = Limited::new(stream.compat(), tunnel.bucket.clone(), slot);
            let preamble = protocol::encode_preamble(&name, &client);
            tokio::io::AsyncWriteExt::write_all(&mut stream, &preamble)
                .await
                .map_err(|e| unavailable(format!("the agent's link failed: {e}")))?;
            Ok(Box::new(stream) as Box<dyn sockeye_proxy::BackendIo>)
        })
    }
}

impl TunnelServer {
    /// A server with `config`.
    pub fn new(config: ServerConfig) -> Result<TunnelServer, Error> {
        if !(1..=MAX_STREAMS_PER_AGENT).contains(&config.max_streams_per_agent) {
            return Err(Error::Config(format!(
                "max streams per agent must be 1 to {MAX_STREAMS_PER_AGENT}"
            )));
        }
        if config.domain.is_empty() {
            return Err(Error::Config("the tunnel server needs --domain".into()));
        }
        let registry = Arc::new(Registry::new(config.max_agents, config.reclaim_grace));
        let proxy_config = ProxyConfig::default()
            .connector(Arc::new(TunnelConnector {
                registry: Arc::clone(&registry),
                max_streams: config.max_streams_per_agent,
            }))
            .preserve_host(true)
            .keepalive(Some(config.keepalive))
            .max_connections(config.max_connections)
            .max_per_ip(config.max_connections)
            .metrics_path(None);
        Ok(TunnelServer {
            shared: Arc::new(Shared {
                proxy: Proxy::new(proxy_config)?,
                registry,
                url_parts: std::sync::OnceLock::new(),
                shutdown: CancellationToken::new(),
                links: TaskTracker::new(),
                config,
            }),
        })
    }

    /// The number of agents connected now.
    pub fn agents(&self) -> usize {
        self.shared.registry.agents()
    }

    /// Serves the public and the agents on `listener` until `shutdown`
    /// completes; then closes public WebSockets with 1001 and the agents'
    /// links.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let local = listener.local_addr()?;
        let shared = &self.shared;
        let port = shared.config.public_port.unwrap_or(local.port());
        let secure = shared.config.tls.is_some();
        let scheme = if secure { "https" } else { "http" };
        let port = match (secure, port) {
            (true, 443) | (false, 80) => String::new(),
            (_, port) => format!(":{port}"),
        };
        let _ = shared.url_parts.set((scheme, port));
        if shared.config.tokens.is_empty() {
            warn!("no --token given: any agent may open tunnels on this server");
        }
        info!(
            "tunnel server for {} listening on {local}; agents connect to {}://{}{}",
            shared.config.domain,
            if secure { "wss" } else { "ws" },
            local,
            CONTROL_PATH
        );
        let tls = shared
            .config
            .tls
            .clone()
            .map(tokio_rustls::TlsAcceptor::from);
        let connections = TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, remote) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        debug!("accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let shared = Arc::clone(&self.shared);
            let tls = tls.clone();
            connections.spawn(async move {
                match tls {
                    None => serve_http(shared, tcp, remote).await,
                    Some(acceptor) => {
                        let accepted =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                .await;
                        match accepted {
                            Ok(Ok(stream)) => serve_http(shared, stream, remote).await,
                            Ok(Err(e)) => debug!(%remote, "TLS handshake failed: {e}"),
                            Err(_) => debug!(%remote, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(listener);
        info!("tunnel server shutting down");
        self.shared.shutdown.cancel();
        connections.close();
        self.shared.links.close();
        self.shared.proxy.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            connections.wait().await;
            self.shared.links.wait().await;
        })
        .await;
        Ok(())
    }
}

impl Shared {
    fn public_url(&self, name: &str) -> String {
        let (scheme, port) = self
            .url_parts
            .get()
            .map(|(s, p)| (*s, p.as_str()))
            .unwrap_or(("http", ""));
        format!("{scheme}://{name}.{}{port}", self.config.domain)
    }
}

async fn serve_http<IO>(shared: Arc<Shared>, io: IO, remote: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service_shared = Arc::clone(&shared);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let shared = Arc::clone(&service_shared);
        async move { Ok::<_, std::convert::Infallible>(handle(shared, request, remote).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                debug!(%remote, "HTTP connection ended: {error}");
            }
        }
        _ = shared.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The subdomain a Host names, if it is one of ours.
fn subdomain<'a>(host: &'a str, domain: &str) -> Option<&'a str> {
    let name = host.strip_suffix(domain)?.strip_suffix('.')?;
    (!name.is_empty() && !name.contains('.')).then_some(name)
}

/// The request's host, lower case, without port or trailing dot.
fn request_host(request: &Request<Incoming>) -> String {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(']') => {
            name
        }
        _ => host,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

async fn handle(
    shared: Arc<Shared>,
    mut request: Request<Incoming>,
    remote: SocketAddr,
) -> Response<ProxyBody> {
    let host = request_host(&request);
    let domain = &shared.config.domain;
    let Some(name) = subdomain(&host, domain) else {
        if request.uri().path() == CONTROL_PATH {
            return control::accept(shared, request, remote);
        }
        return text(
            StatusCode::NOT_FOUND,
            &format!(
                "this is the sockeye tunnel server for {domain}; tunnels are at \
                 {}\n(agents connect to {CONTROL_PATH})",
                shared.public_url("NAME")
            ),
        );
    };
    let name = name.to_owned();
    let tunnel = match shared.registry.lookup(&name) {
        Lookup::Live(tunnel) => tunnel,
        Lookup::Gone(ago) => {
            return text(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "bad gateway: the agent serving {host} disconnected {}s ago and has not \
                     reconnected; is `sockeye http` still running?",
                    ago.as_secs()
                ),
            )
        }
        Lookup::Unknown => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("no tunnel named {name:?} on {domain}: no agent holds {host}"),
            )
        }
    };
    if let Some(expected) = &tunnel.auth {
        let given = request.headers().get(header::AUTHORIZATION);
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())) {
            let mut response = text(
                StatusCode::UNAUTHORIZED,
                &format!("{host} needs a user name and password (HTTP basic auth)"),
            );
            let challenge = format!("Basic realm=\"{host}\", charset=\"UTF-8\"");
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            return response;
        }
        // The credentials were the tunnel's; the local server never sees them.
        request.headers_mut().remove(header::AUTHORIZATION);
    }
    let backend: Backend = match format!("ws://{name}").parse() {
        Ok(backend) => backend,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    CLIENT
        .scope(remote, shared.proxy.forward_to(request, remote, backend))
        .await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An empty body.
pub(crate) fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A plain-text response of the server's own.
pub(crate) fn text(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = http_body_util::Full::new(bytes::Bytes::from(format!("{message}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_of_the_domain_only() {
        assert_eq!(
            subdomain("ws-app.tunnel.localhost", "tunnel.localhost"),
            Some("ws-app")
        );
        assert_eq!(subdomain("tunnel.localhost", "tunnel.localhost"), None);
        assert_eq!(subdomain("a.b.tunnel.localhost", "tunnel.localhost"), None);
        assert_eq!(subdomain("xtunnel.localhost", "tunnel.localhost"), None);
    }
}

//! [`ProxyConfig`]: routes, limits, timers, the observer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::dial::Connector;
use crate::observer::{NoopObserver, Observer};
use crate::route::{AllowedBackend, Backend, Route};
use crate::Error;

/// How the proxy routes, limits and keeps connections alive.
///
/// ```
/// use std::time::Duration;
/// use sockeye_proxy::ProxyConfig;
///
/// let config = ProxyConfig::default()
///     .to("ws://127.0.0.1:9000")?
///     .route("/feed", "ws://127.0.0.1:9001")?
///     .keepalive(Some(Duration::from_secs(20)))
///     .max_connections(10_000);
/// # Ok::<(), sockeye_proxy::Error>(())
/// ```
#[derive(Clone)]
pub struct ProxyConfig {
    /// Routes by path prefix; the longest matching prefix wins. `to(url)`
    /// is the route for `/`. Default none.
    pub routes: Vec<Route>,
    /// The "backend chosen by the client" mode, off unless an allow-list is
    /// given. Default `None`.
    pub client_choice: Option<ClientChoice>,
    /// On a hop (client or backend) that has carried nothing for this long,
    /// the proxy sends a ping of its own, so that load balancers and NATs
    /// with idle timeouts keep the connection; the pong is swallowed.
    /// Default 30 s: under the 60 s idle timeout common to load balancers.
    /// `None` turns it off.
    pub keepalive: Option<Duration>,
    /// A connection over which no frame passed either way for this long
    /// (the proxy's own keepalives do not count) is closed with 1001 on
    /// both sides. Default `None`: long-lived quiet connections (a
    /// dashboard waiting for events) are what WebSockets are for.
    pub idle_timeout: Option<Duration>,
    /// The most connections (spliced WebSockets and HTTP requests in
    /// flight) at once; the next is refused with 503. Default 10 000.
    pub max_connections: usize,
    /// The most connections at once from one client IP address; the next is
    /// refused with 429. Default 1 000: generous for users behind one NAT,
    /// still a bound on one host taking the whole budget.
    pub max_per_ip: usize,
    /// Bytes read from a socket at a time, one buffer per direction: the
    /// relay's memory per connection. Default 32 KiB, enough for a full
    /// TCP window's worth of small frames per system call; a frame larger
    /// than this streams through in pieces.
    pub read_buffer_size: usize,
    /// Opening a TCP (and TLS) connection to a backend must take no longer.
    /// Default 10 s; a backend that is down answers faster than that with a
    /// refusal, which becomes 502 at once.
    pub connect_timeout: Duration,
    /// The backend must answer a request's head within this. Default 30 s.
    pub response_timeout: Duration,
    /// After one side of a spliced connection has closed (or a close frame
    /// has passed), the other gets this long to finish before both are
    /// dropped. Default 5 s, the close timeout of `sockeye`.
    pub close_timeout: Duration,
    /// On shutdown, how long to wait for connections to finish their close
    /// handshakes. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Send the client's `Host` to the backend (`true`), or the backend's
    /// own authority (`false`, the default: virtual-hosted and TLS backends
    /// expect their own name; the client's is in `X-Forwarded-Host` and
    /// `Forwarded`).
    pub preserve_host: bool,
    /// Serve the proxy's Prometheus metrics at this path instead of
    /// forwarding it. Default `Some("/metrics")`.
    pub metrics_path: Option<String>,
    /// TLS settings for `wss://` backends. Default `None`: the webpki roots
    /// plus the platform's, loaded the first time a `wss://` backend is used.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Sees requests, upgrades, frames and closes. Default [`NoopObserver`].
    pub observer: Arc<dyn Observer>,
    /// Opens backend streams in place of the TCP (and TLS) dial. Default
    /// `None`: connect to the backend's host and port.
    pub connector: Option<Arc<dyn Connector>>,
}

/// The "backend chosen by the client" mode: a request to `path` names its
/// backend in the query (`/api/websocket?backend=ws://…`), which must be in
/// the allow-list; anything else is refused with 403. A backend named by
/// host name that resolves to a loopback, private or otherwise internal
/// address is refused too, unless the allow-list entry names that address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientChoice {
    /// The path that takes a client-chosen backend. Default `/api/websocket`.
    pub path: String,
    /// The query parameter naming the backend. Default `backend`.
    pub param: String,
    /// The backends a client may choose; never empty.
    pub allow: Vec<AllowedBackend>,
}

impl ClientChoice {
    /// The mode at `/api/websocket?backend=`, with these backends allowed.
    pub fn new(allow: Vec<AllowedBackend>) -> Self {
        ClientChoice {
            path: "/api/websocket".to_owned(),
            param: "backend".to_owned(),
            allow,
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            routes: Vec::new(),
            client_choice: None,
            keepalive: Some(Duration::from_secs(30)),
            idle_timeout: None,
            max_connections: 10_000,
            max_per_ip: 1_000,
            read_buffer_size: 32 * 1024,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            preserve_host: false,
            metrics_path: Some("/metrics".to_owned()),
            tls: None,
            observer: Arc::new(NoopObserver),
            connector: None,
        }
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("routes", &self.routes)
            .field("client_choice", &self.client_choice)
            .field("keepalive", &self.keepalive)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_per_ip", &self.max_per_ip)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("metrics_path", &self.metrics_path)
            .field("preserve_host", &self.preserve_host)
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// Sends every request not matched by a longer route to `url`.
    pub fn to(self, url: &str) -> Result<Self, Error> {
        self.route("/", url)
    }

    /// Sends requests whose path starts with `prefix` to `url`.
    pub fn route(mut self, prefix: &str, url: &str) -> Result<Self, Error> {
        self.routes
            .push(Route::new(prefix, url.parse::<Backend>()?)?);
        Ok(self)
    }

    /// Allows clients to choose this backend (a URL or `host:port`) at
    /// [`ClientChoice::path`]; the first call turns the mode on.
    pub fn allow_backend(mut self, entry: &str) -> Result<Self, Error> {
        let entry = entry.parse()?;
        match &mut self.client_choice {
            Some(choice) => choice.allow.push(entry),
            None => self.client_choice = Some(ClientChoice::new(vec![entry])),
        }
        Ok(self)
    }

    /// Sets the hop keepalive interval (`None`: off).
    pub fn keepalive(mut self, interval: Option<Duration>) -> Self {
        self.keepalive = interval;
        self
    }

    /// Sets the idle timeout (`None`: off).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the limit on connections at once.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets the limit on connections at once from one IP address.
    pub fn max_per_ip(mut self, n: usize) -> Self {
        self.max_per_ip = n;
        self
    }

    /// Sets the observer.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Sets the connector that opens backend streams instead of TCP.
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Sends the client's `Host` to the backend (`true`) or the backend's
    /// own authority (`false`, the default).
    pub fn preserve_host(mut self, preserve: bool) -> Self {
        self.preserve_host = preserve;
        self
    }

    /// Sets the TLS client settings for `wss://` backends.
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the path of the metrics (`None`: forward it like any other).
    pub fn metrics_path(mut self, path: Option<&str>) -> Self {
        self.metrics_path = path.map(str::to_owned);
        self
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        let choice = self.client_choice.as_ref().filter(|c| !c.allow.is_empty());
        // With a connector and no routes, every request is given its
        // backend by `Proxy::forward_to`.
        if self.routes.is_empty() && choice.is_none() && self.connector.is_none() {
            return Err(Error::NoRoutes);
        }
        Ok(())
    }
}

//! [`Endpoint`]: a WebSocket route with its handlers and its policies.

mod config;
mod upgrade;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sockeye_proto::{CloseCode, Message, PreparedMessage};

pub use config::{BackpressurePolicy, EndpointConfig, Heartbeat, RateLimit, RateLimitAction};
pub(crate) use upgrade::{upgrade_handler, RemoteAddr};

use crate::conn::Conn;
use crate::hub::{BoxFuture, ConnId, Hub, Kind, Publication, Subscriber};
use crate::metrics::{EndpointMetrics, Metrics};

type OpenFn = Arc<dyn Fn(Conn) -> BoxFuture<'static, ()> + Send + Sync>;
type MessageFn = Arc<dyn Fn(Conn, Message) -> BoxFuture<'static, ()> + Send + Sync>;
type CloseFn = Arc<dyn Fn(Conn, CloseCode, String) -> BoxFuture<'static, ()> + Send + Sync>;
type ErrorFn = Arc<dyn Fn(Conn, sockeye::Error) -> BoxFuture<'static, ()> + Send + Sync>;
type AuthFn = Arc<
    dyn Fn(UpgradeRequest) -> BoxFuture<'static, Result<Option<String>, AuthRejection>>
        + Send
        + Sync,
>;
pub(crate) type FirstAuthFn =
    Arc<dyn Fn(Conn, Message) -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// What the auth hook sees of an upgrade request.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// The request URI (path and query: `?token=...`).
    pub uri: http::Uri,
    /// The request headers (`Authorization`, `Cookie`, `Origin`, ...).
    pub headers: http::HeaderMap,
    /// The peer's address, when known.
    pub remote: Option<std::net::SocketAddr>,
}

impl UpgradeRequest {
    /// The value of query parameter `name`, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.uri.query()?;
        url_query(query, name)
    }

    /// The value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| v.to_string())
            })
    }

    /// The bearer token of the `Authorization` header.
    pub fn bearer_token(&self) -> Option<String> {
        let value = self
            .headers
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string())
    }
}

pub(crate) fn url_query(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| (k == name).then(|| v.into_owned()))
}

/// An auth hook's refusal: 401 (who are you?) or 403 (not you), with a reason.
#[derive(Debug, Clone)]
pub struct AuthRejection {
    /// 401 or 403 (any 4xx is sent as given).
    pub status: http::StatusCode,
    /// A one-line reason for the client.
    pub message: String,
}

impl AuthRejection {
    /// 401 Unauthorized: missing or bad credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        AuthRejection {
            status: http::StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    /// 403 Forbidden: known, but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        AuthRejection {
            status: http::StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Handlers {
    open: Option<OpenFn>,
    message: Option<MessageFn>,
    close: Option<CloseFn>,
    error: Option<ErrorFn>,
    pub(crate) auth: Option<AuthFn>,
    pub(crate) first_message_auth: Option<(Duration, FirstAuthFn)>,
}

impl Handlers {
    pub(crate) async fn open(&self, conn: Conn) {
        if let Some(f) = &self.open {
            f(conn).await;
        }
    }

    pub(crate) async fn message(&self, conn: Conn, message: Message) {
        if let Some(f) = &self.message {
            f(conn, message).await;
        }
    }

    pub(crate) async fn close(&self, conn: Conn, code: CloseCode, reason: String) {
        if let Some(f) = &self.close {
            f(conn, code, reason).await;
        }
    }

    pub(crate) async fn error(&self, conn: Conn, error: sockeye::Error) {
        if let Some(f) = &self.error {
            f(conn, error).await;
        }
    }
}

/// A WebSocket endpoint: handlers for open, message, close and error, and
/// an [`EndpointConfig`]. Mount it with [`App::endpoint`](crate::App::endpoint).
///
/// ```
/// use sockeye_server::{Endpoint, EndpointConfig};
///
/// let echo = Endpoint::new(EndpointConfig::default())
///     .on_message(|conn, message| async move {
///         conn.send(message);
///     });
/// ```
pub struct Endpoint {
    config: EndpointConfig,
    handlers: Handlers,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with `config` and no handlers.
    pub fn new(config: EndpointConfig) -> Self {
        Endpoint {
            config,
            handlers: Handlers::default(),
        }
    }

    /// Runs when a connection opens.
    pub fn on_open<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers.open = Some(Arc::new(move |c| Box::pin(f(c))));
        self
    }

    /// Runs for each text or binary message, in order, one at a time per connection.
    pub fn on_message<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Conn, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers.message = Some(Arc::new(move |c, m| Box::pin(f(c, m))));
        self
    }

    /// Runs once when a connection ends, however it ends (1006 when it
    /// dropped without a close frame, as with a missed heartbeat).
    pub fn on_close<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Conn, CloseCode, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers.close = Some(Arc::new(move |c, code, reason| {
            Box::pin(f(c, code, reason))
        }));
        self
    }

    /// Runs when a connection fails (protocol error, I/O error), before `on_close`.
    pub fn on_error<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Conn, sockeye::Error) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers.error = Some(Arc::new(move |c, e| Box::pin(f(c, e))));
        self
    }

    /// Checks each upgrade request before it is accepted: refuse it with an
    /// [`AuthRejection`] (401/403), or accept it with an optional user id
    /// that the connection carries ([`Conn::user`]).
    pub fn auth<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(UpgradeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<String>, AuthRejection>> + Send + 'static,
    {
        self.handlers.auth = Some(Arc::new(move |r| Box::pin(f(r))));
        self
    }

    /// Requires the first message of a connection that has no user yet to
    /// authenticate it within `timeout`: `check` returns the user id, or a
    /// reason to close with 1008. No other handler sees that message. A
    /// connection that sends nothing in time is closed with 1008.
    pub fn first_message_auth<F, Fut>(mut self, timeout: Duration, check: F) -> Self
    where
        F: Fn(Conn, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        self.handlers.first_message_auth =
            Some((timeout, Arc::new(move |c, m| Box::pin(check(c, m)))));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    pub(crate) fn build(
        self,
        path: &str,
        hub: Hub,
        metrics: &Metrics,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<EndpointShared> {
        let mut ws = sockeye::Config::default().max_message_size(self.config.max_payload_length);
        ws.protocol.close_timeout = self.config.close_timeout;
        ws.deflate = self.config.compression.clone();
        ws.protocols = self.config.protocols.clone();
        ws.headers = self.config.headers.clone();
        Arc::new(EndpointShared {
            path: path.to_string(),
            metrics: metrics.endpoint(path),
            config: self.config,
            handlers: self.handlers,
            hub,
            ws_config: ws,
            connections: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            shutdown,
        })
    }
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_conn_id() -> ConnId {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

/// What the connections of one endpoint share.
pub(crate) struct EndpointShared {
    pub(crate) path: String,
    pub(crate) config: EndpointConfig,
    pub(crate) handlers: Handlers,
    pub(crate) hub: Hub,
    pub(crate) metrics: EndpointMetrics,
    pub(crate) ws_config: sockeye::Config,
    connections: Mutex<HashMap<ConnId, Conn>>,
    /// Open connections, counted from the upgrade (before the task runs).
    pub(crate) open: AtomicUsize,
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
}

impl EndpointShared {
    pub(crate) fn register(&self, conn: &Conn) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conn.id(), conn.clone());
    }

    pub(crate) fn forget(&self, id: ConnId) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A handle to a mounted endpoint: its connections, and broadcast to them.
#[derive(Clone)]
pub struct EndpointHandle {
    pub(crate) shared: Arc<EndpointShared>,
}

impl std::fmt::Debug for EndpointHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointHandle")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl EndpointHandle {
    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Handles to the open connections.
    pub fn connections(&self) -> Vec<Conn> {
        self.shared
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Sends `message` to every open connection of the endpoint, framed once.
    /// Returns how many connections queued it.
    pub fn broadcast(&self, message: PreparedMessage) -> usize {
        let publication = Arc::new(Publication::new(
            Arc::from(self.shared.path.as_str()),
            None,
            message.payload().clone(),
            message.is_text(),
            None,
            Kind::Message,
        ));
        let _ = publication.prepared.set(message);
        let prepared = publication.prepared.get().expect("set above");
        let connections = self.connections();
        connections
            .iter()
            .filter(|c| c.deliver(&publication, prepared) == crate::hub::Delivery::Queued)
            .count()
    }
}

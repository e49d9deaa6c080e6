//! [`Proxy`]: the listener, the HTTP/1.1 connections, and the choice of a
//! backend for each request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::dial::{self, Tls};
use crate::forward;
use crate::limits::Limiter;
use crate::metrics::{ProxyMetrics, Refusal};
use crate::observer::{ConnId, RequestMeta, ResponseMeta, ResponseSource};
use crate::route::{self, Backend};
use crate::{Error, ProxyConfig};

/// The body of every response the proxy sends: a backend's, streamed, or
/// one of its own.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;
pub(crate) type Body = ProxyBody;
/// The error type of [`ProxyBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A WebSocket-aware reverse proxy.
///
/// ```no_run
/// # async fn demo() -> Result<(), sockeye_proxy::Error> {
/// use sockeye_proxy::{Proxy, ProxyConfig};
///
/// let config = ProxyConfig::default().to("ws://127.0.0.1:9000")?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// Proxy::new(config)?
///     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

/// What every request and relay of one proxy shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) metrics: ProxyMetrics,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) tls: Tls,
    pub(crate) shutdown: CancellationToken,
    /// Relays run outside the HTTP connection that started them.
    pub(crate) relays: TaskTracker,
    next_id: AtomicU64,
}

/// Where a request goes.
#[derive(Debug)]
pub(crate) struct Chosen {
    pub(crate) backend: Backend,
    /// Path and query at the backend.
    pub(crate) target: String,
    /// Addresses already resolved and checked (client-chosen backends).
    pub(crate) addrs: Option<Vec<SocketAddr>>,
}

impl Proxy {
    /// A proxy with `config`; fails when it has nowhere to send requests.
    pub fn new(config: ProxyConfig) -> Result<Proxy, Error> {
        config.check()?;
        Ok(Proxy {
            shared: Arc::new(Shared {
                limiter: Arc::new(Limiter::new(config.max_connections, config.max_per_ip)),
                tls: Tls::new(config.tls.clone(), config.connector.clone()),
                metrics: ProxyMetrics::new(),
                shutdown: CancellationToken::new(),
                relays: TaskTracker::new(),
                next_id: AtomicU64::new(1),
                config,
            }),
        })
    }

    /// The proxy's metrics (also served at [`ProxyConfig::metrics_path`]).
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.shared.metrics
    }

    /// Serves on `listener` until `shutdown` completes; then stops
    /// accepting, closes every relayed WebSocket with 1001 on both sides,
    /// and waits for them up to [`ProxyConfig::shutdown_timeout`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
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
            let shared = Arc::clone(&self.shared);
            connections.spawn(serve_connection(shared, tcp, remote));
        }
        drop(listener);
        connections.close();
        self.shutdown_and(connections.wait()).await;
        Ok(())
    }

    /// Serves HTTP/1.1 on one connection already accepted (a TLS stream, a
    /// multiplexed stream from a tunnel), as [`Proxy::serve`] does for each
    /// TCP connection it accepts; `remote` is the client's address for
    /// `X-Forwarded-For`, limits and the observer. Returns when the
    /// connection ends; a WebSocket it upgraded lives on in the proxy's
    /// relays until [`Proxy::shutdown`].
    pub async fn serve_connection<IO>(&self, io: IO, remote: SocketAddr)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        // One concrete type for every caller's stream, so that the relay
        // can take it back out of hyper's upgrade.
        let io: crate::dial::BackendStream = tokio_util::either::Either::Right(Box::new(io));
        serve_io(Arc::clone(&self.shared), io, remote).await
    }

    /// Forwards one request, routed by the proxy's routes, and answers it:
    /// for a caller that runs its own HTTP server (hyper's, axum's) and
    /// hands some requests to the proxy. An upgrade is relayed when the
    /// response goes back through the caller's hyper connection (which must
    /// allow upgrades).
    pub async fn forward(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<ProxyBody> {
        handle(Arc::clone(&self.shared), request, remote, None).await
    }

    /// Like [`Proxy::forward`], to `backend` whatever the routes say: its
    /// path, if any, replaces the whole request path (as a route for `/`).
    /// The metrics path is forwarded like any other.
    pub async fn forward_to(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
        backend: Backend,
    ) -> Response<ProxyBody> {
        handle(Arc::clone(&self.shared), request, remote, Some(backend)).await
    }

    /// Closes every relayed WebSocket with 1001 on both sides and waits for
    /// them up to [`ProxyConfig::shutdown_timeout`]: what [`Proxy::serve`]
    /// does when its shutdown completes, for a proxy used through
    /// [`Proxy::serve_connection`] or [`Proxy::forward`].
    pub async fn shutdown(&self) {
        self.shutdown_and(std::future::ready(())).await
    }

    async fn shutdown_and(&self, others: impl Future<Output = ()>) {
        info!("proxy shutting down: closing relayed connections with 1001");
        self.shared.shutdown.cancel();
        self.shared.relays.close();
        let all = async {
            others.await;
            self.shared.relays.wait().await;
        };
        if tokio::time::timeout(self.shared.config.shutdown_timeout, all)
            .await
            .is_err()
        {
            info!("shutdown timeout passed with connections still open");
        }
    }
}

/// Binds `listen` and serves `config` there until `shutdown` completes: what
/// `sockeye proxy` runs.
pub async fn serve(
    config: ProxyConfig,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let proxy = Proxy::new(config)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr()?;
    let routes: Vec<String> = proxy
        .shared
        .config
        .routes
        .iter()
        .map(|r| format!("{} -> {}", r.prefix, r.backend))
        .collect();
    info!("proxy listening on http://{local} ({})", routes.join(", "));
    proxy.serve(listener, shutdown).await
}

async fn serve_connection(shared: Arc<Shared>, tcp: TcpStream, remote: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    serve_io(shared, tcp, remote).await
}

async fn serve_io<IO>(shared: Arc<Shared>, io: IO, remote: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service_shared = Arc::clone(&shared);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let shared = Arc::clone(&service_shared);
        async move { Ok::<_, std::convert::Infallible>(handle(shared, request, remote, None).await) }
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

/// One request: metrics, limits, route, then forward or splice.
async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    remote: SocketAddr,
    backend: Option<Backend>,
) -> Response<Body> {
    let id = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    let started = tokio::time::Instant::now();
    let upgrade = crate::headers::wants_websocket(request.headers());
    let observer = Arc::clone(&shared.config.observer);

    let chosen = match backend {
        Some(backend) => Ok(Chosen {
            target: backend.target("/", request.uri().path(), request.uri().query()),
            backend,
            addrs: None,
        }),
        None => choose(&shared, &request).await,
    };
    let backend_text = chosen.as_ref().ok().map(|c| c.backend.to_string());
    let meta = RequestMeta {
        id,
        remote,
        method: request.method(),
        uri: request.uri(),
        headers: request.headers(),
        backend: backend_text.as_deref(),
    };
    observer.on_request(&meta);
    // The meta borrows the request, which forwarding consumes: keep copies.
    let (method, uri, headers) = (
        request.method().clone(),
        request.uri().clone(),
        request.headers().clone(),
    );

    let (response, source) = match chosen {
        Err(Choice::Metrics) => (metrics_response(&shared.metrics), ResponseSource::Proxy),
        Err(Choice::Refused(refusal, response)) => {
            shared.metrics.refused(refusal);
            (response, ResponseSource::Proxy)
        }
        Ok(chosen) => match shared.limiter.acquire(remote.ip()) {
            Err(refusal) => {
                shared.metrics.refused(refusal);
                let response = match refusal {
                    Refusal::TooManyFromIp => text(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many connections from your address; try again later",
                    ),
                    _ => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the proxy is at its connection limit; try again later",
                    ),
                };
                (response, ResponseSource::Proxy)
            }
            Ok(permit) => {
                let result = if upgrade {
                    forward::upgrade(&shared, request, chosen, permit, id, remote).await
                } else {
                    let result = forward::http(&shared, request, chosen, id, remote).await;
                    drop(permit);
                    result
                };
                match result {
                    Ok(forwarded) => forwarded,
                    Err(forward::Failed::Refused(refusal, response)) => {
                        shared.metrics.refused(refusal);
                        (response, ResponseSource::Proxy)
                    }
                    Err(forward::Failed::Backend(error)) => {
                        debug!(%id, "backend failed: {error}");
                        shared.metrics.backend_error();
                        shared.metrics.refused(Refusal::BadGateway);
                        observer.on_error(id, &error);
                        let status = match error {
                            Error::BackendTimeout(_) | Error::ConnectTimeout(_) => {
                                StatusCode::GATEWAY_TIMEOUT
                            }
                            _ => StatusCode::BAD_GATEWAY,
                        };
                        (
                            text(status, &format!("bad gateway: {error}")),
                            ResponseSource::Proxy,
                        )
                    }
                }
            }
        },
    };
    shared.metrics.response(upgrade, response.status().as_u16());
    let meta = RequestMeta {
        id,
        remote,
        method: &method,
        uri: &uri,
        headers: &headers,
        backend: backend_text.as_deref(),
    };
    let response_meta = ResponseMeta {
        id,
        status: response.status(),
        headers: response.headers(),
        source,
        elapsed: started.elapsed(),
    };
    observer.on_response(&meta, &response_meta);
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        observer.on_upgrade(id, &meta, &response_meta);
    }
    response
}

/// Why a request is not forwarded.
enum Choice {
    /// It asks for the proxy's own metrics.
    Metrics,
    /// Refused with this response.
    Refused(Refusal, Response<Body>),
}

/// The backend for `request`: the metrics path, the client-chosen mode at
/// its path, or the longest matching route.
async fn choose(shared: &Shared, request: &Request<Incoming>) -> Result<Chosen, Choice> {
    let config = &shared.config;
    let path = request.uri().path();
    if config.metrics_path.as_deref() == Some(path) && request.method() == http::Method::GET {
        return Err(Choice::Metrics);
    }
    if let Some(choice) = config.client_choice.as_ref().filter(|c| c.path == path) {
        let forbidden = |message: String| {
            Choice::Refused(Refusal::Forbidden, text(StatusCode::FORBIDDEN, &message))
        };
        let url = form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .find(|(name, _)| *name == choice.param)
            .map(|(_, value)| value.into_owned())
            .ok_or_else(|| {
                forbidden(format!(
                    "this path needs ?{}=URL naming a backend in the proxy's allow-list",
                    choice.param
                ))
            })?;
        let backend: Backend = url
            .parse()
            .map_err(|e| forbidden(format!("refused: {e}")))?;
        let entry = choice
            .allow
            .iter()
            .find(|entry| entry.allows(&backend))
            .ok_or_else(|| {
                forbidden(format!(
                    "backend {backend} is not in this proxy's allow-list"
                ))
            })?;
        let addrs = dial::resolve(&backend).await.map_err(|e| {
            Choice::Refused(
                Refusal::BadGateway,
                text(StatusCode::BAD_GATEWAY, &e.to_string()),
            )
        })?;
        if !entry.names_address() {
            if let Some(internal) = addrs.iter().find(|a| route::is_internal(a.ip())) {
                return Err(forbidden(format!(
                    "backend {backend} resolves to {}, an internal address; allow-list that \
                     address itself to permit it",
                    internal.ip()
                )));
            }
        }
        let target = backend.own_target();
        return Ok(Chosen {
            backend,
            target,
            addrs: Some(addrs),
        });
    }
    let route = route::longest_match(&config.routes, path).ok_or_else(|| {
        Choice::Refused(
            Refusal::NoRoute,
            text(StatusCode::NOT_FOUND, &format!("no route for {path}")),
        )
    })?;
    Ok(Chosen {
        backend: route.backend.clone(),
        target: route
            .backend
            .target(&route.prefix, path, request.uri().query()),
        addrs: None,
    })
}

/// A plain-text response made by the proxy.
pub(crate) fn text(status: StatusCode, message: &str) -> Response<Body> {
    let body = format!("{message}\n");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn metrics_response(metrics: &ProxyMetrics) -> Response<Body> {
    let mut response = Response::new(full(metrics.render()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ProxyMetrics::CONTENT_TYPE),
    );
    response
}

pub(crate) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn empty() -> Body {
    full(Bytes::new())
}

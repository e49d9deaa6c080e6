//! [`App`]: HTTP routes and WebSocket endpoints on one port.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, MethodRouter};
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{debug, info};

use crate::endpoint::{upgrade_handler, Endpoint, EndpointHandle, EndpointShared, RemoteAddr};
use crate::hub::{Hub, HubConfig};
use crate::metrics::Metrics;

/// A server: an axum [`Router`] for HTTP, WebSocket [`Endpoint`]s, a pub/sub
/// [`Hub`] and [`Metrics`], served on one listener.
///
/// ```no_run
/// use sockeye_server::{App, Endpoint, EndpointConfig};
///
/// # async fn demo() -> std::io::Result<()> {
/// let app = App::new()
///     .route("/health", axum::routing::get(|| async { "ok" }))
///     .endpoint("/echo", Endpoint::new(EndpointConfig::default()).on_message(|conn, m| async move {
///         conn.send(m);
///     }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// // Shut down gracefully when `stop` is sent (or on Ctrl-C:
/// // `tokio::signal::ctrl_c()`, with tokio's `signal` feature).
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// # drop(stop);
/// app.serve(listener, async { let _ = stopped.await; }).await
/// # }
/// ```
pub struct App {
    router: Router,
    hub: Hub,
    metrics: Metrics,
    endpoints: Vec<Arc<EndpointShared>>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|e| e.path.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// An app with an embedded (in-process) hub.
    pub fn new() -> Self {
        Self::with_hub(Hub::new(HubConfig::default()))
    }

    /// An app publishing through `hub` (for example one backed by Redis).
    pub fn with_hub(hub: Hub) -> Self {
        let (shutdown_tx, _) = tokio::sync::watch::channel(false);
        App {
            router: Router::new(),
            hub,
            metrics: Metrics::new(),
            endpoints: Vec::new(),
            shutdown_tx,
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    /// Adds an HTTP route, as [`Router::route`].
    pub fn route(mut self, path: &str, method_router: MethodRouter) -> Self {
        self.router = self.router.route(path, method_router);
        self
    }

    /// Adds the routes of an axum router of your own.
    pub fn merge(mut self, router: Router) -> Self {
        self.router = self.router.merge(router);
        self
    }

    /// Serves the Prometheus text format at `path`.
    pub fn metrics_route(self, path: &str) -> Self {
        let metrics = self.metrics.clone();
        let hub = self.hub.clone();
        let synced = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
        self.route(
            path,
            get(move || {
                let metrics = metrics.clone();
                sync_hub_stats(&hub, &metrics, &synced);
                async move {
                    (
                        [(http::header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
                        metrics.render(),
                    )
                }
            }),
        )
    }

    /// Mounts a WebSocket endpoint at `path`.
    pub fn endpoint(mut self, path: &str, endpoint: Endpoint) -> Self {
        self.add_endpoint(path, endpoint);
        self
    }

    /// Mounts a WebSocket endpoint and returns a handle to it (broadcast,
    /// connection count).
    pub fn add_endpoint(&mut self, path: &str, endpoint: Endpoint) -> EndpointHandle {
        let shared = endpoint.build(
            path,
            self.hub.clone(),
            &self.metrics,
            self.shutdown_tx.subscribe(),
        );
        self.router = std::mem::take(&mut self.router)
            .route(path, get(upgrade_handler).with_state(Arc::clone(&shared)));
        self.endpoints.push(Arc::clone(&shared));
        EndpointHandle { shared }
    }

    /// How long shutdown waits for connections to finish their close
    /// handshakes. Default 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The pub/sub hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The axum router with every route and endpoint, to mount in an app of
    /// your own (serve it with `into_make_service_with_connect_info` to give
    /// the auth hook the peer address). Shutdown is then yours to run:
    /// call [`App::shutdown_signal`]'s sender.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Closes every WebSocket with 1001 "server shutting down" when called.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Sender<bool> {
        self.shutdown_tx.clone()
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down
    /// gracefully: stops accepting, closes every WebSocket with 1001, waits
    /// for the close handshakes and open HTTP requests up to the shutdown
    /// timeout, and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.serve_with(listener, None, shutdown).await
    }

    /// Like [`App::serve`], over TLS (https and wss).
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.serve_with(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
            shutdown,
        )
        .await
    }

    async fn serve_with(
        self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let router = self.router.clone();
        let tracker = tokio_util::task::TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, remote) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: the others keep being served.
                        debug!("accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let router = router.clone();
            let service = hyper::service::service_fn(
                move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(RemoteAddr(remote));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let tls = tls.clone();
            let shutdown_rx = self.shutdown_tx.subscribe();
            tracker.spawn(async move {
                match tls {
                    None => serve_http(TokioIo::new(tcp), service, shutdown_rx).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => {
                                serve_http(TokioIo::new(stream), service, shutdown_rx).await
                            }
                            Ok(Err(error)) => debug!(%remote, "TLS handshake failed: {error}"),
                            Err(_) => debug!(%remote, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(listener);
        info!("shutting down: closing connections with 1001");
        let _ = self.shutdown_tx.send(true);
        tracker.close();
        let endpoints = self.endpoints.clone();
        let all_closed = async {
            tracker.wait().await;
            while endpoints
                .iter()
                .any(|e| e.open.load(std::sync::atomic::Ordering::Relaxed) > 0)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(self.shutdown_timeout, all_closed)
            .await
            .is_err()
        {
            info!("shutdown timeout passed with connections still open");
        }
        Ok(())
    }
}

/// Adds what the hub counted since the last sync to the metrics.
pub(crate) fn sync_hub_stats(hub: &Hub, metrics: &Metrics, synced: &std::sync::Mutex<(u64, u64)>) {
    let (publications, deliveries) = hub.stats();
    let mut last = synced.lock().unwrap_or_else(|p| p.into_inner());
    metrics.record_publications(
        publications.saturating_sub(last.0),
        deliveries.saturating_sub(last.1),
    );
    *last = (publications, deliveries);
}

/// Serves HTTP/1.1 (with upgrades) on one connection; on shutdown, lets the
/// request in flight finish and closes.
async fn serve_http<I, S, B>(io: I, service: S, mut shutdown: tokio::sync::watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                debug!("HTTP connection ended: {error}");
            }
        }
        _ = async { let _ = shutdown.wait_for(|down| *down).await; } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

//! Opening a connection to a backend: resolve, TCP, TLS for `wss://`, or
//! whatever a [`Connector`] opens instead.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sockeye::MaybeTlsStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::route::Backend;
use crate::Error;

/// A byte stream to a backend, as a [`Connector`] opens it: anything that
/// reads and writes (a multiplexed stream, an in-memory pipe, a socket).
pub trait BackendIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> BackendIo for T {}

/// What [`Connector::connect`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Box<dyn BackendIo>, Error>> + Send>>;

/// Opens the byte stream to a backend in place of the proxy's own TCP (and
/// TLS) dial: how `sockeye-tunnel` sends a request down a multiplexed
/// stream to the agent that serves its host.
///
/// The [`Backend`] is the one the request was routed to (by a route, or
/// given to [`Proxy::forward_to`](crate::Proxy::forward_to)); a connector
/// may read only its host, as a key. Whatever it returns carries the
/// request's HTTP/1.1 bytes and, after a 101, the relayed frames. A failure
/// is answered with 502 whose body is the error's text (504 for
/// [`Error::ConnectTimeout`]); [`ProxyConfig::connect_timeout`](crate::ProxyConfig)
/// bounds the whole call.
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// Opens a stream to `backend`.
    fn connect(&self, backend: &Backend) -> ConnectFuture;
}

/// A backend connection: the proxy's own dial (TCP, or TLS over TCP), or a
/// connector's stream; also the client's side of
/// [`Proxy::serve_connection`](crate::Proxy).
pub(crate) type BackendStream = Either<MaybeTlsStream, Box<dyn BackendIo>>;

/// How the proxy opens backend connections: TLS client settings, built on
/// first use (loading the platform's roots takes a while, and a proxy with
/// only `ws://` backends never needs them), and the [`Connector`] that
/// replaces the TCP dial, if one is configured.
#[derive(Debug, Default)]
pub(crate) struct Tls {
    given: Option<Arc<rustls::ClientConfig>>,
    loaded: OnceLock<Arc<rustls::ClientConfig>>,
    connector: Option<Arc<dyn Connector>>,
}

impl Tls {
    pub(crate) fn new(
        given: Option<Arc<rustls::ClientConfig>>,
        connector: Option<Arc<dyn Connector>>,
    ) -> Self {
        Tls {
            given,
            loaded: OnceLock::new(),
            connector,
        }
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        match &self.given {
            Some(config) => Arc::clone(config),
            None => Arc::clone(self.loaded.get_or_init(sockeye::tls::client_config)),
        }
    }
}

/// The addresses of `backend`'s host.
pub(crate) async fn resolve(backend: &Backend) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((backend.host(), backend.port()))
        .await
        .map_err(|source| Error::Dns {
            host: backend.host().to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Dns {
            host: backend.host().to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
        });
    }
    Ok(addrs)
}

/// Connects to `backend` (at `addrs` when already resolved and checked),
/// within `timeout` for TCP and TLS together.
pub(crate) async fn connect(
    backend: &Backend,
    addrs: Option<Vec<SocketAddr>>,
    tls: &Tls,
    timeout: Duration,
) -> Result<BackendStream, Error> {
    let opened = async {
        match &tls.connector {
            Some(connector) => connector.connect(backend).await.map(Either::Right),
            None => connect_inner(backend, addrs, tls).await.map(Either::Left),
        }
    };
    tokio::time::timeout(timeout, opened)
        .await
        .map_err(|_| Error::ConnectTimeout(backend.authority()))?
}

async fn connect_inner(
    backend: &Backend,
    addrs: Option<Vec<SocketAddr>>,
    tls: &Tls,
) -> Result<MaybeTlsStream, Error> {
    let addrs = match addrs {
        Some(addrs) => addrs,
        None => resolve(backend).await?,
    };
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = tcp.ok_or_else(|| Error::Connect {
        backend: backend.authority(),
        source: last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()),
    })?;
    tcp.set_nodelay(true)?;
    if !backend.is_secure() {
        return Ok(MaybeTlsStream::Plain(tcp));
    }
    let name =
        rustls::pki_types::ServerName::try_from(backend.host().to_owned()).map_err(|_| {
            Error::Tls {
                backend: backend.authority(),
                reason: "not a valid TLS server name".into(),
            }
        })?;
    let stream = tokio_rustls::TlsConnector::from(tls.config())
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Tls {
            backend: backend.authority(),
            reason: e.to_string(),
        })?;
    Ok(MaybeTlsStream::Tls(stream))
}

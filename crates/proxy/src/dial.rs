//! Opening a connection to a backend: resolve, TCP, TLS for `wss://`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sockeye::MaybeTlsStream;
use tokio::net::TcpStream;

use crate::route::Backend;
use crate::Error;

/// TLS client settings, built on first use (loading the platform's roots
/// takes a while, and a proxy with only `ws://` backends never needs them).
#[derive(Debug, Default)]
pub(crate) struct Tls {
    given: Option<Arc<rustls::ClientConfig>>,
    loaded: OnceLock<Arc<rustls::ClientConfig>>,
}

impl Tls {
    pub(crate) fn new(given: Option<Arc<rustls::ClientConfig>>) -> Self {
        Tls {
            given,
            loaded: OnceLock::new(),
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
) -> Result<MaybeTlsStream, Error> {
    tokio::time::timeout(timeout, connect_inner(backend, addrs, tls))
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

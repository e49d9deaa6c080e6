//! The client side: resolve, connect, TLS, opening handshake.

use std::sync::Arc;

use bytes::BytesMut;
use sockeye_proto::extension::PerMessageDeflate;
use sockeye_proto::handshake::ClientHandshake;
use sockeye_proto::Role;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Config, Error, MaybeTlsStream, WebSocket};

/// Connects to a `ws://` or `wss://` URL with the default [`Config`].
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTlsStream>, http::Response<()>), Error> {
    connect_with(url, &Config::default()).await
}

/// Connects to a `ws://` or `wss://` URL: resolves the host, opens TCP (with
/// Nagle off), or a tunnel through [`Config::proxy`], TLS for `wss://`, and
/// performs the opening handshake, all within [`Config::handshake_timeout`].
pub async fn connect_with(
    url: &str,
    config: &Config,
) -> Result<(WebSocket<MaybeTlsStream>, http::Response<()>), Error> {
    let timeout = config.handshake_timeout;
    tokio::time::timeout(timeout, connect_inner(url, config))
        .await
        .map_err(|_| Error::HandshakeTimeout(timeout))?
}

async fn connect_inner(
    url: &str,
    config: &Config,
) -> Result<(WebSocket<MaybeTlsStream>, http::Response<()>), Error> {
    let bad = |reason| Error::Url {
        url: url.to_string(),
        reason,
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        Some(_) => return Err(bad("the scheme must be ws:// or wss://")),
        None => return Err(bad("missing ws:// or wss://")),
    };
    let host = uri.host().ok_or_else(|| bad("missing host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });

    let tcp = match &config.proxy {
        Some(proxy) => {
            crate::proxy_connect::open_tunnel(proxy, &host, port, config.max_header_size).await?
        }
        None => open_tcp(&host, port).await?,
    };
    tcp.set_nodelay(config.nodelay)?;
    let stream = if secure {
        let tls = config.tls.clone().unwrap_or_else(crate::tls::client_config);
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| Error::Tls(format!("{host:?} is not a valid TLS server name")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls));
        let tls_stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Tls(e.to_string()))?;
        MaybeTlsStream::Tls(tls_stream)
    } else {
        MaybeTlsStream::Plain(tcp)
    };
    client_handshake(stream, &uri, config).await
}

pub(crate) async fn open_tcp(host: &str, port: u16) -> Result<TcpStream, Error> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| Error::Dns {
            host: host.to_string(),
            source,
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map(Error::Io).unwrap_or_else(|| Error::Dns {
        host: host.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
    }))
}

/// Performs the client's opening handshake on a connected stream.
pub async fn client_handshake<S>(
    mut io: S,
    uri: &http::Uri,
    config: &Config,
) -> Result<(WebSocket<S>, http::Response<()>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (handshake, request) = ClientHandshake::new(
        uri,
        &config.protocols,
        &config.headers,
        config.deflate.as_ref(),
    )?;
    io.write_all(&request).await?;
    io.flush().await?;
    let mut buf = BytesMut::with_capacity(1024);
    let (response, len) = loop {
        if let Some(parsed) = handshake.parse_response(&buf, config.max_header_size)? {
            break parsed;
        }
        buf.reserve(1024);
        if io.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the opening handshake",
            )
            .into());
        }
    };
    let _ = buf.split_to(len);
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let body = read_body(&mut io, &response, buf).await;
        return Err(Error::Refused {
            status: response.status().as_u16(),
            body,
            response: Box::new(response),
        });
    }
    let negotiated = handshake.validate_response(&response)?;
    let deflate = match (negotiated.deflate, config.deflate.as_ref()) {
        (Some(params), Some(deflate_config)) => Some(PerMessageDeflate::new(
            Role::Client,
            &params,
            deflate_config,
        )),
        _ => None,
    };
    let ws = WebSocket::from_partially_read(io, &buf, Role::Client, config.clone(), deflate);
    Ok((ws, response))
}

/// Reads up to 4 KiB of a refusal's body, for the error message.
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    response: &http::Response<()>,
    mut buf: BytesMut,
) -> String {
    const LIMIT: usize = 4096;
    let want = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(LIMIT)
        .min(LIMIT);
    let deadline = std::time::Duration::from_secs(2);
    let _ = tokio::time::timeout(deadline, async {
        while buf.len() < want {
            buf.reserve(want - buf.len());
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    buf.truncate(want);
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

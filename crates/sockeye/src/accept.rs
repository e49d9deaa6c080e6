//! The server side of the opening handshake over a raw stream.

use bytes::BytesMut;
use sockeye_proto::extension::PerMessageDeflate;
use sockeye_proto::handshake::{self, HandshakeError};
use sockeye_proto::Role;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Config, Error, WebSocket};

/// What a route check answers for an upgrade request: go on, or this response.
pub type Refusal = http::Response<String>;

/// Accepts a WebSocket on `io` with the default [`Config`].
pub async fn accept<S>(io: S) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(io, &Config::default(), |_| Ok(()))
        .await
        .map(|(ws, _)| ws)
}

/// Accepts a WebSocket on `io`: reads the request (within
/// [`Config::handshake_timeout`] and [`Config::max_header_size`]), lets
/// `check` look at it (the path, a token, the origin) and refuse it with a
/// response of its own, validates it against RFC 6455, and answers 101.
///
/// Every refusal is written to the peer as an HTTP response with a status
/// and a one-line reason before the error is returned.
pub async fn accept_with<S, F>(
    mut io: S,
    config: &Config,
    check: F,
) -> Result<(WebSocket<S>, http::Request<()>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&http::Request<()>) -> Result<(), Refusal>,
{
    let timeout = config.handshake_timeout;
    let read = tokio::time::timeout(timeout, read_request(&mut io, config.max_header_size)).await;
    let (request, rest) = match read {
        Err(_) => {
            let refusal = text_response(
                http::StatusCode::REQUEST_TIMEOUT,
                "the request did not arrive in time",
            );
            let _ = write_refusal(&mut io, &refusal).await;
            return Err(Error::HandshakeTimeout(timeout));
        }
        Ok(Err(Error::Handshake(e))) => {
            let _ = write_refusal(&mut io, &handshake::rejection(&e)).await;
            return Err(Error::Handshake(e));
        }
        Ok(other) => other?,
    };
    if let Err(refusal) = check(&request) {
        let status = refusal.status().as_u16();
        let body = refusal.body().clone();
        write_refusal(&mut io, &refusal).await?;
        return Err(Error::Refused {
            status,
            body,
            response: Box::new(refusal.map(|_| ())),
        });
    }
    let upgrade = match handshake::validate_request(&request) {
        Ok(upgrade) => upgrade,
        Err(e) => {
            let _ = write_refusal(&mut io, &handshake::rejection(&e)).await;
            return Err(e.into());
        }
    };
    let accepted = handshake::accept(&upgrade, &config.protocols, config.deflate.as_ref())?;
    let mut response = accepted.response;
    for (name, value) in &config.headers {
        response.headers_mut().append(name, value.clone());
    }
    let mut head = Vec::with_capacity(256);
    handshake::write_response(&response, &[], &mut head);
    io.write_all(&head).await?;
    io.flush().await?;
    let deflate = match (accepted.deflate, config.deflate.as_ref()) {
        (Some(params), Some(deflate_config)) => Some(PerMessageDeflate::new(
            Role::Server,
            &params,
            deflate_config,
        )),
        _ => None,
    };
    let ws = WebSocket::from_partially_read(io, &rest, Role::Server, config.clone(), deflate);
    Ok((ws, request))
}

/// Reads until a whole request head has arrived; returns it and any bytes after it.
async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    max_header_size: usize,
) -> Result<(http::Request<()>, BytesMut), Error> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some((request, len)) = handshake::parse_request(&buf, max_header_size)? {
            let _ = buf.split_to(len);
            return Ok((request, buf));
        }
        if buf.len() >= max_header_size {
            return Err(HandshakeError::HeadersTooLarge {
                limit: max_header_size,
            }
            .into());
        }
        buf.reserve(1024.min(max_header_size + 1 - buf.len()));
        if io.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the peer closed the connection before finishing its request",
            )
            .into());
        }
    }
}

async fn write_refusal<S: AsyncWrite + Unpin>(io: &mut S, refusal: &Refusal) -> Result<(), Error> {
    let mut out = Vec::with_capacity(256);
    handshake::write_response(refusal, refusal.body().as_bytes(), &mut out);
    io.write_all(&out).await?;
    io.flush().await?;
    io.shutdown().await?;
    Ok(())
}

/// A plain-text response with `status` and a one-line `reason`.
pub fn text_response(status: http::StatusCode, reason: &str) -> Refusal {
    let mut response = http::Response::new(format!("{reason}\n"));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

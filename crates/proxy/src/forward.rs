//! Forwarding one request to its backend: a plain HTTP exchange with both
//! bodies streamed, or a WebSocket upgrade whose 101 hands both
//! connections to the relay.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sockeye_proto::handshake::{self, HandshakeError};
use tracing::debug;

use crate::dial;
use crate::headers;
use crate::limits::Permit;
use crate::metrics::Refusal;
use crate::observer::{BodySide, ConnId, ResponseSource};
use crate::relay;
use crate::server::{empty, text, Body, Chosen, Shared};
use crate::tap::Tapped;
use crate::Error;

/// Why a request was not forwarded.
pub(crate) enum Failed {
    /// The proxy refused it with this response.
    Refused(Refusal, Response<Body>),
    /// The backend could not be reached or answered badly (502).
    Backend(Error),
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed::Backend(error)
    }
}

type Forwarded = Result<(Response<Body>, ResponseSource), Failed>;

/// Forwards a plain HTTP request on a fresh backend connection; the request
/// and response bodies stream through (shown to the observer, if it asks).
pub(crate) async fn http(
    shared: &Shared,
    request: Request<Incoming>,
    chosen: Chosen,
    id: ConnId,
    remote: SocketAddr,
) -> Forwarded {
    let config = &shared.config;
    let (parts, body) = request.into_parts();
    let uri = target_uri(&chosen)?;
    let io = dial::connect(
        &chosen.backend,
        chosen.addrs,
        &shared.tls,
        config.connect_timeout,
    )
    .await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(Error::Http)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!("backend connection ended: {error}");
        }
    });
    let observer = &config.observer;
    let mut upstream = Request::new(Tapped::new(body, observer, id, BodySide::Request));
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = uri;
    *upstream.version_mut() = Version::HTTP_11;
    *upstream.headers_mut() = headers::upstream(
        &parts.headers,
        remote,
        &chosen.backend,
        config.preserve_host,
        false,
    );
    let response = tokio::time::timeout(config.response_timeout, sender.send_request(upstream))
        .await
        .map_err(|_| Error::BackendTimeout(config.response_timeout))?
        .map_err(Error::Http)?;
    let (mut parts, body) = response.into_parts();
    parts.headers = headers::end_to_end(&parts.headers);
    let body = Tapped::new(body, observer, id, BodySide::Response);
    let response = Response::from_parts(parts, body.map_err(Into::into).boxed());
    Ok((response, ResponseSource::Backend))
}

/// Forwards a WebSocket upgrade with every handshake header intact; on the
/// backend's 101, sends the same 101 to the client and hands both
/// connections to the relay. Any other answer goes back to the client as
/// it came.
pub(crate) async fn upgrade(
    shared: &Arc<Shared>,
    mut request: Request<Incoming>,
    chosen: Chosen,
    permit: Permit,
    id: ConnId,
    remote: SocketAddr,
) -> Forwarded {
    let config = &shared.config;
    let upgrade = handshake::validate_request(&request).map_err(|e| {
        let refusal = handshake::rejection(&e).map(crate::server::full);
        Failed::Refused(Refusal::BadUpgrade, refusal)
    })?;
    let uri = target_uri(&chosen)?;
    let io = dial::connect(
        &chosen.backend,
        chosen.addrs,
        &shared.tls,
        config.connect_timeout,
    )
    .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(Error::Http)?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            debug!("backend connection ended before the upgrade: {error}");
        }
    });
    let mut upstream = Request::new(Empty::new());
    *upstream.uri_mut() = uri;
    *upstream.version_mut() = Version::HTTP_11;
    *upstream.headers_mut() = headers::upstream(
        request.headers(),
        remote,
        &chosen.backend,
        config.preserve_host,
        true,
    );
    let mut response = tokio::time::timeout(config.response_timeout, sender.send_request(upstream))
        .await
        .map_err(|_| Error::BackendTimeout(config.response_timeout))?
        .map_err(Error::Http)?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok((relayed(response), ResponseSource::Backend));
    }
    // The key is the client's, so the backend's accept must match it; the
    // client checks the rest (subprotocol, extensions) against its own offer.
    let expected = handshake::accept_key(upgrade.key.as_bytes());
    let accept = response.headers().get("sec-websocket-accept");
    if accept.map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
        return Err(Error::BackendHandshake(HandshakeError::AcceptMismatch).into());
    }
    let backend_upgrade = hyper::upgrade::on(&mut response);
    let client_upgrade = hyper::upgrade::on(&mut request);
    let (parts, _) = response.into_parts();
    let shared = Arc::clone(shared);
    let relays = shared.relays.clone();
    relays.spawn(async move {
        match tokio::join!(client_upgrade, backend_upgrade) {
            (Ok(client), Ok(backend)) => relay::splice(shared, id, client, backend, permit).await,
            (client, backend) => {
                let error = client.err().or(backend.err());
                debug!(%id, "upgrade did not complete: {error:?}");
            }
        }
    });
    Ok((
        Response::from_parts(parts, empty()),
        ResponseSource::Backend,
    ))
}

fn target_uri(chosen: &Chosen) -> Result<http::Uri, Failed> {
    chosen.target.parse().map_err(|_| {
        Failed::Refused(
            Refusal::BadUpgrade,
            text(
                StatusCode::BAD_REQUEST,
                "the request target cannot be forwarded",
            ),
        )
    })
}

/// The backend's response for the client: end-to-end headers, body streamed.
fn relayed(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    parts.headers = headers::end_to_end(&parts.headers);
    Response::from_parts(parts, body.map_err(Into::into).boxed())
}

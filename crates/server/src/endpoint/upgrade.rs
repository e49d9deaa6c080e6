//! The axum handler behind each endpoint: every policy that can refuse an
//! upgrade runs here, before the 101, and each refusal has its own status.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use sockeye::WebSocket;
use sockeye_proto::extension::PerMessageDeflate;
use sockeye_proto::handshake;
use sockeye_proto::Role;
use tracing::debug;

use super::{next_conn_id, EndpointShared, UpgradeRequest};
use crate::conn::{self, Conn};
use crate::metrics::RefusalReason;

/// The peer address of a request, put in its extensions by [`App::serve`](crate::App::serve).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteAddr(pub(crate) SocketAddr);

fn refuse(status: http::StatusCode, reason: &str) -> Response {
    let mut response = (status, format!("{reason}\n")).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn remote_addr(request: &http::Request<Body>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<RemoteAddr>()
        .map(|r| r.0)
        .or_else(|| {
            request
                .extensions()
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        })
}

/// Answers an upgrade request for the endpoint in `State`.
pub(crate) async fn upgrade_handler(
    State(endpoint): State<Arc<EndpointShared>>,
    mut request: http::Request<Body>,
) -> Response {
    let metrics = &endpoint.metrics;
    let config = &endpoint.config;

    // Plain HTTP to a WebSocket endpoint, a bad version, a missing key: the
    // handshake's own refusal (400, 405, 426 ...).
    let upgrade = match handshake::validate_request(&request) {
        Ok(upgrade) => upgrade,
        Err(error) => {
            metrics.upgrade_refused(RefusalReason::BadHandshake);
            let rejection = handshake::rejection(&error);
            let (parts, body) = rejection.into_parts();
            return Response::from_parts(parts, Body::from(body));
        }
    };

    if let Some(allowed) = &config.origins {
        let origin = request
            .headers()
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        match origin {
            Some(origin) if allowed.iter().any(|a| a == origin) => {}
            Some(origin) => {
                metrics.upgrade_refused(RefusalReason::Origin);
                return refuse(
                    http::StatusCode::FORBIDDEN,
                    &format!("origin {origin} is not allowed on this endpoint"),
                );
            }
            None => {
                metrics.upgrade_refused(RefusalReason::Origin);
                return refuse(
                    http::StatusCode::FORBIDDEN,
                    "this endpoint requires an Origin header from an allowed origin",
                );
            }
        }
    }

    if *endpoint.shutdown.borrow() {
        return refuse(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        );
    }

    // Count the connection now, so that a burst of upgrades cannot overshoot.
    let open = endpoint.open.fetch_add(1, Ordering::AcqRel) + 1;
    if let Some(max) = config.max_connections {
        if open > max {
            endpoint.open.fetch_sub(1, Ordering::AcqRel);
            metrics.upgrade_refused(RefusalReason::TooManyConnections);
            return refuse(
                http::StatusCode::SERVICE_UNAVAILABLE,
                &format!("too many connections: this endpoint allows {max}; try again later"),
            );
        }
    }
    let release = |endpoint: &EndpointShared| {
        endpoint.open.fetch_sub(1, Ordering::AcqRel);
    };

    let remote = remote_addr(&request);
    let mut user = None;
    if let Some(auth) = &endpoint.handlers.auth {
        let seen = UpgradeRequest {
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            remote,
        };
        match auth(seen).await {
            Ok(identity) => user = identity,
            Err(rejection) => {
                release(&endpoint);
                metrics.upgrade_refused(RefusalReason::Auth);
                return refuse(rejection.status, &rejection.message);
            }
        }
    }

    // "*" speaks whatever the client offers first (an echo endpoint, a tester).
    let wildcard = config.protocols.iter().any(|p| p == "*");
    let supported = if wildcard {
        &upgrade.protocols
    } else {
        &config.protocols
    };
    let accepted = match handshake::accept(&upgrade, supported, config.compression.as_ref()) {
        Ok(accepted) => accepted,
        Err(error) => {
            release(&endpoint);
            metrics.upgrade_refused(RefusalReason::BadHandshake);
            return refuse(error.status(), &error.to_string());
        }
    };
    // Boxed: the connection's task keeps what it captured for its whole life.
    let deflate = match (accepted.deflate, config.compression.as_ref()) {
        (Some(params), Some(deflate)) => Some(Box::new(PerMessageDeflate::new(
            Role::Server,
            &params,
            deflate,
        ))),
        _ => None,
    };
    let conn = Conn::new(
        next_conn_id(),
        Arc::clone(&endpoint),
        remote,
        accepted.protocol.clone(),
        user,
    );
    let on_upgrade = hyper::upgrade::on(&mut request);
    let task_endpoint = Arc::clone(&endpoint);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocket::from_raw(
                    TokioIo::new(upgraded),
                    Role::Server,
                    task_endpoint.ws_config.clone(),
                    deflate.map(|deflate| *deflate),
                );
                task_endpoint.register(&conn);
                task_endpoint.metrics.connection_opened();
                let shutdown = task_endpoint.shutdown.clone();
                conn::run(ws, conn, shutdown).await;
            }
            Err(error) => {
                debug!("upgrade failed after 101: {error}");
                task_endpoint.open.fetch_sub(1, Ordering::AcqRel);
            }
        }
    });

    let mut response = accepted.response;
    for (name, value) in &config.headers {
        response.headers_mut().append(name, value.clone());
    }
    let (parts, ()) = response.into_parts();
    Response::from_parts(parts, Body::empty())
}

//! The agent's control link on the server: the WebSocket upgrade at
//! `/_sockeye/tunnel`, the hello, the claim, then the multiplexer until the
//! link ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sockeye::{CloseCode, CloseFrame, Message, Role, WebSocket};
use sockeye_proto::handshake;
use sockeye_proxy::ProxyBody;
use tokio::sync::Semaphore;
use tracing::{debug, info};

use super::registry::{ClaimRequest, Refusal};
use super::{text, Shared};
use crate::link::WsIo;
use crate::mux;
use crate::protocol::{Granted, Hello, ServerMessage, MAX_CONTROL_MESSAGE, VERSION};

/// The agent must say hello within this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers the upgrade and runs the link in a task of its own.
pub(super) fn accept(
    shared: Arc<Shared>,
    mut request: Request<Incoming>,
    remote: SocketAddr,
) -> Response<ProxyBody> {
    let upgrade = match handshake::validate_request(&request) {
        Ok(upgrade) => upgrade,
        Err(e) => {
            return text(
                e.status(),
                &format!(
                    "{}: agents connect here with a WebSocket ({e})",
                    super::CONTROL_PATH
                ),
            )
        }
    };
    let accepted = match handshake::accept(&upgrade, &[], None) {
        Ok(accepted) => accepted,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let task_shared = Arc::clone(&shared);
    shared.links.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut config = sockeye::Config::default();
                config.protocol.max_message_size = 1 << 20;
                let ws = WebSocket::from_raw(TokioIo::new(upgraded), Role::Server, config, None);
                run(task_shared, ws, remote).await;
            }
            Err(e) => debug!(%remote, "agent upgrade failed: {e}"),
        }
    });
    let (parts, ()) = accepted.response.into_parts();
    Response::from_parts(parts, super::empty())
}

async fn refuse<S>(ws: &mut WebSocket<S>, refusal: Refusal)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let message = ServerMessage::Refused {
        reason: refusal.reason,
        retry: refusal.retry,
    };
    if let Ok(json) = serde_json::to_string(&message) {
        let _ = ws.send(Message::text(json)).await;
    }
    let _ = ws
        .close(Some(CloseFrame::new(CloseCode::POLICY, "refused")))
        .await;
}

async fn run<S>(shared: Arc<Shared>, mut ws: WebSocket<S>, remote: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, ws.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.len() <= MAX_CONTROL_MESSAGE => {
            match serde_json::from_str::<Hello>(text.as_str()) {
                Ok(hello) => hello,
                Err(e) => {
                    let reason = format!("the first message is not a valid hello: {e}");
                    return refuse(
                        &mut ws,
                        Refusal {
                            reason,
                            retry: false,
                        },
                    )
                    .await;
                }
            }
        }
        Ok(_) => {
            let reason = "the first message must be a JSON hello (text)".to_owned();
            return refuse(
                &mut ws,
                Refusal {
                    reason,
                    retry: false,
                },
            )
            .await;
        }
        Err(_) => {
            let reason = format!("no hello within {HELLO_TIMEOUT:?}");
            return refuse(
                &mut ws,
                Refusal {
                    reason,
                    retry: true,
                },
            )
            .await;
        }
    };
    if hello.version != VERSION {
        let reason = format!(
            "this server speaks tunnel protocol version {VERSION}, the agent {}; upgrade sockeye",
            hello.version
        );
        return refuse(
            &mut ws,
            Refusal {
                reason,
                retry: false,
            },
        )
        .await;
    }
    let tokens = &shared.config.tokens;
    if !tokens.is_empty() {
        let given = hello.token.as_deref().unwrap_or("");
        if !tokens
            .iter()
            .any(|t| super::constant_time_eq(t.as_bytes(), given.as_bytes()))
        {
            let reason = if hello.token.is_none() {
                "this server needs a token: pass --token (ask the server's operator for one)"
            } else {
                "the token was not accepted: check --token (ask the server's operator for one)"
            };
            info!(%remote, "agent refused: bad token");
            let reason = reason.to_owned();
            return refuse(
                &mut ws,
                Refusal {
                    reason,
                    retry: false,
                },
            )
            .await;
        }
    }
    if hello.tunnels.is_empty() || hello.tunnels.len() > 64 {
        let reason = "ask for 1 to 64 tunnels".to_owned();
        return refuse(
            &mut ws,
            Refusal {
                reason,
                retry: false,
            },
        )
        .await;
    }
    if hello.session.len() < 16 || hello.session.len() > 256 {
        let reason = "the session secret must be 16 to 256 characters".to_owned();
        return refuse(
            &mut ws,
            Refusal {
                reason,
                retry: false,
            },
        )
        .await;
    }

    let max_streams = shared.config.max_streams_per_agent;
    // The driver's own limit sits above ours: yamux ends the whole link when
    // its limit is hit, while ours refuses one request.
    let yamux_streams = max_streams + 64;
    let mut yamux_config = yamux::Config::default();
    // yamux asserts window >= 256 KiB x streams after each setter: lift the
    // window, set the streams, then bound the window.
    yamux_config
        .set_max_connection_receive_window(None)
        .set_max_num_streams(yamux_streams)
        .set_max_connection_receive_window(Some(yamux_streams.saturating_mul(256 * 1024)))
        .set_split_send_size(crate::mux::SPLIT_SEND_SIZE);
    let (opener, requests) = mux::channel();
    let claimed = shared.registry.claim(ClaimRequest {
        session: &hello.session,
        token: hello.token.as_deref(),
        tunnels: &hello.tunnels,
        opener,
        slots: Arc::new(Semaphore::new(max_streams)),
        bytes_per_second: shared.config.bytes_per_second,
    });
    let claimed = match claimed {
        Ok(claimed) => claimed,
        Err(refusal) => {
            info!(%remote, "agent refused: {}", refusal.reason);
            return refuse(&mut ws, refusal).await;
        }
    };
    let tunnels: Vec<Granted> = claimed
        .names
        .iter()
        .map(|name| Granted {
            name: name.clone(),
            url: shared.public_url(name),
        })
        .collect();
    let welcome = ServerMessage::Welcome {
        tunnels: tunnels.clone(),
    };
    let sent = match serde_json::to_string(&welcome) {
        Ok(json) => ws.send(Message::text(json)).await,
        Err(e) => Err(sockeye::Error::Io(std::io::Error::other(e))),
    };
    if sent.is_ok() {
        let urls: Vec<&str> = tunnels.iter().map(|t| t.url.as_str()).collect();
        info!(%remote, agent = claimed.agent, "agent connected: {}", urls.join(", "));
        let io = WsIo::new(ws, Some(shared.config.keepalive));
        let batching = io.batching();
        let driven = mux::drive(
            io,
            batching,
            yamux_config,
            yamux::Mode::Server,
            requests,
            |stream| {
                // The agent never opens streams: refuse by dropping.
                drop(stream)
            },
        );
        let ended = tokio::select! {
            result = driven => match result {
                Ok(()) => "the agent closed the link".to_owned(),
                Err(e) => format!("link failed: {e}"),
            },
            _ = claimed.kick.cancelled() => "a new link of the same agent took over".to_owned(),
            _ = shared.shutdown.cancelled() => "server shutting down".to_owned(),
        };
        info!(%remote, agent = claimed.agent, "agent disconnected: {ended}");
    }
    shared.registry.release(claimed.agent);
}

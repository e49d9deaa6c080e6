//! The echo endpoint: every text or binary message goes back unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::{Sink, Stream};

use sockeye::{Config, DeflateConfig, Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

/// Settings of [`EchoServer`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Connection settings; compression is on by default here, because the
    /// echo endpoint is what conformance suites and testers talk to.
    pub websocket: Config,
    /// The path of the echo endpoint. Default `/echo`.
    pub echo_path: String,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            websocket: Config::default().deflate(DeflateConfig::default()),
            echo_path: "/echo".to_string(),
        }
    }
}

/// Serves the echo endpoint on a listener.
#[derive(Debug, Clone)]
pub struct EchoServer {
    config: Arc<ServeConfig>,
}

impl EchoServer {
    /// A server with `config`.
    pub fn new(config: ServeConfig) -> Self {
        EchoServer {
            config: Arc::new(config),
        }
    }

    /// Accepts connections until `shutdown` completes; each connection runs
    /// in its own task, so one slow or hostile peer cannot hold up another.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    info!("shutting down");
                    return;
                }
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let config = Arc::clone(&self.config);
                        tokio::spawn(async move {
                            if let Err(e) = serve_connection(tcp, &config).await {
                                debug!(%peer, "connection ended: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving the others.
                        debug!("accept failed: {e}");
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }
}

async fn serve_connection(tcp: TcpStream, config: &ServeConfig) -> Result<(), sockeye::Error> {
    tcp.set_nodelay(true)?;
    let echo_path = config.echo_path.as_str();
    // Boxed, so that the handshake's state is freed once it is done instead
    // of staying part of this task for the connection's whole life.
    let (mut ws, _) = Box::pin(sockeye::accept_with(tcp, &config.websocket, |request| {
        if request.uri().path() == echo_path {
            Ok(())
        } else {
            Err(sockeye::text_response(
                http::StatusCode::NOT_FOUND,
                &format!(
                    "no endpoint at {}; the echo endpoint is {echo_path}",
                    request.uri().path()
                ),
            ))
        }
    }))
    .await?;
    // A hand-written poll loop rather than `recv().await` and
    // `feed().await`: the task then holds the connection and nothing more
    // while it waits, which is most of an idle connection's memory.
    std::future::poll_fn(|cx| poll_echo(&mut ws, cx)).await
}

/// Echoes until the connection ends: waits while the write queue is above
/// its high-water mark (as `feed` does), then takes the next message.
fn poll_echo<S>(ws: &mut WebSocket<S>, cx: &mut Context<'_>) -> Poll<Result<(), sockeye::Error>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        ready!(Pin::new(&mut *ws).poll_ready(cx))?;
        match ready!(Pin::new(&mut *ws).poll_next(cx)) {
            None => return Poll::Ready(Ok(())),
            Some(Err(error)) => return Poll::Ready(Err(error)),
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                Pin::new(&mut *ws).start_send(message)?;
            }
            Some(Ok(_)) => {}
        }
    }
}

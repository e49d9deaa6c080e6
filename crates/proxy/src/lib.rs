//! `sockeye-proxy`: a WebSocket-aware reverse proxy.
//!
//! ```text
//!   client ──HTTP──► Proxy ── route (longest prefix, or ?backend= in the allow-list) ──► backend
//!                      │   plain request: forwarded, bodies streamed, X-Forwarded-For/Forwarded added
//!                      │   upgrade: the request head goes to the backend with every handshake
//!                      │   header intact; its 101 comes back unchanged; then the relay:
//!   client ◄══frames══► relay (FrameSplitter per direction, one read buffer each) ◄══frames══► backend
//!                          keepalive pings per hop · close propagation · Observer hooks
//! ```
//!
//! The proxy decides where a request goes and how long connections may
//! live; it never decides what a connection may say. Subprotocols and
//! permessage-deflate are negotiated between the client and the backend
//! (the key in the handshake is the client's), and frames are relayed as
//! they come: client frames stay masked as the client masked them, a
//! compressed frame stays compressed, and a message of any size streams
//! through in pieces without ever being assembled. What it adds is per hop:
//! a ping of its own on a hop that has been quiet for
//! [`ProxyConfig::keepalive`] (the answering pong is cut out, the peers'
//! own pings and pongs pass untouched), a close of its own when one side
//! vanishes (1014 to the client when the backend goes, 1001 to the backend
//! when the client does), and `/metrics`.
//!
//! An [`Observer`] sees requests, upgrades, frames (with an unmasked
//! preview of the first bytes, if it asks) and closes: the inspector is
//! built on it. With the default [`NoopObserver`] the relay makes no call
//! per frame.
//!
//! ```no_run
//! use std::time::Duration;
//! use sockeye_proxy::{Proxy, ProxyConfig};
//!
//! # async fn demo() -> Result<(), sockeye_proxy::Error> {
//! let config = ProxyConfig::default()
//!     .route("/chat", "ws://127.0.0.1:9001")?
//!     .route("/feed", "ws://127.0.0.1:9002/live")?
//!     .keepalive(Some(Duration::from_secs(30)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! Proxy::new(config)?
//!     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```
//!
//! The proxy also serves streams it did not accept itself and backends it
//! does not dial itself, which is how `sockeye-tunnel` is built on it:
//! [`Proxy::serve_connection`] serves HTTP/1.1 on any byte stream (a
//! multiplexed stream from a tunnel), [`Proxy::forward`] and
//! [`Proxy::forward_to`] answer one request inside a caller's own hyper
//! service, and a [`Connector`] ([`ProxyConfig::connector`]) opens the
//! backend's byte stream in place of TCP.
//!
//! See `docs/PROXY.md` for the guide: routing rules, the client-chosen
//! backend mode, limits, keepalive and what the observer sees.

mod config;
mod dial;
mod error;
mod forward;
mod headers;
mod limits;
mod metrics;
mod observer;
mod relay;
mod route;
mod server;
mod tap;

pub use config::{ClientChoice, ProxyConfig};
pub use dial::{BackendIo, ConnectFuture, Connector};
pub use error::Error;
pub use metrics::{ProxyMetrics, Refusal};
pub use observer::{
    BodySide, CloseInfo, ConnId, Direction, FrameInfo, Initiator, NoopObserver, Observer,
    RequestMeta, ResponseMeta, ResponseSource,
};
pub use route::{AllowedBackend, Backend, Route};
pub use server::{serve, BoxError, Proxy, ProxyBody};

//! `sockeye`: WebSocket connections over tokio.
//!
//! ```text
//!            accept / connect (opening handshake)
//!                        │
//!   socket ──read──► Connection (sockeye-proto) ──► recv() ──► Message
//!   socket ◄─write── coalesced transmit queue ◄── send()/feed() ◄── Message
//! ```
//!
//! [`WebSocket`] drives a sans-I/O [`sockeye_proto::Connection`] over any
//! `AsyncRead + AsyncWrite`: it reads into one buffer (payloads come out as
//! shared [`bytes::Bytes`] without a copy), writes many small messages in
//! one syscall, answers pings and close frames, and enforces the close
//! timeout. [`connect`] opens `ws://` and `wss://` (rustls) URLs; [`accept`]
//! answers an upgrade on a raw stream.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sockeye::Error> {
//! let (mut ws, _response) = sockeye::connect("ws://127.0.0.1:3000/echo").await?;
//! ws.send("hello").await?;
//! if let Some(Ok(sockeye::Message::Text(text))) = ws.recv().await {
//!     assert_eq!(text, "hello");
//! }
//! ws.close(None).await?;
//! # Ok(()) }
//! ```

mod accept;
mod config;
mod connect;
mod error;
mod inner;
mod proxy_connect;
mod reconnect;
mod spare;
mod split;
mod stream;
pub mod tls;
mod tls_insecure;
mod websocket;

pub use accept::{accept, accept_with, text_response, Refusal};
pub use config::Config;
pub use connect::{client_handshake, connect, connect_with};
pub use error::Error;
pub use proxy_connect::{ProxyAuth, ProxyConfig, ProxyError, ProxyKind};
pub use reconnect::{
    Backoff, DropReason, Heartbeat, Jitter, OverflowPolicy, QueueError, QueueLimit,
    ReconnectConfig, ReconnectDriver, ReconnectEvent, ReconnectEvents, ReconnectingClient,
    SendOptions,
};
pub use split::{ReadHalf, WriteHalf};
pub use stream::MaybeTlsStream;
pub use websocket::WebSocket;

/// The protocol core, for what this crate does not re-export.
pub use sockeye_proto as proto;
pub use sockeye_proto::extension::DeflateConfig;
pub use sockeye_proto::{CloseCode, CloseFrame, Message, PreparedMessage, Role, Utf8Bytes};

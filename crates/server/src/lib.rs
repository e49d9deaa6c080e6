//! `sockeye-server`: serving WebSocket endpoints.
//!
//! ```text
//!   TcpListener ──accept──► one task per connection ──► opening handshake ──► endpoint handler
//! ```
//!
//! Today this crate holds the echo endpoint behind `sockeye serve`; the
//! server framework (routes, pub/sub, policies) grows here.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = sockeye_server::EchoServer::new(sockeye_server::ServeConfig::default());
//! server.run(listener, std::future::pending()).await;
//! # Ok(()) }
//! ```

mod echo;

pub use echo::{EchoServer, ServeConfig};

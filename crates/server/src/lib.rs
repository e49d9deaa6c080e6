//! `sockeye-server`: HTTP routes and WebSocket endpoints on one port, with
//! pub/sub, policies and metrics.
//!
//! ```text
//!  TcpListener ─► hyper (HTTP/1.1) ─► axum Router ─┬─► HTTP routes
//!                                                   └─► Endpoint: policies ─► 101 ─► connection task
//!                                                                                  │  handlers (open/message/close/error)
//!  Hub (topics, rooms, history) ◄─ Conn::publish ───────────────────────────────────┘
//!   └─► Broker (in-process, or Redis across processes) ─► every subscriber's queue (shared frame bytes)
//! ```
//!
//! ```no_run
//! use sockeye_server::{App, Endpoint, EndpointConfig};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let chat = Endpoint::new(EndpointConfig::default())
//!     .on_open(|conn| async move {
//!         let _ = conn.join("lobby").await;
//!     })
//!     .on_message(|conn, message| async move {
//!         if let sockeye::Message::Text(text) = message {
//!             let _ = conn.publish("lobby", text.into_bytes(), true).await;
//!         }
//!     });
//! let app = App::new().endpoint("/chat", chat).metrics_route("/metrics");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! app.serve(listener, std::future::pending()).await
//! # }
//! ```

mod app;
mod conn;
mod demo;
mod echo;
mod endpoint;
pub mod hub;
mod metrics;
pub mod protocol;
mod ratelimit;
pub mod tls;

pub use app::App;
pub use conn::{Conn, SendStatus, SubscribeError};
pub use demo::{demo_app, serve_demo, DemoConfig, DemoError};
pub use echo::{EchoServer, ServeConfig};
pub use endpoint::{
    AuthRejection, BackpressurePolicy, Endpoint, EndpointConfig, EndpointHandle, Heartbeat,
    RateLimit, RateLimitAction, UpgradeRequest,
};
pub use hub::{Hub, HubConfig, Position};
pub use metrics::{process_rss_bytes, EndpointMetrics, Metrics, RefusalReason, Snapshot};

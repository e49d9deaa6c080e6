//! `sockeye-tunnel`: expose a local HTTP/WebSocket server at a public
//! subdomain through `sockeye tunnel-server`, with a live inspector.
//!
//! ```text
//!   public client ──https/wss──► TunnelServer ── Host: ws-app.tunnel.example.com
//!                                   │ gate (404 unknown, 502 agent gone, 401 auth)
//!                                   │ sockeye-proxy: headers intact, frames relayed, keepalive
//!                                   ▼ one yamux stream per connection
//!          ══════ one WebSocket (binary messages carry yamux) ══════
//!                                   ▼
//!   Agent (`sockeye http 8080`) ── sockeye-proxy per tunnel ──► http://127.0.0.1:8080
//!                                   └─ Observer ──► Inspector (127.0.0.1:4040)
//! ```
//!
//! The agent keeps one WebSocket to the server (so it passes HTTP proxies
//! and load balancers), says hello with its token and the subdomains it
//! wants, and then serves every stream the server opens with a
//! [`sockeye_proxy::Proxy`] whose backend is the local server. The server is
//! a proxy too, whose [`sockeye_proxy::Connector`] opens a stream to the
//! right agent. Both sides relay WebSocket frames without reassembly and
//! ping their own hops; the handshake (subprotocols, permessage-deflate) is
//! negotiated between the public client and the local server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sockeye_tunnel::Error> {
//! use sockeye_tunnel::{Agent, AgentConfig, TunnelConfig};
//!
//! let config = AgentConfig::new("https://tunnel.example.com")
//!     .token("s3cret")
//!     .tunnel(TunnelConfig::new("8080").subdomain("ws-app"));
//! let agent = Agent::new(config)?;
//! let mut handle = agent.handle();
//! tokio::spawn(agent.run(std::future::pending()));
//! for tunnel in handle.connected().await? {
//!     println!("{} is live", tunnel.url);
//! }
//! # Ok(()) }
//! ```
//!
//! See `docs/TUNNEL.md` for the guide.

mod agent;
mod config;
mod error;
pub mod inspect;
mod link;
mod mux;
pub mod protocol;
mod server;

pub use agent::{Agent, AgentConfig, AgentHandle, AgentStatus, TunnelConfig};
pub use config::FileConfig;
pub use error::Error;
pub use server::{ServerConfig, TunnelServer, MAX_STREAMS_PER_AGENT};

//! The inspector: what passed through a tunnel, live, at http://127.0.0.1:4040.
//!
//! ```text
//!   agent's proxy ──Observer (one per tunnel)──► Store (bounded) ──► /api (JSON), /api/live (WebSocket) ──► page
//! ```

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

/// Inspector settings.
#[derive(Debug, Clone)]
pub struct InspectorConfig {
    /// HTTP exchanges kept (oldest dropped first).
    pub max_requests: usize,
    /// WebSocket connections kept, open or closed.
    pub max_connections: usize,
    /// Bytes of each request and response body kept.
    pub body_cap: usize,
    /// Messages kept per connection when capture is on.
    pub frames_per_connection: usize,
    /// Bytes of each captured message kept as a preview.
    pub preview_bytes: usize,
}

impl Default for InspectorConfig {
    fn default() -> Self {
        InspectorConfig {
            max_requests: 500,
            max_connections: 200,
            body_cap: 64 * 1024,
            frames_per_connection: 200,
            preview_bytes: 1024,
        }
    }
}

/// One tunnel, as the inspector shows it.
#[derive(Debug, Clone)]
pub struct TunnelInfo {
    /// Its name (the subdomain).
    pub name: String,
    /// Where the public reaches it, e.g. `https://ws-app.tunnel.example.com`.
    pub public_url: String,
    /// The local server, e.g. `http://127.0.0.1:8080`: replays go here.
    pub local: String,
    /// `--host-header`: the Host replays carry, if rewritten.
    pub host_header: Option<String>,
    /// `--capture-frames`: keep a timeline of messages per WebSocket.
    pub capture_frames: bool,
}

/// The state of a tunnel's link to the server, for the page's status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// Connecting for the first time.
    Connecting,
    /// Up.
    Connected,
    /// Lost; trying again.
    Reconnecting {
        /// Why the link was lost, or why the last attempt failed.
        reason: String,
    },
}

/// The inspector: cheap to clone, shared by every tunnel of one agent.
#[derive(Debug, Clone)]
pub struct Inspector {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: InspectorConfig,
}

impl Inspector {
    /// An inspector with `config`, recording nothing until a tunnel is added.
    pub fn new(config: InspectorConfig) -> Inspector {
        Inspector {
            shared: Arc::new(Shared { config }),
        }
    }

    /// Adds a tunnel; give what this returns to that tunnel's proxy as its
    /// observer.
    pub fn tunnel(&self, info: TunnelInfo) -> Arc<dyn sockeye_proxy::Observer> {
        let _ = (info, &self.shared.config);
        Arc::new(sockeye_proxy::NoopObserver)
    }

    /// Updates the link status of the tunnel named `name`.
    pub fn set_status(&self, name: &str, status: LinkStatus) {
        let _ = (name, status);
    }

    /// Serves the page, `/api` and `/api/live` on `listener` until
    /// `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = axum::Router::new();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

//! The inspector: what passed through a tunnel, live, at http://127.0.0.1:4040.
//!
//! ```text
//!   agent's proxy ──Observer (one per tunnel)──► Store (bounded lists) ──► /api (JSON)
//!                                                     └──► events ──► /api/live (WebSocket) ──► the page
//! ```
//!
//! Every HTTP exchange (method, path, status, duration, sizes, headers,
//! bodies up to [`InspectorConfig::body_cap`]) and every WebSocket (its
//! upgrade, message counts and bytes each way, how it closed) is recorded.
//! With [`TunnelInfo::capture_frames`] the last messages of each WebSocket
//! are kept too (see `capture.rs`). The page is `web/inspector/`; the API
//! is described in docs/TUNNEL.md.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use sockeye_server::{App, Endpoint, EndpointConfig, EndpointHandle};
use tokio::net::TcpListener;

mod api;
mod capture;
mod observe;
mod replay;
mod store;

use observe::TunnelObserver;
use store::{Store, TunnelRecord};

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
            frames_per_connection: 100,
            preview_bytes: 4096,
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
pub(crate) struct Shared {
    pub(crate) config: InspectorConfig,
    store: Mutex<Store>,
    /// The page's live endpoint, once serving.
    live: OnceLock<EndpointHandle>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a page is open to receive events (when none is, no event
    /// need be built).
    pub(crate) fn listening(&self) -> bool {
        self.live
            .get()
            .is_some_and(|live| live.connection_count() > 0)
    }

    /// Sends `event` to every open page.
    pub(crate) fn emit(&self, event: &Value) {
        if let Some(live) = self.live.get().filter(|_| self.listening()) {
            live.broadcast(sockeye::PreparedMessage::text(event.to_string()));
        }
    }

    /// Sends the counts of every WebSocket that changed, and the messages
    /// captured since the last time.
    pub(crate) fn flush_live(&self) {
        if !self.listening() {
            return;
        }
        let events: Vec<Value> = {
            let mut store = self.lock();
            store
                .websockets
                .iter_mut()
                .filter(|w| w.dirty)
                .map(|record| {
                    record.dirty = false;
                    let messages: Vec<Value> = record
                        .capture
                        .iter()
                        .flat_map(|c| c.messages.iter())
                        .filter(|m| m.seq >= record.live_from)
                        .map(|m| m.to_json())
                        .collect();
                    if let Some(capture) = &record.capture {
                        record.live_from = capture.next_seq();
                    }
                    json!({
                        "type": "websocket",
                        "websocket": record.summary(),
                        "messages": messages,
                    })
                })
                .collect()
        };
        for event in &events {
            self.emit(event);
        }
    }
}

impl Inspector {
    /// An inspector with `config`, recording nothing until a tunnel is added.
    pub fn new(config: InspectorConfig) -> Inspector {
        Inspector {
            shared: Arc::new(Shared {
                config,
                store: Mutex::new(Store::default()),
                live: OnceLock::new(),
            }),
        }
    }

    /// Adds a tunnel; give what this returns to that tunnel's proxy as its
    /// observer. Adding a tunnel of the same name again (the agent
    /// reconnected) keeps its history.
    pub fn tunnel(&self, info: TunnelInfo) -> Arc<dyn sockeye_proxy::Observer> {
        let mut store = self.shared.lock();
        let name = info.name.clone();
        let capture = info.capture_frames;
        let tunnel = match store.tunnels.iter().position(|t| t.info.name == name) {
            Some(at) => {
                store.tunnels[at].info = info;
                at
            }
            None => {
                store.tunnels.push(TunnelRecord {
                    info,
                    status: LinkStatus::Connecting,
                });
                store.tunnels.len() - 1
            }
        };
        Arc::new(TunnelObserver {
            shared: Arc::clone(&self.shared),
            tunnel,
            name,
            capture,
        })
    }

    /// Updates the link status of the tunnel named `name`.
    pub fn set_status(&self, name: &str, status: LinkStatus) {
        let event = {
            let mut store = self.shared.lock();
            let Some(at) = store.tunnels.iter().position(|t| t.info.name == name) else {
                return;
            };
            store.tunnels[at].status = status;
            let record = store.tunnels[at].clone();
            json!({ "type": "tunnel", "tunnel": record.to_json(&store) })
        };
        self.shared.emit(&event);
    }

    /// The inspector's routes: the page at `/`, the JSON API under `/api`,
    /// live events at `/api/live`.
    pub fn app(&self) -> App {
        let mut app = App::new().merge(api::router(Arc::clone(&self.shared)));
        let live = Endpoint::new(EndpointConfig {
            // The page only listens.
            max_payload_length: 4096,
            ..EndpointConfig::default()
        });
        let handle = app.add_endpoint("/api/live", live);
        let _ = self.shared.live.set(handle);
        app
    }

    /// Serves [`Inspector::app`] on `listener` until `shutdown` completes;
    /// pushes the counts of busy WebSockets to the page five times a second.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.app();
        let shared = Arc::clone(&self.shared);
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                shared.flush_live();
            }
        });
        let served = app.serve(listener, shutdown).await;
        ticker.abort();
        served
    }
}

//! What the inspector remembers: HTTP exchanges and WebSocket connections,
//! each list bounded, the oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::HeaderMap;
use serde::Serialize;
use serde_json::{json, Value};
use sockeye_proxy::{ConnId, Direction};

use super::capture::Capture;
use super::{InspectorConfig, LinkStatus, TunnelInfo};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Headers as `[name, value]` pairs, in order (values that are not text
/// are shown lossily).
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A body as far as it was kept.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyRecord {
    /// The first bytes (at most the configured cap).
    pub(crate) kept: Vec<u8>,
    /// All bytes that passed.
    pub(crate) size: u64,
    /// It ended (normally: `complete`, or broken off).
    pub(crate) ended: bool,
    pub(crate) complete: bool,
}

impl BodyRecord {
    /// Whether `kept` is the whole body.
    pub(crate) fn whole(&self) -> bool {
        self.ended && self.complete && self.kept.len() as u64 == self.size
    }

    fn to_json(&self) -> Value {
        json!({
            "size": self.size,
            "shown": self.kept.len(),
            "ended": self.ended,
            "complete": self.complete,
            "whole": self.whole(),
            "content": content_json(&self.kept),
        })
    }
}

/// `{"text": ...}` for UTF-8, `{"base64": ...}` otherwise.
pub(crate) fn content_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "text": text }),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// One HTTP request and its response.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    pub(crate) id: u64,
    pub(crate) tunnel: String,
    pub(crate) started_ms: f64,
    pub(crate) remote: String,
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) request_headers: Vec<(String, String)>,
    pub(crate) request_body: BodyRecord,
    pub(crate) status: Option<u16>,
    pub(crate) response_headers: Vec<(String, String)>,
    pub(crate) response_body: BodyRecord,
    /// Who answered: `backend` (the local server) or `tunnel`.
    pub(crate) source: Option<&'static str>,
    pub(crate) duration_ms: Option<f64>,
    /// A WebSocket upgrade request; `websocket` is its connection's id once
    /// the local server accepted.
    pub(crate) upgrade: bool,
    pub(crate) websocket: Option<u64>,
    pub(crate) error: Option<String>,
    /// Made by the replay button from this exchange.
    pub(crate) replay_of: Option<u64>,
}

impl Exchange {
    pub(crate) fn summary(&self) -> Value {
        json!({
            "id": self.id,
            "tunnel": self.tunnel,
            "started_ms": self.started_ms,
            "method": self.method,
            "uri": self.uri,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "request_size": self.request_body.size,
            "response_size": self.response_body.size,
            "upgrade": self.upgrade,
            "websocket": self.websocket,
            "error": self.error,
            "replay_of": self.replay_of,
        })
    }

    pub(crate) fn detail(&self) -> Value {
        let mut value = self.summary();
        let extra = json!({
            "remote": self.remote,
            "source": self.source,
            "request_headers": self.request_headers,
            "response_headers": self.response_headers,
            "request_body": self.request_body.to_json(),
            "response_body": self.response_body.to_json(),
        });
        if let (Value::Object(map), Value::Object(extra)) = (&mut value, extra) {
            map.extend(extra);
        }
        value
    }
}

/// Counts for one direction of a WebSocket.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct DirectionStats {
    pub(crate) messages: u64,
    pub(crate) frames: u64,
    /// Payload bytes on the wire (compressed, if compressed).
    pub(crate) bytes: u64,
    pub(crate) last_ms: Option<f64>,
}

/// How a WebSocket ended.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ended {
    pub(crate) code: u16,
    pub(crate) reason: String,
    /// `client`, `backend` or `proxy`.
    pub(crate) by: &'static str,
}

/// One WebSocket connection through a tunnel.
#[derive(Debug)]
pub(crate) struct WsRecord {
    pub(crate) id: u64,
    pub(crate) tunnel: String,
    pub(crate) request: u64,
    pub(crate) uri: String,
    pub(crate) opened_ms: f64,
    pub(crate) closed_ms: Option<f64>,
    pub(crate) protocol: Option<String>,
    pub(crate) extensions: Option<String>,
    pub(crate) request_headers: Vec<(String, String)>,
    pub(crate) stats: [DirectionStats; 2],
    pub(crate) ended: Option<Ended>,
    pub(crate) capture: Option<Capture>,
    /// Changed since the last live update.
    pub(crate) dirty: bool,
    /// The first captured message not yet sent live.
    pub(crate) live_from: u64,
}

pub(crate) fn index(direction: Direction) -> usize {
    match direction {
        Direction::ClientToBackend => 0,
        Direction::BackendToClient => 1,
    }
}

impl WsRecord {
    pub(crate) fn summary(&self) -> Value {
        let duration = self.closed_ms.unwrap_or_else(now_ms) - self.opened_ms;
        json!({
            "id": self.id,
            "tunnel": self.tunnel,
            "request": self.request,
            "uri": self.uri,
            "opened_ms": self.opened_ms,
            "closed_ms": self.closed_ms,
            "duration_ms": duration,
            "open": self.closed_ms.is_none(),
            "protocol": self.protocol,
            "extensions": self.extensions,
            "client_to_backend": self.stats[0],
            "backend_to_client": self.stats[1],
            "close": self.ended,
            "capture": self.capture.is_some(),
        })
    }

    pub(crate) fn detail(&self) -> Value {
        let mut value = self.summary();
        if let Value::Object(map) = &mut value {
            map.insert("request_headers".into(), json!(self.request_headers));
            let messages: Vec<Value> = self
                .capture
                .iter()
                .flat_map(|c| c.messages.iter().map(|m| m.to_json()))
                .collect();
            map.insert("messages".into(), Value::Array(messages));
            if let Some(capture) = &self.capture {
                map.insert("dropped_messages".into(), json!(capture.dropped));
            }
        }
        value
    }
}

/// A tunnel and its link.
#[derive(Debug, Clone)]
pub(crate) struct TunnelRecord {
    pub(crate) info: TunnelInfo,
    pub(crate) status: LinkStatus,
}

impl TunnelRecord {
    pub(crate) fn to_json(&self, store: &Store) -> Value {
        let (status, reason) = match &self.status {
            LinkStatus::Connecting => ("connecting", None),
            LinkStatus::Connected => ("connected", None),
            LinkStatus::Reconnecting { reason } => ("reconnecting", Some(reason.as_str())),
        };
        let name = &self.info.name;
        json!({
            "name": name,
            "public_url": self.info.public_url,
            "local": self.info.local,
            "host_header": self.info.host_header,
            "capture_frames": self.info.capture_frames,
            "status": status,
            "reason": reason,
            "requests": store.requests.iter().filter(|r| &r.tunnel == name).count(),
            "open_websockets": store
                .websockets
                .iter()
                .filter(|w| &w.tunnel == name && w.closed_ms.is_none())
                .count(),
        })
    }
}

/// Everything recorded, under one lock.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) next_id: u64,
    pub(crate) tunnels: Vec<TunnelRecord>,
    pub(crate) requests: VecDeque<Exchange>,
    pub(crate) websockets: VecDeque<WsRecord>,
    /// (tunnel index, the proxy's number) to record ids.
    pub(crate) request_ids: HashMap<(usize, ConnId), u64>,
    pub(crate) websocket_ids: HashMap<(usize, ConnId), u64>,
}

impl Store {
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Records `exchange`, dropping the oldest beyond the limit.
    pub(crate) fn push_request(&mut self, exchange: Exchange, config: &InspectorConfig) {
        self.requests.push_back(exchange);
        while self.requests.len() > config.max_requests.max(1) {
            if let Some(old) = self.requests.pop_front() {
                self.request_ids.retain(|_, id| *id != old.id);
            }
        }
    }

    /// Records `ws`, dropping the oldest closed connection beyond the limit
    /// (or the oldest open one if none is closed).
    pub(crate) fn push_websocket(&mut self, ws: WsRecord, config: &InspectorConfig) {
        self.websockets.push_back(ws);
        while self.websockets.len() > config.max_connections.max(1) {
            let at = self
                .websockets
                .iter()
                .position(|w| w.closed_ms.is_some())
                .unwrap_or(0);
            if let Some(old) = self.websockets.remove(at) {
                self.websocket_ids.retain(|_, id| *id != old.id);
            }
        }
    }

    pub(crate) fn request(&self, id: u64) -> Option<&Exchange> {
        let at = self.requests.binary_search_by_key(&id, |r| r.id).ok()?;
        self.requests.get(at)
    }

    pub(crate) fn request_mut(&mut self, id: u64) -> Option<&mut Exchange> {
        let at = self.requests.binary_search_by_key(&id, |r| r.id).ok()?;
        self.requests.get_mut(at)
    }

    pub(crate) fn request_for(&mut self, tunnel: usize, conn: ConnId) -> Option<&mut Exchange> {
        let id = *self.request_ids.get(&(tunnel, conn))?;
        self.request_mut(id)
    }

    pub(crate) fn websocket(&self, id: u64) -> Option<&WsRecord> {
        let at = self.websockets.binary_search_by_key(&id, |w| w.id).ok()?;
        self.websockets.get(at)
    }

    pub(crate) fn websocket_for(&mut self, tunnel: usize, conn: ConnId) -> Option<&mut WsRecord> {
        let id = *self.websocket_ids.get(&(tunnel, conn))?;
        let at = self.websockets.binary_search_by_key(&id, |w| w.id).ok()?;
        self.websockets.get_mut(at)
    }
}

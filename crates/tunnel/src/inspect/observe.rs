//! [`TunnelObserver`]: the proxy's [`Observer`] for one tunnel, writing
//! into the inspector's store and telling the page.

use std::sync::Arc;

use serde_json::json;
use sockeye_proxy::{
    BodySide, CloseInfo, ConnId, Direction, FrameInfo, Initiator, Observer, RequestMeta,
    ResponseMeta, ResponseSource,
};

use super::capture::{Capture, Deflate, PREVIEW_FRAME_BYTES};
use super::store::{header_pairs, index, now_ms, Ended, Exchange, WsRecord};
use super::Shared;

/// The observer of tunnel number `tunnel`.
pub(crate) struct TunnelObserver {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tunnel: usize,
    pub(crate) name: String,
    pub(crate) capture: bool,
}

impl TunnelObserver {
    fn request_event(&self, id: ConnId) {
        if !self.shared.listening() {
            return;
        }
        let store = self.shared.lock();
        let Some(id) = store.request_ids.get(&(self.tunnel, id)) else {
            return;
        };
        if let Some(exchange) = store.request(*id) {
            let event = json!({ "type": "request", "request": exchange.summary() });
            drop(store);
            self.shared.emit(&event);
        }
    }
}

impl Observer for TunnelObserver {
    fn on_request(&self, request: &RequestMeta<'_>) {
        let mut store = self.shared.lock();
        let id = store.next_id();
        let exchange = Exchange {
            id,
            tunnel: self.name.clone(),
            started_ms: now_ms(),
            remote: request.remote.to_string(),
            method: request.method.to_string(),
            uri: request
                .uri
                .path_and_query()
                .map_or_else(|| request.uri.to_string(), |p| p.to_string()),
            request_headers: header_pairs(request.headers),
            request_body: Default::default(),
            status: None,
            response_headers: Vec::new(),
            response_body: Default::default(),
            source: None,
            duration_ms: None,
            upgrade: wants_websocket(request.headers),
            websocket: None,
            error: None,
            replay_of: None,
        };
        store.request_ids.insert((self.tunnel, request.id), id);
        store.push_request(exchange, &self.shared.config);
        drop(store);
        self.request_event(request.id);
    }

    fn on_response(&self, request: &RequestMeta<'_>, response: &ResponseMeta<'_>) {
        {
            let mut store = self.shared.lock();
            let Some(exchange) = store.request_for(self.tunnel, request.id) else {
                return;
            };
            exchange.status = Some(response.status.as_u16());
            exchange.response_headers = header_pairs(response.headers);
            exchange.duration_ms = Some(response.elapsed.as_secs_f64() * 1000.0);
            exchange.source = Some(match response.source {
                ResponseSource::Backend => "backend",
                ResponseSource::Proxy => "tunnel",
            });
        }
        self.request_event(request.id);
    }

    fn on_upgrade(&self, conn: ConnId, request: &RequestMeta<'_>, response: &ResponseMeta<'_>) {
        let config = &self.shared.config;
        let mut store = self.shared.lock();
        let Some(&request_id) = store.request_ids.get(&(self.tunnel, request.id)) else {
            return;
        };
        let id = store.next_id();
        let text = |name: &str| {
            response
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let extensions = text("sec-websocket-extensions");
        let capture = self.capture.then(|| {
            Capture::new(
                config.frames_per_connection,
                config.preview_bytes,
                Deflate::from_header(extensions.as_deref()),
            )
        });
        let record = WsRecord {
            id,
            tunnel: self.name.clone(),
            request: request_id,
            uri: request
                .uri
                .path_and_query()
                .map_or_else(|| request.uri.to_string(), |p| p.to_string()),
            opened_ms: now_ms(),
            closed_ms: None,
            protocol: text("sec-websocket-protocol"),
            extensions,
            request_headers: header_pairs(request.headers),
            stats: Default::default(),
            ended: None,
            capture,
            dirty: false,
            live_from: 1,
        };
        let event = self
            .shared
            .listening()
            .then(|| json!({ "type": "websocket", "websocket": record.summary() }));
        store.websocket_ids.insert((self.tunnel, conn), id);
        store.push_websocket(record, config);
        if let Some(exchange) = store.request_mut(request_id) {
            exchange.websocket = Some(id);
        }
        drop(store);
        if let Some(event) = event {
            self.shared.emit(&event);
        }
        self.request_event(request.id);
    }

    fn wants_bodies(&self) -> usize {
        self.shared.config.body_cap
    }

    fn on_body(&self, id: ConnId, side: BodySide, chunk: &[u8]) {
        let mut store = self.shared.lock();
        if let Some(exchange) = store.request_for(self.tunnel, id) {
            let body = match side {
                BodySide::Request => &mut exchange.request_body,
                BodySide::Response => &mut exchange.response_body,
            };
            body.kept.extend_from_slice(chunk);
        }
    }

    fn on_body_end(&self, id: ConnId, side: BodySide, total: u64, complete: bool) {
        {
            let mut store = self.shared.lock();
            let Some(exchange) = store.request_for(self.tunnel, id) else {
                return;
            };
            let body = match side {
                BodySide::Request => &mut exchange.request_body,
                BodySide::Response => &mut exchange.response_body,
            };
            body.size = total;
            body.ended = true;
            body.complete = complete;
        }
        self.request_event(id);
    }

    fn wants_frames(&self) -> bool {
        // Counts and bytes per direction are always shown; payloads only
        // with capture.
        true
    }

    fn wants_previews(&self) -> usize {
        if self.capture {
            PREVIEW_FRAME_BYTES
        } else {
            0
        }
    }

    fn on_frame(&self, conn: ConnId, direction: Direction, frame: &FrameInfo, preview: &[u8]) {
        let mut store = self.shared.lock();
        let Some(record) = store.websocket_for(self.tunnel, conn) else {
            return;
        };
        let stats = &mut record.stats[index(direction)];
        stats.frames += 1;
        stats.bytes += frame.payload_len;
        if frame.fin && !frame.opcode.is_control() {
            stats.messages += 1;
        }
        stats.last_ms = Some(now_ms());
        record.dirty = true;
        if let Some(capture) = &mut record.capture {
            capture.frame(direction, frame, preview);
        }
    }

    fn on_close(&self, conn: ConnId, close: &CloseInfo) {
        let event = {
            let mut store = self.shared.lock();
            let Some(record) = store.websocket_for(self.tunnel, conn) else {
                return;
            };
            record.closed_ms = Some(now_ms());
            record.ended = Some(Ended {
                code: close.code.into(),
                reason: close.reason.clone(),
                by: match close.initiator {
                    Initiator::Client => "client",
                    Initiator::Backend => "backend",
                    Initiator::Proxy => "tunnel",
                },
            });
            record.dirty = true;
            self.shared
                .listening()
                .then(|| json!({ "type": "websocket", "websocket": record.summary() }))
        };
        if let Some(event) = event {
            self.shared.emit(&event);
        }
        // Messages captured since the last tick go out now, not later.
        self.shared.flush_live();
    }

    fn on_error(&self, conn: ConnId, error: &sockeye_proxy::Error) {
        {
            let mut store = self.shared.lock();
            if let Some(exchange) = store.request_for(self.tunnel, conn) {
                exchange.error = Some(error.to_string());
            }
        }
        self.request_event(conn);
    }
}

/// `Upgrade: websocket` (any case, in a list).
fn wants_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
}

//! Prometheus metrics of the proxy, rendered at `/metrics`.
//!
//! ```text
//!   requests, refusals (cold) ──labelled families──┐
//!   relay (one add per read batch) ──counters──────┼─► Registry ──render()──► GET /metrics
//!   spliced connections ──gauge──────────────────┘
//! ```
//!
//! Every series sits in one `prometheus-client` registry under the
//! `sockeye_proxy_` prefix, like the server's. Labels come from fixed sets
//! (a direction, an initiator, a refusal reason, a status code), never from
//! what a client sends.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::observer::{Direction, Initiator};

/// The proxy's metrics: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct ProxyMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    connections_open: Gauge,
    connections: Counter,
    requests: Family<StatusLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    closes: Family<CloseLabels, Counter>,
    frames: [Counter; 2],
    bytes: [Counter; 2],
    keepalive_pings: Counter,
    backend_errors: Counter,
    buffer_high_water: Gauge,
    buffers: Gauge,
    resident_memory: Option<Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    kind: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    code: u16,
    initiator: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// Why a request was refused by the proxy itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached (503).
    TooManyConnections,
    /// `max_per_ip` reached (429).
    TooManyFromIp,
    /// No route matches the path (404).
    NoRoute,
    /// A client-chosen backend outside the allow-list, or internal (403).
    Forbidden,
    /// A malformed upgrade request (400, 426, ...).
    BadUpgrade,
    /// The backend could not be reached or answered badly (502, 504).
    BadGateway,
}

impl Refusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "max_connections",
            Refusal::TooManyFromIp => "max_per_ip",
            Refusal::NoRoute => "no_route",
            Refusal::Forbidden => "forbidden",
            Refusal::BadUpgrade => "bad_upgrade",
            Refusal::BadGateway => "bad_gateway",
        }
    }
}

impl ProxyMetrics {
    /// The `Content-Type` of what [`render`](Self::render) returns.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// A registry with every `sockeye_proxy_*` series.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sockeye_proxy");
        let connections_open = Gauge::default();
        let connections = Counter::default();
        let requests = Family::<StatusLabels, Counter>::default();
        let refused = Family::<ReasonLabels, Counter>::default();
        let closes = Family::<CloseLabels, Counter>::default();
        let frames_family = Family::<DirectionLabels, Counter>::default();
        let bytes_family = Family::<DirectionLabels, Counter>::default();
        let keepalive_pings = Counter::default();
        let backend_errors = Counter::default();
        let buffer_high_water = Gauge::default();
        let buffers = Gauge::default();
        registry.register(
            "connections_open",
            "WebSocket connections being relayed now",
            connections_open.clone(),
        );
        registry.register(
            "connections",
            "WebSocket connections spliced",
            connections.clone(),
        );
        registry.register(
            "requests",
            "Responses sent to clients, by kind (http, upgrade) and status",
            requests.clone(),
        );
        registry.register(
            "refused",
            "Requests refused by the proxy itself, by reason",
            refused.clone(),
        );
        registry.register(
            "closes",
            "Relayed connections ended, by close code and initiator",
            closes.clone(),
        );
        registry.register(
            "frames",
            "Frames relayed, by direction",
            frames_family.clone(),
        );
        registry.register(
            "bytes",
            "Bytes relayed (headers and payloads), by direction",
            bytes_family.clone(),
        );
        registry.register(
            "keepalive_pings",
            "Pings the proxy sent on idle hops",
            keepalive_pings.clone(),
        );
        registry.register(
            "backend_errors",
            "Backends unreachable or failing, before or after the upgrade",
            backend_errors.clone(),
        );
        registry.register(
            "relay_buffer_high_water_bytes",
            "The most bytes one relay direction has held at once",
            buffer_high_water.clone(),
        );
        registry.register(
            "relay_buffer_bytes",
            "Bytes of relay read buffers allocated now (quiet connections hold none)",
            buffers.clone(),
        );
        let resident_memory = process_rss_bytes().map(|_| {
            let gauge = Gauge::default();
            registry.register(
                "process_resident_memory_bytes",
                "Resident set size of this process, in bytes",
                gauge.clone(),
            );
            gauge
        });
        let direction = |d: Direction| DirectionLabels {
            direction: d.as_str(),
        };
        let both = [Direction::ClientToBackend, Direction::BackendToClient];
        ProxyMetrics {
            inner: Arc::new(Inner {
                registry,
                connections_open,
                connections,
                requests,
                refused,
                closes,
                frames: both.map(|d| frames_family.get_or_create_owned(&direction(d))),
                bytes: both.map(|d| bytes_family.get_or_create_owned(&direction(d))),
                keepalive_pings,
                backend_errors,
                buffer_high_water,
                buffers,
                resident_memory,
            }),
        }
    }

    /// Every series in the OpenMetrics text format.
    pub fn render(&self) -> String {
        if let (Some(gauge), Some(rss)) = (&self.inner.resident_memory, process_rss_bytes()) {
            gauge.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut text = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// WebSocket connections being relayed now.
    pub fn connections_open(&self) -> i64 {
        self.inner.connections_open.get()
    }

    /// The most bytes one relay direction has held at once.
    pub fn relay_buffer_high_water(&self) -> i64 {
        self.inner.buffer_high_water.get()
    }

    /// Bytes of relay read buffers allocated now.
    pub fn relay_buffer_bytes(&self) -> i64 {
        self.inner.buffers.get()
    }

    /// Pings the proxy sent on idle hops.
    pub fn keepalive_pings(&self) -> u64 {
        self.inner.keepalive_pings.get()
    }

    /// Frames relayed in `direction`.
    pub fn frames(&self, direction: Direction) -> u64 {
        self.inner.frames[direction as usize].get()
    }

    pub(crate) fn response(&self, upgrade: bool, status: u16) {
        let kind = if upgrade { "upgrade" } else { "http" };
        self.inner
            .requests
            .get_or_create(&StatusLabels { kind, status })
            .inc();
    }

    pub(crate) fn refused(&self, reason: Refusal) {
        self.inner
            .refused
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub(crate) fn backend_error(&self) {
        self.inner.backend_errors.inc();
    }

    pub(crate) fn opened(&self) {
        self.inner.connections_open.inc();
        self.inner.connections.inc();
    }

    pub(crate) fn closed(&self, code: u16, initiator: Initiator) {
        self.inner.connections_open.dec();
        self.inner
            .closes
            .get_or_create(&CloseLabels {
                code,
                initiator: initiator.as_str(),
            })
            .inc();
    }

    #[inline]
    pub(crate) fn relayed(&self, direction: Direction, frames: u64, bytes: u64) {
        if frames > 0 {
            self.inner.frames[direction as usize].inc_by(frames);
        }
        self.inner.bytes[direction as usize].inc_by(bytes);
    }

    pub(crate) fn keepalive_ping(&self) {
        self.inner.keepalive_pings.inc();
    }

    pub(crate) fn buffers_allocated(&self, bytes: i64) {
        self.inner.buffers.inc_by(bytes);
    }

    #[inline]
    pub(crate) fn buffer_held(&self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let gauge: &AtomicI64 = self.inner.buffer_high_water.inner();
        if gauge.load(Ordering::Relaxed) < bytes {
            gauge.fetch_max(bytes, Ordering::Relaxed);
        }
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyMetrics")
            .field("connections_open", &self.connections_open())
            .finish_non_exhaustive()
    }
}

/// The resident set size from `/proc/self/statm`, where there is one.
fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

//! Prometheus metrics: connections, messages, bytes, refusals, publishes.
//!
//! ```text
//!   connection tasks ──EndpointMetrics (atomic adds)──┐
//!   hub ──────────────Metrics::publish───────────────►├─► Registry ──render()──► GET /metrics
//!   upgrade checks ───Metrics::upgrade_refused───────┘            └─snapshot()─► dashboard
//! ```
//!
//! Every series is registered in one `prometheus-client` [`Registry`] at
//! construction, under the `sockeye_` prefix. A connection task takes its
//! endpoint's [`EndpointMetrics`] once, when it starts; from then on each
//! message costs two relaxed atomic adds and nothing else. The `&str`
//! methods on [`Metrics`] are for cold paths and tests: they look the
//! endpoint up in a map under a read lock, without allocating.
//!
//! The `endpoint` label is the endpoint's configured name, never a raw request
//! path: each distinct value is a set of series kept for the life of the
//! process, so it must come from the server's configuration, not from clients.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The metrics of one server: cheap to clone (one `Arc`), shared by every
/// connection task, rendered by the `/metrics` route.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    families: Families,
    publishes: Counter,
    deliveries: Counter,
    /// `None` where the platform gives no resident set size (not Linux).
    resident_memory: Option<Gauge>,
    /// One entry per endpoint seen; a hot-path lookup borrows, never allocates.
    endpoints: RwLock<HashMap<Arc<str>, EndpointMetrics>>,
}

/// The labelled families; each is an `Arc` inside, shared with the registry.
#[derive(Clone, Default)]
struct Families {
    connections_open: Family<EndpointLabels, Gauge>,
    connections: Family<EndpointLabels, Counter>,
    closes: Family<CloseLabels, Counter>,
    upgrades_refused: Family<RefusalLabels, Counter>,
    messages_in: Family<EndpointLabels, Counter>,
    bytes_in: Family<EndpointLabels, Counter>,
    messages_out: Family<EndpointLabels, Counter>,
    bytes_out: Family<EndpointLabels, Counter>,
    backpressure_drops: Family<EndpointLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    endpoint: Arc<str>,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    endpoint: Arc<str>,
    reason: &'static str,
}

impl Metrics {
    /// The `Content-Type` of what [`render`](Self::render) returns.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// A registry with every `sockeye_*` series registered and no endpoint yet.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sockeye");
        let families = Families::default();
        let publishes = Counter::default();
        let deliveries = Counter::default();
        let f = &families;
        registry.register(
            "connections_open",
            "WebSocket connections open now",
            f.connections_open.clone(),
        );
        registry.register(
            "connections",
            "WebSocket connections accepted",
            f.connections.clone(),
        );
        registry.register(
            "closes",
            "WebSocket connections closed, by close code",
            f.closes.clone(),
        );
        registry.register(
            "upgrades_refused",
            "WebSocket upgrade requests refused, by reason",
            f.upgrades_refused.clone(),
        );
        registry.register(
            "messages_in",
            "Messages received from clients",
            f.messages_in.clone(),
        );
        registry.register(
            "bytes_in",
            "Payload bytes received from clients",
            f.bytes_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages sent to clients",
            f.messages_out.clone(),
        );
        registry.register(
            "bytes_out",
            "Payload bytes sent to clients",
            f.bytes_out.clone(),
        );
        registry.register(
            "publishes",
            "Messages published to topics",
            publishes.clone(),
        );
        registry.register(
            "deliveries",
            "Copies of published messages handed to subscribers",
            deliveries.clone(),
        );
        registry.register(
            "backpressure_drops",
            "Messages dropped because a client's outgoing queue was full",
            f.backpressure_drops.clone(),
        );
        // Registered only where it can be measured: a gauge stuck at 0 would lie.
        let resident_memory = process_rss_bytes().map(|_| {
            let gauge = Gauge::default();
            registry.register(
                "process_resident_memory_bytes",
                "Resident set size of this process, in bytes",
                gauge.clone(),
            );
            gauge
        });
        Self {
            inner: Arc::new(Inner {
                registry,
                families,
                publishes,
                deliveries,
                resident_memory,
                endpoints: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The handles of one endpoint's series, for a connection task to keep.
    ///
    /// The first call for a name creates its series (at zero, so they show up
    /// in `/metrics` before the first connection); later calls return the
    /// same handles.
    pub fn endpoint(&self, name: &str) -> EndpointMetrics {
        if let Some(found) = self.read_endpoints().get(name) {
            return found.clone();
        }
        let mut endpoints = self
            .inner
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = endpoints.get(name) {
            return found.clone(); // another thread created it meanwhile
        }
        let created = EndpointMetrics::create(&self.inner.families, Arc::from(name));
        endpoints.insert(created.inner.name.clone(), created.clone());
        created
    }

    /// A connection to `endpoint` was accepted (the upgrade succeeded).
    pub fn connection_opened(&self, endpoint: &str) {
        self.with_endpoint(endpoint, EndpointMetrics::connection_opened);
    }

    /// A connection to `endpoint` ended with close `code` (1006 when it
    /// ended without a close frame).
    pub fn connection_closed(&self, endpoint: &str, code: u16) {
        self.with_endpoint(endpoint, |e| e.connection_closed(code));
    }

    /// An upgrade request for `endpoint` was refused.
    pub fn upgrade_refused(&self, endpoint: &str, reason: RefusalReason) {
        self.with_endpoint(endpoint, |e| e.upgrade_refused(reason));
    }

    /// A message of `bytes` payload bytes arrived on `endpoint`.
    pub fn message_in(&self, endpoint: &str, bytes: usize) {
        self.with_endpoint(endpoint, |e| e.message_in(bytes));
    }

    /// A message of `bytes` payload bytes was sent on `endpoint`.
    pub fn message_out(&self, endpoint: &str, bytes: usize) {
        self.with_endpoint(endpoint, |e| e.message_out(bytes));
    }

    /// A message was published to a topic and handed to
    /// `topic_deliveries` subscribers.
    pub fn publish(&self, topic_deliveries: usize) {
        self.inner.publishes.inc();
        self.inner.deliveries.inc_by(as_u64(topic_deliveries));
    }

    /// Counts `publications` publishes and `deliveries` deliveries at once
    /// (the app syncs the hub's totals into the metrics with this).
    pub fn record_publications(&self, publications: u64, deliveries: u64) {
        self.inner.publishes.inc_by(publications);
        self.inner.deliveries.inc_by(deliveries);
    }

    /// A message for a client on `endpoint` was dropped because its
    /// outgoing queue was full.
    pub fn backpressure_drop(&self, endpoint: &str) {
        self.with_endpoint(endpoint, EndpointMetrics::backpressure_drop);
    }

    /// Every series in the OpenMetrics text format (which Prometheus reads),
    /// ending with `# EOF`; serve it with [`Metrics::CONTENT_TYPE`].
    pub fn render(&self) -> String {
        if let (Some(gauge), Some(rss)) = (&self.inner.resident_memory, process_rss_bytes()) {
            gauge.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut text = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Totals over every endpoint, for the dashboard.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            publishes: self.inner.publishes.get(),
            deliveries: self.inner.deliveries.get(),
            ..Snapshot::default()
        };
        for endpoint in self.read_endpoints().values() {
            let e = &endpoint.inner;
            // A close reported twice could take a gauge below zero; never show that.
            snapshot.connections += u64::try_from(e.connections_open.get()).unwrap_or(0);
            snapshot.messages_in += e.messages_in.get();
            snapshot.messages_out += e.messages_out.get();
            snapshot.bytes_in += e.bytes_in.get();
            snapshot.bytes_out += e.bytes_out.get();
        }
        snapshot
    }

    fn read_endpoints(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, EndpointMetrics>> {
        // The map is only ever inserted into whole, so a panic elsewhere
        // cannot leave it half-written: poisoning carries no information.
        self.inner
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn with_endpoint(&self, name: &str, f: impl FnOnce(&EndpointMetrics)) {
        {
            let endpoints = self.read_endpoints();
            if let Some(found) = endpoints.get(name) {
                return f(found);
            }
        } // the read lock is released before `endpoint` takes the write lock
        f(&self.endpoint(name));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// One endpoint's series: what a connection task holds so that counting a
/// message is two atomic adds. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct EndpointMetrics {
    inner: Arc<EndpointInner>,
}

struct EndpointInner {
    name: Arc<str>,
    connections_open: Gauge,
    connections: Counter,
    messages_in: Counter,
    bytes_in: Counter,
    messages_out: Counter,
    bytes_out: Counter,
    backpressure_drops: Counter,
    // Labelled by more than the endpoint: looked up per call, which clones
    // `name` (an `Arc`, no allocation) and takes the family's read lock.
    closes: Family<CloseLabels, Counter>,
    upgrades_refused: Family<RefusalLabels, Counter>,
}

impl EndpointMetrics {
    fn create(families: &Families, name: Arc<str>) -> Self {
        let labels = EndpointLabels {
            endpoint: name.clone(),
        };
        Self {
            inner: Arc::new(EndpointInner {
                connections_open: families.connections_open.get_or_create_owned(&labels),
                connections: families.connections.get_or_create_owned(&labels),
                messages_in: families.messages_in.get_or_create_owned(&labels),
                bytes_in: families.bytes_in.get_or_create_owned(&labels),
                messages_out: families.messages_out.get_or_create_owned(&labels),
                bytes_out: families.bytes_out.get_or_create_owned(&labels),
                backpressure_drops: families.backpressure_drops.get_or_create_owned(&labels),
                closes: families.closes.clone(),
                upgrades_refused: families.upgrades_refused.clone(),
                name,
            }),
        }
    }

    /// The endpoint's name, as it appears in the `endpoint` label.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// See [`Metrics::connection_opened`].
    pub fn connection_opened(&self) {
        self.inner.connections_open.inc();
        self.inner.connections.inc();
    }

    /// See [`Metrics::connection_closed`].
    pub fn connection_closed(&self, code: u16) {
        self.inner.connections_open.dec();
        let labels = CloseLabels {
            endpoint: self.inner.name.clone(),
            code,
        };
        self.inner.closes.get_or_create(&labels).inc();
    }

    /// See [`Metrics::upgrade_refused`].
    pub fn upgrade_refused(&self, reason: RefusalReason) {
        let labels = RefusalLabels {
            endpoint: self.inner.name.clone(),
            reason: reason.as_str(),
        };
        self.inner.upgrades_refused.get_or_create(&labels).inc();
    }

    /// See [`Metrics::message_in`].
    #[inline]
    pub fn message_in(&self, bytes: usize) {
        self.inner.messages_in.inc();
        self.inner.bytes_in.inc_by(as_u64(bytes));
    }

    /// See [`Metrics::message_out`].
    #[inline]
    pub fn message_out(&self, bytes: usize) {
        self.inner.messages_out.inc();
        self.inner.bytes_out.inc_by(as_u64(bytes));
    }

    /// See [`Metrics::backpressure_drop`].
    pub fn backpressure_drop(&self) {
        self.inner.backpressure_drops.inc();
    }
}

impl fmt::Debug for EndpointMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.inner;
        f.debug_struct("EndpointMetrics")
            .field("name", &e.name)
            .field("connections_open", &e.connections_open.get())
            .field("messages_in", &e.messages_in.get())
            .field("messages_out", &e.messages_out.get())
            .finish_non_exhaustive()
    }
}

/// Why an upgrade request was refused; the `reason` label of
/// `sockeye_upgrades_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The `Origin` header is not allowed.
    Origin,
    /// Authentication failed or was missing.
    Auth,
    /// The endpoint (or server) is at its connection limit.
    TooManyConnections,
    /// The request is not a valid WebSocket opening handshake.
    BadHandshake,
    /// The client opened connections faster than its rate limit allows.
    RateLimited,
}

impl RefusalReason {
    /// The label value: `origin`, `auth`, `too_many_connections`,
    /// `bad_handshake` or `rate_limited`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Auth => "auth",
            Self::TooManyConnections => "too_many_connections",
            Self::BadHandshake => "bad_handshake",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Totals over every endpoint at one moment, for the dashboard.
///
/// Each number is read on its own, so a snapshot taken while traffic flows
/// can be off by the messages in flight; it is a gauge reading, not a ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    /// Connections open now.
    pub connections: u64,
    /// Messages received from clients.
    pub messages_in: u64,
    /// Messages sent to clients.
    pub messages_out: u64,
    /// Payload bytes received from clients.
    pub bytes_in: u64,
    /// Payload bytes sent to clients.
    pub bytes_out: u64,
    /// Messages published to topics.
    pub publishes: u64,
    /// Copies of published messages handed to subscribers.
    pub deliveries: u64,
}

/// This process's resident set size in bytes, or `None` where it cannot be
/// read (platforms other than Linux).
///
/// Reads the `VmRSS` line of `/proc/self/status`, which the kernel gives in
/// kB. (`/proc/self/statm` counts pages, and the page size is only known
/// through `sysconf`, which safe Rust without `libc` cannot call; 4 KiB is
/// wrong on 16 and 64 KiB page kernels.)
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[track_caller]
    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(has_line(text, line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn render_shows_every_series_with_its_value() {
        let metrics = Metrics::new();
        metrics.connection_opened("/echo");
        metrics.connection_opened("/echo");
        metrics.connection_opened("/chat");
        metrics.connection_closed("/echo", 1000);
        metrics.upgrade_refused("/chat", RefusalReason::Origin);
        metrics.upgrade_refused("/chat", RefusalReason::Origin);
        metrics.upgrade_refused("/chat", RefusalReason::TooManyConnections);
        metrics.message_in("/echo", 5);
        metrics.message_in("/echo", 7);
        metrics.message_out("/echo", 12);
        metrics.publish(3);
        metrics.publish(0);
        metrics.backpressure_drop("/chat");

        let text = metrics.render();
        assert_lines(
            &text,
            &[
                "# TYPE sockeye_connections_open gauge",
                "# HELP sockeye_connections_open WebSocket connections open now.",
                r#"sockeye_connections_open{endpoint="/echo"} 1"#,
                r#"sockeye_connections_open{endpoint="/chat"} 1"#,
                "# TYPE sockeye_connections counter",
                r#"sockeye_connections_total{endpoint="/echo"} 2"#,
                r#"sockeye_connections_total{endpoint="/chat"} 1"#,
                r#"sockeye_closes_total{endpoint="/echo",code="1000"} 1"#,
                r#"sockeye_upgrades_refused_total{endpoint="/chat",reason="origin"} 2"#,
                r#"sockeye_upgrades_refused_total{endpoint="/chat",reason="too_many_connections"} 1"#,
                r#"sockeye_messages_in_total{endpoint="/echo"} 2"#,
                r#"sockeye_bytes_in_total{endpoint="/echo"} 12"#,
                r#"sockeye_messages_out_total{endpoint="/echo"} 1"#,
                r#"sockeye_bytes_out_total{endpoint="/echo"} 12"#,
                r#"sockeye_messages_in_total{endpoint="/chat"} 0"#,
                "sockeye_publishes_total 2",
                "sockeye_deliveries_total 3",
                r#"sockeye_backpressure_drops_total{endpoint="/chat"} 1"#,
                r#"sockeye_backpressure_drops_total{endpoint="/echo"} 0"#,
            ],
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_fresh_registry_renders_its_unlabelled_series_at_zero() {
        let text = Metrics::new().render();
        assert_lines(
            &text,
            &["sockeye_publishes_total 0", "sockeye_deliveries_total 0"],
        );
        assert!(!text.contains("endpoint="), "{text}");
    }

    #[test]
    fn an_endpoint_handle_and_the_str_methods_count_into_the_same_series() {
        let metrics = Metrics::new();
        let echo = metrics.endpoint("/echo");
        assert_eq!(echo.name(), "/echo");
        echo.connection_opened();
        echo.message_in(100);
        metrics.message_in("/echo", 1);
        metrics.endpoint("/echo").message_out(4);
        echo.clone().connection_closed(1001);
        echo.upgrade_refused(RefusalReason::RateLimited);

        let text = metrics.render();
        assert_lines(
            &text,
            &[
                r#"sockeye_connections_open{endpoint="/echo"} 0"#,
                r#"sockeye_connections_total{endpoint="/echo"} 1"#,
                r#"sockeye_closes_total{endpoint="/echo",code="1001"} 1"#,
                r#"sockeye_upgrades_refused_total{endpoint="/echo",reason="rate_limited"} 1"#,
                r#"sockeye_messages_in_total{endpoint="/echo"} 2"#,
                r#"sockeye_bytes_in_total{endpoint="/echo"} 101"#,
                r#"sockeye_bytes_out_total{endpoint="/echo"} 4"#,
            ],
        );
        // One series per endpoint, however many handles were taken.
        assert_eq!(text.matches(r#"sockeye_messages_in_total{"#).count(), 1);
    }

    #[test]
    fn clones_share_the_registry() {
        let metrics = Metrics::new();
        metrics.clone().publish(5);
        assert_eq!(metrics.snapshot().deliveries, 5);
    }

    #[test]
    fn snapshot_sums_over_endpoints() {
        let metrics = Metrics::new();
        for endpoint in ["/a", "/b", "/c"] {
            metrics.connection_opened(endpoint);
            metrics.message_in(endpoint, 10);
            metrics.message_out(endpoint, 20);
            metrics.message_out(endpoint, 1);
        }
        metrics.connection_closed("/c", 1000);
        metrics.publish(7);
        assert_eq!(
            metrics.snapshot(),
            Snapshot {
                connections: 2,
                messages_in: 3,
                messages_out: 6,
                bytes_in: 30,
                bytes_out: 63,
                publishes: 1,
                deliveries: 7,
            }
        );
    }

    #[test]
    fn snapshot_never_shows_negative_connections() {
        let metrics = Metrics::new();
        metrics.connection_opened("/a");
        metrics.connection_closed("/b", 1006); // a close without its open
        assert_eq!(metrics.snapshot().connections, 1);
    }

    #[test]
    fn concurrent_counting_loses_nothing() {
        let metrics = Metrics::new();
        std::thread::scope(|scope| {
            for t in 0..8 {
                let metrics = &metrics;
                scope.spawn(move || {
                    // Half the threads create the endpoint through the &str path.
                    let handle = (t % 2 == 0).then(|| metrics.endpoint("/hot"));
                    for _ in 0..1000 {
                        match &handle {
                            Some(handle) => handle.message_in(3),
                            None => metrics.message_in("/hot", 3),
                        }
                    }
                });
            }
        });
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.messages_in, 8000);
        assert_eq!(snapshot.bytes_in, 24000);
    }

    #[test]
    fn refusal_reasons_are_snake_case() {
        assert_eq!(RefusalReason::Auth.as_str(), "auth");
        assert_eq!(RefusalReason::BadHandshake.to_string(), "bad_handshake");
    }

    #[test]
    fn vm_rss_is_parsed_from_proc_status() {
        let status = "Name:\tsockeye\nVmPeak:\t  20000 kB\nVmRSS:\t    5120 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tmany kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn resident_memory_is_measured_and_rendered_on_linux() {
        let rss = process_rss_bytes().expect("/proc/self/status has VmRSS");
        assert!(
            rss > 1024 * 1024,
            "a test binary uses more than 1 MiB: {rss}"
        );
        let text = Metrics::new().render();
        let line = text
            .lines()
            .find(|l| l.starts_with("sockeye_process_resident_memory_bytes "))
            .unwrap_or_else(|| panic!("no resident memory line in:\n{text}"));
        let value: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 1024 * 1024, "{line}");
    }
}

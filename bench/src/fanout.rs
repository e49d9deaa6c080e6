//! Broadcast fan-out: S subscribers on one topic, one publisher; how many
//! deliveries per second the server makes and how long each takes.
//!
//! ```text
//!  publisher ──publish (stamp: send time + sequence)──► server ──► S subscribers
//!      ▲                                                              │
//!      └── window: at most N publications not yet delivered to all ◄──┘ latency = receive time − stamp
//! ```
//!
//! Every message carries the time it was sent (nanoseconds since an
//! `Instant` the publisher and the subscribers share: they live in this
//! process) and its sequence number, as 24 hex digits after a `T`, padded
//! with `.` to exactly `size` bytes: a JSON string for the sockeye protocol
//! (quotes included), raw bytes for [`Protocol::Raw`].
//!
//! The publisher paces itself by a fixed rate (`rate`), by a window of
//! publications in flight (`window`: publication `k` waits until
//! `(k + 1 − window) × S` deliveries have arrived), or both. The stamp is
//! the time the publication is written to the socket, not the time it was
//! scheduled: tokio's timer fires up to a millisecond late, and that is the
//! generator's delay, not the server's. A server that falls behind a fixed
//! rate still shows in the latencies (the publisher does not wait for it;
//! only a full socket buffer would hold it back), and the report gives the
//! rate achieved next to the one asked for.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sockeye_proto::Message;
use tokio::sync::{Notify, Semaphore};
use tokio::time::sleep_until;
use tracing::{info, warn};

use crate::client::{self, Client, Protocol, Target};
use crate::stats::{errors_line, ratio, CpuMeter, CpuUse, Latencies, LatencySummary};
use crate::tally::Tally;
use crate::Error;

/// Bytes of a stamp: `T`, 16 hex digits of time, 8 of sequence.
const STAMP_LEN: usize = 25;

/// How long the publisher waits for a window to open before it gives up.
const STALL: Duration = Duration::from_secs(10);

/// How long deliveries may take to stop arriving once publishing has ended.
const DRAIN_QUIET: Duration = Duration::from_secs(2);

/// The fan-out scenario's settings.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The endpoint (`sockeye serve`'s `/ws`, or a reference server).
    pub target: Target,
    /// What the server speaks.
    pub protocol: Protocol,
    /// Subscriber connections. Default 10,000.
    pub subscribers: usize,
    /// Bytes of each published message's data. Default 100.
    pub size: usize,
    /// How long to measure. Default 10 s.
    pub duration: Duration,
    /// How long to publish before measuring (connections and allocators
    /// warm up). Default 1 s.
    pub warmup: Duration,
    /// Publications per second; `None` publishes as fast as the window allows.
    pub rate: Option<f64>,
    /// Publications in flight (not yet delivered to every subscriber).
    /// Default 16. `0` means no window (only the rate paces).
    pub window: usize,
    /// The server's process id, for its CPU time.
    pub server_pid: Option<u32>,
    /// The topic (sockeye protocol). Default `bench`.
    pub topic: String,
    /// Connections opened at once during setup. Default 128 (the backlog
    /// of a listener bound by std or tokio).
    pub connect_concurrency: usize,
}

impl FanoutConfig {
    /// The defaults, against `target`.
    pub fn new(target: Target) -> Self {
        FanoutConfig {
            target,
            protocol: Protocol::Sockeye,
            subscribers: 10_000,
            size: 100,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            rate: None,
            window: 16,
            server_pid: None,
            topic: "bench".into(),
            connect_concurrency: 128,
        }
    }

    fn check(&self) -> Result<(), Error> {
        let min = self.min_size();
        if self.size < min {
            return Err(Error::Config(format!(
                "--size must be at least {min} bytes for the {} protocol (the time stamp)",
                self.protocol
            )));
        }
        if self.subscribers == 0 {
            return Err(Error::Config("--subscribers must be at least 1".into()));
        }
        if self.rate.is_none() && self.window == 0 {
            return Err(Error::Config("give a --rate, a --window, or both".into()));
        }
        if self.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            return Err(Error::Config("--rate must be positive".into()));
        }
        Ok(())
    }

    fn min_size(&self) -> usize {
        match self.protocol {
            Protocol::Sockeye => STAMP_LEN + 2,
            Protocol::Raw => STAMP_LEN,
        }
    }
}

/// What a fan-out run measured. Counts and rates cover the measured period
/// (after the warm-up), up to the last delivery of its messages.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// The URL.
    pub url: String,
    /// The protocol.
    pub protocol: Protocol,
    /// Subscribers that were ready when publishing started.
    pub subscribers: usize,
    /// Bytes of data per message.
    pub size: usize,
    /// The rate asked for, if any.
    pub rate: Option<f64>,
    /// The window.
    pub window: usize,
    /// Seconds to open and subscribe every subscriber.
    pub setup_s: f64,
    /// Messages published while measuring.
    pub published: u64,
    /// Their deliveries that arrived.
    pub deliveries: u64,
    /// Deliveries that should have arrived (`published` × subscribers,
    /// less publications the server refused).
    pub expected: u64,
    /// Publications per second.
    pub publishes_per_s: f64,
    /// Deliveries per second, from the first measured publication to the
    /// last delivery.
    pub deliveries_per_s: f64,
    /// Publish-to-delivery latency.
    pub latency: LatencySummary,
    /// Errors: failed connections, closes, refused publications, a stalled window.
    pub errors: u64,
    /// The first error, for the record.
    pub first_error: Option<String>,
    /// CPU time over the measurement.
    pub cpu: CpuUse,
    /// Generator CPU per delivery, in microseconds.
    pub client_cpu_per_delivery_us: f64,
    /// Server CPU per delivery, in microseconds (with `--server-pid`).
    pub server_cpu_per_delivery_us: Option<f64>,
}

impl std::fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pacing = match (self.rate, self.window) {
            (Some(rate), 0) => format!("{rate} msg/s"),
            (Some(rate), w) => format!("{rate} msg/s, window {w}"),
            (None, w) => format!("window {w}"),
        };
        writeln!(
            f,
            "fanout {} ({}): {} subscribers, {} B messages, {pacing}",
            self.url, self.protocol, self.subscribers, self.size
        )?;
        writeln!(f, "  setup            {:.2} s", self.setup_s)?;
        writeln!(
            f,
            "  published        {} ({:.0}/s)",
            self.published, self.publishes_per_s
        )?;
        writeln!(
            f,
            "  deliveries       {} of {} ({:.0}/s)",
            self.deliveries, self.expected, self.deliveries_per_s
        )?;
        writeln!(f, "  latency          {}", self.latency)?;
        writeln!(
            f,
            "  errors           {}",
            errors_line(self.errors, self.first_error.as_deref())
        )?;
        writeln!(
            f,
            "  client CPU       {:.2} s = {:.2} cores, {:.3} µs per delivery",
            self.cpu.client_cpu_s,
            self.cpu.client_cores(),
            self.client_cpu_per_delivery_us
        )?;
        let per = |n: u64| ratio(n as f64, self.deliveries as f64);
        match (
            self.cpu.server_cpu_s,
            self.server_cpu_per_delivery_us,
            self.cpu.server_syscalls,
        ) {
            (Some(s), Some(cpu), Some(calls)) => write!(
                f,
                "  server CPU       {s:.2} s = {:.2} cores, {cpu:.3} µs per delivery\n  server syscalls  {:.3} read/readv, {:.3} write/writev per delivery",
                self.cpu.server_cores().unwrap_or(0.0),
                per(calls.reads),
                per(calls.writes)
            ),
            _ => write!(f, "  server CPU       (no --server-pid)"),
        }
    }
}

/// What the subscribers and the publisher share (one thread: `Cell`s).
struct Shared {
    /// The zero of every stamp.
    clock: Instant,
    /// Every delivery so far, warm-up included (for the window).
    delivered: Cell<u64>,
    /// Deliveries of measured messages.
    measured: Cell<u64>,
    /// Measured messages: sequence numbers in `from..to`.
    from: Cell<u32>,
    to: Cell<u32>,
    last_delivery: Cell<Option<Instant>>,
    latencies: RefCell<Latencies>,
    /// The publisher wants to hear when `delivered` reaches this.
    wake_at: Cell<u64>,
    progress: Notify,
    tally: Tally,
    /// The sockeye envelope up to the data: `{"type":"message","topic":"T","data":`.
    prefix: Vec<u8>,
}

impl Shared {
    /// A message arrived at a subscriber.
    fn on_message(&self, payload: &[u8]) {
        let Some((stamp, seq)) = find_stamp(payload, &self.prefix) else {
            return;
        };
        let delivered = self.delivered.get() + 1;
        self.delivered.set(delivered);
        if (self.from.get()..self.to.get()).contains(&seq) {
            let now = Instant::now();
            let now_ns = now.duration_since(self.clock).as_nanos() as u64;
            self.measured.set(self.measured.get() + 1);
            self.latencies
                .borrow_mut()
                .record(now_ns.saturating_sub(stamp));
            self.last_delivery.set(Some(now));
        }
        if delivered >= self.wake_at.get() {
            self.wake_at.set(u64::MAX);
            self.progress.notify_one();
        }
    }
}

/// The stamp of a message: at the start (raw), or as the sockeye
/// envelope's `data` string.
fn find_stamp(payload: &[u8], prefix: &[u8]) -> Option<(u64, u32)> {
    let at = if payload.first() == Some(&b'T') {
        0
    } else if payload.starts_with(prefix) && payload.get(prefix.len()) == Some(&b'"') {
        prefix.len() + 1
    } else {
        // Another field order than today's envelope: search for the data.
        const MARK: &[u8] = b"\"data\":\"T";
        payload.windows(MARK.len()).position(|w| w == MARK)? + MARK.len() - 1
    };
    let stamp = payload.get(at..at + STAMP_LEN)?;
    if stamp[0] != b'T' {
        return None;
    }
    let time = hex(&stamp[1..17])?;
    let seq = hex(&stamp[17..25])?;
    Some((time, seq as u32))
}

fn hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc << 4 | v as u64)
    })
}

/// Writes a message of exactly `size` bytes with the stamp into `out`.
fn write_payload(out: &mut String, protocol: Protocol, size: usize, time: u64, seq: u32) {
    out.clear();
    let quoted = protocol == Protocol::Sockeye;
    if quoted {
        out.push('"');
    }
    let _ = write!(out, "T{time:016x}{seq:08x}");
    let end = if quoted { size - 1 } else { size };
    while out.len() < end {
        out.push('.');
    }
    if quoted {
        out.push('"');
    }
}

/// Runs the scenario. Call it inside a [`tokio::task::LocalSet`] on a
/// current-thread runtime ([`crate::run`] does).
pub async fn run(config: &FanoutConfig) -> Result<FanoutReport, Error> {
    config.check()?;
    let url = config.target.uri.to_string();
    let shared = Rc::new(Shared {
        clock: Instant::now(),
        delivered: Cell::new(0),
        measured: Cell::new(0),
        from: Cell::new(u32::MAX),
        to: Cell::new(u32::MAX),
        last_delivery: Cell::new(None),
        latencies: RefCell::new(Latencies::new()),
        wake_at: Cell::new(u64::MAX),
        progress: Notify::new(),
        tally: Tally::default(),
        prefix: format!(
            r#"{{"type":"message","topic":{},"data":"#,
            serde_json::Value::String(config.topic.clone())
        )
        .into_bytes(),
    });

    // Subscribers first; publishing starts when every one is ready.
    let setup_started = Instant::now();
    let permits = Rc::new(Semaphore::new(config.connect_concurrency.max(1)));
    for _ in 0..config.subscribers {
        tokio::task::spawn_local(subscriber(
            config.clone(),
            Rc::clone(&shared),
            Rc::clone(&permits),
        ));
    }
    let subscribers = shared
        .tally
        .settled(config.subscribers, "no subscriber could connect")
        .await?;
    let setup_s = setup_started.elapsed().as_secs_f64();
    info!(
        "{subscribers} subscribers ready in {setup_s:.2} s ({} failed)",
        shared.tally.failures()
    );

    let mut publisher = Client::connect(&config.target).await?;
    publisher.abort_on_drop();
    if config.protocol == Protocol::Sockeye {
        client::expect(&mut publisher, "welcome").await?;
    }
    let published = publish(config, &shared, &mut publisher, subscribers).await?;

    let measured_expected = published.count * subscribers as u64;
    // Drain: wait for the measured messages' deliveries, until they stop coming.
    let mut last_seen = shared.measured.get();
    let mut quiet_since = Instant::now();
    while shared.measured.get() < measured_expected && quiet_since.elapsed() < DRAIN_QUIET {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if shared.measured.get() != last_seen {
            last_seen = shared.measured.get();
            quiet_since = Instant::now();
        }
    }
    let cpu = published.meter.stop()?;
    let deliveries = shared.measured.get();
    if deliveries < measured_expected {
        shared.tally.error(format!(
            "{} deliveries missing",
            measured_expected - deliveries
        ));
    }
    let span = shared.last_delivery.get().map_or(0.0, |t| {
        t.saturating_duration_since(published.started).as_secs_f64()
    });
    let deliveries_f = deliveries as f64;
    let report = FanoutReport {
        url,
        protocol: config.protocol,
        subscribers,
        size: config.size,
        rate: config.rate,
        window: config.window,
        setup_s,
        published: published.count,
        deliveries,
        expected: measured_expected,
        publishes_per_s: ratio(published.count as f64, published.span.as_secs_f64()),
        deliveries_per_s: ratio(deliveries_f, span),
        latency: shared.latencies.borrow().summary(),
        errors: shared.tally.errors(),
        first_error: shared.tally.first_error(),
        cpu,
        client_cpu_per_delivery_us: ratio(cpu.client_cpu_s * 1e6, deliveries_f),
        server_cpu_per_delivery_us: cpu.server_cpu_s.map(|s| ratio(s * 1e6, deliveries_f)),
    };
    Ok(report)
}

/// One subscriber: connect, subscribe, then count and time what arrives.
async fn subscriber(config: FanoutConfig, shared: Rc<Shared>, permits: Rc<Semaphore>) {
    let opened = async {
        let _permit = permits.acquire().await.expect("never closed");
        let mut client = Client::connect(&config.target).await?;
        client.abort_on_drop();
        if config.protocol == Protocol::Sockeye {
            client::subscribe(&mut client, &config.topic).await?;
        }
        Ok::<_, Error>(client)
    }
    .await;
    let mut client = match opened {
        Ok(client) => {
            shared.tally.opened();
            client
        }
        Err(e) => {
            shared.tally.failed(format!("subscriber setup: {e}"));
            return;
        }
    };
    loop {
        match client.recv().await {
            Ok(Some(Message::Text(text))) => shared.on_message(text.as_bytes()),
            Ok(Some(Message::Binary(data))) => shared.on_message(&data),
            Ok(Some(Message::Close(frame))) => {
                shared
                    .tally
                    .error(format!("subscriber closed by the server: {frame:?}"));
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                shared.tally.error(format!("subscriber: {e}"));
                return;
            }
        }
    }
}

/// What the publisher did while measuring.
struct Published {
    /// Measured publications (not refused).
    count: u64,
    /// When measuring started.
    started: Instant,
    /// How long it published while measuring.
    span: Duration,
    meter: CpuMeter,
}

/// Publishes until the warm-up and the measurement are over.
async fn publish(
    config: &FanoutConfig,
    shared: &Shared,
    publisher: &mut Client,
    subscribers: usize,
) -> Result<Published, Error> {
    let subscribers = subscribers as u64;
    let start = tokio::time::Instant::now();
    let measure_at = start + config.warmup;
    let end = measure_at + config.duration;
    let mut seq: u32 = 0;
    // Publications the server refused (never delivered), for the window.
    let mut refused = 0u64;
    let mut refused_at_start = 0u64;
    let mut meter = None;
    let mut data = String::with_capacity(config.size + 2);
    let mut request = String::with_capacity(config.size + 64);
    let topic = serde_json::Value::String(config.topic.clone()).to_string();
    let mut stalled_since: Option<Instant> = None;

    loop {
        let now = tokio::time::Instant::now();
        if meter.is_none() && now >= measure_at {
            shared.from.set(seq);
            refused_at_start = refused;
            meter = Some((CpuMeter::start(config.server_pid)?, Instant::now()));
        }
        if now >= end {
            shared.to.set(seq);
            break;
        }
        let due = config
            .rate
            .map(|r| start + Duration::from_secs_f64(seq as f64 / r));
        let need = if config.window == 0 {
            0
        } else {
            (seq as u64 + 1).saturating_sub(config.window as u64 + refused) * subscribers
        };
        let window_open = shared.delivered.get() >= need;
        let on_time = due.is_none_or(|d| now >= d);
        if window_open && on_time {
            stalled_since = None;
            let time = shared.clock.elapsed().as_nanos() as u64;
            write_payload(&mut data, config.protocol, config.size, time, seq);
            match config.protocol {
                Protocol::Sockeye => {
                    request.clear();
                    let _ = write!(
                        request,
                        r#"{{"type":"publish","topic":{topic},"data":{data}}}"#
                    );
                    publisher.send_text(request.as_str()).await?;
                }
                Protocol::Raw => publisher.send_binary(data.clone().into_bytes()).await?,
            }
            seq += 1;
            continue;
        }
        if !window_open {
            let since = *stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() > STALL {
                shared.tally.error(format!(
                    "the window stalled: {} of {need} deliveries after {} s",
                    shared.delivered.get(),
                    STALL.as_secs()
                ));
                shared.to.set(seq);
                break;
            }
            shared.wake_at.set(need);
        }
        let wake = match due {
            Some(due) if !on_time => due.min(end),
            _ => end,
        };
        tokio::select! {
            received = publisher.recv() => match received {
                Ok(Some(message)) => on_reply(shared, message, &mut refused),
                Ok(None) => return Err(Error::Closed("the publisher was closed by the server")),
                Err(e) => return Err(e),
            },
            _ = shared.progress.notified(), if !window_open => {}
            _ = sleep_until(wake) => {}
            _ = tokio::time::sleep(Duration::from_secs(1)), if !window_open => {}
        }
    }
    let (meter, started) = match meter {
        Some(m) => m,
        None => (CpuMeter::start(config.server_pid)?, Instant::now()),
    };
    let span = started.elapsed();
    let measured = (shared.to.get() - shared.from.get().min(shared.to.get())) as u64;
    let refused_measured = refused - refused_at_start;
    if refused > 0 {
        warn!("the server refused {refused} publications");
    }
    Ok(Published {
        count: measured.saturating_sub(refused_measured),
        started,
        span,
        meter,
    })
}

/// An answer to the publisher: acks are fine, errors are counted (a
/// refused publication is never delivered).
fn on_reply(shared: &Shared, message: Message, refused: &mut u64) {
    let payload = match message {
        Message::Text(t) => t.into_bytes(),
        _ => return,
    };
    const ERROR: &[u8] = br#""type":"error""#;
    if payload.windows(ERROR.len()).any(|w| w == ERROR) {
        *refused += 1;
        shared.tally.error(format!(
            "publish refused: {}",
            String::from_utf8_lossy(&payload)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_exact_size_and_carry_the_stamp() {
        let mut out = String::new();
        write_payload(&mut out, Protocol::Sockeye, 100, 0x1234_5678_9abc, 42);
        assert_eq!(out.len(), 100);
        assert!(
            serde_json::from_str::<String>(&out).is_ok(),
            "a JSON string"
        );
        let prefix = br#"{"type":"message","topic":"bench","data":"#.to_vec();
        let envelope = format!(
            r#"{{"type":"message","topic":"bench","data":{out},"from":null,"position":{{"epoch":"e","offset":1}}}}"#
        );
        assert_eq!(
            find_stamp(envelope.as_bytes(), &prefix),
            Some((0x1234_5678_9abc, 42))
        );
        // Another field order is still found.
        let reordered = format!(r#"{{"topic":"bench","type":"message","data":{out}}}"#);
        assert_eq!(
            find_stamp(reordered.as_bytes(), &prefix),
            Some((0x1234_5678_9abc, 42))
        );

        write_payload(&mut out, Protocol::Raw, 25, u64::MAX, u32::MAX);
        assert_eq!(out.len(), 25);
        assert_eq!(
            find_stamp(out.as_bytes(), &prefix),
            Some((u64::MAX, u32::MAX))
        );
        assert_eq!(find_stamp(br#"{"type":"ack"}"#, &prefix), None);
    }
}

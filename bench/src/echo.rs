//! Echo: C connections, each keeping P messages of S bytes in flight; how
//! many echoes per second the server makes, how long each takes, and what
//! CPU it spends per message.
//!
//! ```text
//!  connection 1..C ── P messages in flight ──► server ──► echo
//!       ▲ one read: k echoes arrive ─► check, time ─► k new messages, one write
//!       └──────────────────────────────────────────────┘
//!  warm-up ─► window (counted: echoes, bytes, latency; /proc CPU around it) ─► stop
//! ```
//!
//! Every connection sends the same payload over and over: `S` bytes of ASCII
//! that carry the connection's number, so that an echo delivered to the
//! wrong connection, cut, or corrupted is counted as an error. Latency runs
//! from the write that carried a message to the read that brought its echo
//! back (one clock reading per write and per read, not per message: a batch
//! of echoes read at once shares its arrival time).
//!
//! The generator writes a whole batch of replies in one vectored write per
//! read, so it spends fewer system calls per message than a server that
//! answers each message with a write of its own.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use sockeye_proto::{Message, Utf8Bytes};
use tokio::sync::{Notify, Semaphore};
use tracing::info;

use crate::client::{Client, Prepared, Target};
use crate::stats::{errors_line, ratio, CpuMeter, CpuUse, Latencies, LatencySummary};
use crate::tally::Tally;
use crate::Error;

/// The echo scenario's settings.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// The endpoint (`sockeye serve`'s `/echo`, or any echo server).
    pub target: Target,
    /// Connections. Default 100.
    pub connections: usize,
    /// Bytes of each message's payload. Default 20.
    pub size: usize,
    /// Binary messages instead of text. Default text.
    pub binary: bool,
    /// Messages in flight per connection (sent, echo not yet back).
    /// Default 16; 1 is strict ping-pong.
    pub in_flight: usize,
    /// How long to measure. Default 10 s.
    pub duration: Duration,
    /// How long to echo before measuring. Default 1 s.
    pub warmup: Duration,
    /// The server's process id, for its CPU time.
    pub server_pid: Option<u32>,
    /// Connections opened at once during setup. Default 128.
    pub connect_concurrency: usize,
}

impl EchoConfig {
    /// The defaults, against `target`.
    pub fn new(target: Target) -> Self {
        EchoConfig {
            target,
            connections: 100,
            size: 20,
            binary: false,
            in_flight: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            server_pid: None,
            connect_concurrency: 128,
        }
    }

    fn check(&self) -> Result<(), Error> {
        if self.connections == 0 {
            return Err(Error::Config("--connections must be at least 1".into()));
        }
        if self.in_flight == 0 {
            return Err(Error::Config("--in-flight must be at least 1".into()));
        }
        if self.size == 0 {
            return Err(Error::Config("--size must be at least 1 byte".into()));
        }
        Ok(())
    }
}

/// What an echo run measured, over the measured window only.
#[derive(Debug, Clone, Serialize)]
pub struct EchoReport {
    /// The URL.
    pub url: String,
    /// Connections that were open when the window started.
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Binary (true) or text messages.
    pub binary: bool,
    /// Messages in flight per connection.
    pub in_flight: usize,
    /// Seconds to open every connection.
    pub setup_s: f64,
    /// Echoes received in the window.
    pub messages: u64,
    /// Echoes per second.
    pub messages_per_s: f64,
    /// Echoed payload, megabytes (10^6 bytes) per second, one direction
    /// (the server read as much and wrote as much).
    pub mb_per_s: f64,
    /// Send-to-echo latency.
    pub latency: LatencySummary,
    /// Errors: failed connections, closes, echoes that differ from what was sent.
    pub errors: u64,
    /// The first error.
    pub first_error: Option<String>,
    /// CPU time over the window.
    pub cpu: CpuUse,
    /// Generator CPU per echo, in microseconds.
    pub client_cpu_per_message_us: f64,
    /// Server CPU per echo, in microseconds (with `--server-pid`).
    pub server_cpu_per_message_us: Option<f64>,
    /// Server CPU per megabyte echoed, in microseconds (with `--server-pid`).
    pub server_cpu_per_mb_us: Option<f64>,
}

impl std::fmt::Display for EchoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "echo {}: {} connections, {} B {} messages, {} in flight each",
            self.url,
            self.connections,
            self.size,
            if self.binary { "binary" } else { "text" },
            self.in_flight
        )?;
        writeln!(f, "  setup            {:.2} s", self.setup_s)?;
        writeln!(
            f,
            "  echoes           {} ({:.0}/s, {:.1} MB/s)",
            self.messages, self.messages_per_s, self.mb_per_s
        )?;
        writeln!(f, "  latency          {}", self.latency)?;
        writeln!(
            f,
            "  errors           {}",
            errors_line(self.errors, self.first_error.as_deref())
        )?;
        writeln!(
            f,
            "  client CPU       {:.2} s = {:.2} cores, {:.3} µs per echo",
            self.cpu.client_cpu_s,
            self.cpu.client_cores(),
            self.client_cpu_per_message_us
        )?;
        let per = |n: u64| ratio(n as f64, self.messages as f64);
        match (
            self.cpu.server_cpu_s,
            self.server_cpu_per_message_us,
            self.server_cpu_per_mb_us,
            self.cpu.server_syscalls,
        ) {
            (Some(s), Some(cpu), Some(mb), Some(calls)) => write!(
                f,
                "  server CPU       {s:.2} s = {:.2} cores, {cpu:.3} µs per echo, {mb:.0} µs per MB\n  server syscalls  {:.3} read/readv, {:.3} write/writev per echo",
                self.cpu.server_cores().unwrap_or(0.0),
                per(calls.reads),
                per(calls.writes)
            ),
            _ => write!(f, "  server CPU       (no --server-pid)"),
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Warmup,
    Measure,
    Done,
}

/// What the connections share (one thread: `Cell`s).
struct Shared {
    phase: Cell<Phase>,
    go: Notify,
    tally: Tally,
    /// Echoes and their payload bytes in the window.
    messages: Cell<u64>,
    bytes: Cell<u64>,
    latencies: RefCell<Latencies>,
}

/// Runs the scenario (inside a `LocalSet`, as [`crate::run`] does).
pub async fn run(config: &EchoConfig) -> Result<EchoReport, Error> {
    config.check()?;
    let shared = Rc::new(Shared {
        phase: Cell::new(Phase::Setup),
        go: Notify::new(),
        tally: Tally::default(),
        messages: Cell::new(0),
        bytes: Cell::new(0),
        latencies: RefCell::new(Latencies::new()),
    });
    let started = Instant::now();
    let permits = Rc::new(Semaphore::new(config.connect_concurrency.max(1)));
    for index in 0..config.connections {
        tokio::task::spawn_local(connection(
            config.clone(),
            index,
            Rc::clone(&shared),
            Rc::clone(&permits),
        ));
    }
    let connections = shared
        .tally
        .settled(config.connections, "no connection could be opened")
        .await?;
    let setup_s = started.elapsed().as_secs_f64();
    info!("{connections} connections open in {setup_s:.2} s");

    shared.phase.set(Phase::Warmup);
    shared.go.notify_waiters();
    tokio::time::sleep(config.warmup).await;
    let meter = CpuMeter::start(config.server_pid)?;
    shared.phase.set(Phase::Measure);
    tokio::time::sleep(config.duration).await;
    shared.phase.set(Phase::Done);
    let cpu = meter.stop()?;

    let messages = shared.messages.get();
    let bytes = shared.bytes.get();
    if messages == 0 {
        shared
            .tally
            .error("no echo arrived during the measured window");
    }
    let wall = cpu.wall_s;
    let per_message = |cpu_s: f64| ratio(cpu_s * 1e6, messages as f64);
    let report = EchoReport {
        url: config.target.uri.to_string(),
        connections,
        size: config.size,
        binary: config.binary,
        in_flight: config.in_flight,
        setup_s,
        messages,
        messages_per_s: ratio(messages as f64, wall),
        mb_per_s: ratio(bytes as f64 / 1e6, wall),
        latency: shared.latencies.borrow().summary(),
        errors: shared.tally.errors(),
        first_error: shared.tally.first_error(),
        cpu,
        client_cpu_per_message_us: per_message(cpu.client_cpu_s),
        server_cpu_per_message_us: cpu.server_cpu_s.map(per_message),
        server_cpu_per_mb_us: cpu.server_cpu_s.map(|s| ratio(s * 1e6, bytes as f64 / 1e6)),
    };
    Ok(report)
}

/// The payload of connection `index`: `size` bytes of ASCII, its number
/// first (`#17 `), then letters.
fn payload(size: usize, index: usize, binary: bool) -> Message {
    let mut data = format!("#{index} ").into_bytes();
    data.truncate(size);
    let mut letter = b'a';
    while data.len() < size {
        data.push(letter);
        letter = if letter == b'z' { b'a' } else { letter + 1 };
    }
    if binary {
        Message::Binary(Bytes::from(data))
    } else {
        Message::Text(Utf8Bytes::try_from(data).expect("ASCII"))
    }
}

/// The core's limits for this run: messages of `size` must pass.
fn client_config(size: usize) -> sockeye_proto::Config {
    let default = sockeye_proto::Config::default();
    let limit = size.max(default.max_message_size);
    default.max_message_size(limit).max_frame_size(limit)
}

/// One connection: connect, wait for the start, then keep `in_flight`
/// messages in flight until the run is done.
async fn connection(config: EchoConfig, index: usize, shared: Rc<Shared>, permits: Rc<Semaphore>) {
    // Room for a whole frame per read: a frame that lies whole in the read
    // buffer is handed out without a copy (up to 64 MiB, the largest
    // message the peers accept).
    let read_chunk = (config.size + 14).clamp(8 * 1024, 64 << 20);
    let opened = async {
        let _permit = permits.acquire().await.expect("never closed");
        let client =
            Client::connect_with(&config.target, client_config(config.size), read_chunk).await?;
        client.abort_on_drop();
        Ok::<_, Error>(client)
    }
    .await;
    let mut client = match opened {
        Ok(client) => client,
        Err(e) => {
            shared.tally.failed(format!("connect: {e}"));
            return;
        }
    };
    let go = shared.go.notified();
    shared.tally.opened();
    if shared.phase.get() == Phase::Setup {
        go.await;
    }
    if let Err(e) = echo_loop(
        &config,
        &mut client,
        payload(config.size, index, config.binary),
        &shared,
    )
    .await
    {
        if shared.phase.get() != Phase::Done {
            shared.tally.error(format!("connection {index}: {e}"));
        }
    }
}

async fn echo_loop(
    config: &EchoConfig,
    client: &mut Client,
    message: Message,
    shared: &Shared,
) -> Result<(), Error> {
    let expected: &[u8] = match &message {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => unreachable!("payload() makes data messages"),
    };
    // When the messages in flight were written, oldest first, run-length
    // encoded: a batch written at once shares its time.
    let frames = Prepared::new(&message, config.in_flight, client_config(config.size))?;
    let mut sent_at: VecDeque<(Instant, u64)> = VecDeque::with_capacity(config.in_flight);
    client.queue_prepared(&frames, config.in_flight);
    sent_at.push_back((Instant::now(), config.in_flight as u64));
    client.write_queued().await?;
    // Large echoes are parsed only once they have arrived whole: a frame
    // that lies whole in the read buffer is split off it without a copy,
    // one parsed piece by piece is copied into the message being assembled.
    let whole_frame = if config.size >= 4096 {
        config.size + if config.size > 0xFFFF { 10 } else { 4 }
    } else {
        0
    };
    loop {
        client.read_some().await?;
        while client.read_buffered() < whole_frame {
            client.read_some().await?;
        }
        let arrived = Instant::now();
        let measuring = shared.phase.get() == Phase::Measure;
        let mut echoes = 0u64;
        // Echoes of the current run of `sent_at`, not yet recorded.
        let mut run = 0u64;
        while let Some(received) = client.poll_buffered()? {
            let data: &[u8] = match &received {
                Message::Text(t) => t.as_bytes(),
                Message::Binary(b) => b,
                Message::Close(frame) => {
                    return Err(Error::Server(format!("closed the connection: {frame:?}")))
                }
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if data != expected || matches!(received, Message::Text(_)) == config.binary {
                shared.tally.error(format!(
                    "an echo differs from what was sent ({} bytes, expected {})",
                    data.len(),
                    expected.len()
                ));
            }
            let Some(front) = sent_at.front_mut() else {
                shared.tally.error("an echo of a message never sent");
                continue;
            };
            echoes += 1;
            run += 1;
            if measuring {
                shared.bytes.set(shared.bytes.get() + data.len() as u64);
            }
            if run == front.1 {
                let (sent, n) = sent_at.pop_front().expect("front exists");
                if measuring {
                    record(shared, arrived.saturating_duration_since(sent), n);
                }
                run = 0;
            }
        }
        if run > 0 {
            let front = sent_at.front_mut().expect("a run is of the front");
            front.1 -= run;
            if measuring {
                record(shared, arrived.saturating_duration_since(front.0), run);
            }
        }
        if shared.phase.get() == Phase::Done || client.is_closed() {
            return Ok(());
        }
        if echoes > 0 {
            client.queue_prepared(&frames, echoes as usize);
            sent_at.push_back((Instant::now(), echoes));
        }
        // Also sends pongs the core queued.
        client.write_queued().await?;
    }
}

/// Counts `n` echoes that took `latency`.
fn record(shared: &Shared, latency: Duration, n: u64) {
    shared.messages.set(shared.messages.get() + n);
    shared
        .latencies
        .borrow_mut()
        .record_n(latency.as_nanos() as u64, n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_exact_size_and_name_their_connection() {
        let m = payload(20, 17, false);
        assert_eq!(m.len(), 20);
        assert!(matches!(&m, Message::Text(t) if t.as_str() == "#17 abcdefghijklmnop"));
        assert_eq!(payload(2, 17, true).len(), 2);
        assert_eq!(payload(1 << 20, 3, true).len(), 1 << 20);
    }
}

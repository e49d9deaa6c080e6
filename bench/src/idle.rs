//! Idle connections: what each open, quiet connection costs the server in
//! resident memory.
//!
//! ```text
//!  server RSS ─► open C connections (sockeye: + subscribe, ack) ─► settle ─► RSS samples
//!                 └─ hold: answer the server's heartbeats ─────────────────► RSS again
//!  per connection = (RSS after − RSS before) / C
//! ```
//!
//! RSS counts the server's user-space memory only: socket buffers live in the
//! kernel (and are empty on an idle connection).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sockeye_proto::Message;
use tokio::sync::Semaphore;
use tracing::info;

use crate::client::{self, Client, Protocol, Target};
use crate::stats::{errors_line, CpuMeter, CpuUse, Pid};
use crate::tally::Tally;
use crate::Error;

/// The time between two RSS samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// The idle scenario's settings.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// The endpoint.
    pub target: Target,
    /// What the server speaks; with sockeye each connection also subscribes.
    pub protocol: Protocol,
    /// Connections to open. Default 10,000.
    pub connections: usize,
    /// The server's process id; without it only the connections are opened
    /// and held (no memory figure).
    pub server_pid: Option<u32>,
    /// How long to wait after the last connection opened before sampling
    /// RSS. Default 2 s.
    pub settle: Duration,
    /// RSS samples taken after settling, half a second apart; the median is
    /// reported. Default 5.
    pub samples: usize,
    /// How long to hold the connections open after sampling, answering
    /// heartbeats; RSS is read again at the end. Default 10 s.
    pub hold: Duration,
    /// Topics the connections subscribe to (round robin): 1 = all on one
    /// topic, as clients of one feed; `connections` = a topic each. Default 1.
    pub topics: usize,
    /// Connections opened at once. Default 128 (the backlog of a listener
    /// bound by std or tokio).
    pub connect_concurrency: usize,
}

impl IdleConfig {
    /// The defaults, against `target`.
    pub fn new(target: Target) -> Self {
        IdleConfig {
            target,
            protocol: Protocol::Sockeye,
            connections: 10_000,
            server_pid: None,
            settle: Duration::from_secs(2),
            samples: 5,
            hold: Duration::from_secs(10),
            topics: 1,
            connect_concurrency: 128,
        }
    }
}

/// What an idle run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// The URL.
    pub url: String,
    /// The protocol.
    pub protocol: Protocol,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that opened (and subscribed).
    pub opened: usize,
    /// Topics they subscribed to.
    pub topics: usize,
    /// Seconds to open them all.
    pub setup_s: f64,
    /// Server RSS before, in KiB.
    pub rss_before_kib: Option<u64>,
    /// Server RSS after settling (median of samples), in KiB.
    pub rss_open_kib: Option<u64>,
    /// Server RSS at the end of the hold, in KiB.
    pub rss_end_kib: Option<u64>,
    /// RSS growth per open connection after settling, in KiB.
    pub kib_per_connection: Option<f64>,
    /// RSS growth per connection at the end of the hold, in KiB.
    pub kib_per_connection_end: Option<f64>,
    /// Pings the server sent during the run (all connections), answered.
    pub pings: u64,
    /// Connections that failed or were closed.
    pub errors: u64,
    /// The first error.
    pub first_error: Option<String>,
    /// CPU during the hold (heartbeats; otherwise nothing should run).
    pub hold_cpu: CpuUse,
}

impl std::fmt::Display for IdleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "idle {} ({}): {} of {} connections open on {} topic(s), in {:.2} s",
            self.url, self.protocol, self.opened, self.connections, self.topics, self.setup_s
        )?;
        match (
            self.rss_before_kib,
            self.rss_open_kib,
            self.kib_per_connection,
        ) {
            (Some(before), Some(open), Some(per)) => writeln!(
                f,
                "  server RSS       {before} KiB before, {open} KiB open: {per:.2} KiB per connection"
            )?,
            _ => writeln!(f, "  server RSS       (no --server-pid)")?,
        }
        if let (Some(end), Some(per)) = (self.rss_end_kib, self.kib_per_connection_end) {
            writeln!(
                f,
                "  after the hold   {end} KiB: {per:.2} KiB per connection ({} pings answered)",
                self.pings
            )?;
        }
        write!(
            f,
            "  errors           {}",
            errors_line(self.errors, self.first_error.as_deref())
        )
    }
}

struct Shared {
    tally: Tally,
    pings: Cell<u64>,
}

/// Runs the scenario (inside a `LocalSet`, as [`crate::run`] does).
pub async fn run(config: &IdleConfig) -> Result<IdleReport, Error> {
    let server = config.server_pid.map(Pid::Other);
    let rss = || server.map(Pid::rss_kib).transpose();
    let rss_before = rss()?;
    let shared = Rc::new(Shared {
        tally: Tally::default(),
        pings: Cell::new(0),
    });
    let started = Instant::now();
    let permits = Rc::new(Semaphore::new(config.connect_concurrency.max(1)));
    let topics = config.topics.max(1);
    for i in 0..config.connections {
        let topic = if topics == 1 {
            "idle".to_string()
        } else {
            format!("idle-{}", i % topics)
        };
        tokio::task::spawn_local(connection(
            config.clone(),
            topic,
            Rc::clone(&shared),
            Rc::clone(&permits),
        ));
    }
    let opened = shared
        .tally
        .settled(config.connections, "no connection could be opened")
        .await?;
    let setup_s = started.elapsed().as_secs_f64();
    info!("{opened} connections open in {setup_s:.2} s");

    tokio::time::sleep(config.settle).await;
    let rss_open = match server {
        Some(pid) => {
            let count = config.samples.max(1);
            let mut samples = Vec::with_capacity(count);
            for i in 0..count {
                if i > 0 {
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
                samples.push(pid.rss_kib()?);
            }
            samples.sort_unstable();
            Some(samples[count / 2])
        }
        None => None,
    };
    let meter = CpuMeter::start(config.server_pid)?;
    tokio::time::sleep(config.hold).await;
    let hold_cpu = meter.stop()?;
    let rss_end = rss()?;
    let per = |after: Option<u64>| Some((after? as f64 - rss_before? as f64) / opened as f64);
    let first_error = shared.tally.first_error();
    Ok(IdleReport {
        url: config.target.uri.to_string(),
        protocol: config.protocol,
        connections: config.connections,
        opened,
        topics,
        setup_s,
        rss_before_kib: rss_before,
        rss_open_kib: rss_open,
        rss_end_kib: rss_end,
        kib_per_connection: per(rss_open),
        kib_per_connection_end: per(rss_end),
        pings: shared.pings.get(),
        errors: shared.tally.errors(),
        first_error,
        hold_cpu,
    })
}

/// One idle connection: open (and subscribe), then only answer pings.
async fn connection(config: IdleConfig, topic: String, shared: Rc<Shared>, permits: Rc<Semaphore>) {
    let opened = async {
        let _permit = permits.acquire().await.expect("never closed");
        let mut client = Client::connect(&config.target).await?;
        client.abort_on_drop();
        if config.protocol == Protocol::Sockeye {
            client::subscribe(&mut client, &topic).await?;
        }
        Ok::<_, Error>(client)
    }
    .await;
    let mut client = match opened {
        Ok(client) => client,
        Err(e) => {
            shared.tally.failed(format!("connection setup: {e}"));
            return;
        }
    };
    shared.tally.opened();
    loop {
        match client.recv().await {
            Ok(Some(Message::Ping(_))) => shared.pings.set(shared.pings.get() + 1),
            Ok(Some(Message::Close(frame))) => {
                shared
                    .tally
                    .error(format!("closed by the server: {frame:?}"));
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                shared.tally.error(format!("connection: {e}"));
                return;
            }
        }
    }
}

//! `sockeye-bench`: the load generator behind `sockeye bench`.
//!
//! ```text
//!   Scenario ──► run() ──► one thread: current-thread tokio runtime + LocalSet
//!                            │  thousands of connections, one task each:
//!                            │  TcpStream + sockeye_proto::Connection (no WebSocket layer)
//!                            ▼
//!                 ws://server ◄── /proc/PID/{stat,status}: the server's CPU and RSS
//!                            │
//!   Report (Display, JSON) ◄─┘   /proc/self/stat: the generator's own CPU, shown
//!                                next to the server's so a saturated generator shows
//! ```
//!
//! Each scenario is a module with a `Config`, a `Report` and an async `run`:
//! [`echo`] (C connections, P messages in flight each: echoes per second,
//! latency, server CPU per message), [`large`] (one connection, 16 MiB
//! messages: MB/s and server CPU per MB), [`fanout`] (one publisher, many
//! subscribers: deliveries per second and latency) and [`idle`] (memory per
//! idle connection). The generator runs on one thread so that it can be
//! pinned to one core, away from the server's (`bench/run.sh` and
//! `bench/run-fanout-idle.sh` do that with `taskset`).
//!
//! ```no_run
//! use sockeye_bench::{fanout::FanoutConfig, Scenario, Target};
//!
//! let mut config = FanoutConfig::new(Target::parse("ws://127.0.0.1:3000/ws")?);
//! config.subscribers = 1000;
//! let report = sockeye_bench::run(&Scenario::Fanout(config))?;
//! println!("{report}");
//! # Ok::<(), sockeye_bench::Error>(())
//! ```

mod client;
pub mod echo;
pub mod fanout;
pub mod idle;
pub mod large;
mod stats;
mod tally;

pub use client::{Protocol, Target};
pub use stats::{CpuUse, LatencySummary, Pid, Syscalls};

use serde::Serialize;

/// Why a benchmark could not run (problems during a run are counted in its
/// report instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a usable `ws://` URL.
    #[error("bad URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The settings contradict each other.
    #[error("{0}")]
    Config(String),
    /// TCP could not connect.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The opening handshake or the protocol failed.
    #[error(transparent)]
    Protocol(#[from] sockeye_proto::Error),
    /// The server closed the connection.
    #[error("the connection was closed {0}")]
    Closed(&'static str),
    /// The server answered a request with an error.
    #[error("the server refused: {0}")]
    Server(String),
    /// No connection of the scenario could be set up.
    #[error("setup failed: {0}")]
    Setup(String),
    /// Reading `/proc` failed (is the server's process id right?).
    #[error("cannot read {path}: {source}")]
    Proc {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A `/proc` file did not have the expected format.
    #[error("cannot parse {0}")]
    ProcFormat(String),
    /// A socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A scenario and its settings.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// C connections echoing small or large messages.
    Echo(echo::EchoConfig),
    /// One connection, 16 MiB messages, ping-pong.
    Large(large::LargeConfig),
    /// One publisher, many subscribers.
    Fanout(fanout::FanoutConfig),
    /// Many idle connections.
    Idle(idle::IdleConfig),
}

/// What a scenario measured.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub enum Report {
    /// From [`Scenario::Echo`].
    Echo(echo::EchoReport),
    /// From [`Scenario::Large`].
    Large(echo::EchoReport),
    /// From [`Scenario::Fanout`].
    Fanout(fanout::FanoutReport),
    /// From [`Scenario::Idle`].
    Idle(idle::IdleReport),
}

impl Report {
    /// The report as one line of JSON (for scripts).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("reports serialize")
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Report::Echo(r) => r.fmt(f),
            Report::Large(r) => r.fmt(f),
            Report::Fanout(r) => r.fmt(f),
            Report::Idle(r) => r.fmt(f),
        }
    }
}

/// Runs a scenario on a thread of its own making (a current-thread runtime)
/// and returns its report. Every connection is reset when it returns.
pub fn run(scenario: &Scenario) -> Result<Report, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, async {
        match scenario {
            Scenario::Echo(config) => echo::run(config).await.map(Report::Echo),
            Scenario::Large(config) => large::run(config).await.map(Report::Large),
            Scenario::Fanout(config) => fanout::run(config).await.map(Report::Fanout),
            Scenario::Idle(config) => idle::run(config).await.map(Report::Idle),
        }
    });
    // The connections' tasks go with the LocalSet, inside the runtime.
    drop(local);
    drop(runtime);
    report
}

//! Large messages: one connection, one message of 16 MiB (by default) at a
//! time, echoed back; throughput and the server's CPU per megabyte.
//!
//! ```text
//!  client ── 16 MiB binary ──► server (reads it whole, writes it back) ──► client
//!         ◄───────────────── next message only when the echo is complete ┘
//! ```
//!
//! It is the [echo](crate::echo) scenario with one connection and one
//! message in flight; the report is an [`EchoReport`] (MB/s and
//! `server_cpu_per_mb_us` are its figures; latency is the round trip of
//! a whole message).

use std::time::Duration;

use crate::client::Target;
use crate::echo::{self, EchoConfig, EchoReport};
use crate::Error;

/// The large-message scenario's settings.
#[derive(Debug, Clone)]
pub struct LargeConfig {
    /// The endpoint; it must accept messages of `size` bytes.
    pub target: Target,
    /// Bytes per message. Default 16 MiB.
    pub size: usize,
    /// How long to measure. Default 10 s.
    pub duration: Duration,
    /// How long to echo before measuring. Default 1 s.
    pub warmup: Duration,
    /// The server's process id, for its CPU time.
    pub server_pid: Option<u32>,
}

impl LargeConfig {
    /// The defaults, against `target`.
    pub fn new(target: Target) -> Self {
        LargeConfig {
            target,
            size: 16 << 20,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            server_pid: None,
        }
    }

    /// The echo run this is: one connection, one binary message in flight.
    pub fn echo(&self) -> EchoConfig {
        EchoConfig {
            connections: 1,
            size: self.size,
            binary: true,
            in_flight: 1,
            duration: self.duration,
            warmup: self.warmup,
            server_pid: self.server_pid,
            ..EchoConfig::new(self.target.clone())
        }
    }
}

/// Runs the scenario (inside a `LocalSet`, as [`crate::run`] does).
pub async fn run(config: &LargeConfig) -> Result<EchoReport, Error> {
    echo::run(&config.echo()).await
}

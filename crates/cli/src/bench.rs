//! `sockeye bench`: the load generator's arguments, turned into one
//! `sockeye_bench::run` call.

use std::time::Duration;

use clap::Subcommand;
use sockeye_bench::echo::EchoConfig;
use sockeye_bench::fanout::FanoutConfig;
use sockeye_bench::idle::IdleConfig;
use sockeye_bench::large::LargeConfig;
use sockeye_bench::{Scenario, Target};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: BenchScenario,
    /// Print the report as one line of JSON.
    #[arg(long, global = true)]
    json: bool,
}

/// What every timed scenario shares.
#[derive(Debug, clap::Args)]
struct Timing {
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The server's process id, for its CPU time (from /proc/PID/stat).
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum BenchScenario {
    /// C connections, P messages in flight each, echoed back: messages/s, MB/s, latency, server CPU per message.
    Echo {
        /// The endpoint, e.g. ws://127.0.0.1:3000/echo.
        #[arg(long)]
        url: String,
        /// Connections.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 20)]
        size: usize,
        /// Send binary messages (default: text).
        #[arg(long)]
        binary: bool,
        /// Messages in flight per connection (1: ping-pong).
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        #[command(flatten)]
        timing: Timing,
    },
    /// One connection, 16 MiB binary messages, ping-pong: MB/s and server CPU per MB.
    Large {
        /// The endpoint, e.g. ws://127.0.0.1:3000/echo.
        #[arg(long)]
        url: String,
        /// Bytes per message.
        #[arg(long, default_value_t = 16 << 20)]
        size: usize,
        #[command(flatten)]
        timing: Timing,
    },
    /// One publisher, many subscribers on one topic: deliveries/s and latency.
    Fanout {
        /// The endpoint, e.g. ws://127.0.0.1:3000/ws.
        #[arg(long)]
        url: String,
        /// sockeye: the JSON pub/sub protocol; raw: a server that broadcasts
        /// what a client sends to every other client (bench/peers).
        #[arg(long, default_value = "sockeye")]
        protocol: sockeye_bench::Protocol,
        /// Subscriber connections.
        #[arg(long, default_value_t = 10_000)]
        subscribers: usize,
        /// Bytes of data per message (JSON for sockeye, raw for raw).
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Publications per second (default: as fast as the window allows).
        #[arg(long)]
        rate: Option<f64>,
        /// Publications in flight, not yet delivered to every subscriber (0: none).
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[command(flatten)]
        timing: Timing,
    },
    /// Many idle connections: server memory per connection.
    Idle {
        /// The endpoint, e.g. ws://127.0.0.1:3000/ws.
        #[arg(long)]
        url: String,
        /// sockeye: each connection also subscribes to a topic; raw: only connects.
        #[arg(long, default_value = "sockeye")]
        protocol: sockeye_bench::Protocol,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// The server's process id, for its RSS.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Seconds to hold the connections open (answering heartbeats) after measuring.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        /// Topics to spread the subscriptions over (1: all on one topic).
        #[arg(long, default_value_t = 1)]
        topics: usize,
    },
}

/// Runs the scenario and prints its report.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let secs = Duration::from_secs_f64;
    let scenario = match args.scenario {
        BenchScenario::Echo {
            url,
            connections,
            size,
            binary,
            in_flight,
            timing,
        } => Scenario::Echo(EchoConfig {
            connections,
            size,
            binary,
            in_flight,
            duration: secs(timing.duration),
            warmup: secs(timing.warmup),
            server_pid: timing.server_pid,
            ..EchoConfig::new(Target::parse(&url)?)
        }),
        BenchScenario::Large { url, size, timing } => Scenario::Large(LargeConfig {
            size,
            duration: secs(timing.duration),
            warmup: secs(timing.warmup),
            server_pid: timing.server_pid,
            ..LargeConfig::new(Target::parse(&url)?)
        }),
        BenchScenario::Fanout {
            url,
            protocol,
            subscribers,
            size,
            rate,
            window,
            timing,
        } => Scenario::Fanout(FanoutConfig {
            protocol,
            subscribers,
            size,
            duration: secs(timing.duration),
            warmup: secs(timing.warmup),
            rate,
            window,
            server_pid: timing.server_pid,
            ..FanoutConfig::new(Target::parse(&url)?)
        }),
        BenchScenario::Idle {
            url,
            protocol,
            connections,
            server_pid,
            hold,
            topics,
        } => Scenario::Idle(IdleConfig {
            protocol,
            connections,
            server_pid,
            hold: secs(hold),
            topics,
            ..IdleConfig::new(Target::parse(&url)?)
        }),
    };
    let report = sockeye_bench::run(&scenario)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    Ok(())
}

//! The `sockeye` command: parses arguments, then makes one library call per subcommand.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod bench;
mod connect;
mod tunnel;

use bench::BenchArgs;
use connect::ConnectArgs;

/// sockeye: a WebSocket toolkit.
#[derive(Debug, Parser)]
#[command(name = "sockeye", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sockeye server: demo pages, pub/sub at /ws, echo at /echo, /metrics.
    Serve(ServeArgs),
    /// WebSocket-aware reverse proxy: routes, keepalive per hop, limits, /metrics.
    Proxy(ProxyArgs),
    Connect(ConnectArgs),
    /// Load generator: echo, large-message, fan-out and idle-connection scenarios against a ws:// URL.
    Bench(BenchArgs),
    /// The public side of tunnels: NAME.DOMAIN reaches the agent holding NAME.
    TunnelServer(tunnel::TunnelServerArgs),
    /// Expose a local HTTP/WebSocket server through a tunnel server.
    Http(tunnel::HttpArgs),
    /// Start tunnels from sockeye.toml (--all, or by name).
    Start(tunnel::StartArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the log says which).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
    /// Join a cluster: relay pub/sub, history and presence through this Redis.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Serve https/wss with this PEM certificate (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_message_size: usize,
    /// Turn permessage-deflate off.
    #[arg(long)]
    no_compression: bool,
}

#[derive(Debug, clap::Args)]
struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Worker threads (default: one per core). On a machine whose cores are
    /// busy with the backend, fewer threads relay with less CPU.
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
    /// The backend for every path no --route matches (ws://, wss://, http:// or https://).
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// Requests under /PREFIX go to URL; the longest prefix wins. Repeatable.
    #[arg(long = "route", value_name = "/PREFIX=URL")]
    routes: Vec<sockeye_proxy::Route>,
    /// Let clients choose this backend at /api/websocket?backend=URL (a URL or host:port). Repeatable.
    #[arg(long = "allow-backend", value_name = "URL|HOST:PORT")]
    allow_backends: Vec<sockeye_proxy::AllowedBackend>,
    /// Ping each hop that has been idle this long ("30s", "500ms"; "off").
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    keepalive: std::time::Duration,
    /// Close connections that carried no frame either way for this long (default: never).
    #[arg(long, value_parser = parse_duration)]
    idle_timeout: Option<std::time::Duration>,
    /// The most connections at once (then 503).
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// The most connections at once from one IP address (then 429).
    #[arg(long, default_value_t = 1_000)]
    max_per_ip: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => runtime(args.threads)?.block_on(serve(args)),
        Command::Proxy(args) => runtime(args.threads)?.block_on(proxy(args)),
        Command::Connect(args) => {
            std::process::exit(tokio::runtime::Runtime::new()?.block_on(connect::run(args)))
        }
        Command::Bench(args) => bench::run(args),
        Command::TunnelServer(args) => {
            tokio::runtime::Runtime::new()?.block_on(tunnel::tunnel_server(args))
        }
        Command::Http(args) => tokio::runtime::Runtime::new()?.block_on(tunnel::http(args)),
        Command::Start(args) => tokio::runtime::Runtime::new()?.block_on(tunnel::start(args)),
    }
}

/// A multi-thread runtime with `threads` workers, or one per core.
fn runtime(threads: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads.get());
    }
    builder.enable_all().build()
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = sockeye_server::DemoConfig {
        redis: args.redis,
        tls: args.tls_cert.zip(args.tls_key),
        max_message_size: args.max_message_size,
        compression: !args.no_compression,
        simulations: true,
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.addr))?;
    sockeye_server::serve_demo(config, listener, shutdown_signal()).await?;
    Ok(())
}

async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let mut config = sockeye_proxy::ProxyConfig::default()
        .keepalive(Some(args.keepalive).filter(|d| !d.is_zero()))
        .idle_timeout(args.idle_timeout)
        .max_connections(args.max_connections)
        .max_per_ip(args.max_per_ip);
    if let Some(to) = &args.to {
        config = config.to(to)?;
    }
    config.routes.extend(args.routes);
    if !args.allow_backends.is_empty() {
        config.client_choice = Some(sockeye_proxy::ClientChoice::new(args.allow_backends));
    }
    sockeye_proxy::serve(config, args.listen, shutdown_signal()).await?;
    Ok(())
}

/// "30s", "500ms", "2m", "1h", a bare number of seconds; "off" is zero.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if s == "off" {
        return Ok(std::time::Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m or h")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

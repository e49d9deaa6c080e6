//! The `sockeye` command: parses arguments, then makes one library call per subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the log says which).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
    }
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

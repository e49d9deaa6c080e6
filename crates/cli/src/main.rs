//! The `sockeye` command: parses arguments, then makes one library call per subcommand.

use std::net::SocketAddr;

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
    /// Run the sockeye server (echo endpoint at /echo).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
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
    let mut config = sockeye_server::ServeConfig::default();
    config.websocket = config.websocket.max_message_size(args.max_message_size);
    if args.no_compression {
        config.websocket.deflate = None;
    }
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "listening on http://{addr} (echo: ws://{addr}{})",
        config.echo_path
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    sockeye_server::EchoServer::new(config)
        .run(listener, shutdown)
        .await;
    Ok(())
}

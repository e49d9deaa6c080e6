//! `sockeye tunnel-server`, `sockeye http PORT` and `sockeye start`: the
//! arguments, resolved into `sockeye-tunnel` configurations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sockeye_tunnel::{Agent, AgentConfig, FileConfig, ServerConfig, TunnelConfig, TunnelServer};

/// `sockeye tunnel-server`: the public side of tunnels.
#[derive(Debug, clap::Args)]
pub(crate) struct TunnelServerArgs {
    /// The domain whose subdomains are tunnels (NAME.DOMAIN).
    #[arg(long)]
    domain: String,
    /// Address for public HTTP/WebSocket traffic and the agents' link.
    #[arg(long, default_value = "0.0.0.0:3000")]
    addr: SocketAddr,
    /// Serve https/wss with this PEM certificate (for *.DOMAIN and DOMAIN).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The PEM private key for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// A token agents must present (repeatable). Without any, every agent is admitted.
    #[arg(long = "token", value_name = "TOKEN")]
    tokens: Vec<String>,
    /// A file of tokens, one per line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// The port in public URLs, when it differs from --addr's (a load balancer on 443).
    #[arg(long)]
    public_port: Option<u16>,
    /// The most agents connected at once.
    #[arg(long, default_value_t = 1_000)]
    max_agents: usize,
    /// The most streams (requests in flight, open WebSockets) per agent.
    #[arg(long, default_value_t = 4_096)]
    max_streams_per_agent: usize,
    /// Bytes per second per tunnel, both directions together (default: unlimited).
    #[arg(long, value_name = "BYTES")]
    bytes_per_second: Option<u64>,
    /// Ping the agents' links and idle public WebSockets after this many seconds.
    #[arg(long, default_value_t = 15)]
    keepalive: u64,
}

/// `sockeye http PORT`: expose a local server.
#[derive(Debug, clap::Args)]
pub(crate) struct HttpArgs {
    /// The local port (or host:port, or http://host:port) to expose.
    local: String,
    /// The subdomain to ask for (default: a random one).
    #[arg(long)]
    subdomain: Option<String>,
    /// The tunnel server.
    #[arg(long)]
    server: String,
    /// The token the server's operator gave you.
    #[arg(long)]
    token: Option<String>,
    /// Require HTTP basic auth (user:pass) from the public, at the server.
    #[arg(long, value_name = "USER:PASS")]
    auth: Option<String>,
    /// The Host the local server sees: "rewrite" for the local address, or a value
    /// (default: the public host).
    #[arg(long, value_name = "rewrite|HOST")]
    host_header: Option<String>,
    #[command(flatten)]
    agent: AgentFlags,
    /// Keep a timeline of messages per WebSocket in the inspector.
    #[arg(long)]
    capture_frames: bool,
}

/// `sockeye start`: the tunnels of a sockeye.toml.
#[derive(Debug, clap::Args)]
pub(crate) struct StartArgs {
    /// Tunnels to start, by name.
    #[arg(required_unless_present = "all")]
    names: Vec<String>,
    /// Start every tunnel in the file.
    #[arg(long, conflicts_with = "names")]
    all: bool,
    /// The config file.
    #[arg(long, default_value = "sockeye.toml")]
    config: PathBuf,
    #[command(flatten)]
    agent: AgentFlags,
}

#[derive(Debug, clap::Args)]
struct AgentFlags {
    /// Where the inspector listens, or "off".
    #[arg(long, value_name = "ADDR|off")]
    inspect: Option<String>,
    /// Open the inspector in a browser (xdg-open/open), best effort.
    #[arg(long)]
    open: bool,
    /// Reach the tunnel server through this proxy: http://[user:pass@]host:port or
    /// socks5://host:port.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
}

impl AgentFlags {
    fn apply(&self, config: &mut AgentConfig) -> anyhow::Result<()> {
        match self.inspect.as_deref() {
            None => {}
            Some("off") => config.inspect = None,
            Some(addr) => {
                config.inspect = Some(addr.parse().with_context(|| {
                    format!("--inspect {addr:?}: expected host:port such as 127.0.0.1:4040, or off")
                })?)
            }
        }
        config.open_browser = self.open;
        if let Some(proxy) = &self.proxy {
            config.proxy = Some(
                sockeye::ProxyConfig::parse(proxy).with_context(|| format!("--proxy {proxy:?}"))?,
            );
        }
        Ok(())
    }
}

pub(crate) async fn tunnel_server(args: TunnelServerArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(&args.domain)
        .max_agents(args.max_agents)
        .max_streams_per_agent(args.max_streams_per_agent)
        .bytes_per_second(args.bytes_per_second)
        .keepalive(Duration::from_secs(args.keepalive.max(1)))
        .public_port(args.public_port);
    config.tokens = args.tokens;
    if let Some(path) = &args.tokens_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --tokens-file {}", path.display()))?;
        config.tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        config.tls = Some(sockeye_server::tls::server_config(cert, key)?);
    }
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    TunnelServer::new(config)?
        .serve(listener, crate::shutdown_signal())
        .await?;
    Ok(())
}

pub(crate) async fn http(args: HttpArgs) -> anyhow::Result<()> {
    let mut tunnel = TunnelConfig::new(args.local);
    tunnel.subdomain = args.subdomain;
    tunnel.auth = args.auth;
    tunnel.host_header = args.host_header;
    tunnel.capture_frames = args.capture_frames;
    let mut config = AgentConfig::new(&args.server).tunnel(tunnel);
    config.token = args.token;
    args.agent.apply(&mut config)?;
    run_agent(config).await
}

pub(crate) async fn start(args: StartArgs) -> anyhow::Result<()> {
    let file = FileConfig::load(&args.config)?;
    let mut config = file.agent(if args.all { &[] } else { &args.names })?;
    args.agent.apply(&mut config)?;
    run_agent(config).await
}

async fn run_agent(config: AgentConfig) -> anyhow::Result<()> {
    Agent::new(config)?.run(crate::shutdown_signal()).await?;
    Ok(())
}

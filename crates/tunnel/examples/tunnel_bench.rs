//! Through the tunnel against direct, all on loopback in one process: an
//! echo server (sockeye's `accept`), a tunnel server, an agent, and the
//! clients.
//!
//! ```text
//! cargo run --release -p sockeye-tunnel --example tunnel_bench -- \
//!     --connections 50 --in-flight 4 --size 32 --seconds 5 --bulk-size 65536 \
//!     --round-trips 5000 --concurrent 1000 [--tunnel-only] [--capture-frames]
//! ```
//!
//! Prints, for direct and tunnelled: echoes per second (small messages),
//! MB/s (bulk messages), round-trip p50/p99 (one message at a time), and
//! how long 1,000 WebSockets through one agent take to open and echo once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sockeye::{Message, WebSocket};
use sockeye_tunnel::{Agent, AgentConfig, ServerConfig, TunnelConfig, TunnelServer};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
struct Args {
    connections: usize,
    in_flight: usize,
    size: usize,
    bulk_size: usize,
    seconds: f64,
    round_trips: usize,
    concurrent: usize,
    /// Measure only through the tunnel (for profiling).
    tunnel_only: bool,
    /// Turn the inspector's frame capture on (its cost, against a run without).
    capture_frames: bool,
}

fn parse() -> Args {
    let mut args = Args {
        connections: 50,
        in_flight: 4,
        size: 32,
        bulk_size: 64 * 1024,
        seconds: 5.0,
        round_trips: 5000,
        concurrent: 1000,
        tunnel_only: false,
        capture_frames: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--connections" => args.connections = value().parse().expect("N"),
            "--in-flight" => args.in_flight = value().parse().expect("K"),
            "--size" => args.size = value().parse().expect("BYTES"),
            "--bulk-size" => args.bulk_size = value().parse().expect("BYTES"),
            "--seconds" => args.seconds = value().parse().expect("S"),
            "--round-trips" => args.round_trips = value().parse().expect("N"),
            "--concurrent" => args.concurrent = value().parse().expect("N"),
            "--tunnel-only" => args.tunnel_only = true,
            "--capture-frames" => args.capture_frames = true,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// Where a client connects, and the Host it sends.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    host: Option<String>,
}

impl Target {
    async fn connect(&self) -> WebSocket<sockeye::MaybeTlsStream> {
        let mut config = sockeye::Config::default();
        if let Some(host) = &self.host {
            config = config.header(http::header::HOST, host.parse().unwrap());
        }
        sockeye::connect_with(&format!("ws://{}/", self.addr), &config)
            .await
            .expect("connect")
            .0
    }
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                if let Ok(mut ws) = sockeye::accept(tcp).await {
                    while let Some(Ok(message)) = ws.recv().await {
                        if message.is_data() && ws.send(message).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// This process's CPU time (user + system), from /proc (Linux); zero elsewhere.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

/// Echoes per second and bytes per second with `connections` × `in_flight`
/// messages of `size` bytes always in flight.
async fn throughput(
    target: &Target,
    connections: usize,
    in_flight: usize,
    size: usize,
    seconds: f64,
) -> (f64, f64, Duration) {
    let echoes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let ws = target.connect().await;
        let (echoes, stop) = (Arc::clone(&echoes), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut ws = ws;
            let payload = Bytes::from(vec![b'x'; size]);
            for _ in 0..in_flight {
                ws.send(Message::Binary(payload.clone())).await.unwrap();
            }
            while !stop.load(Ordering::Relaxed) {
                match ws.recv().await {
                    Some(Ok(m)) if m.is_data() => {
                        echoes.fetch_add(1, Ordering::Relaxed);
                        ws.send(Message::Binary(payload.clone())).await.unwrap();
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_count = echoes.load(Ordering::Relaxed);
    let started = Instant::now();
    let cpu = cpu_time();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let count = echoes.load(Ordering::Relaxed) - start_count;
    let cpu = cpu_time().saturating_sub(cpu);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    let per_second = count as f64 / elapsed;
    let cpu_per_echo = cpu / (count.max(1) as u32);
    (
        per_second,
        per_second * size as f64 * 2.0 / 1e6,
        cpu_per_echo,
    )
}

/// Round-trip times of one message at a time, sorted.
async fn round_trips(target: &Target, n: usize) -> Vec<Duration> {
    let mut ws = target.connect().await;
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let started = Instant::now();
        ws.send(Message::Binary(Bytes::from_static(
            b"0123456789abcdef0123456789abcdef",
        )))
        .await
        .unwrap();
        loop {
            if let Some(Ok(m)) = ws.recv().await {
                if m.is_data() {
                    break;
                }
            }
        }
        if i >= 100 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    times
}

fn pct(times: &[Duration], p: f64) -> Duration {
    times[((times.len() - 1) as f64 * p) as usize]
}

/// Opens `n` WebSockets at once, each echoing once, and keeps them all open.
async fn concurrent(target: &Target, n: usize) -> (Duration, usize) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(n);
    let release = tokio_util::sync::CancellationToken::new();
    for i in 0..n {
        let target = target.clone();
        let ready_tx = ready_tx.clone();
        let release = release.clone();
        tasks.push(tokio::spawn(async move {
            let mut ws = target.connect().await;
            let text = format!("connection {i}");
            ws.send(text.as_str()).await.unwrap();
            let ok = matches!(ws.recv().await, Some(Ok(Message::Text(t))) if t.as_str() == text);
            let _ = ready_tx.send(ok).await;
            release.cancelled().await;
            drop(ws);
        }));
    }
    let mut ok = 0;
    for _ in 0..n {
        if ready.recv().await == Some(true) {
            ok += 1;
        }
    }
    let elapsed = started.elapsed();
    release.cancel();
    for task in tasks {
        task.abort();
    }
    (elapsed, ok)
}

fn main() {
    let args = parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let echo = echo_server().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = listener.local_addr().unwrap();
        let server = TunnelServer::new(ServerConfig::new("tunnel.localhost")).unwrap();
        tokio::spawn(server.serve(listener, std::future::pending()));
        let mut tunnel = TunnelConfig::new(echo.port().to_string()).subdomain("bench");
        tunnel.capture_frames = args.capture_frames;
        let mut config = AgentConfig::new(&format!("http://{server_addr}"))
            .inspect(None)
            .tunnel(tunnel);
        config.status_line = false;
        let agent = Agent::new(config).unwrap();
        let mut handle = agent.handle();
        tokio::spawn(agent.run(std::future::pending()));
        handle.connected().await.unwrap();

        let direct = Target {
            addr: echo,
            host: None,
        };
        let tunnel = Target {
            addr: server_addr,
            host: Some(format!("bench.tunnel.localhost:{}", server_addr.port())),
        };
        println!("{args:?}");
        let targets = if args.tunnel_only {
            vec![("tunnel", &tunnel)]
        } else {
            vec![("direct", &direct), ("tunnel", &tunnel)]
        };
        for (name, target) in targets {
            let (small, _, cpu) = throughput(
                target,
                args.connections,
                args.in_flight,
                args.size,
                args.seconds,
            )
            .await;
            let (_, bulk, _) = throughput(target, 4, 2, args.bulk_size, args.seconds).await;
            let times = round_trips(target, args.round_trips).await;
            println!(
                "{name}: {small:.0} echoes/s ({} conns x {} in flight x {} B, {cpu:?} CPU per echo), \
                 bulk {bulk:.0} MB/s \
                 (4 conns x 2 x {} B), round trip p50 {:?} p99 {:?}",
                args.connections,
                args.in_flight,
                args.size,
                args.bulk_size,
                pct(&times, 0.5),
                pct(&times, 0.99)
            );
        }
        let (elapsed, ok) = concurrent(&tunnel, args.concurrent).await;
        println!(
            "tunnel: {ok}/{} WebSockets open at once through one agent, all echoed, in {elapsed:?}",
            args.concurrent
        );
    });
}

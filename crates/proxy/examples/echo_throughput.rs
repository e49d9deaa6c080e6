//! Echo throughput against any ws:// echo URL: N connections, each keeping
//! K small messages in flight, for a fixed time; prints echoes per second.
//!
//! Run it against a server directly and through `sockeye proxy` to compare
//! (docs/BENCHMARKS.md, "Proxy", has the commands and the figures):
//!
//! ```text
//! cargo run --release -p sockeye-proxy --example echo_throughput -- \
//!     --url ws://127.0.0.1:3000/echo --connections 50 --in-flight 4 --size 32 --seconds 10
//! ```
//!
//! It can also serve the two other roles, so that a comparison needs
//! nothing else: `--serve-echo ADDR` runs a minimal echo server (sockeye's
//! `accept` and `WebSocket`), `--serve-proxy ADDR --to URL` runs the proxy;
//! `--current-thread` runs any role on one thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockeye::Message;

#[derive(Debug)]
struct Args {
    url: String,
    connections: usize,
    in_flight: usize,
    size: usize,
    seconds: f64,
    serve_echo: Option<String>,
    serve_proxy: Option<String>,
    to: Option<String>,
    current_thread: bool,
}

fn parse() -> Args {
    let mut args = Args {
        url: "ws://127.0.0.1:3000/echo".into(),
        connections: 50,
        in_flight: 4,
        size: 32,
        seconds: 10.0,
        serve_echo: None,
        serve_proxy: None,
        to: None,
        current_thread: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value(),
            "--connections" => args.connections = value().parse().expect("--connections N"),
            "--in-flight" => args.in_flight = value().parse().expect("--in-flight K"),
            "--size" => args.size = value().parse().expect("--size BYTES"),
            "--seconds" => args.seconds = value().parse().expect("--seconds S"),
            "--serve-echo" => args.serve_echo = Some(value()),
            "--serve-proxy" => args.serve_proxy = Some(value()),
            "--to" => args.to = Some(value()),
            "--current-thread" => args.current_thread = true,
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = parse();
    let runtime = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    }
    .expect("a runtime");
    runtime.block_on(async move {
        if let Some(addr) = &args.serve_echo {
            return serve_echo(addr).await;
        }
        if let Some(addr) = &args.serve_proxy {
            let to = args.to.as_deref().expect("--serve-proxy needs --to URL");
            let config = sockeye_proxy::ProxyConfig::default()
                .to(to)
                .expect("a backend URL")
                .max_connections(100_000)
                .max_per_ip(100_000);
            let addr = addr.parse().expect("an address");
            let forever = std::future::pending::<()>();
            sockeye_proxy::serve(config, addr, forever)
                .await
                .expect("the proxy");
            return;
        }
        load(&args).await;
    });
}

async fn serve_echo(addr: &str) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    eprintln!("echo server on {}", listener.local_addr().unwrap());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = sockeye::accept(tcp).await else {
                return;
            };
            while let Some(Ok(message)) = ws.recv().await {
                if message.is_data() && ws.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn load(args: &Args) {
    let received = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let payload = "x".repeat(args.size);
    let mut sockets = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (ws, _) = sockeye::connect(&args.url).await.expect("connect");
        sockets.push(ws);
    }
    // Warm up for a second, then count.
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let received = Arc::clone(&received);
        let running = Arc::clone(&running);
        let payload = payload.clone();
        let in_flight = args.in_flight;
        tasks.push(tokio::spawn(async move {
            for _ in 0..in_flight {
                ws.feed(payload.as_str()).await.expect("send");
            }
            ws.flush().await.expect("flush");
            while running.load(Ordering::Relaxed) {
                match ws.recv().await {
                    Some(Ok(Message::Text(_))) => {
                        received.fetch_add(1, Ordering::Relaxed);
                        ws.send(payload.as_str()).await.expect("send");
                    }
                    Some(Ok(_)) => {}
                    other => panic!("connection ended: {other:?}"),
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_count = received.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let count = received.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    println!(
        "url={} connections={} in_flight={} size={} seconds={:.1} echoes={} echoes_per_sec={:.0}",
        args.url,
        args.connections,
        args.in_flight,
        args.size,
        elapsed,
        count,
        count as f64 / elapsed
    );
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
}

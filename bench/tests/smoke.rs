//! Each scenario, briefly, against servers in this process: the demo app of
//! `sockeye serve` (the sockeye protocol) and a broadcast endpoint that
//! behaves like bench/peers/ws-fanout.mjs (the raw protocol). Checks that
//! the generator works end to end (deliveries arrive, nothing fails); the
//! figures themselves come from bench/run-fanout-idle.sh, not from tests.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sockeye_bench::echo::{EchoConfig, EchoReport};
use sockeye_bench::fanout::FanoutConfig;
use sockeye_bench::idle::IdleConfig;
use sockeye_bench::large::LargeConfig;
use sockeye_bench::{Protocol, Report, Scenario, Target};
use sockeye_proto::{Message, PreparedMessage};
use sockeye_server::{App, DemoConfig, Endpoint, EndpointConfig, EndpointHandle};

/// A server on 127.0.0.1:0, on a runtime of its own; stops when dropped.
struct Server {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(app: impl FnOnce() -> App + Send + 'static) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(app().serve(listener, async {
                let _ = stopped.await;
            }));
            addr
        });
        Server {
            addr,
            _stop: stop,
            _runtime: runtime,
        }
    }

    /// `sockeye serve`'s app: the pub/sub endpoint at /ws with its
    /// heartbeats and rate limit.
    fn demo() -> Server {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let config = DemoConfig {
            simulations: false,
            ..DemoConfig::default()
        };
        let app = runtime.block_on(sockeye_server::demo_app(&config)).unwrap();
        Server::start(move || app)
    }

    /// What bench/peers/ws-fanout.mjs does: every message goes to every
    /// connection (here the sender too; the publisher ignores its copy).
    fn broadcast() -> Server {
        Server::start(|| {
            let handle: Arc<OnceLock<EndpointHandle>> = Arc::default();
            let in_handler = Arc::clone(&handle);
            let endpoint =
                Endpoint::new(EndpointConfig::default()).on_message(move |_, message| {
                    let handle = Arc::clone(&in_handler);
                    async move {
                        let prepared = match message {
                            Message::Binary(data) => PreparedMessage::binary(data),
                            Message::Text(text) => PreparedMessage::text(text),
                            _ => return,
                        };
                        if let Some(handle) = handle.get() {
                            handle.broadcast(prepared);
                        }
                    }
                });
            let mut app = App::new();
            let _ = handle.set(app.add_endpoint("/ws", endpoint));
            app
        })
    }

    fn target(&self) -> Target {
        self.path("/ws")
    }

    fn path(&self, path: &str) -> Target {
        Target::parse(&format!("ws://{}{path}", self.addr)).unwrap()
    }
}

fn fanout(server: &Server, protocol: Protocol) -> sockeye_bench::fanout::FanoutReport {
    let config = FanoutConfig {
        protocol,
        subscribers: 50,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        // Under the demo endpoint's limit of 200 messages/s per connection.
        rate: Some(100.0),
        window: 8,
        server_pid: Some(std::process::id()),
        ..FanoutConfig::new(server.target())
    };
    match sockeye_bench::run(&Scenario::Fanout(config)).unwrap() {
        Report::Fanout(report) => report,
        other => panic!("a fan-out report, not {other:?}"),
    }
}

fn check_fanout(report: &sockeye_bench::fanout::FanoutReport) {
    println!("{report}");
    assert_eq!(report.subscribers, 50);
    assert!(report.published > 0, "{report}");
    assert!(report.deliveries > 0, "{report}");
    assert_eq!(report.deliveries, report.expected, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.latency.count, report.deliveries);
    assert!(report.latency.p50_us > 0.0);
    assert!(report.server_cpu_per_delivery_us.is_some());
    let json: serde_json::Value =
        serde_json::from_str(&Report::Fanout(report.clone()).to_json()).unwrap();
    assert_eq!(json["scenario"], "fanout");
}

#[test]
fn fanout_against_the_demo_server() {
    let server = Server::demo();
    check_fanout(&fanout(&server, Protocol::Sockeye));
}

#[test]
fn fanout_against_a_raw_broadcast_server() {
    let server = Server::broadcast();
    check_fanout(&fanout(&server, Protocol::Raw));
}

#[test]
fn idle_connections_against_the_demo_server() {
    let server = Server::demo();
    let config = IdleConfig {
        connections: 50,
        server_pid: Some(std::process::id()),
        settle: Duration::from_millis(100),
        samples: 1,
        hold: Duration::from_millis(300),
        ..IdleConfig::new(server.target())
    };
    let Report::Idle(report) = sockeye_bench::run(&Scenario::Idle(config)).unwrap() else {
        panic!("an idle report");
    };
    println!("{report}");
    assert_eq!(report.opened, 50, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.rss_before_kib.is_some() && report.kib_per_connection.is_some());
}

/// sockeye's lean echo server (what bench/examples/echo-server.rs runs).
struct RawEcho {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _runtime: tokio::runtime::Runtime,
}

impl RawEcho {
    fn start() -> RawEcho {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut config = sockeye_server::ServeConfig::default();
            config.websocket.deflate = None;
            tokio::spawn(async move {
                sockeye_server::EchoServer::new(config)
                    .run(listener, async {
                        let _ = stopped.await;
                    })
                    .await
            });
            addr
        });
        RawEcho {
            addr,
            _stop: stop,
            _runtime: runtime,
        }
    }
}

fn echo(config: EchoConfig) -> EchoReport {
    match sockeye_bench::run(&Scenario::Echo(config)).unwrap() {
        Report::Echo(report) => report,
        other => panic!("an echo report, not {other:?}"),
    }
}

/// What a user checks first: echoes came back intact, none failed, and the
/// figures add up.
fn check_echo(report: &EchoReport, connections: usize) {
    println!("{report}");
    assert_eq!(report.connections, connections, "{report}");
    assert!(report.messages > 0, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert_eq!(report.latency.count, report.messages);
    assert!(report.latency.p50_us > 0.0 && report.latency.p99_us >= report.latency.p50_us);
    let mb = report.messages as f64 * report.size as f64 / 1e6;
    assert!((report.mb_per_s * report.cpu.wall_s - mb).abs() < 1e-6 * mb.max(1.0));
    assert!(report.server_cpu_per_message_us.is_some() && report.server_cpu_per_mb_us.is_some());
}

#[test]
fn echo_text_against_the_demo_server() {
    let server = Server::demo();
    let report = echo(EchoConfig {
        connections: 20,
        size: 20,
        in_flight: 8,
        duration: Duration::from_millis(500),
        warmup: Duration::from_millis(100),
        server_pid: Some(std::process::id()),
        ..EchoConfig::new(server.path("/echo"))
    });
    check_echo(&report, 20);
    assert!(!report.binary);
    let json: serde_json::Value =
        serde_json::from_str(&Report::Echo(report.clone()).to_json()).unwrap();
    assert_eq!(json["scenario"], "echo");
    assert_eq!(json["messages"], report.messages);
}

#[test]
fn echo_binary_against_the_lean_echo_server() {
    let server = RawEcho::start();
    let report = echo(EchoConfig {
        connections: 4,
        size: 64 * 1024,
        binary: true,
        in_flight: 4,
        duration: Duration::from_millis(500),
        warmup: Duration::from_millis(100),
        server_pid: Some(std::process::id()),
        ..EchoConfig::new(Target::parse(&format!("ws://{}/echo", server.addr)).unwrap())
    });
    check_echo(&report, 4);
}

#[test]
fn large_messages_of_16_mib_are_echoed_whole() {
    let server = Server::demo();
    let config = LargeConfig {
        // Unoptimized builds mask and check 16 MiB far slower: give them
        // time for a few round trips (CI tests in release).
        duration: Duration::from_millis(if cfg!(debug_assertions) { 4000 } else { 500 }),
        warmup: Duration::from_millis(50),
        server_pid: Some(std::process::id()),
        ..LargeConfig::new(server.path("/echo"))
    };
    let Report::Large(report) = sockeye_bench::run(&Scenario::Large(config)).unwrap() else {
        panic!("a large report");
    };
    check_echo(&report, 1);
    assert_eq!(report.size, 16 << 20);
    assert!(report.binary && report.in_flight == 1);
}

#[test]
fn an_echo_server_that_does_not_echo_is_an_error() {
    // The demo's pub/sub endpoint answers with `welcome` and errors, not echoes.
    let server = Server::demo();
    let report = echo(EchoConfig {
        connections: 1,
        in_flight: 1,
        duration: Duration::from_millis(200),
        warmup: Duration::ZERO,
        ..EchoConfig::new(server.target())
    });
    assert!(report.errors > 0, "{report}");
}

#[test]
fn a_bad_url_or_size_is_refused_before_connecting() {
    assert!(Target::parse("http://127.0.0.1:1/ws").is_err());
    assert!(Target::parse("wss://127.0.0.1:1/ws").is_err());
    let config = FanoutConfig {
        size: 10,
        ..FanoutConfig::new(Target::parse("ws://127.0.0.1:1/ws").unwrap())
    };
    let error = sockeye_bench::run(&Scenario::Fanout(config)).unwrap_err();
    assert!(error.to_string().contains("--size"), "{error}");
}

//! Each scenario, briefly, against servers in this process: the demo app of
//! `sockeye serve` (the sockeye protocol) and a broadcast endpoint that
//! behaves like bench/peers/ws-fanout.mjs (the raw protocol). Checks that
//! the generator works end to end (deliveries arrive, nothing fails); the
//! figures themselves come from bench/run-fanout-idle.sh, not from tests.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sockeye_bench::fanout::FanoutConfig;
use sockeye_bench::idle::IdleConfig;
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
        Target::parse(&format!("ws://{}/ws", self.addr)).unwrap()
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

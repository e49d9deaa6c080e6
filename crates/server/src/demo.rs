//! The demo server behind `sockeye serve`: the pages in web/ (embedded in
//! the binary), the pub/sub endpoint they use, an echo endpoint, metrics, a
//! simulated live feed and a dashboard of the server's own numbers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sockeye::DeflateConfig;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::endpoint::{Endpoint, EndpointConfig, RateLimit, RateLimitAction};
use crate::hub::{Hub, HubConfig};
use crate::metrics::process_rss_bytes;
use crate::protocol::{json_encoder, pubsub_endpoint};
use crate::App;

#[derive(rust_embed::RustEmbed)]
#[folder = "../../web/"]
// The tunnel inspector's page is served by the agent, not here.
#[exclude = "inspector/*"]
struct Pages;

/// Settings of the demo server.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Join a cluster through this Redis URL; `None` keeps everything in-process.
    pub redis: Option<String>,
    /// Serve https/wss with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The largest message accepted.
    pub max_message_size: usize,
    /// permessage-deflate on the echo and pub/sub endpoints.
    pub compression: bool,
    /// Run the simulated feed and the dashboard publisher.
    pub simulations: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            redis: None,
            tls: None,
            max_message_size: 16 << 20,
            compression: true,
            simulations: true,
        }
    }
}

/// Errors that stop the demo server from starting.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Redis could not be reached.
    #[error(transparent)]
    Broker(#[from] crate::hub::BrokerError),
    /// The certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The listener failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn page(path: &str) -> Response {
    match Pages::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype().to_string();
            ([(http::header::CONTENT_TYPE, mime)], file.data.into_owned()).into_response()
        }
        None => (http::StatusCode::NOT_FOUND, format!("no page at /{path}\n")).into_response(),
    }
}

/// The URL with any password replaced, for logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Builds the demo [`App`] (without starting its background tasks).
pub async fn demo_app(config: &DemoConfig) -> Result<App, DemoError> {
    let hub_config = HubConfig {
        encoder: json_encoder(),
        ..HubConfig::default()
    };
    let hub = match &config.redis {
        Some(url) => {
            let broker =
                crate::hub::RedisBroker::connect(url, crate::hub::RedisConfig::default()).await?;
            info!("joined the cluster through Redis at {}", redact(url));
            Hub::with_broker(hub_config, Arc::new(broker))
        }
        None => Hub::new(hub_config),
    };
    let deflate = config.compression.then(DeflateConfig::default);
    let mut ws = EndpointConfig::default()
        .max_payload_length(config.max_message_size)
        .heartbeat(Duration::from_secs(30), Duration::from_secs(10))
        .rate_limit(RateLimit {
            messages_per_second: 200.0,
            bytes_per_second: 1e6,
            action: RateLimitAction::Reply,
        });
    ws.compression = deflate.clone();
    // A client that cannot keep up is closed with 1013 and resumes with `since`.
    ws.backpressure_policy =
        crate::endpoint::BackpressurePolicy::Close(sockeye_proto::CloseCode::TRY_AGAIN_LATER);
    let mut echo = EndpointConfig::default()
        .max_payload_length(config.max_message_size)
        .protocols(["*"]);
    echo.compression = deflate;

    let mut app = App::with_hub(hub)
        .route("/", get(|| async { page("index.html") }))
        .route("/chat", get(|| async { page("chat.html") }))
        .route("/feed", get(|| async { page("feed.html") }))
        .route("/dashboard", get(|| async { page("dashboard.html") }))
        .route("/tester", get(|| async { page("tester.html") }))
        .route(
            "/{file}",
            get(
                |axum::extract::Path(file): axum::extract::Path<String>| async move { page(&file) },
            ),
        )
        .metrics_route("/metrics");
    app.add_endpoint("/ws", pubsub_endpoint(ws));
    app.add_endpoint(
        "/echo",
        Endpoint::new(echo).on_message(|conn, message| async move {
            conn.send(message);
        }),
    );
    Ok(app)
}

/// Runs the demo server on `listener` until `shutdown` completes.
pub async fn serve_demo(
    config: DemoConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DemoError> {
    let app = demo_app(&config).await?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
        None => None,
    };
    let mut background = Vec::new();
    if config.simulations {
        background.push(tokio::spawn(feed(app.hub().clone())));
        background.push(tokio::spawn(dashboard(
            app.hub().clone(),
            app.metrics().clone(),
        )));
    }
    let addr = listener.local_addr()?;
    let (http, ws) = if tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    info!("listening on {http}://{addr} (pages at /, echo at {ws}://{addr}/echo, pub/sub at {ws}://{addr}/ws)");
    let result = match tls {
        Some(tls) => app.serve_tls(listener, tls, shutdown).await,
        None => app.serve(listener, shutdown).await,
    };
    for task in background {
        task.abort();
    }
    Ok(result?)
}

/// The sender of what the server publishes itself; no user id can be it.
const SERVER: &str = "@server";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A simulated market and weather feed: a random walk per symbol.
async fn feed(hub: Hub) {
    let mut symbols: Vec<(&str, &str, f64)> = vec![
        ("feed:stocks", "ACME", 123.45),
        ("feed:stocks", "GLOBX", 48.10),
        ("feed:stocks", "INITech", 310.00),
        ("feed:crypto", "BTC", 97_000.0),
        ("feed:crypto", "ETH", 3_400.0),
        ("feed:weather", "Lisbon °C", 17.0),
        ("feed:weather", "Oslo °C", -2.0),
    ];
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut failures = 0u32;
    loop {
        tick.tick().await;
        let i = rand::random_range(0..symbols.len());
        let (topic, symbol, price) = &mut symbols[i];
        let step = if topic.ends_with("weather") {
            0.2
        } else {
            *price * 0.004
        };
        let change = (rand::random::<f64>() - 0.5) * 2.0 * step;
        *price = (*price + change).max(0.01);
        let data = json!({"symbol": symbol, "price": (*price * 100.0).round() / 100.0, "change": (change * 100.0).round() / 100.0, "ts": now_ms()});
        if let Err(e) = hub
            .publish(topic, data.to_string(), true, Some(SERVER.into()))
            .await
        {
            failures += 1;
            if failures.is_power_of_two() {
                warn!("feed: publish failed ({failures} so far): {e}");
            }
        }
    }
}

/// Publishes the server's numbers every second for the dashboard.
async fn dashboard(hub: Hub, metrics: crate::Metrics) {
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let mut s = metrics.snapshot();
        s.publishes = hub.stats().0;
        let data = json!({
            "connections": s.connections, "messages_in": s.messages_in, "messages_out": s.messages_out,
            "bytes_in": s.bytes_in, "bytes_out": s.bytes_out, "publishes": s.publishes,
            "rss_bytes": process_rss_bytes().unwrap_or(0), "uptime_s": started.elapsed().as_secs(), "ts": now_ms(),
        });
        let _ = hub
            .publish(
                "dashboard:metrics",
                data.to_string(),
                true,
                Some(SERVER.into()),
            )
            .await;
    }
}

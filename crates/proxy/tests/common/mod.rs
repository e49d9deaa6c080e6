//! Shared by the proxy's integration tests: backends on 127.0.0.1:0, a
//! proxy in front of them, a recording observer.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sockeye::{Message, WebSocket};
use sockeye_proxy::{CloseInfo, ConnId, Direction, FrameInfo, Observer, Proxy, ProxyConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Every test step waits at most this long.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test after [`STEP`].
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .expect("step timed out")
}

/// A WebSocket backend: accepts with `config`, reports each request, and
/// hands each connection to `handler`.
pub struct Backend {
    pub addr: SocketAddr,
    pub requests: mpsc::UnboundedReceiver<http::Request<()>>,
}

impl Backend {
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

pub async fn backend<F, Fut>(config: sockeye::Config, handler: F) -> Backend
where
    F: Fn(WebSocket<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::unbounded_channel();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let config = config.clone();
            let tx = tx.clone();
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let accepted = sockeye::accept_with(tcp, &config, |req| {
                    let _ = tx.send(req.clone());
                    Ok(())
                })
                .await;
                if let Ok((ws, _)) = accepted {
                    handler(ws).await;
                }
            });
        }
    });
    Backend { addr, requests }
}

/// Echoes every text and binary message until the peer closes.
pub async fn echo(mut ws: WebSocket<TcpStream>) {
    while let Some(Ok(message)) = ws.recv().await {
        if message.is_data() && ws.send(message).await.is_err() {
            break;
        }
    }
}

/// An echo backend with the default config.
pub async fn echo_backend() -> Backend {
    backend(sockeye::Config::default(), echo).await
}

/// A proxy with `config`, serving on 127.0.0.1:0 until the sender is dropped.
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub proxy: Proxy,
    stop: Option<oneshot::Sender<()>>,
}

impl RunningProxy {
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn metrics(&self) -> String {
        self.proxy.metrics().render()
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

pub async fn proxy(config: ProxyConfig) -> RunningProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Proxy::new(config).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = proxy.clone();
    tokio::spawn(async move {
        let _ = serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    RunningProxy {
        addr,
        proxy,
        stop: Some(stop),
    }
}

/// The next data or close message, skipping pings and pongs.
pub async fn next_data(ws: &mut WebSocket<sockeye::MaybeTlsStream>) -> Message {
    loop {
        match within(ws.recv()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Everything an observer was told.
#[derive(Debug, Default)]
pub struct Recorded {
    pub frames: Vec<(ConnId, Direction, FrameInfo, Vec<u8>)>,
    pub closes: Vec<(ConnId, CloseInfo)>,
    pub upgrades: Vec<ConnId>,
    pub requests: usize,
    pub errors: Vec<String>,
}

/// An observer that records everything, with previews of `preview` bytes.
#[derive(Debug, Default)]
pub struct Recorder {
    pub preview: usize,
    pub seen: Mutex<Recorded>,
}

impl Observer for Recorder {
    fn on_request(&self, _: &sockeye_proxy::RequestMeta<'_>) {
        self.seen.lock().unwrap().requests += 1;
    }
    fn on_upgrade(
        &self,
        conn: ConnId,
        _: &sockeye_proxy::RequestMeta<'_>,
        _: &sockeye_proxy::ResponseMeta<'_>,
    ) {
        self.seen.lock().unwrap().upgrades.push(conn);
    }
    fn wants_frames(&self) -> bool {
        true
    }
    fn wants_previews(&self) -> usize {
        self.preview
    }
    fn on_frame(&self, conn: ConnId, direction: Direction, frame: &FrameInfo, preview: &[u8]) {
        self.seen
            .lock()
            .unwrap()
            .frames
            .push((conn, direction, *frame, preview.to_vec()));
    }
    fn on_close(&self, conn: ConnId, close: &CloseInfo) {
        self.seen.lock().unwrap().closes.push((conn, close.clone()));
    }
    fn on_error(&self, _: ConnId, error: &sockeye_proxy::Error) {
        self.seen.lock().unwrap().errors.push(error.to_string());
    }
}

/// Waits until `check` holds (polling: what it reads has no event to await).
pub async fn eventually(check: impl Fn() -> bool) {
    within(async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Waits until `check` holds for what `recorder` saw.
pub async fn until_recorded(recorder: &Recorder, check: impl Fn(&Recorded) -> bool) {
    within(async {
        loop {
            if check(&recorder.seen.lock().unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

//! tokio-tungstenite echo server, as its `examples/echo-server.rs`: accept,
//! split, and `forward` the text and binary messages back into the sink
//! (`forward` feeds while messages are ready and flushes when the stream
//! would wait, so writes batch under load; pings are answered by
//! tungstenite itself).
//!
//!   tungstenite-echo [PORT]    # 0 (default) picks a free port
//!
//! Prints `listening on ws://127.0.0.1:PORT/ (tokio-tungstenite X)`. One
//! current-thread runtime: the server is meant to be pinned to one core.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

async fn echo(tcp: TcpStream) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    // 16 MiB messages must pass (the defaults are 64 MiB and 16 MiB).
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
    let (write, read) = ws.split();
    read.try_filter(|m| future::ready(m.is_text() || m.is_binary()))
        .forward(write)
        .await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args().nth(1).map_or(Ok(0), |p| p.parse())?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "listening on ws://{}/ (tokio-tungstenite 0.30.0)",
        listener.local_addr()?
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = echo(tcp).await;
        });
    }
}

//! sockeye's lean echo server ([`sockeye_server::EchoServer`]: a task per
//! connection, `sockeye::WebSocket`, no framework), set up as the peers in
//! bench/peers are: no compression, 64 MiB messages, Nagle off, one
//! current-thread runtime for the one core it is pinned to.
//!
//!   cargo run --release -p sockeye-bench --example echo-server -- [PORT]
//!
//! Prints `listening on ws://127.0.0.1:PORT/echo`. bench/run.sh runs it as
//! the `sockeye-raw` server; `sockeye serve`'s `/echo` is the framework one.

use sockeye_server::{EchoServer, ServeConfig};

fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p
            .parse()
            .map_err(|_| std::io::Error::other(format!("not a port: {p}")))?,
        None => 0,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on ws://{}/echo", listener.local_addr()?);
        let mut config = ServeConfig::default();
        config.websocket.deflate = None;
        config.websocket = config.websocket.max_message_size(64 << 20);
        EchoServer::new(config)
            .run(listener, std::future::pending())
            .await;
        Ok(())
    })
}

//! sockeye's event-loop echo server ([`sockeye_loop::Server`]: one mio loop,
//! no task per connection), set up as the peers in bench/peers are: no
//! compression, 64 MiB messages, Nagle off, one loop for the one core it is
//! pinned to.
//!
//!   cargo run --release -p sockeye-bench --example loop-echo -- [PORT]
//!
//! Prints `listening on ws://127.0.0.1:PORT/echo`. bench/run.sh runs it as
//! the `sockeye-loop` server.

use sockeye_loop::{Config, Handler, Message, Server, Socket};

struct Echo;

impl Handler for Echo {
    fn message(&mut self, socket: &mut Socket<'_>, message: Message) {
        if message.is_data() {
            // Fails only once a close was sent; the message is dropped then.
            let _ = socket.send(message);
        }
    }
}

fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p
            .parse()
            .map_err(|_| std::io::Error::other(format!("not a port: {p}")))?,
        None => 0,
    };
    let mut config = Config::default().threads(1).path("/echo");
    config.websocket = config.websocket.max_message_size(64 << 20);
    let server = Server::bind(([127, 0, 0, 1], port).into(), config)?;
    println!("listening on ws://{}/echo", server.local_addr());
    server.run(|| Echo)
}

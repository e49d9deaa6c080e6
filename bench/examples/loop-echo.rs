//! sockeye's event-loop echo server ([`sockeye_loop::Server`]: one mio loop,
//! no task per connection), set up as the peers in bench/peers are: no
//! compression, 64 MiB messages, Nagle off, one loop for the one core it is
//! pinned to.
//!
//!   cargo run --release -p sockeye-bench --example loop-echo -- [PORT] [--deflate]
//!
//! Prints `listening on ws://127.0.0.1:PORT/echo`. bench/run.sh runs it as
//! the `sockeye-loop` server; scripts/test.sh runs the Autobahn suite against
//! it with `--deflate` (permessage-deflate offered, as for `sockeye serve`).

use sockeye_loop::{Config, Handler, Message, Server, Socket};
use sockeye_proto::extension::DeflateConfig;

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
    let mut port: u16 = 0;
    let mut deflate = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--deflate" => deflate = true,
            p => {
                port = p.parse().map_err(|_| {
                    std::io::Error::other(format!(
                        "usage: loop-echo [PORT] [--deflate]; not a port: {p}"
                    ))
                })?
            }
        }
    }
    let mut config = Config::default().threads(1).path("/echo");
    config.websocket = config.websocket.max_message_size(64 << 20);
    if deflate {
        config = config.deflate(DeflateConfig::default());
    }
    let server = Server::bind(([127, 0, 0, 1], port).into(), config)?;
    println!("listening on ws://{}/echo", server.local_addr());
    server.run(|| Echo)
}

//! `sockeye-loop`: a WebSocket server with one event loop per thread and no
//! task per connection.
//!
//! ```text
//!   thread 1: mio Poll ── listener (SO_REUSEPORT) ── slab of connections ── your Handler
//!   thread 2: mio Poll ── listener (SO_REUSEPORT) ── slab of connections ── your Handler
//!   each connection: a socket + a sockeye_proto::Connection; read and write
//!   buffers belong to the loop and are lent to a connection only while it has
//!   bytes in flight
//! ```
//!
//! This is the shape of uWebSockets: a connection costs its slab entry (under
//! 300 bytes) and nothing else while it waits, so a server can hold very many
//! mostly idle connections. The protocol is the same `sockeye-proto` core as
//! everywhere in sockeye (RFC 6455, permessage-deflate, limits). What it does
//! not have is what `sockeye-server` adds on tokio: HTTP routes, pub/sub,
//! policies, TLS. Handlers run on the loop's thread and must not block.
//!
//! ```no_run
//! use sockeye_loop::{Config, Handler, Message, Server, Socket};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn message(&mut self, socket: &mut Socket<'_>, message: Message) {
//!         if message.is_data() {
//!             // Fails only when the connection is closing; nothing to do then.
//!             let _ = socket.send(message);
//!         }
//!     }
//! }
//!
//! let server = Server::bind("127.0.0.1:9001".parse().unwrap(), Config::default())?;
//! println!("listening on ws://{}/", server.local_addr());
//! server.run(|| Echo)?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod config;
mod event_loop;
mod server;
mod socket;

pub use config::Config;
pub use server::{Handle, Server};
pub use socket::{ConnId, Handler, Socket};
pub use sockeye_proto::{CloseCode, Error, Message};

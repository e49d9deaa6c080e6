//! `sockeye-proto`: the WebSocket protocol (RFC 6455) and permessage-deflate
//! (RFC 7692) with no I/O.
//!
//! ```text
//!   bytes from the socket ──► Connection::read_buf / receive ──► poll_message() ──► Message
//!   Message / send_*()    ──► Connection ──► transmit() (framed, masked, deflated bytes) ──► socket
//!   now: Instant          ──► handle_timeout(now);  poll_timeout() ──► when to call it next
//! ```
//!
//! The crate never touches a socket, a runtime or a clock: bytes and time come
//! in as arguments, messages and bytes go out. That makes every rule of the
//! RFC testable by feeding bytes, and the core usable under any runtime.
//!
//! ```
//! use sockeye_proto::{Connection, Config, Message, Role};
//!
//! let mut client = Connection::new(Role::Client, Config::default());
//! let mut server = Connection::new(Role::Server, Config::default());
//! client.send_text("hello").unwrap();
//! let wire = client.take_transmit();
//! server.receive(&wire);
//! match server.poll_message() {
//!     Some(Ok(Message::Text(text))) => assert_eq!(text, "hello"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

pub mod connection;
pub mod error;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod relay;

pub use connection::{Config, Connection, Message, PreparedMessage, Role, State};
pub use error::{Error, ProtocolError};
pub use frame::{CloseCode, CloseFrame, OpCode, Utf8Bytes};

//! The opening handshake of RFC 6455 (section 4), for both roles, with
//! subprotocol and permessage-deflate negotiation.
//!
//! Sans-I/O like the rest of the crate: the functions take bytes or `http`
//! types and give back `http` types and bytes to send.
//!
//! ```text
//! server: bytes ─► parse_request ─► validate_request ─► accept ─► write_response ─► bytes
//!                                          └─ Err(e) ─► rejection(&e) ─► write_response ─► bytes
//! client: ClientHandshake::new ─► request bytes ... response bytes ─► parse_response ─► validate_response
//! ```
//!
//! ```
//! use http::HeaderMap;
//! use sockeye_proto::handshake::{accept, parse_request, validate_request, write_response, ClientHandshake};
//!
//! let uri = "ws://example.com/chat".parse().unwrap();
//! let protocols = ["chat".to_string()];
//! let (client, request) = ClientHandshake::new(&uri, &protocols, &HeaderMap::new(), None).unwrap();
//!
//! let (req, _len) = parse_request(&request, 16 * 1024).unwrap().expect("complete head");
//! let upgrade = validate_request(&req).unwrap();
//! let accepted = accept(&upgrade, &protocols, None).unwrap();
//! let mut response = Vec::new();
//! write_response(&accepted.response, b"", &mut response);
//!
//! let (resp, _len) = client.parse_response(&response, 16 * 1024).unwrap().expect("complete head");
//! let negotiated = client.validate_response(&resp).unwrap();
//! assert_eq!(negotiated.protocol.as_deref(), Some("chat"));
//! ```

mod client;
mod error;
mod headers;
mod key;
mod parse;
mod server;

pub use client::{ClientHandshake, ClientNegotiated};
pub use error::HandshakeError;
pub use key::{accept_key, generate_key, GUID};
pub use parse::{parse_request, MAX_HEADERS};
pub use server::{
    accept, rejection, select_protocol, validate_request, write_response, Accepted, UpgradeRequest,
};

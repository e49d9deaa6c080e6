//! `sockeye-tunnel`: expose a local HTTP/WebSocket server at a public
//! subdomain through `sockeye tunnel-server`, with a live inspector.

pub mod inspect;

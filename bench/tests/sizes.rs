//! What one connection of a sockeye server is made of, in bytes: the sizes
//! behind the per-connection memory figure of docs/BENCHMARKS.md ("Idle
//! connections"). Run with `cargo test --release -p sockeye-bench --test
//! sizes -- --nocapture` to see the table; the test checks only that the
//! types it names still exist.

use std::mem::size_of;

use hyper_util::rt::TokioIo;
use sockeye::WebSocket;

type ServerSocket = WebSocket<TokioIo<hyper::upgrade::Upgraded>>;

#[test]
fn per_connection_types() {
    let rows: &[(&str, usize)] = &[
        (
            "sockeye::WebSocket<TokioIo<Upgraded>> (held in the connection task)",
            size_of::<ServerSocket>(),
        ),
        (
            "  sockeye_proto::Connection (state machine, read buffer, transmit queue)",
            size_of::<sockeye_proto::Connection>(),
        ),
        (
            "  sockeye::Config (a clone per connection)",
            size_of::<sockeye::Config>(),
        ),
        (
            "    sockeye_proto::Config",
            size_of::<sockeye_proto::Config>(),
        ),
        (
            "    http::HeaderMap (extra 101 headers)",
            size_of::<http::HeaderMap>(),
        ),
        (
            "  Option<PerMessageDeflate>",
            size_of::<Option<sockeye_proto::extension::PerMessageDeflate>>(),
        ),
        (
            "  TokioIo<Upgraded> (boxed hyper I/O + rewind buffer)",
            size_of::<TokioIo<hyper::upgrade::Upgraded>>(),
        ),
        (
            "  bytes::BytesMut (each buffer handle)",
            size_of::<bytes::BytesMut>(),
        ),
        (
            "tokio::time::Sleep (each armed timer in the task)",
            size_of::<tokio::time::Sleep>(),
        ),
        (
            "tokio::sync::futures::Notified (the wake-up future)",
            size_of::<tokio::sync::futures::Notified<'static>>(),
        ),
        (
            "hyper::upgrade::OnUpgrade (held until the 101 is sent)",
            size_of::<hyper::upgrade::OnUpgrade>(),
        ),
        ("tokio::net::TcpStream", size_of::<tokio::net::TcpStream>()),
        (
            "sockeye_server::Conn (an Arc)",
            size_of::<sockeye_server::Conn>(),
        ),
        (
            "sockeye_proto::Message",
            size_of::<sockeye_proto::Message>(),
        ),
    ];
    println!("{:<76} {:>6}", "type", "bytes");
    for (name, size) in rows {
        println!("{name:<76} {size:>6}");
        assert!(*size > 0, "{name}");
    }
}

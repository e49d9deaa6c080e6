//! What one connection of a sockeye server is made of, in bytes: the sizes
//! behind the per-connection memory figure of docs/BENCHMARKS.md ("Idle
//! connections"), held to a budget.
//!
//! An idle connection is a tokio task whose future holds the `WebSocket` by
//! value; tokio rounds the task up to 128 bytes, so a few fields added
//! carelessly cost every one of 10,000 connections another 128. The budgets
//! below are today's sizes plus a little room; a change that breaks one
//! should either shrink something else or move the new state behind a box
//! that idle connections do not allocate. `cargo test --release -p
//! sockeye-bench --test sizes -- --nocapture` prints the table.

use std::mem::size_of;

use hyper_util::rt::TokioIo;
use sockeye::WebSocket;

type ServerSocket = WebSocket<TokioIo<hyper::upgrade::Upgraded>>;

/// (what, size, budget)
fn rows() -> Vec<(&'static str, usize, usize)> {
    vec![
        (
            "sockeye::WebSocket<TcpStream> (EchoServer's task holds it)",
            size_of::<WebSocket<tokio::net::TcpStream>>(),
            320,
        ),
        (
            "sockeye::WebSocket<TokioIo<Upgraded>> (the framework's task holds it)",
            size_of::<ServerSocket>(),
            336,
        ),
        (
            "  sockeye_proto::Connection (state, read buffer, transmit queue)",
            size_of::<sockeye_proto::Connection>(),
            240,
        ),
        (
            "  sockeye_proto::Config (limits, close timeout)",
            size_of::<sockeye_proto::Config>(),
            48,
        ),
        (
            "  bytes::BytesMut (each buffer handle, empty while idle)",
            size_of::<bytes::BytesMut>(),
            32,
        ),
        (
            "tokio::time::Sleep (the framework task's one timer)",
            size_of::<tokio::time::Sleep>(),
            128,
        ),
        (
            "tokio::sync::futures::Notified (the wake-up future)",
            size_of::<tokio::sync::futures::Notified<'static>>(),
            64,
        ),
        (
            "tokio::net::TcpStream",
            size_of::<tokio::net::TcpStream>(),
            32,
        ),
        (
            "sockeye_server::Conn (an Arc)",
            size_of::<sockeye_server::Conn>(),
            8,
        ),
        (
            "sockeye_proto::Message",
            size_of::<sockeye_proto::Message>(),
            48,
        ),
    ]
}

#[test]
fn an_idle_connection_stays_within_its_byte_budget() {
    println!("{:<72} {:>6} {:>7}", "type", "bytes", "budget");
    let mut over = Vec::new();
    for (name, size, budget) in rows() {
        println!("{name:<72} {size:>6} {budget:>7}");
        if size > budget {
            over.push(format!("{name}: {size} bytes, budget {budget}"));
        }
    }
    assert!(
        over.is_empty(),
        "over budget (every idle connection pays for these):\n{}",
        over.join("\n")
    );
}

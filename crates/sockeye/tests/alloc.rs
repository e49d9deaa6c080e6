//! The echo path does not allocate per message once warm (DESIGN.md: "no
//! per-message allocation on the hot path once warm").
//!
//! A test binary of its own, because it replaces the global allocator with
//! one that counts, and counts the whole process: it holds one test only.

use std::alloc::System;

use bytes::Bytes;
use sockeye::proto::Connection;
use sockeye::{Config, Message, Role, WebSocket};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WARM_UP: usize = 1_000;
const MEASURED: usize = 10_000;
/// Allowed for the whole measured window: a few buffers growing or being
/// replaced is fine, one per message (or per read) is not.
const BUDGET: usize = 100;

/// `count` 20-byte text messages as a client frames them (masked), and the
/// bytes a server sends back when it echoes them (unmasked).
fn frames(count: usize) -> (Bytes, Vec<u8>) {
    let mut client = Connection::new(Role::Client, sockeye::proto::Config::default());
    let mut echoed = Vec::with_capacity(count * 22);
    for i in 0..count {
        let text = format!("message number {i:05}");
        assert_eq!(text.len(), 20);
        client.send_text(text.as_str()).unwrap();
        echoed.extend_from_slice(&[0x81, 20]);
        echoed.extend_from_slice(text.as_bytes());
    }
    (client.take_transmit(), echoed)
}

/// Writes `wire` and, at the same time, reads back exactly `want`;
/// allocates nothing itself.
async fn exchange(
    reader: &mut ReadHalf<DuplexStream>,
    writer: &mut WriteHalf<DuplexStream>,
    wire: &[u8],
    want: &[u8],
) {
    let write = async {
        writer.write_all(wire).await.unwrap();
    };
    let read = async {
        let mut buf = [0u8; 8192];
        let mut got = 0;
        while got < want.len() {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed the pipe");
            assert!(
                buf[..n] == want[got..got + n],
                "the echo differs at byte {got}"
            );
            got += n;
        }
    };
    tokio::join!(write, read);
}

#[test]
fn the_echo_path_does_not_allocate_per_message_once_warm() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, server_io) = tokio::io::duplex(64 * 1024);
        // The echo loop of sockeye-server's EchoServer.
        let server = tokio::spawn(async move {
            let mut ws = WebSocket::from_raw(server_io, Role::Server, Config::default(), None);
            // Ends when the test drops its end of the pipe (an abnormal closure).
            while let Some(Ok(message)) = ws.recv().await {
                if let Message::Text(_) | Message::Binary(_) = message {
                    ws.feed(message).await.unwrap();
                }
            }
        });
        let (mut reader, mut writer) = tokio::io::split(client);
        let (warm_wire, warm_echo) = frames(WARM_UP);
        let (wire, echo) = frames(MEASURED);

        exchange(&mut reader, &mut writer, &warm_wire, &warm_echo).await;
        let region = Region::new(GLOBAL);
        exchange(&mut reader, &mut writer, &wire, &echo).await;
        let change = region.change();

        let total = change.allocations + change.reallocations;
        assert!(
            total < BUDGET,
            "{MEASURED} echoed messages made {} allocations and {} reallocations ({} bytes)",
            change.allocations,
            change.reallocations,
            change.bytes_allocated
        );
        println!(
            "{MEASURED} messages: {} allocations, {} reallocations, {} bytes",
            change.allocations, change.reallocations, change.bytes_allocated
        );
        drop((reader, writer));
        server.await.unwrap();
    });
}

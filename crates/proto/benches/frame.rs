//! Receive-path throughput: 1,000 small masked text frames (20-byte payload,
//! 26 bytes on the wire) copied into a server `Connection`'s read buffer and
//! taken out with `poll_message`: header parse, checks, unmask, UTF-8
//! validation and a zero-copy `Message` per frame.
//!
//! `cargo bench -p sockeye-proto --bench frame -- --warm-up-time 1 --measurement-time 3`

// criterion_group! defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sockeye_proto::frame::{apply_mask, FrameHeader, OpCode};
use sockeye_proto::{Config, Connection, Message, Role};

const FRAMES: usize = 1_000;

fn wire(payload_len: usize, opcode: OpCode) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..FRAMES {
        let key = (i as u32).wrapping_mul(0x9E37_79B9).to_be_bytes();
        let mut header = FrameHeader::new(opcode, payload_len as u64);
        header.mask = Some(key);
        header.encode(&mut out);
        let start = out.len();
        out.extend((0..payload_len).map(|j| b'a' + ((i + j) % 26) as u8));
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for (name, payload_len, opcode) in [
        ("text_20B", 20, OpCode::Text),
        ("binary_20B", 20, OpCode::Binary),
        ("text_125B", 125, OpCode::Text),
    ] {
        let bytes = wire(payload_len, opcode);
        let mut server = Connection::new(Role::Server, Config::default());
        group.bench_function(BenchmarkId::new("recv_1000", name), |b| {
            b.iter(|| {
                server.read_buf().extend_from_slice(black_box(&bytes));
                let mut n = 0;
                while let Some(message) = server.poll_message() {
                    match message {
                        Ok(Message::Text(_) | Message::Binary(_)) => n += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                assert_eq!(n, FRAMES);
            })
        });
    }
    // Header parsing alone, for the split of the cost.
    let bytes = wire(20, OpCode::Text);
    group.bench_function("header_parse_1000", |b| {
        b.iter(|| {
            let mut rest = black_box(&bytes[..]);
            while let Ok(Some((header, len))) = FrameHeader::parse(rest) {
                rest = &rest[len + header.payload_len as usize..];
            }
            rest.len()
        })
    });
    group.finish();
}

criterion_group!(benches, frame);
criterion_main!(benches);

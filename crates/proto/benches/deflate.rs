//! permessage-deflate: a 16 KiB JSON-like message compressed by one side's
//! `PerMessageDeflate` and decompressed by the other's (default config:
//! level 1, window 15). With context takeover the payloads cycle through 64
//! distinct messages, so the shared window helps as much as it would with
//! real, similar traffic, but never sees the same message twice in a row.
//!
//! `cargo bench -p sockeye-proto --bench deflate -- --warm-up-time 1 --measurement-time 3`

// criterion_group! defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sockeye_proto::extension::{DeflateConfig, PerMessageDeflate};
use sockeye_proto::Role;

const LEN: usize = 16 * 1024;

/// Chat-like JSON records with varying ids, names, numbers and text.
fn payload(seed: u64) -> Vec<u8> {
    let names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"];
    let words = [
        "sockeye", "salmon", "river", "upstream", "spawn", "gravel", "fry", "smolt",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = String::from("[");
    let mut id = seed * 1000;
    while out.len() < LEN - 200 {
        id += 1 + next() % 5;
        let name = names[(next() % names.len() as u64) as usize];
        let text: Vec<&str> = (0..3 + next() % 6)
            .map(|_| words[(next() % words.len() as u64) as usize])
            .collect();
        out.push_str(&format!(
            r#"{{"id":{id},"user":"{name}","ts":{},"score":{}.{:02},"text":"{}"}},"#,
            1_700_000_000 + next() % 100_000,
            next() % 1000,
            next() % 100,
            text.join(" ")
        ));
    }
    out.push(']');
    let mut bytes = out.into_bytes();
    bytes.resize(LEN, b' ');
    bytes
}

fn codecs(no_context_takeover: bool) -> (PerMessageDeflate, PerMessageDeflate) {
    let config = DeflateConfig {
        server_no_context_takeover: no_context_takeover,
        client_no_context_takeover: no_context_takeover,
        ..DeflateConfig::default()
    };
    let offer = config.offer();
    let (params, _) = config
        .negotiate_server(&[offer.as_str()])
        .unwrap()
        .expect("accepted");
    (
        PerMessageDeflate::new(Role::Server, &params, &config),
        PerMessageDeflate::new(Role::Client, &params, &config),
    )
}

fn deflate(c: &mut Criterion) {
    let payloads: Vec<Vec<u8>> = (0..64).map(payload).collect();
    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Bytes(LEN as u64));
    for (name, reset) in [("takeover", false), ("no_context_takeover", true)] {
        let (mut tx, mut rx) = codecs(reset);
        // Report the ratio once, after the window is warm.
        let mut body = BytesMut::new();
        let mut total = 0;
        for p in &payloads {
            body.clear();
            tx.compress(p, &mut body).unwrap();
            total += body.len();
            let mut out = BytesMut::new();
            rx.decompress(&body, true, &mut out, LEN).unwrap();
            assert_eq!(&out[..], &p[..]);
        }
        eprintln!(
            "deflate/{name}: 16 KiB -> {} bytes on average ({:.1} %)",
            total / payloads.len(),
            100.0 * total as f64 / (LEN * payloads.len()) as f64
        );

        let mut out = BytesMut::with_capacity(LEN);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("round_trip_16KiB", name), |b| {
            b.iter(|| {
                let p = &payloads[i % payloads.len()];
                i += 1;
                body.clear();
                tx.compress(black_box(p), &mut body).unwrap();
                out.clear();
                rx.decompress(&body, true, &mut out, LEN).unwrap();
                debug_assert_eq!(&out[..], &p[..]);
                out.len()
            })
        });
        group.bench_function(BenchmarkId::new("compress_16KiB", name), |b| {
            b.iter(|| {
                let p = &payloads[i % payloads.len()];
                i += 1;
                body.clear();
                tx.compress(black_box(p), &mut body).unwrap();
                body.len()
            })
        });
    }
    // Decompression alone: a fresh receiver per pass over the 64 bodies,
    // which were compressed in order with one shared window.
    let (mut tx, _) = codecs(false);
    let bodies: Vec<BytesMut> = payloads
        .iter()
        .map(|p| {
            let mut body = BytesMut::new();
            tx.compress(p, &mut body).unwrap();
            body
        })
        .collect();
    let (_, mut rx) = codecs(false);
    let mut out = BytesMut::with_capacity(LEN);
    let mut i = 0;
    group.bench_function(BenchmarkId::new("decompress_16KiB", "takeover"), |b| {
        b.iter(|| {
            if i % bodies.len() == 0 {
                rx = codecs(false).1;
            }
            out.clear();
            rx.decompress(black_box(&bodies[i % bodies.len()]), true, &mut out, LEN)
                .unwrap();
            i += 1;
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, deflate);
criterion_main!(benches);

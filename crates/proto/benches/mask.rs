//! Masking throughput: `apply_mask` against the byte-at-a-time reference.
//!
//! `cargo bench -p sockeye-proto --bench mask -- --warm-up-time 1 --measurement-time 3`

// criterion_group! defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sockeye_proto::frame::{apply_mask, apply_mask_bytewise};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    // 64 KiB: a large message; aligned and one byte off (a payload rarely
    // starts on an 8-byte boundary in the read buffer), offset 0 and 3.
    let mut buf = vec![0x5Au8; 64 * 1024 + 1];
    group.throughput(Throughput::Bytes(64 * 1024));
    for (name, start, offset) in [("64KiB", 0, 0), ("64KiB_unaligned", 1, 3)] {
        group.bench_function(BenchmarkId::new("apply_mask", name), |b| {
            let data = &mut buf[start..start + 64 * 1024];
            b.iter(|| apply_mask(black_box(&mut *data), black_box(KEY), black_box(offset)))
        });
    }
    group.bench_function(BenchmarkId::new("apply_mask_bytewise", "64KiB"), |b| {
        let data = &mut buf[..64 * 1024];
        b.iter(|| apply_mask_bytewise(black_box(&mut *data), black_box(KEY), black_box(0)))
    });
    // Small payloads: what chat-sized messages cost.
    for len in [20usize, 125, 1500] {
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("apply_mask", len), |b| {
            let data = &mut buf[1..1 + len];
            b.iter(|| apply_mask(black_box(&mut *data), black_box(KEY), black_box(0)))
        });
    }
    group.finish();
}

criterion_group!(benches, mask);
criterion_main!(benches);

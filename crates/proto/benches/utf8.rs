//! UTF-8 validation of text messages: `Utf8Validator::feed` (simdutf8 with
//! carry-over between pieces) against `std::str::from_utf8`.
//!
//! `cargo bench -p sockeye-proto --bench utf8 -- --warm-up-time 1 --measurement-time 3`

// criterion_group! defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sockeye_proto::frame::Utf8Validator;

const LEN: usize = 64 * 1024;

fn ascii() -> Vec<u8> {
    let line = br#"{"id":12345,"user":"sockeye","text":"hello, world"} "#;
    line.iter().copied().cycle().take(LEN).collect()
}

/// Mostly ASCII with two-, three- and four-byte characters sprinkled in
/// (about a third of the bytes are non-ASCII).
fn mixed() -> Vec<u8> {
    let pattern = "Grüße, κόσμε! 日本語 ok 😀 € abc ";
    let mut s = String::new();
    while s.len() < LEN {
        s.push_str(pattern);
    }
    let mut end = LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.into_bytes()
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for (name, data) in [("ascii_64KiB", ascii()), ("mixed_64KiB", mixed())] {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(BenchmarkId::new("validator_whole", name), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(&data)).unwrap();
                v.finish().unwrap();
            })
        });
        // As it arrives from TCP: 1460-byte pieces that cut characters.
        group.bench_function(BenchmarkId::new("validator_1460B_pieces", name), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for piece in black_box(&data).chunks(1460) {
                    v.feed(piece).unwrap();
                }
                v.finish().unwrap();
            })
        });
        group.bench_function(BenchmarkId::new("std_from_utf8", name), |b| {
            b.iter(|| std::str::from_utf8(black_box(&data)).unwrap().len())
        });
    }
    group.finish();
}

criterion_group!(benches, utf8);
criterion_main!(benches);

//! MessagePack encode + decode cost per message.
#![allow(clippy::unwrap_used)] // a benchmark of fixed, valid inputs
//! `cargo bench -p shardbot-protocol --bench codec`

use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal_macros::dec;
use shardbot_protocol::{Bar, Envelope, Interval, Publish, Symbol, decode_frame, encode_frame};
use std::hint::black_box;

fn bar() -> Bar {
    Bar {
        symbol: Symbol::new("BTCUSDT").unwrap(),
        interval: Interval::M5,
        open_time_ms: 1_758_672_000_000,
        open: dec!(112233.4),
        high: dec!(112500.0),
        low: dec!(111999.9),
        close: dec!(112345.6),
        volume: dec!(123.456),
        turnover: dec!(13870000.12),
        published_ms: None,
        stamps: Default::default(),
    }
}

fn codec(c: &mut Criterion) {
    let msg = bar();
    let topic = msg.topic().to_string();
    let env = Envelope {
        seq: 1,
        epoch: 2,
        sent_ns: 3,
        msg,
    };
    let frame = encode_frame(&topic, &env).unwrap();
    eprintln!("bar frame: {} bytes", frame.len());
    c.bench_function("bar/encode_frame", |b| {
        b.iter(|| encode_frame(black_box(&topic), black_box(&env)).unwrap())
    });
    c.bench_function("bar/decode_frame", |b| {
        b.iter(|| decode_frame(black_box(&frame)).unwrap())
    });
    c.bench_function("bar/encode+decode", |b| {
        b.iter(|| {
            let f = encode_frame(black_box(&topic), black_box(&env)).unwrap();
            decode_frame(&f).unwrap()
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);

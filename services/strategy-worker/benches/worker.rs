//! A worker's bar updates per second on one core, through both strategies:
//!   cargo bench -p strategy-worker --bench worker
//! Each bar is a real bus frame (`bar.<slot>.<SYMBOL>.5|` + MessagePack) decoded and fed
//! to the worker's engine, which checks its order and runs trend_following and
//! mean_reversion (defaults) on it and turns signals into intents. Data: every file of
//! the full data's klines/bybit_linear_5m (SHARDBOT_DATA, default ../shared/data; 8 symbols x 86,604 bars), interleaved by time as
//! the gateway publishes them. Best of 5 runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::{path::PathBuf, str::FromStr, time::Instant};

use rust_decimal::Decimal;
use shardbot_protocol::{
    Bar, Envelope, Event, Instrument, Interval, Publish, Shard, Symbol, decode_frame, encode_frame,
};
use shardbot_strategy::StrategySettings;
use strategy_worker::{Engine, Step};

fn load() -> Vec<Vec<Bar>> {
    let dir = shardbot_testdata::full_klines("bybit_linear_5m").unwrap_or_else(|e| panic!("{e}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let symbol = Symbol::new(f.file_stem().unwrap().to_str().unwrap()).unwrap();
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| {
                    let v: Vec<&str> = l.split(',').collect();
                    let d = |i: usize| Decimal::from_str(v[i]).unwrap();
                    let open_time_ms: i64 = v[0].parse().unwrap();
                    Bar {
                        symbol: symbol.clone(),
                        interval: Interval::M5,
                        open_time_ms,
                        open: d(1),
                        high: d(2),
                        low: d(3),
                        close: d(4),
                        volume: d(5),
                        turnover: Decimal::ZERO,
                        published_ms: Some(open_time_ms + 300_000),
                        stamps: Default::default(),
                    }
                })
                .collect()
        })
        .collect()
}

fn engine(symbols: &[Symbol]) -> Engine {
    let roster = StrategySettings {
        enabled: vec!["trend_following".into(), "mean_reversion".into()],
        interval: "5".into(),
        parameters_file: "/nonexistent/optimized_parameters.json".into(),
        history_bars: 1000,
    }
    .load()
    .unwrap();
    let mut e = Engine::new(Shard::whole(), Interval::M5, roster, 1);
    e.set_universe(
        symbols
            .iter()
            .map(|s| Instrument {
                symbol: s.clone(),
                tick_size: Decimal::new(1, 4),
                qty_step: Decimal::new(1, 3),
                min_order_qty: Decimal::new(1, 3),
                max_market_order_qty: Decimal::from(1000),
                min_notional: Decimal::from(5),
                max_leverage: Decimal::from(50),
                funding_interval_min: 480,
            })
            .collect(),
    );
    e
}

fn main() {
    let series = load();
    let symbols: Vec<Symbol> = series.iter().map(|s| s[0].symbol.clone()).collect();
    // The first 1000 bars of each symbol are its warm-up history; the rest are frames.
    let n = series.iter().map(Vec::len).min().unwrap();
    let mut frames = Vec::new();
    for k in 1000..n {
        for s in &series {
            let env = Envelope {
                seq: k as u64,
                epoch: 1,
                sent_ns: 0,
                msg: &s[k],
            };
            frames.push(encode_frame(&s[k].topic().to_string(), &env).unwrap());
        }
    }
    let mut best = f64::MAX;
    let mut intents = 0;
    for _ in 0..5 {
        let mut e = engine(&symbols);
        for s in &series {
            e.on_history(&s[0].symbol, s[..1000].to_vec());
        }
        intents = 0;
        let t = Instant::now();
        for f in &frames {
            let r = decode_frame(f).unwrap();
            let Event::Bar(bar) = r.event else {
                unreachable!()
            };
            match e.on_bar(bar) {
                Step::Intents(v) => intents += v.len(),
                Step::Nothing => {}
                Step::Fetch { .. } => panic!("the frames are contiguous"),
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "worker: {} bar frames ({} symbols) decoded and run through trend_following + \
         mean_reversion in {:.3} s: {:.0} bar updates/s on one core ({:.2} µs per bar), {} intents",
        frames.len(),
        symbols.len(),
        best,
        frames.len() as f64 / best,
        best * 1e6 / frames.len() as f64,
        intents
    );
}

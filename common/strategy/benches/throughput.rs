//! Bar-steps per second through each built-in strategy, on one core:
//!   cargo bench -p shardbot-strategy --bench throughput
//! Data: every file of ../shared/data/klines/bybit_linear_5m (8 symbols x 86,604 bars),
//! loaded once; each strategy runs over every symbol with the position its own signals
//! imply. Best of 5 runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::{path::PathBuf, time::Instant};

use shardbot_strategy::{Candle, Holding, Params, build};

fn load() -> Vec<Vec<Candle>> {
    let dir = shardbot_testdata::full_klines("bybit_linear_5m").unwrap_or_else(|e| panic!("{e}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| {
                    let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
                    Candle {
                        open_time_ms: v[0] as i64,
                        open: v[1],
                        high: v[2],
                        low: v[3],
                        close: v[4],
                        volume: v[5],
                    }
                })
                .collect()
        })
        .collect()
}

fn main() {
    let data = load();
    let steps: usize = data.iter().map(Vec::len).sum();
    println!("{} symbols, {steps} bars", data.len());
    for name in ["trend_following", "mean_reversion"] {
        let mut best = f64::INFINITY;
        let mut signals = 0usize;
        for _ in 0..5 {
            signals = 0;
            let t = Instant::now();
            for bars in &data {
                let mut s = build(name, &Params::new()).unwrap();
                let mut position = Holding::Flat;
                for c in bars {
                    for sig in &s.on_bar(std::hint::black_box(c), position) {
                        signals += 1;
                        position = position.after(sig);
                    }
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name}: {:.1} million bar-steps/s on one core ({:.1} ns per bar, {signals} signals)",
            steps as f64 / best / 1e6,
            best * 1e9 / steps as f64
        );
    }
}

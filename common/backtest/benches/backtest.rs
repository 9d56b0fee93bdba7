//! Backtest throughput: bar-steps per second on one core, for each built-in strategy,
//!   cargo bench -p shardbot-backtest --bench backtest
//! on ../shared/data/klines/bybit_linear_5m (8 symbols × 86,604 bars) and on every file
//! of ../shared/data/klines/bybit_linear_1d (329 symbols). The data is loaded once; each
//! figure is the best of 5 full runs (stepping, strategies, risk rules, fills, equity
//! curve and summary included). SHARDBOT_SHARED overrides the shared folder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::{path::PathBuf, time::Instant};

use rust_decimal::Decimal;
use shardbot_backtest::{BacktestConfig, Market, data::load_path, run};
use shardbot_strategy::{BUILT_IN, Params};

fn shared() -> PathBuf {
    std::env::var_os("SHARDBOT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

fn best_of_5(f: impl Fn() -> usize) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut trades = 0;
    for _ in 0..5 {
        let t = Instant::now();
        trades = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, trades)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("| data | strategy | run | bars | trades | best of 5 | bar-steps/s on one core |");
    println!("|---|---|---|---|---|---|---|");
    for (label, dir) in [
        (
            "bybit_linear_5m (8 × 86,604)",
            "data/klines/bybit_linear_5m",
        ),
        ("bybit_linear_1d (329 files)", "data/klines/bybit_linear_1d"),
    ] {
        let markets: Vec<Market> = load_path(&shared().join(dir))
            .unwrap()
            .into_iter()
            .map(|s| Market::unrestricted(s).unwrap())
            .collect();
        let bars: usize = markets.iter().map(|m| m.series.candles.len()).sum();
        for strategy in BUILT_IN {
            // Each symbol on its own: all in, stop-and-reverse, the comparison run.
            let single = BacktestConfig::all_in(strategy, Params::new(), Decimal::from(10_000));
            let (t1, n1) = best_of_5(|| {
                markets
                    .iter()
                    .map(|m| run(std::slice::from_ref(m), &single).unwrap().trades.len())
                    .sum()
            });
            // All symbols in one account: 1 % of the balance per position, every
            // entry judged against all the open positions.
            let mut book = single.clone();
            book.settings.sizing = shardbot_risk::Sizing::Percent(Decimal::ONE);
            book.settings.max_open_positions = 1_000;
            let (t2, n2) = best_of_5(|| run(&markets, &book).unwrap().trades.len());
            for (run_label, t, n) in [
                ("each symbol all-in", t1, n1),
                ("one account, 1 % each", t2, n2),
            ] {
                println!(
                    "| {label} | `{strategy}` | {run_label} | {bars} | {n} | {:.1} ms | **{:.1} million** |",
                    t * 1e3,
                    bars as f64 / t / 1e6
                );
            }
        }
    }
}

//! Backtest throughput: bar-steps per second on one core, for each built-in strategy,
//!   cargo bench -p shardbot-backtest --bench backtest
//! on the full data's klines/bybit_linear_5m (8 symbols × 86,604 bars) and on every file
//! of its klines/bybit_linear_1d (329 symbols). The data is loaded once; each
//! figure is the best of 5 full runs (stepping, strategies, risk rules, fills, equity
//! curve and summary included). SHARDBOT_DATA names another data folder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::{path::PathBuf, time::Instant};

use rust_decimal::Decimal;
use shardbot_backtest::{BacktestConfig, Market, data::load_path, run, run_with};
use shardbot_strategy::{BUILT_IN, Candle, Holding, Params, Signals, Strategy};

/// A folder of the full data set (`SHARDBOT_DATA`, default ../shared/data).
fn full(dir: &str) -> PathBuf {
    shardbot_testdata::full_klines(dir).unwrap_or_else(|e| panic!("{e}"))
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

/// The benchmark's data: a label and a folder under the shared folder.
const DATA: [(&str, &str); 2] = [
    ("bybit_linear_5m (8 × 86,604)", "bybit_linear_5m"),
    ("bybit_linear_1d (329 files)", "bybit_linear_1d"),
];

/// All symbols in one account: 1 % of the balance per position, every entry judged
/// against all the open positions.
fn one_account(strategy: &str) -> BacktestConfig {
    let mut book = BacktestConfig::all_in(strategy, Params::new(), Decimal::from(10_000));
    book.settings.sizing = shardbot_risk::Sizing::Percent(Decimal::ONE);
    book.settings.max_open_positions = 1_000;
    book
}

/// Every rule at work at once (leverage, limits that refuse, cooldowns, funding,
/// slippage, the replay path's intrabar order): for `--dump` only.
fn every_rule(strategy: &str) -> BacktestConfig {
    let mut cfg = one_account(strategy);
    cfg.settings.sizing = shardbot_risk::Sizing::Percent(Decimal::from(7));
    cfg.settings.leverage = Decimal::from(3);
    cfg.settings.max_open_positions = 5;
    cfg.settings.max_margin_use_pct = Decimal::from(30);
    cfg.settings.daily_loss_limit = Decimal::from(150);
    cfg.settings.cooldown_after_stop_min = 600;
    cfg.funding_rate = Some(Decimal::new(1, 4));
    cfg.slippage = shardbot_backtest::Slippage::Ticks(2);
    cfg.intrabar = shardbot_backtest::Intrabar::Path;
    cfg
}

/// Every file of `dir` (a folder of the full data's klines), without instrument rules.
fn markets(dir: &str) -> Vec<Market> {
    load_path(&full(dir))
        .unwrap()
        .into_iter()
        .map(|s| Market::unrestricted(s).unwrap())
        .collect()
}

/// Runs every market on its own (the comparison run); the number of trades.
fn each_alone(markets: &[Market], cfg: &BacktestConfig) -> usize {
    markets
        .iter()
        .map(|m| run(std::slice::from_ref(m), cfg).unwrap().trades.len())
        .sum()
}

/// A strategy that never signals: what the engine costs per bar without any trade.
struct Silent;

impl Strategy for Silent {
    fn name(&self) -> &'static str {
        "silent"
    }
    fn warmup_bars(&self) -> usize {
        0
    }
    fn on_bar(&mut self, candle: &Candle, _: Holding) -> Signals {
        std::hint::black_box(candle);
        Signals::new()
    }
    fn reset(&mut self) {}
}

/// Where a run's time goes, per bar: the strategy alone (told the position its own signals
/// imply), the engine with a strategy that never signals, and the rest spread over the
/// trades.
fn breakdown(markets: &[Market], bars: usize) {
    println!();
    println!("| strategy | strategy alone | engine without trades | per trade | trades |");
    println!("|---|---|---|---|---|");
    let silent = BacktestConfig::all_in("silent", Params::new(), Decimal::from(10_000));
    let (engine, _) = best_of_5(|| {
        markets
            .iter()
            .map(|m| {
                run_with(std::slice::from_ref(m), &silent, vec![Box::new(Silent)])
                    .unwrap()
                    .trades
                    .len()
            })
            .sum()
    });
    for strategy in BUILT_IN {
        let (alone, _) = best_of_5(|| {
            let mut signals = 0;
            for m in markets {
                let mut s = shardbot_strategy::build(strategy, &Params::new()).unwrap();
                let mut position = Holding::Flat;
                for c in &m.series.candles {
                    for sig in &s.on_bar(std::hint::black_box(c), position) {
                        signals += 1;
                        position = position.after(sig);
                    }
                }
            }
            signals
        });
        let single = BacktestConfig::all_in(strategy, Params::new(), Decimal::from(10_000));
        let (full, trades) = best_of_5(|| each_alone(markets, &single));
        let ns = |t: f64| t * 1e9 / bars as f64;
        println!(
            "| `{strategy}` | {:.1} ns/bar | {:.1} ns/bar | {:.0} ns | {trades} |",
            ns(alone),
            ns(engine),
            (full - alone - engine) * 1e9 / trades.max(1) as f64
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // `--once <strategy>`: one all-in run of each 5m file, for counting instructions
    // (valgrind --tool=callgrind --toggle-collect='shardbot_backtest::run'), which, unlike
    // this machine's timings, repeat exactly.
    // `--once <strategy> [--daily] [--account] [--times <n>]`: one run (each 5m file all-in, or the daily
    // files, or all in one account), for counting instructions (valgrind --tool=callgrind
    // --toggle-collect='shardbot_backtest::run'), which, unlike this machine's timings,
    // repeat exactly.
    if let Some(at) = args.iter().position(|a| a == "--once") {
        let strategy = args.get(at + 1).expect("--once <strategy>");
        let dir = DATA[usize::from(args.iter().any(|a| a == "--daily"))].1;
        let markets = markets(dir);
        // `--times <n>`: the run n times over (for a sampling profiler).
        let times = args
            .iter()
            .position(|a| a == "--times")
            .map_or(1, |at| args[at + 1].parse().expect("--times <n>"));
        let mut trades = 0;
        let started = Instant::now();
        for _ in 0..times {
            trades = if args.iter().any(|a| a == "--account") {
                run(&markets, &one_account(strategy)).unwrap().trades.len()
            } else {
                let cfg = BacktestConfig::all_in(strategy, Params::new(), Decimal::from(10_000));
                each_alone(&markets, &cfg)
            };
        }
        let bars: usize = markets.iter().map(|m| m.series.candles.len()).sum();
        let took = started.elapsed().as_secs_f64();
        println!(
            "{strategy}: {trades} trades, {:.1} million bar-steps/s",
            (bars * times) as f64 / took / 1e6
        );
        return;
    }
    // `--dump <file>`: every trade and summary of the runs below, written out, so that a
    // change meant to leave results alone can be checked against the previous code's file.
    if let Some(at) = args.iter().position(|a| a == "--dump") {
        let path = args.get(at + 1).expect("--dump <file>");
        let mut out = String::new();
        let mut write = |r: shardbot_backtest::BacktestResult| {
            for t in &r.trades {
                out.push_str(&format!("{t:?}\n"));
            }
            out.push_str(&format!("{:?}\n", r.summary));
        };
        for (_, dir) in DATA {
            let markets = markets(dir);
            for strategy in BUILT_IN {
                let single = BacktestConfig::all_in(strategy, Params::new(), Decimal::from(10_000));
                for m in &markets {
                    write(run(std::slice::from_ref(m), &single).unwrap());
                }
                write(run(&markets, &one_account(strategy)).unwrap());
                write(run(&markets, &every_rule(strategy)).unwrap());
            }
        }
        std::fs::write(path, out).unwrap();
        return;
    }
    if args.iter().any(|a| a == "--breakdown") {
        let markets = markets("bybit_linear_5m");
        let bars: usize = markets.iter().map(|m| m.series.candles.len()).sum();
        breakdown(&markets, bars);
        return;
    }
    println!("| data | strategy | run | bars | trades | best of 5 | bar-steps/s on one core |");
    println!("|---|---|---|---|---|---|---|");
    for (label, dir) in DATA {
        let markets = markets(dir);
        let bars: usize = markets.iter().map(|m| m.series.candles.len()).sum();
        for strategy in BUILT_IN {
            // Each symbol on its own: all in, stop-and-reverse, the comparison run.
            let single = BacktestConfig::all_in(strategy, Params::new(), Decimal::from(10_000));
            let (t1, n1) = best_of_5(|| each_alone(&markets, &single));
            let book = one_account(strategy);
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

//! `shardbot backtest` with two strategies on real candles: they share each symbol's one
//! position as the workers run them (one owner at a time, first come), so no two trades
//! of a symbol overlap, each names its strategy, and both strategies trade.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, process::Command};

fn backtest(strategies: &str, data: &str, out: &std::path::Path) -> Vec<HashMap<String, String>> {
    let data = shardbot_testdata::klines(data);
    let run = Command::new(env!("CARGO_BIN_EXE_shardbot"))
        .args(["backtest", "--strategy", strategies, "--data"])
        .arg(&data)
        .args(["--params-file", "no-such-file.json", "--out"])
        .arg(out)
        .env_remove("SHARDBOT_CONFIG")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut r = csv::Reader::from_path(out.join("trades.csv")).unwrap();
    let header = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

#[test]
fn two_strategies_share_each_symbols_position() {
    let dir = tempfile::tempdir().unwrap();
    let trades = backtest(
        "trend_following,mean_reversion",
        "bybit_linear_4h",
        &dir.path().join("both"),
    );
    assert!(!trades.is_empty());
    let mut by_symbol: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    for t in &trades {
        by_symbol.entry(&t["symbol"]).or_default().push((
            t["entry_time_ms"].parse().unwrap(),
            t["exit_time_ms"].parse().unwrap(),
        ));
    }
    for (symbol, mut spans) in by_symbol {
        spans.sort_unstable();
        for w in spans.windows(2) {
            assert!(w[1].0 >= w[0].1, "{symbol}: overlapping trades {w:?}");
        }
    }
    for name in ["trend_following", "mean_reversion"] {
        assert!(
            trades.iter().any(|t| t["strategy"] == name),
            "{name} never traded"
        );
    }
    assert!(
        trades
            .iter()
            .all(|t| t["strategy"] == "trend_following" || t["strategy"] == "mean_reversion")
    );
    // On one symbol (no account limit between symbols), the first strategy in the order
    // is never kept from the flat symbol by the second: its first trade alone is its first
    // trade sharing, unless the second's entry came earlier.
    let one = "bybit_linear_4h/BTCUSDT.csv";
    let alone = backtest("trend_following", one, &dir.path().join("alone"));
    let both = backtest(
        "trend_following,mean_reversion",
        one,
        &dir.path().join("one"),
    );
    assert!(alone.iter().all(|t| t["strategy"] == "trend_following"));
    let entry = |t: &HashMap<String, String>| t["entry_time_ms"].parse::<i64>().unwrap();
    let (a, b) = (&alone[0], &both[0]);
    assert!(
        (b["strategy"] == "trend_following" && entry(a) == entry(b) && a["side"] == b["side"])
            || (b["strategy"] == "mean_reversion" && entry(b) <= entry(a)),
        "alone {a:?}, sharing {b:?}"
    );
}

#[test]
fn param_overrides_need_a_single_strategy() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardbot"))
        .args([
            "backtest",
            "--strategy",
            "trend_following,mean_reversion",
            "--data",
        ])
        .arg(shardbot_testdata::klines("bybit_linear_4h"))
        .args(["--param", "fast=5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--param sets one strategy's parameter"),
        "{err}"
    );
}

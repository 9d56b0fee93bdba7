//! The analytics of a real equity curve against an independent computation: holding one
//! BTCUSDT contract through five years of Bybit's daily candles
//! (`../shared/data/klines/bybit_linear_1d/BTCUSDT.csv`), each day's close-to-close change
//! booked as one trade.

#![allow(clippy::unwrap_used)]

use std::str::FromStr;

use rust_decimal::{Decimal, prelude::ToPrimitive};
use shardbot_analytics::{
    TradeResult, daily_returns, daily_returns_f64, equity_curve, max_drawdown, max_drawdown_f64,
    report, sharpe, sortino,
};

fn closes() -> Vec<(i64, Decimal)> {
    let path = shardbot_testdata::klines("bybit_linear_1d/BTCUSDT.csv");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), Decimal::from_str(f[4]).unwrap())
        })
        .collect()
}

#[test]
fn a_real_equity_curve_matches_an_independent_computation() {
    let c = closes();
    assert!(c.len() > 1500, "five years of days");
    let start = dec(100_000);
    // Day i's trade runs from day i's close to day i+1's close (entered and left 1 ms
    // inside the day so each day has exactly one exit).
    let trades: Vec<TradeResult> = c
        .windows(2)
        .map(|w| TradeResult {
            symbol: "BTCUSDT".into(),
            strategy: "hold".into(),
            entry_time_ms: w[0].0 + 1,
            exit_time_ms: w[1].0 + 1,
            net: w[1].1 - w[0].1,
            fees: Decimal::ZERO,
            verified: true,
        })
        .collect();
    let curve = equity_curve(&trades, start);
    let equity: Vec<f64> = curve.iter().map(|e| e.1.to_f64().unwrap()).collect();

    // Max drawdown by brute force: the largest e[i] − e[j] with i ≤ j.
    let mut brute = 0.0_f64;
    let mut brute_pct = 0.0_f64;
    for i in 0..equity.len() {
        for j in i..equity.len() {
            brute = brute.max(equity[i] - equity[j]);
        }
        let peak = equity[..=i].iter().cloned().fold(f64::MIN, f64::max);
        brute_pct = brute_pct.max((peak - equity[i]) / peak * 100.0);
    }
    let (dd, dd_pct) = max_drawdown(&curve);
    assert!(
        (dd.to_f64().unwrap() - brute).abs() < 1e-6,
        "{dd} vs {brute}"
    );
    assert!((dd_pct - brute_pct).abs() < 1e-9);

    // Sharpe and Sortino from returns computed straight from the closes (the first day,
    // where the curve starts, returns 0), with Welford's variance.
    let mut r = vec![0.0];
    r.extend(equity.windows(2).map(|w| w[1] / w[0] - 1.0));
    let ours = daily_returns(&curve);
    assert_eq!(ours.len(), r.len());
    for (a, b) in ours.iter().zip(&r) {
        assert!((a - b).abs() < 1e-12);
    }
    let (mut n, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for x in &r {
        n += 1.0;
        let d = x - mean;
        mean += d / n;
        m2 += d * (x - mean);
    }
    let sd = (m2 / (n - 1.0)).sqrt();
    let expected_sharpe = mean / sd * 365f64.sqrt();
    assert!((sharpe(&r).unwrap() - expected_sharpe).abs() < 1e-9);
    let down = (r.iter().filter(|x| **x < 0.0).map(|x| x * x).sum::<f64>() / n).sqrt();
    assert!((sortino(&r).unwrap() - mean / down * 365f64.sqrt()).abs() < 1e-9);

    // The f64 versions (a backtest's bar-by-bar curve) agree.
    let curve_f: Vec<(i64, f64)> = curve
        .iter()
        .map(|&(t, e)| (t, e.to_f64().unwrap()))
        .collect();
    let (dd_f, pct_f) = max_drawdown_f64(curve_f.iter().copied());
    assert!((dd_f - brute).abs() < 1e-6 && (pct_f - brute_pct).abs() < 1e-9);
    let ours_f = daily_returns_f64(curve_f.iter().copied());
    assert_eq!(ours_f.len(), ours.len());
    for (a, b) in ours_f.iter().zip(&ours) {
        assert!((a - b).abs() < 1e-12);
    }

    let rep = report(&trades, start);
    assert_eq!(rep.overall.total_pnl, c.last().unwrap().1 - c[0].1);
    assert!(
        (rep.exposure_pct - 100.0).abs() < 1e-9,
        "always in the market"
    );
    assert_eq!(rep.sharpe, sharpe(&ours));
}

fn dec(n: i64) -> Decimal {
    Decimal::from(n)
}

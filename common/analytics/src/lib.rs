//! Performance analytics of closed trades, shared by `shardbot report` (from the journal)
//! and the backtester.
//!
//! Definitions (`docs/architecture.md`, "The reconciler and the journal", repeats them):
//! - a trade's **net** is what it did to the balance: its closed PnL, fees and funding
//!   deducted (Bybit's definition of closed PnL);
//!   a win is a trade with net > 0;
//! - **win rate** = wins / trades; **profit factor** = Σ net of wins / |Σ net of losses|
//!   (`None` when there is no losing trade);
//! - the **equity curve** starts at the starting balance and steps by each trade's net at
//!   its exit time; **max drawdown** is the largest fall from a running peak, in USDT and
//!   in % of that peak;
//! - **daily returns** are the equity's relative change from one UTC day's close to the
//!   next, over every calendar day from the first trade's day to the last's (a day
//!   without trades returns 0); **Sharpe** = mean / sample standard deviation × √365,
//!   **Sortino** = mean / downside deviation (√(Σ min(r, 0)² / n)) × √365, both with a
//!   risk-free rate of 0 and `None` with fewer than two days or no dispersion;
//! - **exposure** = the share of the time from the first entry to the last exit during
//!   which at least one position was open, in %.
//!
//! Money stays `Decimal`; ratios are `f64`.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::Serialize;

const DAY_MS: i64 = 86_400_000;

/// A closed trade as analytics sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeResult {
    pub symbol: String,
    pub strategy: String,
    pub entry_time_ms: i64,
    pub exit_time_ms: i64,
    /// Closed PnL (fees and funding deducted): what the trade did to the balance.
    pub net: Decimal,
    pub fees: Decimal,
    /// Whether the numbers are the exchange's (verified) or our own calculation.
    pub verified: bool,
}

/// Where the figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// No trades.
    None,
    /// Every trade verified against the exchange.
    Verified,
    /// No trade verified: our calculation only.
    Calculated,
    /// Some verified, some calculated.
    Mixed,
}

impl Basis {
    pub fn describe(self, verified: usize, total: usize) -> String {
        match self {
            Basis::None => "no closed trades".into(),
            Basis::Verified => format!("all {total} trades verified against the exchange"),
            Basis::Calculated => format!("all {total} trades calculated (none verified yet)"),
            Basis::Mixed => format!(
                "{verified} of {total} trades verified, {} calculated",
                total - verified
            ),
        }
    }
}

/// The figures of a group of trades (all, one symbol, one strategy).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub trades: usize,
    pub wins: usize,
    pub losses: usize,
    /// 0..=1.
    pub win_rate: f64,
    pub total_pnl: Decimal,
    pub avg_pnl: Decimal,
    pub best: Decimal,
    pub worst: Decimal,
    pub fees: Decimal,
    pub profit_factor: Option<f64>,
    pub verified: usize,
    pub basis: Basis,
}

/// Everything `report` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub starting_balance: Decimal,
    pub overall: Stats,
    /// total PnL / starting balance, in %.
    pub total_return_pct: f64,
    pub max_drawdown: Decimal,
    /// In % of the peak it fell from.
    pub max_drawdown_pct: f64,
    pub sharpe: Option<f64>,
    pub sortino: Option<f64>,
    /// In %.
    pub exposure_pct: f64,
    pub by_symbol: BTreeMap<String, Stats>,
    pub by_strategy: BTreeMap<String, Stats>,
}

/// The figures of `trades`.
pub fn stats<'a>(trades: impl IntoIterator<Item = &'a TradeResult>) -> Stats {
    let mut s = Stats {
        trades: 0,
        wins: 0,
        losses: 0,
        win_rate: 0.0,
        total_pnl: Decimal::ZERO,
        avg_pnl: Decimal::ZERO,
        best: Decimal::MIN,
        worst: Decimal::MAX,
        fees: Decimal::ZERO,
        profit_factor: None,
        verified: 0,
        basis: Basis::None,
    };
    let (mut gross_win, mut gross_loss) = (Decimal::ZERO, Decimal::ZERO);
    for t in trades {
        s.trades += 1;
        s.total_pnl += t.net;
        s.fees += t.fees;
        s.best = s.best.max(t.net);
        s.worst = s.worst.min(t.net);
        if t.verified {
            s.verified += 1;
        }
        // Signs read off the decimals: a comparison with zero aligns scales first, and a
        // backtest sums tens of thousands of trades.
        if t.net.is_sign_positive() && !t.net.is_zero() {
            s.wins += 1;
            gross_win += t.net;
        } else if !t.net.is_zero() {
            s.losses += 1;
            gross_loss -= t.net;
        }
    }
    if s.trades == 0 {
        s.best = Decimal::ZERO;
        s.worst = Decimal::ZERO;
        return s;
    }
    s.win_rate = s.wins as f64 / s.trades as f64;
    s.avg_pnl = s.total_pnl / Decimal::from(s.trades);
    s.profit_factor = (!gross_loss.is_zero()).then(|| ratio(gross_win, gross_loss));
    s.basis = match s.verified {
        0 => Basis::Calculated,
        v if v == s.trades => Basis::Verified,
        _ => Basis::Mixed,
    };
    s
}

fn ratio(a: Decimal, b: Decimal) -> f64 {
    (a / b).to_f64().unwrap_or(f64::NAN)
}

/// The equity after each trade, in exit order: `(exit_time_ms, equity)`, starting with
/// `(first entry, starting_balance)`.
pub fn equity_curve(trades: &[TradeResult], starting_balance: Decimal) -> Vec<(i64, Decimal)> {
    let mut sorted: Vec<&TradeResult> = trades.iter().collect();
    sorted.sort_by_key(|t| (t.exit_time_ms, t.entry_time_ms));
    let start = trades.iter().map(|t| t.entry_time_ms).min().unwrap_or(0);
    let mut eq = starting_balance;
    let mut curve = vec![(start, eq)];
    for t in sorted {
        eq += t.net;
        curve.push((t.exit_time_ms, eq));
    }
    curve
}

/// The largest fall from a running peak: `(amount, % of that peak)`. The two maxima are
/// taken separately (the deepest % can come from a smaller, earlier peak).
pub fn max_drawdown(equity: &[(i64, Decimal)]) -> (Decimal, f64) {
    let mut peak: Option<Decimal> = None;
    let (mut amount, mut pct) = (Decimal::ZERO, 0.0_f64);
    for &(_, e) in equity {
        let p = peak.map_or(e, |p| p.max(e));
        peak = Some(p);
        let dd = p - e;
        amount = amount.max(dd);
        if p > Decimal::ZERO {
            pct = pct.max(ratio(dd, p) * 100.0);
        }
    }
    (amount, pct)
}

/// One UTC day of closed trades (by exit time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    /// The day's start, ms (UTC midnight).
    pub day_ms: i64,
    pub trades: usize,
    pub wins: usize,
    /// Net PnL of the day's trades (fees and funding deducted).
    pub net: Decimal,
    pub fees: Decimal,
    /// The balance at the day's end: the starting balance plus every net closed so far.
    pub balance: Decimal,
    /// `net` in % of the balance the day began with (`None` when that is not positive).
    pub return_pct: Option<f64>,
}

/// The closed trades day by day (UTC, by exit time; only days with a trade), oldest first,
/// from `starting_balance`.
pub fn daily(trades: &[TradeResult], starting_balance: Decimal) -> Vec<Day> {
    let mut by_day: BTreeMap<i64, Vec<&TradeResult>> = BTreeMap::new();
    for t in trades {
        by_day
            .entry(t.exit_time_ms.div_euclid(DAY_MS))
            .or_default()
            .push(t);
    }
    let mut balance = starting_balance;
    by_day
        .into_iter()
        .map(|(day, ts)| {
            let net: Decimal = ts.iter().map(|t| t.net).sum();
            let begin = balance;
            balance += net;
            Day {
                day_ms: day * DAY_MS,
                trades: ts.len(),
                wins: ts.iter().filter(|t| t.net > Decimal::ZERO).count(),
                net,
                fees: ts.iter().map(|t| t.fees).sum(),
                balance,
                return_pct: (begin > Decimal::ZERO).then(|| ratio(net, begin) * 100.0),
            }
        })
        .collect()
}

/// Daily returns of an equity curve (see the crate's documentation): one per calendar
/// day from the curve's first day to its last, the first measured from the curve's first
/// point.
pub fn daily_returns(equity: &[(i64, Decimal)]) -> Vec<f64> {
    let Some(&(t0, e0)) = equity.first() else {
        return Vec::new();
    };
    let mut closes: BTreeMap<i64, Decimal> = BTreeMap::new();
    for &(t, e) in equity {
        closes.insert(t.div_euclid(DAY_MS), e);
    }
    let (first, last) = (t0.div_euclid(DAY_MS), *closes.keys().last().unwrap_or(&0));
    let mut prev = e0;
    let mut out = Vec::new();
    for day in first..=last {
        let close = closes.get(&day).copied().unwrap_or(prev);
        if prev > Decimal::ZERO {
            out.push(ratio(close - prev, prev));
        }
        prev = close;
    }
    out
}

fn mean(r: &[f64]) -> f64 {
    r.iter().sum::<f64>() / r.len() as f64
}

/// [`max_drawdown`] of an `f64` curve (a backtest's bar-by-bar equity, read where it
/// lies: a curve of a million points is not copied to put the start in front).
pub fn max_drawdown_f64(equity: impl IntoIterator<Item = (i64, f64)>) -> (f64, f64) {
    let mut peak = f64::MIN;
    let (mut amount, mut pct) = (0.0_f64, 0.0_f64);
    // The deepest fall below the current peak so far. Under one peak the percentage
    // `dd / peak × 100` grows with `dd` (both roundings are monotonic), so it is worked out
    // only when a fall goes deeper: one division per new low instead of one per point,
    // and the same maximum bit for bit.
    let mut deepest = 0.0_f64;
    // `for_each`, not `for`: a chained curve (the start in front of a slice) is then
    // walked a part at a time, without testing which part at every point.
    equity.into_iter().for_each(|(_, e)| {
        let p = peak.max(e);
        if p != peak {
            peak = p;
            deepest = 0.0;
        }
        let dd = peak - e;
        // The deepest fall overall is at least this peak's deepest: only a deeper one can
        // raise it.
        if dd > deepest {
            deepest = dd;
            amount = amount.max(dd);
            if peak > 0.0 {
                pct = pct.max(dd / peak * 100.0);
            }
        }
    });
    (amount, pct)
}

/// [`daily_returns`] of an `f64` curve: the last point of each UTC day is its close.
pub fn daily_returns_f64(equity: impl IntoIterator<Item = (i64, f64)>) -> Vec<f64> {
    let mut equity = equity.into_iter();
    let Some((t0, e0)) = equity.next() else {
        return Vec::new();
    };
    // A return a day: as many as points for a daily curve (grown one at a time, the
    // reallocations cost more than the returns), far fewer for finer bars, so the
    // reservation is capped.
    let mut out = Vec::with_capacity(equity.size_hint().0.min(4096));
    let mut prev = e0;
    let mut day = t0.div_euclid(DAY_MS);
    // The first time of the next day: points before it need no division.
    let mut next = (day + 1).saturating_mul(DAY_MS);
    let mut close = e0;
    let push = |from: f64, to: f64, out: &mut Vec<f64>| {
        if from > 0.0 {
            out.push(to / from - 1.0);
        }
    };
    // `for_each`: see max_drawdown_f64.
    equity.for_each(|(t, e)| {
        if t >= next {
            // The very next day (every point of a daily curve) without a division.
            let d = if t < next.saturating_add(DAY_MS) {
                day + 1
            } else {
                t.div_euclid(DAY_MS)
            };
            while d > day {
                push(prev, close, &mut out);
                prev = close;
                day += 1;
            }
            next = (day + 1).saturating_mul(DAY_MS);
        }
        close = e;
    });
    push(prev, close, &mut out);
    out
}

/// Annualised Sharpe ratio of daily returns (√365, risk-free 0).
pub fn sharpe(returns: &[f64]) -> Option<f64> {
    if returns.len() < 2 {
        return None;
    }
    let m = mean(returns);
    let var = returns.iter().map(|r| (r - m).powi(2)).sum::<f64>() / (returns.len() - 1) as f64;
    let sd = var.sqrt();
    (sd > 0.0).then(|| m / sd * 365f64.sqrt())
}

/// Annualised Sortino ratio of daily returns (√365, target 0).
pub fn sortino(returns: &[f64]) -> Option<f64> {
    if returns.len() < 2 {
        return None;
    }
    let m = mean(returns);
    let dd =
        (returns.iter().map(|r| r.min(0.0).powi(2)).sum::<f64>() / returns.len() as f64).sqrt();
    (dd > 0.0).then(|| m / dd * 365f64.sqrt())
}

/// Share of `[first entry, last exit]` with at least one position open, in %.
pub fn exposure_pct(trades: &[TradeResult]) -> f64 {
    let mut spans: Vec<(i64, i64)> = trades
        .iter()
        .map(|t| (t.entry_time_ms, t.exit_time_ms.max(t.entry_time_ms)))
        .collect();
    spans.sort_unstable();
    let (Some(first), Some(last)) = (spans.first().map(|s| s.0), spans.iter().map(|s| s.1).max())
    else {
        return 0.0;
    };
    if last <= first {
        return 0.0;
    }
    let mut covered = 0i64;
    let mut cur: Option<(i64, i64)> = None;
    for (a, b) in spans {
        cur = match cur {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                covered += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((a, b)) = cur {
        covered += b - a;
    }
    covered as f64 / (last - first) as f64 * 100.0
}

/// The whole report of `trades` from `starting_balance`.
pub fn report(trades: &[TradeResult], starting_balance: Decimal) -> Report {
    let curve = equity_curve(trades, starting_balance);
    let (dd, dd_pct) = max_drawdown(&curve);
    let returns = daily_returns(&curve);
    let overall = stats(trades);
    let mut by_symbol: BTreeMap<String, Vec<&TradeResult>> = BTreeMap::new();
    let mut by_strategy: BTreeMap<String, Vec<&TradeResult>> = BTreeMap::new();
    for t in trades {
        by_symbol.entry(t.symbol.clone()).or_default().push(t);
        by_strategy.entry(t.strategy.clone()).or_default().push(t);
    }
    Report {
        starting_balance,
        total_return_pct: if starting_balance > Decimal::ZERO {
            ratio(overall.total_pnl, starting_balance) * 100.0
        } else {
            0.0
        },
        overall,
        max_drawdown: dd,
        max_drawdown_pct: dd_pct,
        sharpe: if trades.is_empty() {
            None
        } else {
            sharpe(&returns)
        },
        sortino: if trades.is_empty() {
            None
        } else {
            sortino(&returns)
        },
        exposure_pct: exposure_pct(trades),
        by_symbol: by_symbol.into_iter().map(|(k, v)| (k, stats(v))).collect(),
        by_strategy: by_strategy
            .into_iter()
            .map(|(k, v)| (k, stats(v)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;
    use rust_decimal_macros::dec;

    fn t(sym: &str, strat: &str, entry_h: i64, exit_h: i64, net: Decimal, v: bool) -> TradeResult {
        TradeResult {
            symbol: sym.into(),
            strategy: strat.into(),
            entry_time_ms: entry_h * 3_600_000,
            exit_time_ms: exit_h * 3_600_000,
            net,
            fees: dec!(0.1),
            verified: v,
        }
    }

    /// Trades grouped by the UTC day they closed, the balance carried from day to day.
    #[test]
    fn a_daily_table_by_exit_day() {
        // Exits at 01:00 and 23:00 of day 0, 25:00 (day 1), and day 3; out of order.
        let trades = vec![
            t("A", "s", 20, 75, dec!(-5), true),
            t("A", "s", 0, 1, dec!(10), true),
            t("B", "s", 2, 23, dec!(-2.5), false),
            t("B", "s", 23, 25, dec!(20), true),
        ];
        let d = daily(&trades, dec!(1000));
        assert_eq!(
            d.iter()
                .map(|x| (x.day_ms / DAY_MS, x.trades, x.wins, x.net, x.balance))
                .collect::<Vec<_>>(),
            [
                (0, 2, 1, dec!(7.5), dec!(1007.5)),
                (1, 1, 1, dec!(20), dec!(1027.5)),
                (3, 1, 0, dec!(-5), dec!(1022.5)),
            ]
        );
        assert_eq!(d[0].fees, dec!(0.2));
        assert!((d[1].return_pct.unwrap() - 20.0 / 1007.5 * 100.0).abs() < 1e-9);
        assert!(daily(&[], dec!(1000)).is_empty());
        assert_eq!(daily(&trades, dec!(0))[0].return_pct, None);
    }

    #[test]
    fn hand_computed_stats() {
        // +30, −10, +20, −20: 2 wins of 4, total +20, profit factor 50 / 30.
        let trades = vec![
            t("BTCUSDT", "trend", 0, 2, dec!(30), true),
            t("ETHUSDT", "trend", 1, 3, dec!(-10), true),
            t("BTCUSDT", "mean", 4, 5, dec!(20), false),
            t("SOLUSDT", "mean", 6, 8, dec!(-20), true),
        ];
        let s = stats(&trades);
        assert_eq!((s.trades, s.wins, s.losses), (4, 2, 2));
        assert_eq!(s.win_rate, 0.5);
        assert_eq!(s.total_pnl, dec!(20));
        assert_eq!(s.avg_pnl, dec!(5));
        assert_eq!((s.best, s.worst), (dec!(30), dec!(-20)));
        assert_eq!(s.fees, dec!(0.4));
        assert!((s.profit_factor.unwrap() - 50.0 / 30.0).abs() < 1e-12);
        assert_eq!((s.verified, s.basis), (3, Basis::Mixed));

        let r = report(&trades, dec!(1000));
        // Equity 1000 → 1030 → 1020 → 1040 → 1020: the deepest fall is 20 from 1040.
        assert_eq!(r.max_drawdown, dec!(20));
        assert!((r.max_drawdown_pct - 20.0 / 1040.0 * 100.0).abs() < 1e-9);
        assert!((r.total_return_pct - 2.0).abs() < 1e-12);
        // Positions open 0-3 h, 4-5 h and 6-8 h of 8 h: 6 / 8.
        assert!((r.exposure_pct - 75.0).abs() < 1e-9);
        assert_eq!(r.by_symbol["BTCUSDT"].total_pnl, dec!(50));
        assert_eq!(r.by_symbol["BTCUSDT"].basis, Basis::Mixed);
        assert_eq!(r.by_strategy["mean"].total_pnl, dec!(0));
        assert_eq!(r.by_strategy["trend"].win_rate, 0.5);
        // All trades on one day: a single daily return, no Sharpe.
        assert_eq!(r.sharpe, None);
    }

    #[test]
    fn daily_returns_sharpe_and_sortino_by_hand() {
        // Day 0: 1000 → 1100 (+10 %); day 1: nothing (0 %); day 2: 1100 → 990 (−10 %).
        let trades = vec![
            t("A", "s", 1, 2, dec!(100), true),
            t("A", "s", 49, 50, dec!(-110), true),
        ];
        let curve = equity_curve(&trades, dec!(1000));
        let r = daily_returns(&curve);
        assert_eq!(r.len(), 3);
        assert!((r[0] - 0.1).abs() < 1e-12 && r[1] == 0.0 && (r[2] + 0.1).abs() < 1e-12);
        // mean 0 → both ratios 0.
        assert_eq!(sharpe(&r), Some(0.0));
        assert_eq!(sortino(&r), Some(0.0));
        // mean 0.01, sample sd of (0.02, 0.0) = √0.0002; Sharpe = 1/√2 × √365.
        let s = sharpe(&[0.02, 0.0]).unwrap();
        assert!((s - std::f64::consts::FRAC_1_SQRT_2 * 365f64.sqrt()).abs() < 1e-9);
        // returns (0.03, −0.01): mean 0.01, downside dev √(0.0001 / 2) = 0.0070711.
        let so = sortino(&[0.03, -0.01]).unwrap();
        assert!((so - 0.01 / (0.0001f64 / 2.0).sqrt() * 365f64.sqrt()).abs() < 1e-9);
        assert_eq!(sortino(&[0.01, 0.02]), None, "no downside: undefined");
    }

    #[rstest]
    #[case::all_verified(&[true, true], Basis::Verified)]
    #[case::none_verified(&[false, false], Basis::Calculated)]
    #[case::some(&[true, false], Basis::Mixed)]
    #[case::empty(&[], Basis::None)]
    fn basis_says_where_numbers_come_from(#[case] verified: &[bool], #[case] basis: Basis) {
        let trades: Vec<_> = verified
            .iter()
            .map(|&v| t("A", "s", 0, 1, dec!(1), v))
            .collect();
        assert_eq!(stats(&trades).basis, basis);
    }

    #[test]
    fn no_losses_no_profit_factor_and_empty_is_zero() {
        assert_eq!(
            stats(&[t("A", "s", 0, 1, dec!(5), true)]).profit_factor,
            None
        );
        let r = report(&[], dec!(100));
        assert_eq!(r.overall.trades, 0);
        assert_eq!(
            (r.max_drawdown, r.exposure_pct, r.sharpe),
            (dec!(0), 0.0, None)
        );
    }

    /// The definition [`max_drawdown_f64`] computes with fewer divisions.
    fn max_drawdown_f64_plain(equity: &[f64]) -> (f64, f64) {
        let mut peak = f64::MIN;
        let (mut amount, mut pct) = (0.0_f64, 0.0_f64);
        for &e in equity {
            peak = peak.max(e);
            let dd = peak - e;
            amount = amount.max(dd);
            if peak > 0.0 {
                pct = pct.max(dd / peak * 100.0);
            }
        }
        (amount, pct)
    }

    /// The definition [`daily_returns_f64`] computes with fewer divisions.
    fn daily_returns_f64_plain(equity: &[(i64, f64)]) -> Vec<f64> {
        let Some(&(t0, e0)) = equity.first() else {
            return Vec::new();
        };
        let (mut out, mut prev, mut close) = (Vec::new(), e0, e0);
        let mut day = t0.div_euclid(DAY_MS);
        for &(t, e) in &equity[1..] {
            while t.div_euclid(DAY_MS) > day {
                if prev > 0.0 {
                    out.push(close / prev - 1.0);
                }
                prev = close;
                day += 1;
            }
            close = e;
        }
        if prev > 0.0 {
            out.push(close / prev - 1.0);
        }
        out
    }

    proptest::proptest! {
        /// Daily, finer and gapped curves (negative times too) give the returns of the
        /// per-point definition, bit for bit.
        #[test]
        fn daily_returns_f64_equals_the_per_point_definition(
            t0 in proptest::prop_oneof![
                -1_000_000_000_000i64..2_000_000_000_000,
                // At midnight: a step of a day lands on the next midnight.
                proptest::strategy::Strategy::prop_map(-10_000i64..20_000, |d| d * DAY_MS),
            ],
            steps in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        4 => proptest::strategy::Just(DAY_MS),
                        1 => proptest::strategy::Just(2 * DAY_MS),
                        2 => 1i64..DAY_MS,
                        1 => DAY_MS..10 * DAY_MS,
                        1 => proptest::strategy::Just(300_000i64),
                    ],
                    -10.0f64..1000.0,
                ),
                0..100,
            ),
            e0 in -10.0f64..1000.0,
        ) {
            let mut curve = vec![(t0, e0)];
            for (dt, e) in steps {
                let t = curve[curve.len() - 1].0 + dt;
                curve.push((t, e));
            }
            let got: Vec<u64> = daily_returns_f64(curve.iter().copied()).iter().map(|r| r.to_bits()).collect();
            let want: Vec<u64> = daily_returns_f64_plain(&curve).iter().map(|r| r.to_bits()).collect();
            proptest::prop_assert_eq!(got, want);
        }

        /// Dividing only at a new low below a peak gives the per-point maximum bit for bit,
        /// on curves with flat stretches, repeated peaks, negative equity, NaN and infinities.
        #[test]
        fn drawdown_f64_equals_the_per_point_definition(
            curve in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => -50.0f64..1000.0,
                    2 => proptest::strategy::Strategy::prop_map(0i32..20, |n| f64::from(n) * 0.1),
                    1 => proptest::num::f64::ANY,
                ],
                0..200,
            )
        ) {
            let points: Vec<(i64, f64)> = curve.iter().map(|&e| (0, e)).collect();
            let (a, p) = max_drawdown_f64(points);
            let (a0, p0) = max_drawdown_f64_plain(&curve);
            proptest::prop_assert_eq!((a.to_bits(), p.to_bits()), (a0.to_bits(), p0.to_bits()));
        }

        /// The drawdown never exceeds the distance from the highest to the lowest equity,
        /// and the total PnL is the curve's last step.
        #[test]
        fn drawdown_bounded_and_curve_ends_at_total(nets in proptest::collection::vec(-1000i64..1000, 1..50)) {
            let trades: Vec<_> = nets.iter().enumerate()
                .map(|(i, &n)| t("A", "s", i as i64, i as i64 + 1, Decimal::from(n), true))
                .collect();
            let curve = equity_curve(&trades, dec!(100000));
            let hi = curve.iter().map(|c| c.1).max().unwrap();
            let lo = curve.iter().map(|c| c.1).min().unwrap();
            let (dd, pct) = max_drawdown(&curve);
            proptest::prop_assert!(dd <= hi - lo && dd >= Decimal::ZERO);
            proptest::prop_assert!((0.0..=100.0).contains(&pct));
            proptest::prop_assert_eq!(curve.last().unwrap().1 - dec!(100000), stats(&trades).total_pnl);
        }
    }
}

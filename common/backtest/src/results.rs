//! What a backtest gives: every trade with why it ended, the summary (returns, drawdown,
//! Sharpe, Sortino, trade statistics), the refusals by reason; and how the summary is
//! worked out.

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::Serialize;
use shardbot_analytics::{
    TradeResult, daily_returns_f64, max_drawdown_f64, sharpe, sortino, stats,
};
use shardbot_protocol::Side;

use crate::{BacktestConfig, Market, account::Account, fixed::approx};

/// Why a trade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    Signal,
    StopLoss,
    TakeProfit,
    EndOfData,
}

/// A round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trade {
    /// Shared by the symbol's trades: a copy per trade cost more than booking it.
    pub symbol: Arc<str>,
    pub side: Side,
    pub qty: Decimal,
    pub entry_time_ms: i64,
    pub exit_time_ms: i64,
    pub entry_price: Decimal,
    pub exit_price: Decimal,
    /// Opening and closing fees.
    pub fees: Decimal,
    /// Funding paid (negative: received).
    pub funding: Decimal,
    /// Closed PnL as Bybit reports it: gross − fees − funding.
    pub pnl: Decimal,
    pub exit_reason: ExitReason,
    /// The strategy whose entry opened it (the position's owner).
    pub strategy: &'static str,
}

/// The figures of a run (`summary.json`). Returns and drawdowns are in %, money in USDT.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub strategy: String,
    pub symbols: usize,
    pub bars: u64,
    pub first_bar_ms: i64,
    pub last_bar_ms: i64,
    pub starting_balance: Decimal,
    pub final_balance: Decimal,
    pub trades: usize,
    /// 0..=1.
    pub win_rate: f64,
    pub total_pnl: Decimal,
    /// %.
    pub total_return: f64,
    /// % of the peak, on the bar-by-bar marked-to-market equity.
    pub max_drawdown: f64,
    pub max_drawdown_usdt: Decimal,
    /// Annualised (√365) on daily returns of the marked-to-market equity.
    pub sharpe: Option<f64>,
    pub sortino: Option<f64>,
    pub profit_factor: Option<f64>,
    pub fees: Decimal,
    /// Intents the risk rules refused, by code.
    pub refused: BTreeMap<String, u64>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct BacktestResult {
    pub trades: Vec<Trade>,
    /// `(open_time_ms, equity)` after each timestamp's bars, marked to market at the close.
    pub equity: Vec<(i64, f64)>,
    pub summary: Summary,
}

pub(crate) fn summarise(
    markets: &[Market],
    cfg: &BacktestConfig,
    eng: &Account<'_>,
    equity: &[(i64, f64)],
    bars: u64,
    span: (i64, i64),
) -> Summary {
    Summary::of(SummaryOf {
        strategy: &cfg.strategy,
        symbols: markets.len(),
        bars,
        span,
        starting_balance: cfg.settings.simulated_balance,
        final_balance: eng.balance,
        trades: &eng.trades,
        equity,
        refused: eng
            .refused
            .iter()
            .map(|(k, v)| (format!("{k:?}"), *v))
            .collect(),
    })
}

/// What a [`Summary`] is worked out from: one run's trades and equity curve, or the
/// out-of-sample parts of a walk-forward stitched together.
#[derive(Debug)]
pub struct SummaryOf<'a> {
    pub strategy: &'a str,
    pub symbols: usize,
    pub bars: u64,
    /// The first and last bar's open time.
    pub span: (i64, i64),
    pub starting_balance: Decimal,
    pub final_balance: Decimal,
    pub trades: &'a [Trade],
    /// `(open_time_ms, equity)`, marked to market; the curve starts at the starting
    /// balance at the first bar.
    pub equity: &'a [(i64, f64)],
    pub refused: BTreeMap<String, u64>,
}

impl Summary {
    /// The figures of trades and an equity curve.
    pub fn of(run: SummaryOf<'_>) -> Summary {
        let (first_bar_ms, last_bar_ms) = run.span;
        let results: Vec<TradeResult> = run
            .trades
            .iter()
            .map(|t| TradeResult {
                // The figures need neither name (and a copy of each costs more than the rest).
                symbol: String::new(),
                strategy: String::new(),
                entry_time_ms: t.entry_time_ms,
                exit_time_ms: t.exit_time_ms,
                net: t.pnl,
                fees: t.fees,
                verified: false,
            })
            .collect();
        let s = stats(&results);
        let start = run.starting_balance;
        let curve = || {
            std::iter::once((first_bar_ms, start.to_f64().unwrap_or(0.0)))
                .chain(run.equity.iter().copied())
        };
        let (dd, dd_pct) = max_drawdown_f64(curve());
        let r = daily_returns_f64(curve());
        Summary {
            strategy: run.strategy.to_owned(),
            symbols: run.symbols,
            bars: run.bars,
            first_bar_ms,
            last_bar_ms,
            starting_balance: start,
            final_balance: run.final_balance,
            trades: s.trades,
            win_rate: s.win_rate,
            total_pnl: s.total_pnl,
            total_return: if start > Decimal::ZERO {
                (s.total_pnl / start * Decimal::ONE_HUNDRED)
                    .to_f64()
                    .unwrap_or(0.0)
            } else {
                0.0
            },
            max_drawdown: dd_pct,
            max_drawdown_usdt: approx(dd).round_dp(2),
            sharpe: sharpe(&r),
            sortino: sortino(&r),
            profit_factor: s.profit_factor,
            fees: s.fees,
            refused: run.refused,
        }
    }
}

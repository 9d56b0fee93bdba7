//! What a backtest is asked to do: the strategies and their parameters, the trading
//! settings, and the fill rules (slippage, which of stop-loss and take-profit fills first
//! inside a bar, funding).

use rust_decimal::Decimal;
use serde::Serialize;
use shardbot_risk::TradingSettings;
use shardbot_strategy::Params;

/// Which of stop-loss and take-profit fills when both lie inside one bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intrabar {
    /// The stop (the worse outcome): conservative.
    StopFirst,
    /// bybit-sim's replay path: open → low → high → close when the bar rises, open → high
    /// → low → close when it falls.
    Path,
}

/// How much worse than the reference price a market order fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Slippage {
    /// Ticks of the instrument (bybit-sim's `spread_ticks`).
    Ticks(u32),
    /// Basis points of the price.
    Bps(Decimal),
}

/// Everything a run needs besides the data.
#[derive(Debug, Clone)]
pub struct BacktestConfig {
    pub strategy: String,
    pub params: Params,
    pub settings: TradingSettings,
    /// Taker fee rate, e.g. 0.00055.
    pub fee_rate: Decimal,
    pub slippage: Slippage,
    pub intrabar: Intrabar,
    /// Funding rate charged every `funding_interval_ms` (None: no funding).
    pub funding_rate: Option<Decimal>,
    pub funding_interval_ms: i64,
    /// Bars opening before this time only warm the strategies up (told they are flat,
    /// their signals dropped), as a worker warms up on history before it trades. None:
    /// every bar trades.
    pub trade_from_ms: Option<i64>,
}

impl BacktestConfig {
    /// The plain comparison run of other backtesters (backtesting.py, freqtrade): the whole
    /// balance in one position, no leverage, 0.055 % taker fee, fills at the next open, no
    /// slippage, no funding.
    pub fn all_in(strategy: &str, params: Params, balance: Decimal) -> BacktestConfig {
        BacktestConfig {
            strategy: strategy.into(),
            params,
            settings: TradingSettings {
                simulated_balance: balance,
                sizing: shardbot_risk::Sizing::Percent(Decimal::ONE_HUNDRED),
                leverage: Decimal::ONE,
                daily_loss_limit: Decimal::MAX,
                max_open_positions: 1,
                max_margin_use_pct: Decimal::ONE_HUNDRED,
                cooldown_after_stop_min: 0,
                fee_rate: shardbot_risk::default_fee_rate(),
            },
            fee_rate: shardbot_risk::default_fee_rate(),
            slippage: Slippage::Ticks(0),
            intrabar: Intrabar::StopFirst,
            funding_rate: None,
            funding_interval_ms: 8 * 3_600_000,
            trade_from_ms: None,
        }
    }
}

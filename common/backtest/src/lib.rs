//! The backtester: the SAME strategies the workers run ([`shardbot_strategy::Strategy`],
//! the same parameter types) and the SAME risk rules the risk manager applies
//! ([`shardbot_risk::judge`], [`shardbot_risk::round_qty`]), over the closed bars of any
//! number of symbols, in time order.
//!
//! The fill model is bybit-sim's:
//! - a signal on bar *i*'s close becomes a market order that fills at bar *i+1*'s open,
//!   `slippage` worse (ticks or basis points), paying the taker fee on its value (rounded to
//!   8 decimals, as the sim and Bybit do);
//! - exits are sent before entries, so a stop-and-reverse closes and reopens at that open;
//! - exchange-side stop-loss / take-profit (rounded to the tick, as the router does) are
//!   checked inside every bar on its high and low. A bar that opens beyond a level fills
//!   at the open; otherwise at the level. When both levels lie inside one bar the
//!   [`Intrabar`] rule decides: `StopFirst` (default, conservative: the stop is assumed to
//!   come first), or `Path`, bybit-sim's replay path (open → low → high → close for a
//!   rising bar, open → high → low → close for a falling one);
//! - funding (optional) is charged at every multiple of its interval to a position held
//!   into it (one opened at that very open does not pay), on the value at the first open at
//!   or after that time (longs pay a positive rate);
//! - positions still open when the data ends are closed at the last close (with the fee).
//!
//! Sizing and limits are `trading_settings.json`'s (percent or fixed margin, leverage, max
//! open positions, daily loss limit, max margin use, cooldown after a stop), judged at the
//! moment of the signal against the simulated balance (start + realised PnL); an approved
//! entry counts as open from its approval, as the risk manager books it. A plain
//! "all-in stop-and-reverse, no leverage" run is `sizing: percent 100, leverage 1,
//! max_margin_use_pct 100, max_open_positions 1` ([`BacktestConfig::all_in`]).
//!
//! Money is `Decimal` at every fill; the per-bar path (strategy, SL/TP checks, marking to
//! market) is `f64`, which is what makes tens of millions of bar-steps per second.

mod account;
mod config;
pub mod data;
mod fills;
mod fixed;
mod results;
mod run_loop;

pub use config::{BacktestConfig, Intrabar, Slippage};
pub use data::{DataError, Market, Series};
pub use results::{BacktestResult, ExitReason, Summary, SummaryOf, Trade};
pub use run_loop::{bar_span, run, run_roster, run_with};

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("`{0}` cannot be a symbol: {1}")]
    Symbol(String, String),
    #[error(transparent)]
    Strategy(#[from] shardbot_strategy::BuildError),
    #[error("no bars to test")]
    NoData,
}

#[cfg(test)]
mod tests;

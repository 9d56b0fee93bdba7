//! Strategies: one trait, used the same way by the strategy workers, the backtester and
//! the optimizer, so there is no second implementation for backtesting.
//!
//! A strategy sees one symbol's closed bars, keeps incremental indicator state, and on
//! each bar returns signals: what it wants done with the position, with exchange-side
//! stop-loss / take-profit prices. How much to trade, and whether it is allowed, is decided
//! elsewhere (the risk manager, or the backtester's copy of its rules).

mod mean_reversion;
mod optimized;
mod owner;
pub mod params;
mod settings;
mod trend_following;

pub use mean_reversion::MeanReversion;
pub use optimized::{
    OptimizedFile, OptimizedStrategy, ParamStatus, ParamsError, WalkForwardRecord,
};
pub use owner::{Holder, acting};
pub use params::{Kind, ParamError, Params, Spec, Value};
pub use settings::{ParametersInForce, Roster, StrategySettings, StrategySettingsError};
pub use trend_following::TrendFollowing;

/// One closed bar, as indicator math sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candle {
    pub open_time_ms: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

/// What the strategy is told it holds in the symbol (flat, long or short): its
/// holding, beside [`Holder`], whose it is. (The exchange's position with its size and
/// prices is `shardbot_protocol::Position`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    Flat,
    Long,
    Short,
}

impl Holding {
    /// The position a signal leaves: an entry opens its direction, an exit goes flat.
    pub fn after(self, signal: &Signal) -> Holding {
        match signal {
            Signal::Enter {
                direction: Direction::Long,
                ..
            } => Holding::Long,
            Signal::Enter {
                direction: Direction::Short,
                ..
            } => Holding::Short,
            Signal::Exit => Holding::Flat,
        }
    }
}

/// Direction of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Long,
    Short,
}

/// What a strategy wants after a bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// Open a position, with exchange-side stop-loss and take-profit prices (if any).
    Enter {
        direction: Direction,
        stop_loss: Option<f64>,
        take_profit: Option<f64>,
    },
    /// Close the whole position.
    Exit,
}

/// What a strategy wants after one bar: at most an exit and an entry, kept inline (a
/// backtest asks every bar, and a `Vec` allocated at every signal).
pub type Signals = smallvec::SmallVec<[Signal; 2]>;

pub use smallvec::smallvec as signals;

/// The interface every mode drives.
pub trait Strategy: Send {
    /// The strategy's name, as in `optimized_parameters.json`.
    fn name(&self) -> &'static str;
    /// Closed bars needed before the first signal can come.
    fn warmup_bars(&self) -> usize;
    /// Feeds one closed bar; returns the signals for the position held (in order: an exit
    /// comes before the entry of a reversal).
    fn on_bar(&mut self, candle: &Candle, position: Holding) -> Signals;
    /// Forgets all state (e.g. after a gap that could not be refilled).
    fn reset(&mut self);
}

/// The built-in strategies' names.
pub const BUILT_IN: [&str; 2] = [TrendFollowing::NAME, MeanReversion::NAME];

/// A strategy's parameter schema by name.
pub fn schema(name: &str) -> Option<&'static [Spec]> {
    match name {
        TrendFollowing::NAME => Some(TrendFollowing::SCHEMA),
        MeanReversion::NAME => Some(MeanReversion::SCHEMA),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    #[error("unknown strategy `{0}` (built in: trend_following, mean_reversion)")]
    Unknown(String),
    #[error(transparent)]
    Param(#[from] ParamError),
}

/// Builds a strategy by name with validated parameters (missing ones take defaults).
pub fn build(name: &str, params: &Params) -> Result<Box<dyn Strategy>, BuildError> {
    match name {
        TrendFollowing::NAME => Ok(Box::new(TrendFollowing::new(params)?)),
        MeanReversion::NAME => Ok(Box::new(MeanReversion::new(params)?)),
        other => Err(BuildError::Unknown(other.to_owned())),
    }
}

/// `price * (1 + pct/100)`, or `None` for a zero distance (no order).
pub(crate) fn offset(price: f64, pct: f64, up: bool) -> Option<f64> {
    (pct > 0.0).then(|| {
        if up {
            price * (1.0 + pct / 100.0)
        } else {
            price * (1.0 - pct / 100.0)
        }
    })
}

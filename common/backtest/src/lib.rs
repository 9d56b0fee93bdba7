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

pub mod data;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::Serialize;
use shardbot_analytics::{
    TradeResult, daily_returns_f64, max_drawdown_f64, sharpe, sortino, stats,
};
use shardbot_protocol::{
    Instrument, IntentAction, Side, Symbol, TickGrid, TradingMode, round_half_away,
};
use shardbot_risk::{Exposure, Held, TradingSettings, Verdict, judge, round_qty};
use shardbot_strategy::{Candle, Direction, Holder, Params, Position, Signal, Strategy, acting};

pub use data::{DataError, Series};

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

/// One symbol's data and trading rules. Without known rules (a bare CSV) use
/// [`Market::unrestricted`]: the tick its prices were written with, quantities to 8
/// decimals, no minimums.
#[derive(Debug, Clone)]
pub struct Market {
    pub series: Series,
    pub instrument: Instrument,
}

impl Market {
    pub fn unrestricted(series: Series) -> Result<Market, BacktestError> {
        let price_decimals = series.price_decimals;
        let symbol = Symbol::new(&series.symbol)
            .map_err(|e| BacktestError::Symbol(series.symbol.clone(), e.to_string()))?;
        Ok(Market {
            series,
            instrument: Instrument {
                symbol,
                tick_size: Decimal::new(1, price_decimals),
                // Fractional sizes, as other backtesters trade them; 8 decimals keep every
                // product of money exact without 28-digit arithmetic.
                qty_step: Decimal::new(1, 8),
                min_order_qty: Decimal::ZERO,
                max_market_order_qty: Decimal::MAX,
                min_notional: Decimal::ZERO,
                max_leverage: Decimal::ONE_HUNDRED,
                funding_interval_min: 480,
            },
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("`{0}` cannot be a symbol: {1}")]
    Symbol(String, String),
    #[error(transparent)]
    Strategy(#[from] shardbot_strategy::BuildError),
    #[error("no bars to test")]
    NoData,
}

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

/// An open position. In C's field order, the fields every bar reads first: with hundreds
/// of markets in one account the states do not stay in the nearest cache, and the per-bar
/// path then touches one line of them instead of three.
#[repr(C)]
struct Open {
    side: Side,
    // f64 copies for the per-bar path.
    /// The quantity, negative for a short: `(close − entry) × qty_signed` is the PnL of
    /// either side, bit for bit what `(entry − close) × qty` gives a short.
    qty_signed: f64,
    entry_f: f64,
    /// The levels, NaN when there is none: every comparison with NaN is false, so the
    /// per-bar check needs no test of whether a level exists.
    sl_f: f64,
    tp_f: f64,
    /// Unrealised PnL at the last close in units of 10^-8 USDT: what the risk manager's
    /// book holds for the position (see [`approx`]).
    unrealised: i64,
    // The fill path's.
    qty: Decimal,
    entry_price: Decimal,
    entry_time_ms: i64,
    fees: Decimal,
    funding: Decimal,
    /// Margin it holds for the risk rules (entry notional / leverage), in [`margin_units`].
    margin: i128,
    stop_loss: Option<Decimal>,
    take_profit: Option<Decimal>,
    /// The index of the strategy that opened it: the only one whose signals act on it.
    owner: usize,
}

#[derive(Default)]
struct Pending {
    exit: bool,
    enter: Option<Entry>,
    /// A reversal's entry: judged and sized at the next open once the exit before it has
    /// filled, from the balance that fill left (see [`decide_entry`]).
    reverse: Option<EntrySignal>,
}

/// An entry signal as the risk rules judge it: at once for an entry from flat, or kept
/// (a reversal's) until its exit has filled.
struct EntrySignal {
    /// The strategy that signalled it.
    owner: usize,
    side: Side,
    stop_loss: Option<f64>,
    take_profit: Option<f64>,
    /// The signal bar's close (the intent's reference price) and open time.
    close: f64,
    signal_ms: i64,
}

/// An approved entry waiting for the next open.
struct Entry {
    owner: usize,
    side: Side,
    qty: Decimal,
    stop_loss: Option<Decimal>,
    take_profit: Option<Decimal>,
    /// What the approval holds until the fill: the risk manager books an approved entry
    /// as a position at once (its unrounded quantity at the reference price), so entries
    /// judged at the same close count the ones approved before them. In [`margin_units`].
    margin: i128,
}

/// A market's state in a run, the per-bar fields first (see [`Open`]).
#[repr(C)]
struct SymbolState {
    /// The strategies on this market, in the roster's order (one position, one owner:
    /// [`shardbot_strategy::Holder`]).
    strategies: Vec<Box<dyn Strategy>>,
    /// Each strategy's signals at the bar (kept to reuse its allocation).
    signals: Vec<shardbot_strategy::Signals>,
    last_close: f64,
    /// Whether `pending` holds anything: one flag read at every bar.
    has_pending: bool,
    /// The open time of its previous bar (funding is due for the settlements between it
    /// and this bar's open).
    prev_open: Option<i64>,
    open: Option<Open>,
    pending: Pending,
    stopped_at: Option<i64>,
}

/// `x` as the decimal it was written as: exact for prices with up to 8 decimals (every
/// kline file's), through f64's shortest round-trip text otherwise. A few ns on the fast
/// path against ~300 ns for text, which matters at every fill of a long backtest.
fn dec(x: f64) -> Decimal {
    let scaled = round_half_away(x * 1e8);
    if scaled.abs() < 9.0e15 && scaled / 1e8 == x {
        return shardbot_protocol::scaled_decimal(scaled as i64, 8);
    }
    Decimal::from_str(&format!("{x}"))
        .or_else(|_| Decimal::from_scientific(&format!("{x:e}")))
        .unwrap_or_default()
}

/// An amount for the risk rules' judgement (unrealised PnL): 8 decimals are plenty.
fn approx(x: f64) -> Decimal {
    Decimal::from_i128_with_scale(i128::from(units(x)), 8)
}

/// `n · 10^-scale` as an integer count of `10^-to`, rounded half to even (as
/// `Decimal::round_dp`); None when it does not fit. 64/128-bit arithmetic: the `Decimal`
/// operations it stands for cost several times more, at every fill.
fn on_scale(n: i128, scale: u32, to: u32) -> Option<i128> {
    if scale <= to {
        return 10i128
            .checked_pow(to - scale)
            .and_then(|f| n.checked_mul(f));
    }
    let f = 10i128.checked_pow(scale - to)?;
    // In 64 bits when both fit: i128's division is a library call.
    let (q, r) = match (i64::try_from(n), i64::try_from(f)) {
        (Ok(n), Ok(f)) => (i128::from(n / f), i128::from(n % f)),
        _ => (n / f, n % f),
    };
    let twice = r.abs() * 2;
    let up = twice > f || (twice == f && q % 2 != 0);
    Some(if up { q + n.signum() } else { q })
}

/// `x` as f64, through i64 when it fits (one instruction; i128's conversion is a
/// library call). Both round to nearest.
fn i128_f64(x: i128) -> f64 {
    #[cold]
    #[inline(never)]
    fn wide(x: i128) -> f64 {
        x as f64
    }
    // The library call kept out of line: inlined, the compiler made it on every call.
    i64::try_from(x).map_or_else(|_| wide(x), |v| v as f64)
}

/// `d` as the nearest f64: one division of two exact f64s (so correctly rounded) when the
/// mantissa has at most 53 bits, as every price and quantity of a fill has; else through
/// `Decimal`'s own conversion (slower, and not always the nearest).
fn dec_f64(d: Decimal) -> f64 {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let m = d.mantissa();
    match POW10.get(d.scale() as usize) {
        Some(p) if m.unsigned_abs() < 1u128 << 53 => m as i64 as f64 / p,
        _ => d.to_f64().unwrap_or(0.0),
    }
}

/// Decimals of the margin sums.
const MARGIN_SCALE: u32 = 12;

/// A margin in units of 10^-12 USDT (rounded half even), the resolution the risk rules'
/// margin sums are kept at.
fn margin_units(m: Decimal) -> i128 {
    // Out of range only beyond 10^26 USDT: then the largest Decimal mantissa stands for
    // it (sums of such stay far inside i128).
    const BEYOND: i128 = (1 << 96) - 1;
    on_scale(m.mantissa(), m.scale(), MARGIN_SCALE).unwrap_or(BEYOND * m.mantissa().signum())
}

/// The margin a position of `notional` holds (`notional / leverage`, a leverage under 1
/// counting as 1), in [`margin_units`]. Without leverage nothing is divided: the all-in
/// runs pay no division at every fill.
fn margin_of(notional: Decimal, leverage: Decimal) -> i128 {
    margin_units(if leverage <= Decimal::ONE {
        notional
    } else {
        notional / leverage
    })
}

/// An integer sum of `10^-scale` units as the `Decimal` the risk rules read (the largest
/// one beyond its range).
fn from_units(x: i128, scale: u32) -> Decimal {
    Decimal::try_from_i128_with_scale(x, scale).unwrap_or(if x < 0 {
        Decimal::MIN
    } else {
        Decimal::MAX
    })
}

/// `x` in units of 10^-8 (rounded half away from zero), 0 when not finite or beyond
/// 9·10^10. Every open position is marked this way at every bar.
#[inline]
fn units(x: f64) -> i64 {
    if x.is_nan() || x.abs() >= 9.0e10 {
        return 0;
    }
    round_half_away(x * 1e8) as i64
}

/// A market's rules as the per-fill path uses them, worked out once.
struct Rules<'a> {
    inst: &'a Instrument,
    /// The symbol, as its trades carry it.
    symbol: Arc<str>,
    /// How far a market order fills from its reference price, in ticks or basis points.
    slip: Slippage,
    slip_ticks: Decimal,
    /// The tick grid stop-loss and take-profit levels are put on (None: a tick that is
    /// not positive).
    grid: Option<TickGrid>,
}

impl<'a> Rules<'a> {
    fn new(m: &'a Market, slip: Slippage) -> Rules<'a> {
        let inst = &m.instrument;
        Rules {
            inst,
            symbol: Arc::from(m.series.symbol.as_str()),
            slip,
            slip_ticks: match slip {
                Slippage::Ticks(n) => inst.tick_size * Decimal::from(n),
                Slippage::Bps(_) => Decimal::ZERO,
            },
            grid: TickGrid::new(inst.tick_size),
        }
    }

    fn slip(&self, price: Decimal, side: Side) -> Decimal {
        let d = match self.slip {
            Slippage::Ticks(0) => return price,
            Slippage::Ticks(_) => self.slip_ticks,
            Slippage::Bps(b) => price * b / Decimal::from(10_000),
        };
        match side {
            Side::Buy => price + d,
            Side::Sell => (price - d).max(self.inst.tick_size),
        }
    }

    /// A strategy's f64 price level on the tick grid, as the worker sends it.
    fn on_tick(&self, p: f64) -> Decimal {
        self.grid
            .and_then(|g| g.level(p))
            .unwrap_or_else(|| approx(p).normalize())
    }
}

struct Engine<'a> {
    cfg: &'a BacktestConfig,
    balance: Decimal,
    /// `balance` as f64, for the equity curve.
    balance_f: f64,
    /// Whether `balance` changed since its f64 copy was taken.
    balance_moved: bool,
    realised_today: Decimal,
    /// The first millisecond of the next UTC day.
    day_end: i64,
    trades: Vec<Trade>,
    refused: std::collections::HashMap<shardbot_protocol::RefusalCode, u64>,
    // The risk rules' aggregates, kept as positions open and close.
    open_positions: u32,
    /// The sum of the open positions' and approvals' `margin`. Integers, so taking one
    /// out leaves exactly the sum of the others: a `Decimal` running total kept 28-digit
    /// rounding residues, and an all-in entry (100 % of the limit) was refused for them.
    margin_used: i128,
    /// The sum of the open positions' `unrealised`: integers, so it never drifts from
    /// the sum a book of those positions gives (an f64 running total did, and an all-in
    /// entry was refused for 10^-8 USDT of margin over 100 %).
    unrealised_total: i128,
}

impl<'a> Engine<'a> {
    fn new(cfg: &'a BacktestConfig) -> Engine<'a> {
        let balance = cfg.settings.simulated_balance;
        Engine {
            cfg,
            balance,
            balance_f: balance.to_f64().unwrap_or(0.0),
            balance_moved: false,
            realised_today: Decimal::ZERO,
            day_end: i64::MIN,
            trades: Vec::new(),
            refused: std::collections::HashMap::new(),
            open_positions: 0,
            margin_used: 0,
            unrealised_total: 0,
        }
    }

    /// Before the bars of time `t` (times only grow): a new UTC day starts today's
    /// realised PnL at zero.
    #[inline]
    fn begin(&mut self, t: i64) {
        if t >= self.day_end {
            self.day_end = next_day(t);
            self.realised_today = Decimal::ZERO;
        }
    }

    /// The equity curve's point after the bars of time `t`: the balance (its f64 copy
    /// taken again only when it moved) plus the open positions marked at their closes.
    #[inline]
    fn record(&mut self, t: i64, equity: &mut Vec<(i64, f64)>) {
        if self.balance_moved {
            self.balance_moved = false;
            self.balance_f = dec_f64(self.balance);
        }
        equity.push((t, self.balance_f + i128_f64(self.unrealised_total) * 1e-8));
    }

    /// The taker fee of a fill, rounded to 8 decimals (as the sim and Bybit do).
    fn fee(&self, qty: Decimal, price: Decimal) -> Decimal {
        let rate = self.cfg.fee_rate;
        // Exact in i128 when `Decimal` would be exact too (a product under 2^96 with at
        // most 28 decimals), then the same rounding.
        let scale = qty.scale() + price.scale() + rate.scale();
        if scale <= 28
            && let Some(p) = qty
                .mantissa()
                .checked_mul(price.mantissa())
                .and_then(|p| p.checked_mul(rate.mantissa()))
            && p.unsigned_abs() < 1u128 << 96
        {
            return if scale <= 8 {
                Decimal::from_i128_with_scale(p, scale)
            } else {
                on_scale(p, scale, 8).map_or_else(
                    || (qty * price * rate).round_dp(8),
                    |r| Decimal::from_i128_with_scale(r, 8),
                )
            };
        }
        (qty * price * rate).round_dp(8)
    }

    /// Fills an approved entry (already counted open by its approval).
    fn open(&mut self, st: &mut SymbolState, entry: Entry, px: Decimal, t: i64) {
        let Entry {
            owner,
            side,
            qty,
            stop_loss: sl,
            take_profit: tp,
            margin: approved,
        } = entry;
        let fee = self.fee(qty, px);
        self.balance -= fee;
        self.balance_moved = true;
        let margin = margin_of(qty * px, self.cfg.settings.leverage);
        self.margin_used += margin - approved;
        st.open = Some(Open {
            side,
            qty,
            entry_price: px,
            entry_time_ms: t,
            fees: fee,
            funding: Decimal::ZERO,
            margin,
            stop_loss: sl,
            take_profit: tp,
            qty_signed: if side == Side::Buy {
                dec_f64(qty)
            } else {
                -dec_f64(qty)
            },
            entry_f: dec_f64(px),
            sl_f: sl.map_or(f64::NAN, dec_f64),
            tp_f: tp.map_or(f64::NAN, dec_f64),
            unrealised: 0,
            owner,
        });
    }

    /// Takes back what an approval or a position held for the risk rules.
    fn release(&mut self, margin: i128) {
        self.open_positions -= 1;
        self.margin_used -= margin;
    }

    fn close(
        &mut self,
        rules: &Rules<'_>,
        st: &mut SymbolState,
        price: Decimal,
        t: i64,
        why: ExitReason,
    ) {
        let Some(o) = st.open.take() else {
            return;
        };
        self.release(o.margin);
        let fee = self.fee(o.qty, price);
        let gross = match o.side {
            Side::Buy => (price - o.entry_price) * o.qty,
            Side::Sell => (o.entry_price - price) * o.qty,
        };
        let fees = o.fees + fee;
        let pnl = gross - fees - o.funding;
        // The wallet paid the entry fee and the funding already.
        self.balance += gross - fee;
        self.balance_moved = true;
        self.realised_today += pnl;
        self.unrealised_total -= i128::from(o.unrealised);
        if why == ExitReason::StopLoss {
            st.stopped_at = Some(t);
        }
        self.trades.push(Trade {
            symbol: Arc::clone(&rules.symbol),
            side: o.side,
            qty: o.qty,
            entry_time_ms: o.entry_time_ms,
            exit_time_ms: t,
            entry_price: o.entry_price,
            exit_price: price,
            fees,
            funding: o.funding,
            pnl,
            exit_reason: why,
            strategy: st.strategies.get(o.owner).map_or("", |s| s.name()),
        });
    }
}

/// The open times of the first and the last bar of `markets` ((0, 0) without bars).
pub fn bar_span(markets: &[Market]) -> (i64, i64) {
    let times = || {
        markets
            .iter()
            .filter_map(|m| Some((m.series.candles.first()?, m.series.candles.last()?)))
    };
    (
        times().map(|(f, _)| f.open_time_ms).min().unwrap_or(0),
        times().map(|(_, l)| l.open_time_ms).max().unwrap_or(0),
    )
}

/// Runs `cfg` over `markets`. Bars of all symbols are processed in time order (symbols in
/// the given order within one timestamp).
pub fn run(markets: &[Market], cfg: &BacktestConfig) -> Result<BacktestResult, BacktestError> {
    let strategies = markets
        .iter()
        .map(|_| shardbot_strategy::build(&cfg.strategy, &cfg.params))
        .collect::<Result<Vec<_>, _>>()?;
    run_with(markets, cfg, strategies)
}

/// [`run`] with the strategy instances given (one per market, in order): for strategies
/// that are not built in, and for tests.
pub fn run_with(
    markets: &[Market],
    cfg: &BacktestConfig,
    strategies: Vec<Box<dyn Strategy>>,
) -> Result<BacktestResult, BacktestError> {
    run_roster(
        markets,
        cfg,
        strategies.into_iter().map(|s| vec![s]).collect(),
    )
}

/// [`run`] with several strategies on each market (`rosters[i]` on `markets[i]`, in the
/// roster's order), sharing the market's one position as the workers do: its owner's
/// signals act, the others' are dropped ([`shardbot_strategy::acting`]). Each trade names
/// its strategy.
pub fn run_roster(
    markets: &[Market],
    cfg: &BacktestConfig,
    rosters: Vec<Vec<Box<dyn Strategy>>>,
) -> Result<BacktestResult, BacktestError> {
    let total: usize = markets.iter().map(|m| m.series.candles.len()).sum();
    if total == 0 || rosters.len() != markets.len() || rosters.iter().any(Vec::is_empty) {
        return Err(BacktestError::NoData);
    }
    let mut states: Vec<SymbolState> = rosters
        .into_iter()
        .map(|strategies| SymbolState {
            signals: Vec::with_capacity(strategies.len()),
            strategies,
            open: None,
            has_pending: false,
            prev_open: None,
            pending: Pending::default(),
            last_close: 0.0,
            stopped_at: None,
        })
        .collect();
    let rules: Vec<Rules<'_>> = markets
        .iter()
        .map(|m| Rules::new(m, cfg.slippage))
        .collect();
    let mut eng = Engine::new(cfg);
    let longest = markets
        .iter()
        .map(|m| m.series.candles.len())
        .max()
        .unwrap_or(0);
    let mut equity: Vec<(i64, f64)> = Vec::with_capacity(longest + 1);
    // One market (the comparison run, every trial of a single-symbol optimization): its
    // bars in order, without looking for the next timestamp among markets.
    if let ([m], [st], [r]) = (markets, states.as_mut_slice(), rules.as_slice()) {
        for c in &m.series.candles {
            let t = c.open_time_ms;
            eng.begin(t);
            step(&mut eng, r, st, c);
            eng.record(t, &mut equity);
        }
    } else {
        run_markets(markets, &mut eng, &rules, &mut states, &mut equity);
    }
    Ok(finish(
        markets,
        cfg,
        eng,
        &rules,
        &mut states,
        equity,
        total,
    ))
}

/// [`run_with`]'s steps over several markets, in time order (markets in the given order
/// within one timestamp).
fn run_markets(
    markets: &[Market],
    eng: &mut Engine<'_>,
    rules: &[Rules<'_>],
    states: &mut [SymbolState],
    equity: &mut Vec<(i64, f64)>,
) {
    // Each market's next bar and its open time (i64::MAX once the data ends), side by
    // side for all markets: the markets under way are scanned at every step without
    // touching their candles. Each step takes the earliest next open and runs every market
    // whose next bar opens then, finding the following step's time as it goes.
    let mut next = vec![0usize; markets.len()];
    let mut next_t: Vec<i64> = markets
        .iter()
        .map(|m| {
            m.series
                .candles
                .first()
                .map_or(i64::MAX, |c| c.open_time_ms)
        })
        .collect();
    // Many markets run on staged copies of their bars (see `STAGE`): market `s`'s are
    // `staged[s * STAGE..]`, of its bars from `stage_at[s]` to `stage_end[s]`.
    let staging = markets.len() > STAGE_ABOVE_MARKETS;
    let staged_len = if staging { markets.len() * STAGE } else { 0 };
    let mut staged: Vec<Candle> = vec![
        Candle {
            open_time_ms: 0,
            open: 0.0,
            high: 0.0,
            low: 0.0,
            close: 0.0,
            volume: 0.0,
        };
        staged_len
    ];
    let mut stage_at = vec![0usize; markets.len()];
    let mut stage_end = vec![0usize; markets.len()];
    // The markets due at a step, in the given order, with where their bar's copy is.
    let mut due: Vec<(usize, usize)> = Vec::with_capacity(markets.len());
    // Markets whose data has not started yet, the earliest last: they join `active` (in
    // its order) at their first bar, so a step scans only the markets under way.
    let mut waiting: Vec<usize> = (0..markets.len())
        .filter(|&s| next_t[s] != i64::MAX)
        .collect();
    waiting.sort_by_key(|&s| std::cmp::Reverse((next_t[s], s)));
    let mut active: Vec<usize> = Vec::with_capacity(markets.len());
    // The earliest next open among the markets under way.
    let mut soonest = i64::MAX;
    while !active.is_empty() || !waiting.is_empty() {
        let mut t = soonest;
        while let Some(&w) = waiting.last()
            && next_t[w] <= t
        {
            t = next_t[w];
            waiting.pop();
            let at = active.partition_point(|&s| s < w);
            active.insert(at, w);
        }
        eng.begin(t);
        let mut ended = false;
        soonest = i64::MAX;
        if staging {
            // First the markets due at `t` are found (their bars staged when the copies
            // run out, the open times of the bars after them read), then they run.
            due.clear();
            for &s in &active {
                if next_t[s] == t {
                    // The market's own data is read only when its copies run out.
                    let i = next[s];
                    if i >= stage_end[s] {
                        let candles = &markets[s].series.candles;
                        let run = &candles[i..candles.len().min(i + STAGE)];
                        staged[s * STAGE..s * STAGE + run.len()].copy_from_slice(run);
                        stage_at[s] = i;
                        stage_end[s] = i + run.len();
                    }
                    let at = s * STAGE + (i - stage_at[s]);
                    next[s] = i + 1;
                    next_t[s] = if i + 1 < stage_end[s] {
                        staged[at + 1].open_time_ms
                    } else if let Some(c) = markets[s].series.candles.get(i + 1) {
                        c.open_time_ms
                    } else {
                        ended = true;
                        i64::MAX
                    };
                    due.push((s, at));
                }
                soonest = soonest.min(next_t[s]);
            }
            for &(s, at) in &due {
                step(eng, &rules[s], &mut states[s], &staged[at]);
            }
        } else {
            for &s in &active {
                if next_t[s] == t {
                    let candles = &markets[s].series.candles;
                    let i = next[s];
                    step(eng, &rules[s], &mut states[s], &candles[i]);
                    next[s] = i + 1;
                    next_t[s] = candles.get(i + 1).map_or(i64::MAX, |c| c.open_time_ms);
                    ended |= i + 1 == candles.len();
                }
                soonest = soonest.min(next_t[s]);
            }
        }
        if ended {
            active.retain(|&s| next[s] < markets[s].series.candles.len());
        }
        eng.record(t, equity);
    }
}

/// How many bars of a market a run over many markets copies at a time. The markets then
/// run on copies of their next bars, all in one block: with hundreds of markets in one
/// account, reading one bar of each in turn from its own part of memory left the
/// strategies waiting for it (a third of the time, and every bar another page), where a
/// run of `STAGE` bars is one short sequential read. 32 measured best over the 329 daily
/// files (8, 16 and 64 slower).
const STAGE: usize = 32;

/// From how many markets on a run stages their bars ([`STAGE`]). With few markets the
/// processor follows each one's bars by itself and the copying only costs: one account
/// over the first 80 daily files ran faster reading bars in place (21 against 19 million
/// bar-steps/s, mean_reversion), and so did the eight 5-minute files (33 against 28);
/// from 96 files on staging was ahead (20 against 15-20), and far ahead at 329 (19-21
/// against 13-16). The crossing lies between and depends on the machine's caches.
const STAGE_ABOVE_MARKETS: usize = 88;

/// The first millisecond of the UTC day after the one `t` is in.
fn next_day(t: i64) -> i64 {
    (t.div_euclid(86_400_000) + 1).saturating_mul(86_400_000)
}

/// Closes what is still open at its last close and sums the run up.
fn finish(
    markets: &[Market],
    cfg: &BacktestConfig,
    mut eng: Engine<'_>,
    rules: &[Rules<'_>],
    states: &mut [SymbolState],
    mut equity: Vec<(i64, f64)>,
    total: usize,
) -> BacktestResult {
    let (first, _) = bar_span(markets);
    // Whatever is open at the end closes at its last close.
    let end = equity.last().map_or(0, |x| x.0);
    for (s, st) in states.iter_mut().enumerate() {
        if st.open.is_some() {
            let m = &markets[s];
            let side = st.open.as_ref().map_or(Side::Buy, |o| o.side.opposite());
            let last = m.series.candles.last().map_or(0, |c| c.open_time_ms);
            let px = rules[s].slip(dec(st.last_close), side);
            eng.close(&rules[s], st, px, last, ExitReason::EndOfData);
        }
    }
    if let Some(last) = equity.last_mut() {
        *last = (end, eng.balance.to_f64().unwrap_or(last.1));
    }
    let summary = summarise(markets, cfg, &eng, &equity, total as u64, (first, end));
    BacktestResult {
        trades: eng.trades,
        equity,
        summary,
    }
}

/// One bar of one market: funding due, the fills decided on the previous bar, the
/// exchange-side stops inside this bar, the strategy on its close, marking to market.
#[inline]
fn step(eng: &mut Engine<'_>, rules: &Rules<'_>, st: &mut SymbolState, c: &Candle) {
    let cfg = eng.cfg;
    let t = c.open_time_ms;
    let prev_open = st.prev_open.replace(t);
    // 1. Funding settlements since the previous bar, up to and including this open: a
    //    position held into a settlement pays it, one opened at it does not.
    if let (Some(rate), Some(o)) = (cfg.funding_rate, st.open.as_mut())
        && let Some(prev) = prev_open
    {
        let every = cfg.funding_interval_ms.max(1);
        let mut f = prev.div_euclid(every) * every + every;
        while f <= t {
            let value = o.qty * dec(c.open);
            let pay = (value * rate).round_dp(8)
                * if o.side == Side::Buy {
                    Decimal::ONE
                } else {
                    -Decimal::ONE
                };
            o.funding += pay;
            eng.balance -= pay;
            eng.balance_moved = true;
            eng.realised_today -= pay;
            f += every;
        }
    }
    // 2. Orders decided on the previous bar fill at this open.
    if st.has_pending {
        st.has_pending = false;
        let pending = std::mem::take(&mut st.pending);
        let open_px = dec(c.open);
        if pending.exit
            && let Some(side) = st.open.as_ref().map(|o| o.side.opposite())
        {
            let px = rules.slip(open_px, side);
            eng.close(rules, st, px, t, ExitReason::Signal);
        }
        if let Some(r) = pending.reverse
            && st.open.is_none()
        {
            // Judged now, on the balance the exit's fill left.
            if let Some(entry) = decide_entry(eng, rules, st, &r) {
                let px = rules.slip(open_px, entry.side);
                eng.open(st, entry, px, t);
            }
        }
        if let Some(entry) = pending.enter {
            if st.open.is_none() {
                let px = rules.slip(open_px, entry.side);
                eng.open(st, entry, px, t);
            } else {
                eng.release(entry.margin);
            }
        }
    }
    // 3. Exchange-side stop-loss / take-profit inside this bar.
    if let Some(o) = &st.open {
        let long = o.side == Side::Buy;
        // NaN (no level) is never hit.
        let (sl_hit, tp_hit) = if long {
            (c.low <= o.sl_f, c.high >= o.tp_f)
        } else {
            (c.high >= o.sl_f, c.low <= o.tp_f)
        };
        if sl_hit || tp_hit {
            stop_or_take(eng, rules, st, c, t, sl_hit, tp_hit);
        }
    }
    // 4. The strategies on the close, the position's owner told the position actually
    //    held, the others flat; the owner's signals act, or on a flat market the first
    //    strategy's that enters (one position, one owner).
    let held = match &st.open {
        None => Position::Flat,
        Some(o) if o.side == Side::Buy => Position::Long,
        Some(_) => Position::Short,
    };
    let mut owner = 0;
    let signals = if let [only] = st.strategies.as_mut_slice() {
        // One strategy owns whatever is held: the path of every single-strategy run, with
        // no arbitration to pay for (its signals while flat without an entry change
        // nothing below).
        only.on_bar(c, held)
    } else {
        let holder = st
            .open
            .as_ref()
            .map_or(Holder::Flat, |o| Holder::Strategy(o.owner));
        let mut all = std::mem::take(&mut st.signals);
        all.clear();
        for (i, s) in st.strategies.iter_mut().enumerate() {
            all.push(s.on_bar(c, holder.told(i, held)));
        }
        let acts = acting(holder, &all);
        owner = acts.unwrap_or(0);
        let signals = acts
            .map(|k| std::mem::take(&mut all[k]))
            .unwrap_or_default();
        st.signals = all;
        signals
    };
    if !signals.is_empty() && cfg.trade_from_ms.is_none_or(|from| t >= from) {
        // Exits first: a reversal's entry is judged once its exit has filled.
        let exiting = signals.iter().any(|x| matches!(x, Signal::Exit)) && st.open.is_some();
        if exiting {
            st.pending.exit = true;
            st.has_pending = true;
        }
        if let Some(&Signal::Enter {
            direction,
            stop_loss,
            take_profit,
        }) = signals.iter().find(|x| matches!(x, Signal::Enter { .. }))
        {
            let signal = EntrySignal {
                owner,
                side: match direction {
                    Direction::Long => Side::Buy,
                    Direction::Short => Side::Sell,
                },
                stop_loss,
                take_profit,
                close: c.close,
                signal_ms: t,
            };
            if exiting {
                st.pending.reverse = Some(signal);
            } else if let Some(entry) = decide_entry(eng, rules, st, &signal) {
                st.has_pending = true;
                st.pending.enter = Some(entry);
            }
        }
    }
    // 5. Mark to market.
    st.last_close = c.close;
    if let Some(o) = st.open.as_mut() {
        let u = units((c.close - o.entry_f) * o.qty_signed);
        eng.unrealised_total += i128::from(u) - i128::from(o.unrealised);
        o.unrealised = u;
    }
}

/// A bar reached the open position's stop-loss or take-profit (or both): it closes at the
/// level, or at the open when the bar opened beyond it.
#[cold]
#[inline(never)]
fn stop_or_take(
    eng: &mut Engine<'_>,
    rules: &Rules<'_>,
    st: &mut SymbolState,
    c: &Candle,
    t: i64,
    sl_hit: bool,
    tp_hit: bool,
) {
    let cfg = eng.cfg;
    if let Some(o) = &st.open {
        let long = o.side == Side::Buy;
        let stop_wins = sl_hit
            && (!tp_hit
                || match cfg.intrabar {
                    Intrabar::StopFirst => true,
                    // Rising bar: the low comes first; falling: the high.
                    Intrabar::Path => (c.close >= c.open) == long,
                });
        let which = if stop_wins {
            Some((ExitReason::StopLoss, o.stop_loss, o.sl_f))
        } else if tp_hit {
            Some((ExitReason::TakeProfit, o.take_profit, o.tp_f))
        } else {
            None
        };
        if let Some((why, Some(level), level_f)) = which {
            // A bar that opens beyond the level fills at the open.
            let beyond = match (why, long) {
                (ExitReason::StopLoss, true) | (ExitReason::TakeProfit, false) => c.open <= level_f,
                _ => c.open >= level_f,
            };
            let basis = if beyond { dec(c.open) } else { level };
            let px = rules.slip(basis, o.side.opposite());
            eng.close(rules, st, px, t, why);
        }
    }
}

/// Judges an entry signal by the risk manager's rules ([`judge`], on the engine's
/// aggregates) and sizes it, as the risk manager judges the worker's intent: at the
/// signal bar's close as the reference price, from the simulated balance after every fill
/// before it. An entry from flat is judged at once and fills at the next open; a
/// reversal's entry is judged at that open after its exit filled (the live risk manager
/// holds it until the exit's fill is booked). The approval is booked (counted open, its
/// margin held) until it fills.
fn decide_entry(
    eng: &mut Engine<'_>,
    rules: &Rules<'_>,
    st: &SymbolState,
    signal: &EntrySignal,
) -> Option<Entry> {
    let close = dec(signal.close);
    let held = st.open.as_ref().map(|o| Held {
        side: o.side,
        size: o.qty,
        leverage: eng.cfg.settings.leverage,
    });
    let exposure = Exposure {
        held,
        open_positions: eng.open_positions,
        unrealised: from_units(eng.unrealised_total, 8),
        margin_used: from_units(eng.margin_used, MARGIN_SCALE),
        simulated_balance: eng.balance,
        realised_today: eng.realised_today,
        mode: TradingMode::Normal,
        stopped_out_at: st.stopped_at,
    };
    let verdict = judge(
        &eng.cfg.settings,
        &exposure,
        &rules.symbol,
        IntentAction::Enter { side: signal.side },
        close,
        signal.signal_ms,
    );
    let code = match verdict {
        Verdict::Approved { qty, leverage, .. } => match round_qty(qty, close, rules.inst) {
            Ok(q) => {
                // Booked as the risk manager books an approval, until it fills.
                let margin = margin_of(qty * close, leverage);
                eng.open_positions += 1;
                eng.margin_used += margin;
                return Some(Entry {
                    owner: signal.owner,
                    side: signal.side,
                    qty: q,
                    stop_loss: signal
                        .stop_loss
                        .filter(|p| *p > 0.0)
                        .map(|p| rules.on_tick(p)),
                    take_profit: signal
                        .take_profit
                        .filter(|p| *p > 0.0)
                        .map(|p| rules.on_tick(p)),
                    margin,
                });
            }
            Err(r) => r.code,
        },
        Verdict::Refused(refusal) => refusal.code,
    };
    *eng.refused.entry(code).or_default() += 1;
    None
}

fn summarise(
    markets: &[Market],
    cfg: &BacktestConfig,
    eng: &Engine<'_>,
    equity: &[(i64, f64)],
    bars: u64,
    (first_bar_ms, last_bar_ms): (i64, i64),
) -> Summary {
    let results: Vec<TradeResult> = eng
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
    let start = cfg.settings.simulated_balance;
    let curve = || {
        std::iter::once((first_bar_ms, start.to_f64().unwrap_or(0.0))).chain(equity.iter().copied())
    };
    let (dd, dd_pct) = max_drawdown_f64(curve());
    let r = daily_returns_f64(curve());
    Summary {
        strategy: cfg.strategy.clone(),
        symbols: markets.len(),
        bars,
        first_bar_ms,
        last_bar_ms,
        starting_balance: start,
        final_balance: eng.balance,
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
        refused: eng
            .refused
            .iter()
            .map(|(k, v)| (format!("{k:?}"), *v))
            .collect(),
    }
}

#[cfg(test)]
mod tests;

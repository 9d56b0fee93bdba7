//! The backtester: the SAME strategies the workers run ([`shardbot_strategy::Strategy`],
//! the same parameter types) and the SAME risk rules the risk manager applies
//! ([`shardbot_risk::decide`], [`shardbot_risk::round_qty`]), over the closed bars of any
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
//! moment of the signal against the simulated balance (start + realised PnL). A plain
//! "all-in stop-and-reverse, no leverage" run is `sizing: percent 100, leverage 1,
//! max_margin_use_pct 100, max_open_positions 1` ([`BacktestConfig::all_in`]).
//!
//! Money is `Decimal` at every fill; the per-bar path (strategy, SL/TP checks, marking to
//! market) is `f64`, which is what makes tens of millions of bar-steps per second.

pub mod data;

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::Serialize;
use shardbot_analytics::{
    TradeResult, daily_returns_f64, max_drawdown_f64, sharpe, sortino, stats,
};
use shardbot_protocol::{
    Instrument, IntentAction, Interval, OrderIntent, RiskDecision, Side, Symbol,
};
use shardbot_risk::{Book, TradingSettings, decide, round_qty};
use shardbot_strategy::{Candle, Direction, Params, Position, Signal, Strategy};

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
            },
            fee_rate: Decimal::new(55, 5),
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
    pub symbol: String,
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

struct Open {
    side: Side,
    qty: Decimal,
    entry_price: Decimal,
    entry_time_ms: i64,
    fees: Decimal,
    funding: Decimal,
    stop_loss: Option<Decimal>,
    take_profit: Option<Decimal>,
    // f64 copies for the per-bar path.
    qty_f: f64,
    entry_f: f64,
    sl_f: Option<f64>,
    tp_f: Option<f64>,
    unrealised_f: f64,
}

#[derive(Default)]
struct Pending {
    exit: bool,
    enter: Option<(Side, Decimal, Option<Decimal>, Option<Decimal>)>,
}

struct SymbolState {
    index: usize,
    strategy: Box<dyn Strategy>,
    /// The intent the risk rules judge, its id derived once (it names nothing here).
    intent: OrderIntent,
    open: Option<Open>,
    pending: Pending,
    last_close: f64,
    stopped_at: Option<i64>,
}

/// `x` as the decimal it was written as: exact for prices with up to 8 decimals (every
/// kline file's), through f64's shortest round-trip text otherwise. ~10 ns on the fast
/// path against ~300 ns for text, which matters at every fill of a long backtest.
fn dec(x: f64) -> Decimal {
    let scaled = (x * 1e8).round();
    if scaled.abs() < 9.0e15 && scaled / 1e8 == x {
        return Decimal::from_i128_with_scale(scaled as i128, 8).normalize();
    }
    Decimal::from_str(&format!("{x}"))
        .or_else(|_| Decimal::from_scientific(&format!("{x:e}")))
        .unwrap_or_default()
}

/// An amount for the risk rules' judgement (unrealised PnL): 8 decimals are plenty.
fn approx(x: f64) -> Decimal {
    if x.is_finite() && x.abs() < 9.0e10 {
        Decimal::from_i128_with_scale((x * 1e8).round() as i128, 8)
    } else {
        Decimal::ZERO
    }
}

/// A strategy's f64 price level on the tick grid, as the worker sends it.
fn on_tick_f(p: f64, tick: Decimal) -> Decimal {
    shardbot_protocol::price_on_tick(p, tick).unwrap_or_else(|| approx(p).normalize())
}

struct Engine<'a> {
    cfg: &'a BacktestConfig,
    /// The risk rules' view, kept as positions open and close.
    book: Book,
    /// Markets with an open position.
    open_list: Vec<usize>,
    balance: Decimal,
    realised_today: Decimal,
    day: i64,
    trades: Vec<Trade>,
    refused: std::collections::HashMap<shardbot_protocol::RefusalCode, u64>,
    unrealised_total: f64,
}

impl Engine<'_> {
    fn slip(&self, price: Decimal, side: Side, inst: &Instrument) -> Decimal {
        let d = match self.cfg.slippage {
            Slippage::Ticks(n) => inst.tick_size * Decimal::from(n),
            Slippage::Bps(b) => price * b / Decimal::from(10_000),
        };
        match side {
            Side::Buy => price + d,
            Side::Sell => (price - d).max(inst.tick_size),
        }
    }

    fn fee(&self, qty: Decimal, price: Decimal) -> Decimal {
        (qty * price * self.cfg.fee_rate).round_dp(8)
    }

    fn close(&mut self, m: &Market, st: &mut SymbolState, price: Decimal, t: i64, why: ExitReason) {
        let Some(o) = st.open.take() else {
            return;
        };
        self.book.positions.remove(&m.instrument.symbol);
        self.open_list.retain(|&j| j != st.index);
        let sym = m.series.symbol.as_str();
        let fee = self.fee(o.qty, price);
        let gross = match o.side {
            Side::Buy => (price - o.entry_price) * o.qty,
            Side::Sell => (o.entry_price - price) * o.qty,
        };
        let fees = o.fees + fee;
        let pnl = gross - fees - o.funding;
        // The wallet paid the entry fee and the funding already.
        self.balance += gross - fee;
        self.realised_today += pnl;
        self.unrealised_total -= o.unrealised_f;
        if why == ExitReason::StopLoss {
            st.stopped_at = Some(t);
        }
        self.trades.push(Trade {
            symbol: sym.to_owned(),
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
        });
    }
}

/// Every bar of every market as `(open time, market, bar)`, by time then market. Series
/// on one common clock (the usual case) interleave directly; others are merged by a sort.
fn timeline(markets: &[Market], total: usize) -> Vec<(i64, u32, u32)> {
    let mut out: Vec<(i64, u32, u32)> = Vec::with_capacity(total);
    let first = &markets[0].series.candles;
    let aligned = markets.iter().all(|m| {
        m.series.candles.len() == first.len()
            && m.series
                .candles
                .iter()
                .zip(first)
                .all(|(a, b)| a.open_time_ms == b.open_time_ms)
    });
    if aligned {
        for (i, c) in first.iter().enumerate() {
            for s in 0..markets.len() {
                out.push((c.open_time_ms, s as u32, i as u32));
            }
        }
        return out;
    }
    for (s, m) in markets.iter().enumerate() {
        for (i, c) in m.series.candles.iter().enumerate() {
            out.push((c.open_time_ms, s as u32, i as u32));
        }
    }
    // Stable sort: it finds the per-market runs already in order and merges them.
    out.sort();
    out
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
    let total: usize = markets.iter().map(|m| m.series.candles.len()).sum();
    if total == 0 || strategies.len() != markets.len() {
        return Err(BacktestError::NoData);
    }
    let mut states: Vec<SymbolState> = strategies
        .into_iter()
        .zip(markets)
        .enumerate()
        .map(|(index, (strategy, m))| SymbolState {
            index,
            strategy,
            intent: OrderIntent::new(
                &cfg.strategy,
                m.instrument.symbol.clone(),
                Interval::M1,
                0,
                IntentAction::Exit,
                Decimal::ZERO,
                None,
                None,
                0,
            ),
            open: None,
            pending: Pending::default(),
            last_close: 0.0,
            stopped_at: None,
        })
        .collect();
    let timeline = timeline(markets, total);
    let mut eng = Engine {
        cfg,
        book: Book::default(),
        open_list: Vec::new(),
        balance: cfg.settings.simulated_balance,
        realised_today: Decimal::ZERO,
        day: i64::MIN,
        trades: Vec::new(),
        refused: std::collections::HashMap::new(),
        unrealised_total: 0.0,
    };
    let mut balance_f = eng.balance.to_f64().unwrap_or(0.0);
    let mut balance_seen = eng.balance;
    let mut equity: Vec<(i64, f64)> = Vec::with_capacity(total / markets.len().max(1) + 1);
    for k in 0..timeline.len() {
        let (t, s, i) = timeline[k];
        let (s, i) = (s as usize, i as usize);
        let m = &markets[s];
        let c = &m.series.candles[i];
        let st = &mut states[s];
        let day = t.div_euclid(86_400_000);
        if day != eng.day {
            eng.day = day;
            eng.realised_today = Decimal::ZERO;
        }
        // 1. Funding settlements since the previous bar, up to and including this open: a
        //    position held into a settlement pays it, one opened at it does not.
        if let (Some(rate), Some(o)) = (cfg.funding_rate, st.open.as_mut())
            && i > 0
        {
            let prev = m.series.candles[i - 1].open_time_ms;
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
                eng.realised_today -= pay;
                f += every;
            }
        }
        // 2. Orders decided on the previous bar fill at this open.
        if st.pending.exit || st.pending.enter.is_some() {
            let pending = std::mem::take(&mut st.pending);
            let open_px = dec(c.open);
            if pending.exit
                && let Some(side) = st.open.as_ref().map(|o| o.side.opposite())
            {
                let px = eng.slip(open_px, side, &m.instrument);
                eng.close(m, st, px, t, ExitReason::Signal);
            }
            if let Some((side, qty, sl, tp)) = pending.enter
                && st.open.is_none()
            {
                let px = eng.slip(open_px, side, &m.instrument);
                let fee = eng.fee(qty, px);
                eng.balance -= fee;
                eng.open_list.push(s);
                eng.book.positions.insert(
                    m.instrument.symbol.clone(),
                    shardbot_protocol::Position {
                        symbol: m.instrument.symbol.clone(),
                        side,
                        size: qty,
                        avg_price: px,
                        mark_price: None,
                        leverage: cfg.settings.leverage,
                        unrealised_pnl: Decimal::ZERO,
                        stop_loss: None,
                        take_profit: None,
                        updated_ms: t,
                    },
                );
                st.open = Some(Open {
                    side,
                    qty,
                    entry_price: px,
                    entry_time_ms: t,
                    fees: fee,
                    funding: Decimal::ZERO,
                    stop_loss: sl,
                    take_profit: tp,
                    qty_f: qty.to_f64().unwrap_or(0.0),
                    entry_f: px.to_f64().unwrap_or(0.0),
                    sl_f: sl.and_then(|x| x.to_f64()),
                    tp_f: tp.and_then(|x| x.to_f64()),
                    unrealised_f: 0.0,
                });
            }
        }
        // 3. Exchange-side stop-loss / take-profit inside this bar.
        if let Some(o) = &st.open
            && (o.sl_f.is_some() || o.tp_f.is_some())
        {
            let long = o.side == Side::Buy;
            let sl_hit = o
                .sl_f
                .is_some_and(|sl| if long { c.low <= sl } else { c.high >= sl });
            let tp_hit = o
                .tp_f
                .is_some_and(|tp| if long { c.high >= tp } else { c.low <= tp });
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
            if let Some((why, Some(level), Some(level_f))) = which {
                // A bar that opens beyond the level fills at the open.
                let beyond = match (why, long) {
                    (ExitReason::StopLoss, true) | (ExitReason::TakeProfit, false) => {
                        c.open <= level_f
                    }
                    _ => c.open >= level_f,
                };
                let basis = if beyond { dec(c.open) } else { level };
                let px = eng.slip(basis, o.side.opposite(), &m.instrument);
                eng.close(m, st, px, t, why);
            }
        }
        // 4. The strategy on the close, told the position actually held.
        let held = match &st.open {
            None => Position::Flat,
            Some(o) if o.side == Side::Buy => Position::Long,
            Some(_) => Position::Short,
        };
        let signals = st.strategy.on_bar(c, held);
        let warming = cfg.trade_from_ms.is_some_and(|from| t < from);
        if !signals.is_empty() && !warming {
            // Exits first: a reversal's entry is judged with the exit done.
            if signals.iter().any(|x| matches!(x, Signal::Exit)) && st.open.is_some() {
                st.pending.exit = true;
            }
            if let Some(enter) = signals.iter().find(|x| matches!(x, Signal::Enter { .. })) {
                refresh_book(&mut eng, markets, &states);
                let st = &mut states[s];
                decide_entry(&mut eng, m, st, c, enter);
            }
        }
        let st = &mut states[s];
        // 5. Mark to market.
        st.last_close = c.close;
        if let Some(o) = st.open.as_mut() {
            let u = if o.side == Side::Buy {
                (c.close - o.entry_f) * o.qty_f
            } else {
                (o.entry_f - c.close) * o.qty_f
            };
            eng.unrealised_total += u - o.unrealised_f;
            o.unrealised_f = u;
        }
        if eng.balance != balance_seen {
            balance_seen = eng.balance;
            balance_f = eng.balance.to_f64().unwrap_or(balance_f);
        }
        let last_of_time = timeline.get(k + 1).is_none_or(|n| n.0 != t);
        if last_of_time {
            equity.push((t, balance_f + eng.unrealised_total));
        }
    }
    // Whatever is open at the end closes at its last close.
    let end = timeline.last().map_or(0, |x| x.0);
    for (s, st) in states.iter_mut().enumerate() {
        if st.open.is_some() {
            let m = &markets[s];
            let side = st.open.as_ref().map_or(Side::Buy, |o| o.side.opposite());
            let last = m.series.candles.last().map_or(0, |c| c.open_time_ms);
            let px = eng.slip(dec(st.last_close), side, &m.instrument);
            eng.close(m, st, px, last, ExitReason::EndOfData);
        }
    }
    if let Some(last) = equity.last_mut() {
        *last = (end, eng.balance.to_f64().unwrap_or(last.1));
    }
    let summary = summarise(markets, cfg, &eng, &equity, total as u64, &timeline);
    Ok(BacktestResult {
        trades: eng.trades,
        equity,
        summary,
    })
}

/// Brings the risk rules' book up to date before a judgement: balance, today's realised
/// PnL, and each open position's unrealised PnL at its last close.
fn refresh_book(eng: &mut Engine<'_>, markets: &[Market], states: &[SymbolState]) {
    eng.book.simulated_balance = eng.balance;
    eng.book.realised_today = eng.realised_today;
    for &j in &eng.open_list {
        if let (Some(o), Some(p)) = (
            &states[j].open,
            eng.book.positions.get_mut(&markets[j].instrument.symbol),
        ) {
            p.unrealised_pnl = approx(o.unrealised_f);
        }
    }
}

/// Judges an entry signal by the risk manager's rules and sizes it; an approved entry
/// fills at the next open.
fn decide_entry(
    eng: &mut Engine<'_>,
    m: &Market,
    st: &mut SymbolState,
    c: &Candle,
    signal: &Signal,
) {
    let Signal::Enter {
        direction,
        stop_loss,
        take_profit,
    } = *signal
    else {
        return;
    };
    let side = match direction {
        Direction::Long => Side::Buy,
        Direction::Short => Side::Sell,
    };
    let close = dec(c.close);
    st.intent.bar_open_time_ms = c.open_time_ms;
    st.intent.action = IntentAction::Enter { side };
    st.intent.reference_price = close;
    if let Some(at) = st.stopped_at {
        eng.book
            .stopped_out_at
            .insert(m.instrument.symbol.clone(), at);
    }
    // A reversal's exit is done by the time its entry fills: judged without it.
    let exiting = if st.pending.exit {
        eng.book.positions.remove(&m.instrument.symbol)
    } else {
        None
    };
    // Judged at the bar's close, as the risk manager judges the worker's intent.
    let decision = decide(&eng.cfg.settings, &eng.book, &st.intent, c.open_time_ms);
    if let Some(p) = exiting {
        eng.book.positions.insert(m.instrument.symbol.clone(), p);
    }
    let code = match decision {
        RiskDecision::Approved { qty, .. } => match round_qty(qty, close, &m.instrument) {
            Ok(q) => {
                let tick = m.instrument.tick_size;
                st.pending.enter = Some((
                    side,
                    q,
                    stop_loss.filter(|p| *p > 0.0).map(|p| on_tick_f(p, tick)),
                    take_profit.filter(|p| *p > 0.0).map(|p| on_tick_f(p, tick)),
                ));
                return;
            }
            Err(r) => r.code,
        },
        RiskDecision::Refused { refusal, .. } => refusal.code,
    };
    *eng.refused.entry(code).or_default() += 1;
}

fn summarise(
    markets: &[Market],
    cfg: &BacktestConfig,
    eng: &Engine<'_>,
    equity: &[(i64, f64)],
    bars: u64,
    timeline: &[(i64, u32, u32)],
) -> Summary {
    let results: Vec<TradeResult> = eng
        .trades
        .iter()
        .map(|t| TradeResult {
            symbol: t.symbol.clone(),
            strategy: cfg.strategy.clone(),
            entry_time_ms: t.entry_time_ms,
            exit_time_ms: t.exit_time_ms,
            net: t.pnl,
            fees: t.fees,
            verified: false,
        })
        .collect();
    let s = stats(&results);
    let start = cfg.settings.simulated_balance;
    let curve: Vec<(i64, f64)> = std::iter::once((
        timeline.first().map_or(0, |x| x.0),
        start.to_f64().unwrap_or(0.0),
    ))
    .chain(equity.iter().copied())
    .collect();
    let (dd, dd_pct) = max_drawdown_f64(&curve);
    let r = daily_returns_f64(&curve);
    Summary {
        strategy: cfg.strategy.clone(),
        symbols: markets.len(),
        bars,
        first_bar_ms: timeline.first().map_or(0, |x| x.0),
        last_bar_ms: timeline.last().map_or(0, |x| x.0),
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

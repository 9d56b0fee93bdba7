//! The worker's logic without its I/O: bars in, intents (and history requests) out.
//!
//! Each owned symbol has a [`BarSequencer`] (so bars reach the strategies once, in order,
//! with holes refilled from the gateway's history) and one instance of every enabled
//! strategy. Intents are derived from (strategy, symbol, interval, bar, action), so the
//! same bar always yields the same intent id, whichever worker process computes it.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use rust_decimal::{Decimal, prelude::FromPrimitive, prelude::ToPrimitive};
use shardbot_protocol::{
    Bar, BarSequencer, CloseProgress, Filled, Instrument, IntentAction, Interval, Offer,
    OrderIntent, PositionSnapshot, Shard, Side, Symbol, TimestampMs, now_ms,
};
use shardbot_strategy::{Candle, Direction, Holder, Holding, Roster, Signal, Strategy, acting};

/// What the worker has to do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Send these intents to the router.
    Intents(Vec<OrderIntent>),
    /// Ask the gateway for this symbol's closed bars from `from_ms` (`None`: the last
    /// `history_bars`), then call [`Engine::on_history`].
    Fetch {
        symbol: Symbol,
        from_ms: Option<TimestampMs>,
    },
}

struct SymbolState {
    seq: BarSequencer,
    strategies: Vec<Box<dyn Strategy>>,
    warm: bool,
    /// When [`Engine::sweep`] last fetched this symbol.
    swept_at: Option<Instant>,
    /// Fetches repeated because a reply left a hole.
    refetches: u32,
}

/// Fetches of a hole before the worker accepts that the gateway has no such bars.
const HOLE_REFETCHES: u32 = 5;

/// The least time between two sweep refills of one symbol.
pub const SWEEP_BACKOFF: Duration = Duration::from_secs(5);

impl std::fmt::Debug for SymbolState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymbolState")
            .field("last", &self.seq.last())
            .field("warm", &self.warm)
            .finish()
    }
}

/// Counters for the worker's periodic log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineStats {
    pub bars: u64,
    pub intents: u64,
    pub refills: u64,
    pub skipped_bars: u64,
}

#[derive(Debug)]
pub struct Engine {
    shard: Shard,
    interval: Interval,
    roster: Roster,
    /// Bars of a refill older than the newest by more than this many intervals only
    /// update indicator state; newer ones may still trade.
    late_bars: i64,
    symbols: HashMap<Symbol, SymbolState>,
    instruments: HashMap<Symbol, Instrument>,
    /// The risk manager's positions with their owners (the strategy that opened each).
    positions: HashMap<Symbol, (Holding, Option<String>)>,
    /// Each strategy's signals at a bar (kept to reuse its allocation).
    signals: Vec<shardbot_strategy::Signals>,
    stats: EngineStats,
    /// Fetches to repeat (a reply that left a hole), taken by [`Engine::take_refetches`].
    refetch: Vec<Step>,
    /// The newest bar close's progress through the shard's symbols.
    close: Option<CloseState>,
}

/// How far the shard is through the newest bar close (reported as [`CloseProgress`]).
#[derive(Debug, Default)]
struct CloseState {
    open_ms: TimestampMs,
    /// Symbols whose bar of this close arrived (traded, held for a refill, or repeated).
    decided: HashSet<Symbol>,
    /// Symbols an entry was sent for at this close.
    entries: HashSet<Symbol>,
    /// Reports due: at the close's first bar, and when every owned symbol has had it.
    reported_first: bool,
    reported_all: bool,
}

impl Engine {
    pub fn new(shard: Shard, interval: Interval, roster: Roster, late_bars: u32) -> Engine {
        Engine {
            shard,
            interval,
            roster,
            late_bars: i64::from(late_bars),
            symbols: HashMap::new(),
            instruments: HashMap::new(),
            positions: HashMap::new(),
            signals: Vec::new(),
            stats: EngineStats::default(),
            refetch: Vec::new(),
            close: None,
        }
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// Owned symbols, and how many of them are not warm yet.
    pub fn symbols(&self) -> (usize, usize) {
        let cold = self.symbols.values().filter(|s| !s.warm).count();
        (self.symbols.len(), cold)
    }

    fn step(&self) -> i64 {
        self.interval.duration_ms().unwrap_or(1)
    }

    /// Takes the gateway's universe: starts owning the new symbols of this shard (each
    /// needs a history fetch) and drops the delisted ones.
    pub fn set_universe(&mut self, instruments: Vec<Instrument>) -> Vec<Step> {
        let owned: HashMap<Symbol, Instrument> = instruments
            .into_iter()
            .filter(|i| self.shard.owns_symbol(i.symbol.as_str()))
            .map(|i| (i.symbol.clone(), i))
            .collect();
        let gone: Vec<Symbol> = self
            .symbols
            .keys()
            .filter(|s| !owned.contains_key(*s))
            .cloned()
            .collect();
        for s in gone {
            tracing::info!(symbol = %s, "delisted: dropping its strategies");
            self.symbols.remove(&s);
            if let Some(c) = self.close.as_mut() {
                c.decided.remove(&s);
            }
        }
        let new: Vec<Symbol> = owned
            .keys()
            .filter(|s| !self.symbols.contains_key(*s))
            .cloned()
            .collect();
        self.instruments = owned;
        new.into_iter().filter_map(|s| self.adopt(s)).collect()
    }

    /// Starts following a symbol: fresh strategies, and a history fetch to warm them.
    fn adopt(&mut self, symbol: Symbol) -> Option<Step> {
        let strategies = match self.roster.instantiate(symbol.as_str()) {
            Ok(v) => v.into_iter().map(|(s, _)| s).collect(),
            Err(e) => {
                tracing::error!(symbol = %symbol, error = %e, "cannot build the strategies for this symbol; not trading it");
                return None;
            }
        };
        let mut seq = BarSequencer::new(self.step());
        let from_ms = seq.begin_fill().ok().flatten();
        self.symbols.insert(
            symbol.clone(),
            SymbolState {
                seq,
                strategies,
                warm: false,
                swept_at: None,
                refetches: 0,
            },
        );
        Some(Step::Fetch { symbol, from_ms })
    }

    /// The risk manager's positions. Symbols not in the snapshot are flat.
    pub fn set_positions(&mut self, snapshot: &PositionSnapshot) {
        self.positions = snapshot
            .positions
            .iter()
            .filter(|p| p.size > Decimal::ZERO)
            .map(|p| {
                let pos = match p.side {
                    Side::Buy => Holding::Long,
                    Side::Sell => Holding::Short,
                };
                (p.symbol.clone(), (pos, p.strategy.clone()))
            })
            .collect();
    }

    /// A closed bar from the bus.
    pub fn on_bar(&mut self, bar: Bar) -> Step {
        if bar.interval != self.interval || !self.shard.owns_symbol(bar.symbol.as_str()) {
            return Step::Nothing;
        }
        let open_ms = bar.open_time_ms;
        let symbol = bar.symbol.clone();
        let step = self.offer(bar);
        // Only owned symbols count as decided (a symbol whose strategies cannot be built
        // is not followed), so the undecided are the owned minus the decided.
        if self.symbols.contains_key(&symbol) {
            self.decided(&symbol, open_ms);
        }
        match step {
            Step::Intents(intents) => Step::Intents(self.of_close(open_ms, intents)),
            other => other,
        }
    }

    /// The bar of `open_ms` arrived for `symbol`: a newer close starts the count afresh.
    fn decided(&mut self, symbol: &Symbol, open_ms: TimestampMs) {
        match &mut self.close {
            Some(c) if c.open_ms > open_ms => return,
            Some(c) if c.open_ms == open_ms => {}
            _ => {
                self.close = Some(CloseState {
                    open_ms,
                    ..CloseState::default()
                });
            }
        }
        if let Some(c) = &mut self.close {
            c.decided.insert(symbol.clone());
        }
    }

    /// Marks the entries decided at the newest close with this shard
    /// ([`OrderIntent::shard`]): the router holds them with their close. A refill's older
    /// bars and exits are left unmarked.
    fn of_close(&mut self, open_ms: TimestampMs, intents: Vec<OrderIntent>) -> Vec<OrderIntent> {
        let Some(c) = self.close.as_mut().filter(|c| c.open_ms == open_ms) else {
            return intents;
        };
        intents
            .into_iter()
            .map(|i| {
                if i.bar_open_time_ms == open_ms && i.action != IntentAction::Exit {
                    c.entries.insert(i.symbol.clone());
                    i.of_shard(self.shard)
                } else {
                    i
                }
            })
            .collect()
    }

    /// The shard's progress through the newest close when a report is due: at the close's
    /// first bar and once every owned symbol has had it (the router learns from them which
    /// of the close's entries can still come).
    pub fn take_progress(&mut self) -> Option<CloseProgress> {
        let c = self.close.as_mut()?;
        // Every decided symbol is owned (`on_bar` counts only those, `set_universe` drops
        // the delisted), so the count says whether a report is due without a pass over
        // the symbols.
        let undecided = self.symbols.len().saturating_sub(c.decided.len());
        let due = if undecided == 0 {
            !std::mem::replace(&mut c.reported_all, true)
        } else {
            !std::mem::replace(&mut c.reported_first, true)
        };
        c.reported_first = true;
        if !due {
            return None;
        }
        // The undecided, and the symbols an entry was sent for (decided: never both).
        let mut pending: Vec<Symbol> = self
            .symbols
            .keys()
            .filter(|s| !c.decided.contains(*s))
            .chain(c.entries.iter())
            .cloned()
            .collect();
        pending.sort_unstable();
        Some(CloseProgress {
            shard: self.shard,
            interval: self.interval,
            bar_open_time_ms: c.open_ms,
            undecided: u32::try_from(undecided).unwrap_or(u32::MAX),
            pending,
        })
    }

    fn offer(&mut self, bar: Bar) -> Step {
        if !self.symbols.contains_key(&bar.symbol) {
            if !self.instruments.contains_key(&bar.symbol) {
                // A listing the worker's universe does not know yet: follow it anyway.
                tracing::info!(symbol = %bar.symbol, "bar of a symbol not in the universe; following it");
            }
            let symbol = bar.symbol.clone();
            let step = self.adopt(symbol.clone());
            if let Some(s) = self.symbols.get_mut(&symbol) {
                s.seq.offer(bar);
            }
            return step.unwrap_or(Step::Nothing);
        }
        let Some(state) = self.symbols.get_mut(&bar.symbol) else {
            return Step::Nothing;
        };
        let symbol = bar.symbol.clone();
        match state.seq.offer(bar) {
            Offer::Ready(bars) => {
                let bars = bars.into_iter().map(|b| (self.tradable(&b), b)).collect();
                Step::Intents(self.run(&symbol, bars))
            }
            Offer::Fill { from_ms, .. } => {
                self.stats.refills += 1;
                tracing::info!(symbol = %symbol, from_ms, "bars missing; refilling from the gateway");
                Step::Fetch {
                    symbol,
                    from_ms: Some(from_ms),
                }
            }
            Offer::Held | Offer::Duplicate => Step::Nothing,
        }
    }

    /// Whether a bar may trade: the gateway published it within `late_bars` intervals of
    /// its close. The stamp travels with the bar (live and in history replies), so a bar
    /// gets the same decision whether it arrived live or was refilled after a bus drop;
    /// bars the gateway itself caught up on after an outage are history, not signals.
    fn tradable(&self, bar: &Bar) -> bool {
        let step = self.step();
        bar.published_ms
            .is_some_and(|p| p - (bar.open_time_ms + step) <= self.late_bars * step)
    }

    /// The gateway's answer to a [`Step::Fetch`]. Every bar warms the strategies; a bar
    /// trades if [`tradable`](Self::tradable) and, on the first warm-up (start or restart),
    /// only if it is among the newest `late_bars + 1` (older ones were someone else's to
    /// trade, or are stale).
    pub fn on_history(&mut self, symbol: &Symbol, bars: Vec<Bar>) -> Vec<OrderIntent> {
        let Some(state) = self.symbols.get_mut(symbol) else {
            return Vec::new();
        };
        // A hole the reply does not fill (the gateway may not have published those bars
        // yet while it catches up itself): ask again shortly rather than skip bars.
        if state.warm
            && state.refetches < HOLE_REFETCHES
            && !state.seq.missing_with(&bars).is_empty()
        {
            state.refetches += 1;
            state.seq.abort_fill();
            if let Ok(from_ms) = state.seq.begin_fill() {
                self.refetch.push(Step::Fetch {
                    symbol: symbol.clone(),
                    from_ms,
                });
            }
            return Vec::new();
        }
        state.refetches = 0;
        let Filled { bars, skipped } = state.seq.complete_fill(bars);
        if !skipped.is_empty() {
            self.stats.skipped_bars += skipped.len() as u64;
            tracing::warn!(symbol = %symbol, missing = skipped.len(), "the gateway has no such bars; continuing after them");
        }
        let first_warm = !state.warm;
        state.warm = true;
        let Some(newest) = bars.last().map(|b| b.open_time_ms) else {
            return Vec::new();
        };
        let act_from = if first_warm {
            newest - self.late_bars * self.step()
        } else {
            i64::MIN
        };
        let bars: Vec<(bool, Bar)> = bars
            .into_iter()
            .map(|b| (b.open_time_ms >= act_from && self.tradable(&b), b))
            .collect();
        if first_warm {
            tracing::debug!(symbol = %symbol, bars = bars.len(), "warmed up");
        }
        self.run(symbol, bars)
    }

    /// Refills symbols that fell behind the others: a bar dropped on the bus is otherwise
    /// noticed only when the symbol's next bar arrives, which after an outage can take a
    /// while. A symbol at least two bars behind the newest bar of any symbol is fetched
    /// (at most every [`SWEEP_BACKOFF`], so a halted symbol does not spin).
    pub fn sweep(&mut self, now: Instant) -> Vec<Step> {
        let Some(newest) = self.symbols.values().filter_map(|s| s.seq.last()).max() else {
            return Vec::new();
        };
        let step = self.step();
        let mut out = Vec::new();
        for (symbol, state) in &mut self.symbols {
            let behind = state.warm && state.seq.last().is_some_and(|l| l < newest - step);
            let recently = state
                .swept_at
                .is_some_and(|t| now.duration_since(t) < SWEEP_BACKOFF);
            if behind
                && !recently
                && let Ok(from_ms) = state.seq.begin_fill()
            {
                state.swept_at = Some(now);
                self.stats.refills += 1;
                out.push(Step::Fetch {
                    symbol: symbol.clone(),
                    from_ms,
                });
            }
        }
        out
    }

    /// Fetches to make again, shortly, because a reply left a hole.
    pub fn take_refetches(&mut self) -> Vec<Step> {
        std::mem::take(&mut self.refetch)
    }

    /// A history fetch failed: returns the fetch to retry.
    pub fn history_failed(&mut self, symbol: &Symbol) -> Option<Step> {
        let state = self.symbols.get_mut(symbol)?;
        state.seq.abort_fill();
        let from_ms = state.seq.begin_fill().ok()?;
        Some(Step::Fetch {
            symbol: symbol.clone(),
            from_ms,
        })
    }

    /// Feeds bars to the symbol's strategies; for those marked to act, turns the signals of
    /// the strategy that may act on the symbol ([`shardbot_strategy::acting`]: its
    /// position's owner, or on a flat symbol the first to enter) into intents.
    fn run(&mut self, symbol: &Symbol, bars: Vec<(bool, Bar)>) -> Vec<OrderIntent> {
        let Some(state) = self.symbols.get_mut(symbol) else {
            return Vec::new();
        };
        let tick = self.instruments.get(symbol).map(|i| i.tick_size);
        let (position, owner) = self
            .positions
            .get(symbol)
            .map_or((Holding::Flat, None), |(p, o)| (*p, o.as_deref()));
        let holder = Holder::of(
            position != Holding::Flat,
            owner,
            state.strategies.iter().map(|s| s.name()),
        );
        let mut out = Vec::new();
        let signals = &mut self.signals;
        for (act, bar) in bars {
            self.stats.bars += 1;
            let candle = candle(&bar);
            signals.clear();
            for (i, strategy) in state.strategies.iter_mut().enumerate() {
                let told = if act {
                    holder.told(i, position)
                } else {
                    Holding::Flat
                };
                signals.push(strategy.on_bar(&candle, told));
            }
            if !act {
                continue;
            }
            if let Some(i) = acting(holder, signals) {
                let name = state.strategies[i].name();
                for signal in &signals[i] {
                    out.push(intent(name, &bar, signal, tick));
                }
            }
        }
        self.stats.intents += out.len() as u64;
        out
    }
}

fn candle(bar: &Bar) -> Candle {
    let f = |d: Decimal| d.to_f64().unwrap_or(f64::NAN);
    Candle {
        open_time_ms: bar.open_time_ms,
        open: f(bar.open),
        high: f(bar.high),
        low: f(bar.low),
        close: f(bar.close),
        volume: f(bar.volume),
    }
}

/// A price from indicator math, on the instrument's tick grid (the backtest's rounding);
/// to 8 decimals for an instrument not known yet.
fn price(x: f64, tick: Option<Decimal>) -> Option<Decimal> {
    match tick {
        Some(t) if t > Decimal::ZERO => shardbot_protocol::price_on_tick(x, t),
        _ => Some(Decimal::from_f64(x)?.round_dp(8).normalize()),
    }
}

fn intent(strategy: &str, bar: &Bar, signal: &Signal, tick: Option<Decimal>) -> OrderIntent {
    let (action, sl, tp) = match *signal {
        Signal::Enter {
            direction,
            stop_loss,
            take_profit,
        } => {
            let side = match direction {
                Direction::Long => Side::Buy,
                Direction::Short => Side::Sell,
            };
            (
                IntentAction::Enter { side },
                stop_loss.and_then(|p| price(p, tick)),
                take_profit.and_then(|p| price(p, tick)),
            )
        }
        Signal::Exit => (IntentAction::Exit, None, None),
    };
    OrderIntent::new(
        strategy,
        bar.symbol.clone(),
        bar.interval,
        bar.open_time_ms,
        action,
        bar.close,
        sl,
        tp,
        now_ms(),
    )
    .with_bar_stamps(bar.stamps)
}

/// The symbols of a universe that a shard owns (for logs and tests).
pub fn owned(shard: Shard, instruments: &[Instrument]) -> HashSet<Symbol> {
    instruments
        .iter()
        .filter(|i| shard.owns_symbol(i.symbol.as_str()))
        .map(|i| i.symbol.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;
    use shardbot_strategy::StrategySettings;

    fn roster() -> Roster {
        StrategySettings {
            enabled: vec!["trend_following".into()],
            interval: "1".into(),
            parameters_file: "/nonexistent/optimized_parameters.json".into(),
            history_bars: 100,
        }
        .load()
        .unwrap()
    }

    fn instrument(sym: &str) -> Instrument {
        Instrument {
            symbol: Symbol::new(sym).unwrap(),
            tick_size: dec!(0.01),
            qty_step: dec!(0.001),
            min_order_qty: dec!(0.001),
            max_market_order_qty: dec!(100),
            min_notional: dec!(5),
            max_leverage: dec!(100),
            funding_interval_min: 480,
        }
    }

    /// A zig-zag close series: the 10/30 SMA crossover fires regularly.
    fn bar(sym: &str, i: i64) -> Bar {
        let phase = (i as f64 / 25.0 * std::f64::consts::PI).sin();
        let close = Decimal::from_f64(100.0 + 10.0 * phase).unwrap().round_dp(2);
        Bar {
            symbol: Symbol::new(sym).unwrap(),
            interval: Interval::M1,
            open_time_ms: i * 60_000,
            open: close,
            high: close,
            low: close,
            close,
            volume: dec!(1),
            turnover: dec!(100),
            published_ms: Some((i + 1) * 60_000 + 1_000),
            stamps: Default::default(),
        }
    }

    fn engine() -> Engine {
        let mut e = Engine::new(Shard::whole(), Interval::M1, roster(), 1);
        let steps = e.set_universe(vec![instrument("BTCUSDT")]);
        assert_eq!(
            steps,
            vec![Step::Fetch {
                symbol: Symbol::new("BTCUSDT").unwrap(),
                from_ms: None
            }]
        );
        e
    }

    fn feed(e: &mut Engine, from: i64, to: i64) -> Vec<OrderIntent> {
        let mut out = Vec::new();
        for i in from..to {
            match e.on_bar(bar("BTCUSDT", i)) {
                Step::Intents(v) => out.extend(v),
                Step::Nothing => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    #[test]
    fn a_restarted_engine_produces_the_same_intents_for_the_same_bars() {
        let btc = Symbol::new("BTCUSDT").unwrap();
        let mut a = engine();
        assert!(
            a.on_history(&btc, (0..100).map(|i| bar("BTCUSDT", i)).collect())
                .len()
                <= 2
        );
        let first = feed(&mut a, 100, 200);
        let later = feed(&mut a, 200, 400);
        assert!(
            later.len() >= 6,
            "the test series must trade: {}",
            later.len()
        );

        // A second engine starts at bar 200, warming on the same 100 bars of history
        // that the gateway would serve then.
        let mut b = engine();
        let warm = b.on_history(&btc, (100..200).map(|i| bar("BTCUSDT", i)).collect());
        let again = feed(&mut b, 200, 400);
        assert_eq!(again, strip_time(&later, &again));
        // Whatever it acted on while warming (the newest bars) was also what `a` did.
        for w in &warm {
            assert!(first.iter().any(|f| f.intent_id == w.intent_id), "{w:?}");
        }
    }

    /// Intents equal except for their creation time.
    fn strip_time(want: &[OrderIntent], like: &[OrderIntent]) -> Vec<OrderIntent> {
        want.iter()
            .zip(like)
            .map(|(w, l)| OrderIntent {
                created_ms: l.created_ms,
                ..w.clone()
            })
            .collect()
    }

    #[test]
    fn a_bar_dropped_and_refilled_trades_exactly_as_if_received() {
        let btc = Symbol::new("BTCUSDT").unwrap();
        let mut a = engine();
        a.on_history(&btc, (0..100).map(|i| bar("BTCUSDT", i)).collect());
        let want = feed(&mut a, 100, 300);
        let mut b = engine();
        b.on_history(&btc, (0..100).map(|i| bar("BTCUSDT", i)).collect());
        let mut got = feed(&mut b, 100, 150);
        // bars 150..=159 are lost on the bus; 160 arrives and triggers a refill
        assert!(matches!(b.on_bar(bar("BTCUSDT", 160)), Step::Fetch { .. }));
        got.extend(b.on_history(&btc, (150..160).map(|i| bar("BTCUSDT", i)).collect()));
        got.extend(feed(&mut b, 161, 300));
        let ids = |v: &[OrderIntent]| v.iter().map(|i| i.intent_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(&want));
    }

    #[test]
    fn positions_from_the_risk_manager_shape_the_intents() {
        let btc = Symbol::new("BTCUSDT").unwrap();
        let flat = |e: &mut Engine| {
            e.on_history(&btc, (0..100).map(|i| bar("BTCUSDT", i)).collect());
            feed(e, 100, 300)
        };
        let mut e = engine();
        let entries_only = flat(&mut e);
        assert!(entries_only.iter().all(|i| i.action != IntentAction::Exit));

        // Long on the exchange: a downward cross is an exit and a short entry
        // (stop-and-reverse), and an upward cross asks for nothing.
        let mut e = engine();
        e.set_positions(&held_by(Some("trend_following")));
        let long = flat(&mut e);
        assert!(long.iter().any(|i| i.action == IntentAction::Exit));
        assert!(
            long.iter()
                .all(|i| i.action != IntentAction::Enter { side: Side::Buy })
        );
        for exit in long.iter().filter(|i| i.action == IntentAction::Exit) {
            assert!(
                long.iter()
                    .any(|i| i.bar_open_time_ms == exit.bar_open_time_ms
                        && i.action == IntentAction::Enter { side: Side::Sell })
            );
        }
        // A closed position (size 0) is flat again.
        e.set_positions(&PositionSnapshot {
            positions: vec![],
            as_of_ms: 0,
        });
        let after: Vec<_> = feed(&mut e, 300, 500);
        assert!(after.iter().all(|i| i.action != IntentAction::Exit));
    }

    fn held_by(owner: Option<&str>) -> PositionSnapshot {
        PositionSnapshot {
            positions: vec![shardbot_protocol::Position {
                symbol: Symbol::new("BTCUSDT").unwrap(),
                side: Side::Buy,
                size: dec!(0.5),
                avg_price: dec!(100),
                mark_price: None,
                leverage: dec!(1),
                unrealised_pnl: dec!(0),
                liq_price: None,
                stop_loss: None,
                take_profit: None,
                updated_ms: 0,
                strategy: owner.map(str::to_owned),
            }],
            as_of_ms: 0,
        }
    }

    fn engine_with(enabled: &[&str]) -> Engine {
        let roster = StrategySettings {
            enabled: enabled.iter().map(|s| (*s).to_owned()).collect(),
            interval: "1".into(),
            parameters_file: "/nonexistent/optimized_parameters.json".into(),
            history_bars: 100,
        }
        .load()
        .unwrap();
        let mut e = Engine::new(Shard::whole(), Interval::M1, roster, 1);
        e.set_universe(vec![instrument("BTCUSDT")]);
        let btc = Symbol::new("BTCUSDT").unwrap();
        e.on_history(&btc, (0..100).map(|i| bar("BTCUSDT", i)).collect());
        e
    }

    /// One position, one owner: another strategy's (or a hand-opened) position is left
    /// alone; on a flat symbol only one strategy's entry goes out per bar.
    #[rstest::rstest]
    #[case::owned_by_the_other(Some("mean_reversion"), false)]
    #[case::opened_by_hand(None, false)]
    #[case::owned_by_trend(Some("trend_following"), true)]
    fn only_the_owner_acts_on_a_position(#[case] owner: Option<&str>, #[case] acts: bool) {
        let mut e = engine_with(&["trend_following"]);
        e.set_positions(&held_by(owner));
        let got = feed(&mut e, 100, 300);
        assert_eq!(!got.is_empty(), acts, "{got:?}");
        assert!(got.iter().all(|i| i.strategy == "trend_following"));
    }

    #[test]
    fn two_strategies_never_both_enter_a_flat_symbol_at_one_bar() {
        let mut both = engine_with(&["trend_following", "mean_reversion"]);
        let got = feed(&mut both, 100, 600);
        let mut bars: HashMap<i64, HashSet<&str>> = HashMap::new();
        for i in &got {
            bars.entry(i.bar_open_time_ms)
                .or_default()
                .insert(&i.strategy);
        }
        assert!(bars.values().all(|s| s.len() == 1), "{bars:?}");
        // The first in the roster's order wins a tie: every bar where trend_following
        // alone would enter from flat has its entry (the symbol is flat throughout: no
        // position snapshot says otherwise).
        let mut trend = engine_with(&["trend_following"]);
        let alone = feed(&mut trend, 100, 600);
        for i in alone.iter().filter(|i| i.action != IntentAction::Exit) {
            assert!(got.iter().any(|g| g.intent_id == i.intent_id), "{i:?}");
        }
        assert!(
            got.iter().any(|i| i.strategy == "mean_reversion"),
            "the second strategy enters where the first does not"
        );
    }

    #[test]
    fn a_symbol_left_behind_is_refilled_by_the_sweep() {
        let mut e = Engine::new(Shard::whole(), Interval::M1, roster(), 1);
        e.set_universe(vec![instrument("AUSDT"), instrument("BUSDT")]);
        for s in ["AUSDT", "BUSDT"] {
            let sym = Symbol::new(s).unwrap();
            e.on_history(&sym, (0..100).map(|i| bar(s, i)).collect());
        }
        let t0 = Instant::now();
        assert!(e.sweep(t0).is_empty(), "level");
        // A gets bars 100 and 101; B's were dropped and nothing more comes for it
        e.on_bar(bar("AUSDT", 100));
        assert!(
            e.sweep(t0).is_empty(),
            "one bar behind is a bar close in progress"
        );
        e.on_bar(bar("AUSDT", 101));
        let b = Symbol::new("BUSDT").unwrap();
        assert_eq!(
            e.sweep(t0),
            vec![Step::Fetch {
                symbol: b.clone(),
                from_ms: Some(100 * 60_000)
            }]
        );
        assert!(e.sweep(t0).is_empty(), "a fill is under way");
        e.on_history(&b, vec![]); // the gateway had nothing newer
        assert!(e.sweep(t0 + Duration::from_secs(1)).is_empty(), "backs off");
        assert_eq!(e.sweep(t0 + SWEEP_BACKOFF).len(), 1);
    }

    #[test]
    fn bars_published_long_after_their_close_only_warm() {
        let btc = Symbol::new("BTCUSDT").unwrap();
        let mut e = engine();
        e.on_history(&btc, (0..100).map(|i| bar("BTCUSDT", i)).collect());
        let mut late = Vec::new();
        for i in 100..300 {
            let mut b = bar("BTCUSDT", i);
            b.published_ms = Some((i + 3) * 60_000); // caught up 2 bars after its close
            if let Step::Intents(v) = e.on_bar(b) {
                late.extend(v);
            }
        }
        assert!(late.is_empty(), "{late:?}");
        assert_eq!(e.stats().bars, 300, "but they still update the indicators");
        let mut never = bar("BTCUSDT", 300);
        never.published_ms = None;
        assert_eq!(e.on_bar(never), Step::Intents(vec![]));
    }

    #[test]
    fn a_gap_is_refilled_and_late_bars_only_warm() {
        let btc = Symbol::new("BTCUSDT").unwrap();
        let mut e = engine();
        e.on_history(&btc, (0..100).map(|i| bar("BTCUSDT", i)).collect());
        // bars 100..=104 are lost; 105 arrives
        assert_eq!(
            e.on_bar(bar("BTCUSDT", 105)),
            Step::Fetch {
                symbol: btc.clone(),
                from_ms: Some(100 * 60_000)
            }
        );
        assert_eq!(e.on_bar(bar("BTCUSDT", 106)), Step::Nothing, "held");
        // The gateway has not published the missing bars yet: the worker asks again
        // instead of skipping them.
        assert!(e.on_history(&btc, vec![]).is_empty());
        assert_eq!(
            e.take_refetches(),
            vec![Step::Fetch {
                symbol: btc.clone(),
                from_ms: Some(100 * 60_000)
            }]
        );
        assert_eq!(e.stats().bars, 100, "nothing delivered past the hole");
        e.on_history(&btc, (100..=105).map(|i| bar("BTCUSDT", i)).collect());
        assert_eq!(e.stats().bars, 107);
        // the next bar is in order again
        assert!(matches!(e.on_bar(bar("BTCUSDT", 107)), Step::Intents(_)));
    }

    /// A whole-universe engine following `syms`, each warmed with 100 bars.
    fn warm_engine(syms: &[&str]) -> Engine {
        let mut e = Engine::new(Shard::whole(), Interval::M1, roster(), 1);
        e.set_universe(syms.iter().map(|s| instrument(s)).collect());
        for s in syms {
            let sym = Symbol::new(*s).unwrap();
            e.on_history(&sym, (0..100).map(|i| bar(s, i)).collect());
        }
        e
    }

    /// Each close is reported at its first bar and when the last owned symbol has had it,
    /// with the entries sent so far; the entries (not the exits) carry the shard.
    #[test]
    fn a_close_is_reported_at_its_first_bar_and_when_every_symbol_had_it() {
        let syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT"];
        let mut e = warm_engine(&syms);
        let (mut entries_seen, mut exits_seen) = (0, 0);
        for i in 100..300 {
            let mut entries = 0;
            for (k, s) in syms.iter().enumerate() {
                if let Step::Intents(v) = e.on_bar(bar(s, i)) {
                    for intent in v {
                        if intent.action == IntentAction::Exit {
                            assert_eq!(intent.shard, None, "{intent:?}");
                            exits_seen += 1;
                        } else {
                            assert_eq!(intent.shard, Some(Shard::whole()), "{intent:?}");
                            entries += 1;
                            entries_seen += 1;
                        }
                    }
                }
                // At the first bar: the two others, and this one if it gave an entry; at
                // the last: the symbols that gave one.
                let entered: Vec<&str> = if entries > 0 { vec![s] } else { vec![] };
                let want: Option<(u32, Vec<&str>)> = match k {
                    0 => Some((2, [&syms[1..], &entered[..]].concat())),
                    2 if entries > 0 => Some((0, syms.to_vec())),
                    2 => Some((0, vec![])),
                    _ => None,
                };
                let got = e.take_progress();
                let got_pending = got.as_ref().map(|p| {
                    let mut v: Vec<&str> = p.pending.iter().map(Symbol::as_str).collect();
                    v.sort_unstable();
                    (p.undecided, v)
                });
                let want = want.map(|(u, mut v)| {
                    v.sort_unstable();
                    (u, v)
                });
                assert_eq!(got_pending, want, "bar {i}, {s}");
                if let Some(p) = got {
                    assert_eq!(
                        (p.shard, p.interval, p.bar_open_time_ms),
                        (Shard::whole(), Interval::M1, i * 60_000)
                    );
                }
            }
            // A repeat of the close's bar, or an older one, reports nothing more.
            e.on_bar(bar("ETHUSDT", i));
            e.on_bar(bar("ETHUSDT", i - 1));
            assert_eq!(e.take_progress(), None);
        }
        assert!(entries_seen > 0, "the series gives entries");
        assert_eq!(exits_seen, 0, "no position, no exit");
        // An exit of the close, and an entry of an older bar (a refill), stay unmarked.
        let btc = Symbol::new("BTCUSDT").unwrap();
        let at = |open_ms, action| {
            OrderIntent::new(
                "trend_following",
                btc.clone(),
                Interval::M1,
                open_ms,
                action,
                dec!(1),
                None,
                None,
                0,
            )
        };
        let newest = 299 * 60_000;
        let marked = e.of_close(
            newest,
            vec![
                at(newest, IntentAction::Exit),
                at(newest - 60_000, IntentAction::Enter { side: Side::Buy }),
                at(newest, IntentAction::Enter { side: Side::Sell }),
            ],
        );
        let shards: Vec<Option<Shard>> = marked.iter().map(|i| i.shard).collect();
        assert_eq!(shards, [None, None, Some(Shard::whole())]);
    }

    /// A symbol delisted mid-close leaves the count: the close is decided once the others
    /// have had their bar.
    #[test]
    fn a_close_is_decided_without_the_symbols_no_longer_followed() {
        let syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT"];
        let mut e = warm_engine(&syms);
        e.on_bar(bar("ETHUSDT", 100));
        assert_eq!(e.take_progress().map(|p| p.undecided), Some(2));
        // ETHUSDT decided, then delisted; BTCUSDT's bar is the last one due.
        e.set_universe(vec![instrument("BTCUSDT"), instrument("SOLUSDT")]);
        e.on_bar(bar("SOLUSDT", 100));
        assert_eq!(e.take_progress(), None);
        e.on_bar(bar("BTCUSDT", 100));
        assert_eq!(e.take_progress().map(|p| p.undecided), Some(0));
    }

    #[test]
    fn intents_carry_tick_rounded_stops_and_the_bar_close() {
        let btc = Symbol::new("BTCUSDT").unwrap();
        let mut e = engine();
        e.on_history(&btc, (0..100).map(|i| bar("BTCUSDT", i)).collect());
        let intents = feed(&mut e, 100, 300);
        let entry = intents
            .iter()
            .find(|i| matches!(i.action, IntentAction::Enter { .. }))
            .unwrap();
        let sl = entry.stop_loss.unwrap();
        assert_eq!((sl / dec!(0.01)).fract(), Decimal::ZERO, "{sl}");
        let b = bar("BTCUSDT", entry.bar_open_time_ms / 60_000);
        assert_eq!(entry.reference_price, b.close);
        match entry.action {
            IntentAction::Enter { side: Side::Buy } => assert!(sl < b.close),
            _ => assert!(sl > b.close),
        }
    }

    #[test]
    fn only_owned_symbols_and_the_traded_interval_count() {
        let shard = Shard::new(0, 4).unwrap();
        let all: Vec<Instrument> = (0..40).map(|i| instrument(&format!("S{i}USDT"))).collect();
        let mine = owned(shard, &all);
        let mut e = Engine::new(shard, Interval::M1, roster(), 1);
        assert_eq!(e.set_universe(all.clone()).len(), mine.len());
        let foreign = all.iter().find(|i| !mine.contains(&i.symbol)).unwrap();
        assert_eq!(e.on_bar(bar(foreign.symbol.as_str(), 1)), Step::Nothing);
        let mut other_interval = bar(mine.iter().next().unwrap().as_str(), 1);
        other_interval.interval = Interval::M5;
        assert_eq!(e.on_bar(other_interval), Step::Nothing);
        // a delisting drops the symbol
        e.set_universe(
            all.into_iter()
                .filter(|i| i.symbol.as_str() != "S0USDT")
                .collect(),
        );
        assert!(e.symbols.keys().all(|s| s.as_str() != "S0USDT"));
    }
}

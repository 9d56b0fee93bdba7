//! One bar of one market: the fills due at its open (exits before entries, slippage and
//! the taker fee), stop-loss and take-profit inside it, funding, the strategies' signals
//! at its close, and entries judged by the risk rules (`shardbot_risk::judge`).

use std::sync::Arc;

use rust_decimal::Decimal;
use shardbot_protocol::{Instrument, IntentAction, Side, TickGrid, TradingMode};
use shardbot_risk::{EntryTurn, Held, Verdict, entry_turn, judge, round_qty};
use shardbot_strategy::{Candle, Direction, Holder, Holding, Signal, acting};

use crate::{
    ExitReason, Intrabar, Market, Slippage,
    account::{Account, Entry, EntrySignal, SymbolState},
    fixed::{approx, dec, units},
};

/// A market's rules as the per-fill path uses them, worked out once.
pub(crate) struct Rules<'a> {
    pub(crate) inst: &'a Instrument,
    /// The symbol, as its trades carry it.
    pub(crate) symbol: Arc<str>,
    /// How far a market order fills from its reference price, in ticks or basis points.
    pub(crate) slip: Slippage,
    pub(crate) slip_ticks: Decimal,
    /// The tick grid stop-loss and take-profit levels are put on (None: a tick that is
    /// not positive).
    pub(crate) grid: Option<TickGrid>,
}

impl<'a> Rules<'a> {
    pub(crate) fn new(m: &'a Market, slip: Slippage) -> Rules<'a> {
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

    pub(crate) fn slip(&self, price: Decimal, side: Side) -> Decimal {
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
    pub(crate) fn on_tick(&self, p: f64) -> Decimal {
        self.grid
            .and_then(|g| g.level(p))
            .unwrap_or_else(|| approx(p).normalize())
    }
}

/// One bar of one market: funding due, the fills decided on the previous bar, the
/// exchange-side stops inside this bar, the strategy on its close, marking to market.
#[inline]
pub(crate) fn step(eng: &mut Account<'_>, rules: &Rules<'_>, st: &mut SymbolState, c: &Candle) {
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
            // Counted in today's PnL as paid (and once: the trade's PnL at its close
            // holds it, as it leaves the open positions' costs).
            eng.open_costs += pay;
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
                eng.tally.release(entry.margin, 0);
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
        None => Holding::Flat,
        Some(o) if o.side == Side::Buy => Holding::Long,
        Some(_) => Holding::Short,
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
            // The reversal rule, the risk manager's ledger's: an entry behind its own
            // position's exit is judged once that exit has filled.
            let held_by_entrant = st.open.as_ref().is_some_and(|o| o.owner == owner);
            match entry_turn(exiting, held_by_entrant) {
                EntryTurn::AfterExit => st.pending.reverse = Some(signal),
                EntryTurn::Now => {
                    if let Some(entry) = decide_entry(eng, rules, st, &signal) {
                        st.has_pending = true;
                        st.pending.enter = Some(entry);
                    }
                }
            }
        }
    }
    // 5. Mark to market.
    st.last_close = c.close;
    if let Some(o) = st.open.as_mut() {
        let u = units((c.close - o.entry_f) * o.qty_signed);
        eng.tally.mark(i128::from(o.unrealised), i128::from(u));
        o.unrealised = u;
    }
}

/// A bar reached the open position's stop-loss or take-profit (or both): it closes at the
/// level, or at the open when the bar opened beyond it.
#[cold]
#[inline(never)]
pub(crate) fn stop_or_take(
    eng: &mut Account<'_>,
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
pub(crate) fn decide_entry(
    eng: &mut Account<'_>,
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
    let exposure = eng.tally.exposure(
        held,
        eng.balance,
        eng.realised_for_rules(),
        TradingMode::Normal,
        st.stopped_at,
    );
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
                // Booked as the risk manager's ledger books an approval, until it fills.
                let margin = eng.tally.approve(qty, close, leverage);
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

//! The simulated account of one run, as the risk manager books it: the balance, each
//! market's open position and pending orders, approvals that count as open from the
//! moment they are given, and the risk rules' aggregates (open positions, margin used,
//! unrealised PnL) kept in integers so that they never drift from a sum of the positions.

use std::sync::Arc;

use rust_decimal::{Decimal, prelude::ToPrimitive};
use shardbot_protocol::Side;
use shardbot_protocol::on_scale;
use shardbot_risk::Tally;
use shardbot_strategy::Strategy;

use crate::{
    BacktestConfig, ExitReason, Trade,
    fills::Rules,
    fixed::{dec_f64, i128_f64},
    run_loop::next_day,
};

/// An open position. In C's field order, the fields every bar reads first: with hundreds
/// of markets in one account the states do not stay in the nearest cache, and the per-bar
/// path then touches one line of them instead of three.
#[repr(C)]
pub(crate) struct Open {
    pub(crate) side: Side,
    // f64 copies for the per-bar path.
    /// The quantity, negative for a short: `(close − entry) × qty_signed` is the PnL of
    /// either side, bit for bit what `(entry − close) × qty` gives a short.
    pub(crate) qty_signed: f64,
    pub(crate) entry_f: f64,
    /// The levels, NaN when there is none: every comparison with NaN is false, so the
    /// per-bar check needs no test of whether a level exists.
    pub(crate) sl_f: f64,
    pub(crate) tp_f: f64,
    /// Unrealised PnL at the last close in units of 10^-8 USDT: what the risk manager's
    /// book holds for the position (see [`approx`]).
    pub(crate) unrealised: i64,
    // The fill path's.
    pub(crate) qty: Decimal,
    pub(crate) entry_price: Decimal,
    pub(crate) entry_time_ms: i64,
    pub(crate) fees: Decimal,
    pub(crate) funding: Decimal,
    /// Margin it holds for the risk rules (entry notional / leverage), in
    /// [`shardbot_risk::margin_units`].
    pub(crate) margin: i128,
    pub(crate) stop_loss: Option<Decimal>,
    pub(crate) take_profit: Option<Decimal>,
    /// The index of the strategy that opened it: the only one whose signals act on it.
    pub(crate) owner: usize,
}

#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) exit: bool,
    pub(crate) enter: Option<Entry>,
    /// A reversal's entry: judged and sized at the next open once the exit before it has
    /// filled, from the balance that fill left (see [`decide_entry`]).
    pub(crate) reverse: Option<EntrySignal>,
}

/// An entry signal as the risk rules judge it: at once for an entry from flat, or kept
/// (a reversal's) until its exit has filled.
pub(crate) struct EntrySignal {
    /// The strategy that signalled it.
    pub(crate) owner: usize,
    pub(crate) side: Side,
    pub(crate) stop_loss: Option<f64>,
    pub(crate) take_profit: Option<f64>,
    /// The signal bar's close (the intent's reference price) and open time.
    pub(crate) close: f64,
    pub(crate) signal_ms: i64,
}

/// An approved entry waiting for the next open.
pub(crate) struct Entry {
    pub(crate) owner: usize,
    pub(crate) side: Side,
    pub(crate) qty: Decimal,
    pub(crate) stop_loss: Option<Decimal>,
    pub(crate) take_profit: Option<Decimal>,
    /// What the approval holds until the fill ([`Tally::approve`], as the risk manager's
    /// ledger books it), so entries judged at the same close count the ones approved
    /// before them.
    pub(crate) margin: i128,
}

/// A market's state in a run, the per-bar fields first (see [`Open`]).
#[repr(C)]
pub(crate) struct SymbolState {
    /// The strategies on this market, in the roster's order (one position, one owner:
    /// [`shardbot_strategy::Holder`]).
    pub(crate) strategies: Vec<Box<dyn Strategy>>,
    /// Each strategy's signals at the bar (kept to reuse its allocation).
    pub(crate) signals: Vec<shardbot_strategy::Signals>,
    pub(crate) last_close: f64,
    /// Whether `pending` holds anything: one flag read at every bar.
    pub(crate) has_pending: bool,
    /// The open time of its previous bar (funding is due for the settlements between it
    /// and this bar's open).
    pub(crate) prev_open: Option<i64>,
    pub(crate) open: Option<Open>,
    pub(crate) pending: Pending,
    pub(crate) stopped_at: Option<i64>,
}

pub(crate) struct Account<'a> {
    pub(crate) cfg: &'a BacktestConfig,
    pub(crate) balance: Decimal,
    /// `balance` as f64, for the equity curve.
    pub(crate) balance_f: f64,
    /// Whether `balance` changed since its f64 copy was taken.
    pub(crate) balance_moved: bool,
    /// The closed PnL (fees and funding included) of the trades closed today.
    pub(crate) realised_today: Decimal,
    /// The fees and funding paid by the positions still open (entry fees when they fill,
    /// funding when paid; each trade's share leaves at its close, inside its PnL): the
    /// live risk manager's curRealisedPnl of the open positions, negated.
    pub(crate) open_costs: Decimal,
    /// The first millisecond of the next UTC day.
    pub(crate) day_end: i64,
    pub(crate) trades: Vec<Trade>,
    pub(crate) refused: std::collections::HashMap<shardbot_protocol::RefusalCode, u64>,
    /// The risk rules' aggregates (positions and approvals open, margin, unrealised PnL),
    /// kept as positions are approved, fill, are marked and close.
    pub(crate) tally: Tally,
}

impl<'a> Account<'a> {
    pub(crate) fn new(cfg: &'a BacktestConfig) -> Account<'a> {
        let balance = cfg.settings.simulated_balance;
        Account {
            cfg,
            balance,
            balance_f: balance.to_f64().unwrap_or(0.0),
            balance_moved: false,
            realised_today: Decimal::ZERO,
            open_costs: Decimal::ZERO,
            day_end: i64::MIN,
            trades: Vec::new(),
            refused: std::collections::HashMap::new(),
            tally: Tally::default(),
        }
    }

    /// Today's PnL as the risk rules count it, the open positions' unrealised left out
    /// (the tally adds it): the trades closed today, and what the open ones have paid.
    pub(crate) fn realised_for_rules(&self) -> Decimal {
        self.realised_today - self.open_costs
    }

    /// Before the bars of time `t` (times only grow): a new UTC day starts today's
    /// realised PnL at zero.
    #[inline]
    pub(crate) fn begin(&mut self, t: i64) {
        if t >= self.day_end {
            self.day_end = next_day(t);
            self.realised_today = Decimal::ZERO;
        }
    }

    /// The equity curve's point after the bars of time `t`: the balance (its f64 copy
    /// taken again only when it moved) plus the open positions marked at their closes.
    #[inline]
    pub(crate) fn record(&mut self, t: i64, equity: &mut Vec<(i64, f64)>) {
        if self.balance_moved {
            self.balance_moved = false;
            self.balance_f = dec_f64(self.balance);
        }
        equity.push((t, self.balance_f + i128_f64(self.tally.unrealised) * 1e-8));
    }

    /// The taker fee of a fill, rounded to 8 decimals (as the sim and Bybit do).
    pub(crate) fn fee(&self, qty: Decimal, price: Decimal) -> Decimal {
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
    pub(crate) fn open(&mut self, st: &mut SymbolState, entry: Entry, px: Decimal, t: i64) {
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
        self.open_costs += fee;
        let margin = self
            .tally
            .fill(approved, qty, px, self.cfg.settings.leverage);
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

    pub(crate) fn close(
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
        self.tally.release(o.margin, i128::from(o.unrealised));
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
        self.open_costs -= o.fees + o.funding;
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

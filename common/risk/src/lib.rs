//! The risk rules: one implementation for the risk manager (approving live intents) and the
//! backtester (simulating the same limits), in the barter-rs split — strategies propose,
//! risk approves or refuses, and every refusal carries a code and a reason the journal and
//! the dashboard show.
//!
//! - [`TradingSettings`]: `trading_settings.json` (sizing, leverage, limits), validated
//!   with errors that name the file and the field.
//! - [`Book`]: what the rules judge against (positions, simulated balance, today's PnL,
//!   the kill-switch mode, recent stop-outs).
//! - [`decide`]: an intent → [`RiskDecision`]; [`judge`], the same rules on an
//!   [`Exposure`] (the book's aggregates), for callers that keep those themselves.
//! - [`round_qty`]: a quantity on the instrument's grid, or a refusal below its minimums.
//! - [`Ledger`]: the book between two reads of the exchange (approvals counted open,
//!   pending exits, owners, fills booked once) and [`entry_turn`], the reversal rule the
//!   backtester follows too.
//! - [`Tally`]: the aggregates the rules judge by and the booking of an approval until
//!   its fill, in integers: the ledger's book and the backtester's account both keep one.
//! - [`judging_order`]: the order the intents of one bar close are judged in, live and in
//!   the backtest, so that which entries a limit cuts is the same in both.

mod ledger;
mod settings;
mod tally;

/// The settings the unit tables judge with: 1,000 USDT, 10 % at 2x, 3 positions, margin
/// capped at 50 %, no fee.
#[cfg(test)]
fn test_settings() -> TradingSettings {
    use rust_decimal_macros::dec;
    TradingSettings {
        simulated_balance: dec!(1000),
        sizing: Sizing::Percent(dec!(10)),
        leverage: dec!(2),
        daily_loss_limit: dec!(50),
        max_open_positions: 3,
        max_margin_use_pct: dec!(50),
        cooldown_after_stop_min: 30,
        fee_rate: dec!(0),
    }
}

use std::collections::HashMap;

use rust_decimal::Decimal;
use shardbot_protocol::{
    Fill, Instrument, IntentAction, OrderIntent, Position, Refusal, RefusalCode, RiskDecision,
    Side, Symbol, TimestampMs, TradingMode,
};

pub use ledger::{
    AccountRead, EntryTurn, FillBooked, Foreseen, Ledger, PROVISIONAL_FOR, entry_turn,
};
pub use settings::{SettingsError, Sizing, TradingSettings, default_fee_rate};
pub use tally::{MARGIN_SCALE, PNL_SCALE, Tally, from_units, margin_of, margin_units, pnl_units};

/// The account as the rules see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    pub positions: HashMap<Symbol, Position>,
    /// Exchange balance − offset (see DESIGN.md §2, risk-manager).
    pub simulated_balance: Decimal,
    /// Realised PnL since the start of today (UTC), fees and funding included.
    pub realised_today: Decimal,
    pub mode: TradingMode,
    /// When each symbol's position was last closed by its stop-loss.
    pub stopped_out_at: HashMap<Symbol, TimestampMs>,
}

impl Book {
    pub fn unrealised(&self) -> Decimal {
        self.positions.values().map(|p| p.unrealised_pnl).sum()
    }

    /// Today's realised plus open unrealised PnL.
    pub fn daily_pnl(&self) -> Decimal {
        self.realised_today + self.unrealised()
    }

    /// Margin held by the open positions (entry notional / leverage), summed as the rules
    /// sum it ([`Tally`]).
    pub fn margin_used(&self) -> Decimal {
        from_units(Tally::of(self.positions.values()).margin, MARGIN_SCALE)
    }

    pub fn simulated_equity(&self) -> Decimal {
        self.simulated_balance + self.unrealised()
    }

    /// Books a fill at once, as the exchange books it, so that what is judged between two
    /// reads of the account (a reversal's entry waiting for its exit, above all) rests on
    /// every fill before it:
    /// - a fill that closes (part of) a position moves the balance by the closed part's
    ///   gross PnL against the position's average price, less the fill's fee, and shrinks
    ///   the position (gone once all of it is closed);
    /// - a fill that opens or adds pays its fee and makes the position's size and average
    ///   price those of the fills (an approval's provisional numbers give way to them);
    /// - a funding payment moves the balance (`exec_fee`, positive when paid).
    ///
    /// `exact` says whether the book's position of the symbol holds the exchange's numbers
    /// (read from the exchange or built from fills) rather than an approval's guess; a
    /// closing fill of a guessed position is not booked (its PnL is unknown). Returns
    /// whether the fill was booked.
    pub fn book_fill(&mut self, fill: &Fill, exact: bool) -> bool {
        if fill.is_funding() {
            self.simulated_balance -= fill.exec_fee;
            return true;
        }
        if !fill.exec_qty.is_sign_positive() || fill.exec_qty.is_zero() {
            return false;
        }
        let closing = fill.closed_size.min(fill.exec_qty);
        let mut opening = fill.exec_qty - closing.max(Decimal::ZERO);
        if closing > Decimal::ZERO {
            let Some(p) = self.positions.get_mut(&fill.symbol) else {
                return false;
            };
            if !exact || p.side == fill.side || p.size.is_zero() {
                return false;
            }
            let closed = closing.min(p.size);
            let gross = match p.side {
                Side::Buy => (fill.exec_price - p.avg_price) * closed,
                Side::Sell => (p.avg_price - fill.exec_price) * closed,
            };
            self.simulated_balance += gross;
            p.size -= closed;
            // The exchange's liquidation price was of the size before: until the next read.
            p.liq_price = None;
            if p.size.is_zero() {
                self.positions.remove(&fill.symbol);
            }
            // Beyond the position: the rest opens the other way.
            opening += closing - closed;
        }
        self.simulated_balance -= fill.exec_fee;
        if opening > Decimal::ZERO {
            match self.positions.get_mut(&fill.symbol) {
                Some(p) if exact && p.side == fill.side && !p.size.is_zero() => {
                    let size = p.size + opening;
                    p.avg_price = (p.avg_price * p.size + fill.exec_price * opening) / size;
                    p.size = size;
                    p.liq_price = None;
                }
                _ => {
                    let before = self.positions.get(&fill.symbol);
                    let leverage = before.map_or(Decimal::ONE, |p| p.leverage);
                    // An approval's guess names the strategy whose entry this fills.
                    let strategy = before.and_then(|p| p.strategy.clone());
                    self.positions.insert(
                        fill.symbol.clone(),
                        Position {
                            symbol: fill.symbol.clone(),
                            side: fill.side,
                            size: opening,
                            avg_price: fill.exec_price,
                            mark_price: None,
                            leverage,
                            unrealised_pnl: Decimal::ZERO,
                            liq_price: None,
                            stop_loss: None,
                            take_profit: None,
                            updated_ms: fill.exec_time_ms,
                            strategy,
                        },
                    );
                }
            }
        }
        true
    }

    /// Margin use in percent of simulated equity.
    pub fn margin_use_pct(&self) -> Decimal {
        let equity = self.simulated_equity();
        if equity <= Decimal::ZERO {
            return Decimal::ONE_HUNDRED;
        }
        self.margin_used() / equity * Decimal::ONE_HUNDRED
    }
}

/// The position held in the symbol an intent is for, as the rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub side: Side,
    pub size: Decimal,
    pub leverage: Decimal,
}

/// Everything the rules judge an intent against, in aggregate: a [`Tally`]'s, which a
/// [`Book`] computes from its positions ([`Book::exposure`]) and a backtest keeps up to
/// date as positions open and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposure {
    /// The intent's symbol's open position (size above zero), if any.
    pub held: Option<Held>,
    /// Positions open (size above zero) in the account.
    pub open_positions: u32,
    /// Unrealised PnL of the open positions.
    pub unrealised: Decimal,
    /// Margin held by the open positions (entry notional / leverage).
    pub margin_used: Decimal,
    pub simulated_balance: Decimal,
    pub realised_today: Decimal,
    pub mode: TradingMode,
    /// When the symbol's position was last closed by its stop-loss.
    pub stopped_out_at: Option<TimestampMs>,
}

impl Book {
    /// The aggregates [`judge`] needs for an intent on `symbol`: the [`Tally`] of the
    /// positions (approvals' provisional ones included), as the backtester keeps it.
    pub fn exposure(&self, symbol: &Symbol) -> Exposure {
        let held = self
            .positions
            .get(symbol)
            .filter(|p| p.size > Decimal::ZERO)
            .map(|p| Held {
                side: p.side,
                size: p.size,
                leverage: p.leverage,
            });
        self.exposure_with(held, self.stopped_out_at.get(symbol).copied())
    }

    /// The [`room`] for entries on this book.
    pub fn room(&self, settings: &TradingSettings) -> Option<u32> {
        room(settings, &self.exposure_with(None, None))
    }

    fn exposure_with(&self, held: Option<Held>, stopped_out_at: Option<TimestampMs>) -> Exposure {
        Tally::of(self.positions.values()).exposure(
            held,
            self.simulated_balance,
            self.realised_today,
            self.mode,
            stopped_out_at,
        )
    }
}

/// Where an intent stands when the intents of one bar close are judged together: exits
/// first (they never wait behind entries, and are always approved), then entries by
/// symbol name, then by strategy. The backtest judges a close's entries in this order
/// too (its markets in symbol order, one strategy's signal per market), so when a limit
/// (open positions, margin) cuts a close's entries, the same ones win in both.
pub fn judging_rank(intent: &OrderIntent) -> ((bool, &str), &str) {
    (
        burst_rank(intent.action == IntentAction::Exit, intent.symbol.as_str()),
        intent.strategy.as_str(),
    )
}

/// The rank of a close's exit or entry on `symbol`: exits first, then by symbol name. The
/// one rule for a burst's order: the approvals' ([`judging_rank`]) and the orders' at the
/// router's order desk.
pub fn burst_rank(exit: bool, symbol: &str) -> (bool, &str) {
    (!exit, symbol)
}

/// Sorts a close's intents into [`judging_rank`] order (stable: equal ranks keep theirs).
pub fn judging_order(intents: &mut [OrderIntent]) {
    intents.sort_by(|a, b| judging_rank(a).cmp(&judging_rank(b)));
}

/// How many more entries the limits that depend on a close's order (open positions,
/// margin use) let through one after another, each on a symbol without a position: a
/// close whose entries number no more than this is judged the same in any order, as is
/// one where this is 0 (every entry is refused, by these limits, the trading mode or the
/// daily loss). Each entry counts the sizing's whole margin plus one unit of the margin
/// sums' resolution, at least what its approval holds (its fee share and the rounding of
/// its quantity only lower that): the room is never more than what the rules approve.
/// `None` where the sums leave `Decimal`'s range (then no order is safe to assume).
pub fn room(settings: &TradingSettings, exposure: &Exposure) -> Option<u32> {
    if exposure.mode != TradingMode::Normal {
        return Some(0);
    }
    let by_count = settings
        .max_open_positions
        .saturating_sub(exposure.open_positions);
    let daily = exposure.realised_today.checked_add(exposure.unrealised)?;
    if by_count == 0 || daily <= -settings.daily_loss_limit {
        return Some(0);
    }
    let margin = settings.margin_per_trade(exposure.simulated_balance)?;
    let equity = exposure
        .simulated_balance
        .checked_add(exposure.unrealised)?;
    if not_positive(equity) || not_positive(margin) {
        return Some(0);
    }
    let each = margin.checked_add(Decimal::new(1, tally::MARGIN_SCALE))?;
    let limit = settings.max_margin_use_pct.checked_mul(equity)?;
    // `(used + k × each) × 100 <= limit`, as `judge` compares.
    let within = |k: u32| -> Option<bool> {
        let used = exposure
            .margin_used
            .checked_add(each.checked_mul(Decimal::from(k))?)?;
        Some(used.checked_mul(Decimal::ONE_HUNDRED)? <= limit)
    };
    let slack = limit.checked_sub(exposure.margin_used.checked_mul(Decimal::ONE_HUNDRED)?)?;
    if slack.is_sign_negative() {
        return Some(0);
    }
    let estimate = slack
        .checked_div(each.checked_mul(Decimal::ONE_HUNDRED)?)?
        .floor();
    let mut k = rust_decimal::prelude::ToPrimitive::to_u32(&estimate.min(Decimal::from(by_count)))
        .unwrap_or(0);
    // The quotient is rounded: checked the way the rules compare.
    while k > 0 && !within(k)? {
        k -= 1;
    }
    Some(k)
}

/// The rules' answer to an intent, before it is tied to the intent's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approved {
        qty: Decimal,
        leverage: Decimal,
        reduce_only: bool,
        /// The order's side: an entry's own, an exit's the opposite of the position held.
        side: Side,
    },
    Refused(Refusal),
}

/// Judges an intent. Exits are approved whenever there is a position to close (the kill
/// switch never blocks a reduction) and the intent's strategy owns it (the one-owner rule,
/// `shardbot_strategy::Holder`: another strategy's exit, or any strategy's exit of a
/// position opened by hand, is refused); entries must pass every limit, checked in a fixed
/// order so the reason names the first one broken.
pub fn decide(
    settings: &TradingSettings,
    book: &Book,
    intent: &OrderIntent,
    now_ms: TimestampMs,
) -> RiskDecision {
    let exposure = book.exposure(&intent.symbol);
    let intent_id = intent.intent_id.clone();
    if intent.action == IntentAction::Exit
        && let Some(p) = book
            .positions
            .get(&intent.symbol)
            .filter(|p| p.size > Decimal::ZERO)
        && p.strategy.as_deref() != Some(intent.strategy.as_str())
    {
        let owner = p
            .strategy
            .as_deref()
            .map_or_else(|| "no strategy (by hand)".to_owned(), |s| format!("{s:?}"));
        return RiskDecision::Refused {
            intent_id,
            refusal: Refusal {
                code: RefusalCode::NotOwner,
                reason: format!(
                    "{}'s {} position was opened by {owner}: {:?}'s exit does not close it \
                     (one owner per position)",
                    intent.symbol, p.side, intent.strategy
                ),
            },
        };
    }
    match judge(
        settings,
        &exposure,
        intent.symbol.as_str(),
        intent.action,
        intent.reference_price,
        now_ms,
    ) {
        Verdict::Approved {
            qty,
            leverage,
            reduce_only,
            side,
        } => RiskDecision::Approved {
            intent_id,
            qty,
            leverage,
            reduce_only,
            side,
        },
        Verdict::Refused(refusal) => RiskDecision::Refused { intent_id, refusal },
    }
}

fn refuse(code: RefusalCode, reason: String) -> Verdict {
    Verdict::Refused(Refusal { code, reason })
}

/// [`decide`] on the account's aggregates: the rules themselves, shared by the risk
/// manager and the backtester. `reference_price` sizes an entry.
pub fn judge(
    settings: &TradingSettings,
    exposure: &Exposure,
    symbol: &str,
    action: IntentAction,
    reference_price: Decimal,
    now_ms: TimestampMs,
) -> Verdict {
    let held = exposure.held;
    // One-way positions: an entry is sized the same whichever its side.
    let side = match action {
        IntentAction::Exit => {
            return match held {
                Some(p) => Verdict::Approved {
                    qty: p.size,
                    leverage: p.leverage,
                    reduce_only: true,
                    side: p.side.opposite(),
                },
                None => refuse(
                    RefusalCode::NoPosition,
                    format!("no open {symbol} position to exit"),
                ),
            };
        }
        IntentAction::Enter { side } => side,
    };
    match exposure.mode {
        TradingMode::Normal => {}
        TradingMode::Halted => {
            return refuse(
                RefusalCode::Halted,
                "trading is halted (kill switch): no new entries".into(),
            );
        }
        TradingMode::ReduceOnly => {
            return refuse(
                RefusalCode::ReduceOnly,
                "reduce-only (kill switch): only orders that reduce a position".into(),
            );
        }
    }
    if let Some(p) = held {
        return refuse(
            RefusalCode::PositionExists,
            format!(
                "one position per symbol: {symbol} is already {} {}",
                p.side, p.size
            ),
        );
    }
    let open = exposure.open_positions;
    if open >= settings.max_open_positions {
        return refuse(
            RefusalCode::MaxOpenPositions,
            format!(
                "{open} positions open, the limit is {} (max_open_positions)",
                settings.max_open_positions
            ),
        );
    }
    let Some(daily) = exposure.realised_today.checked_add(exposure.unrealised) else {
        return Verdict::Refused(out_of_range(format!(
            "today's PnL (realised {} + unrealised {})",
            exposure.realised_today, exposure.unrealised
        )));
    };
    if daily <= -settings.daily_loss_limit {
        return refuse(
            RefusalCode::DailyLossLimit,
            format!(
                "today's loss {} USDT (realised {} + unrealised {}) has reached the daily loss \
                 limit of {} USDT",
                -daily.round_dp(2),
                exposure.realised_today.round_dp(2),
                exposure.unrealised.round_dp(2),
                settings.daily_loss_limit
            ),
        );
    }
    if let Some(at) = exposure.stopped_out_at {
        let until = at.saturating_add(i64::from(settings.cooldown_after_stop_min) * 60_000);
        if now_ms < until {
            return refuse(
                RefusalCode::Cooldown,
                format!(
                    "{symbol} was stopped out {} min ago; cooldown is {} min \
                     (cooldown_after_stop_min)",
                    now_ms.saturating_sub(at) / 60_000,
                    settings.cooldown_after_stop_min
                ),
            );
        }
    }
    let (Some(margin), Some(equity)) = (
        settings.margin_per_trade(exposure.simulated_balance),
        exposure.simulated_balance.checked_add(exposure.unrealised),
    ) else {
        return Verdict::Refused(out_of_range(format!(
            "the margin of an entry on a simulated balance of {} USDT (unrealised {})",
            exposure.simulated_balance, exposure.unrealised
        )));
    };
    if not_positive(equity) || not_positive(margin) {
        return refuse(
            RefusalCode::MaxMarginUse,
            format!("no simulated equity left to trade with ({equity} USDT)"),
        );
    }
    let Some(used) = exposure.margin_used.checked_add(margin) else {
        return Verdict::Refused(out_of_range(format!(
            "margin in use {} USDT plus this entry's {margin} USDT",
            exposure.margin_used
        )));
    };
    // Compared exactly, without the division: `used / equity × 100 > limit` is
    // `used × 100 > limit × equity` for a positive equity. (A quotient rounded to 28
    // digits could land on the limit from above, and it is the slowest step of a
    // backtest's entry.) Products beyond `Decimal`'s range fall back to the quotient, and
    // a quotient beyond it is over any limit.
    let pct = || {
        used.checked_div(equity)
            .and_then(|q| q.checked_mul(Decimal::ONE_HUNDRED))
    };
    let over = match (
        used.checked_mul(Decimal::ONE_HUNDRED),
        settings.max_margin_use_pct.checked_mul(equity),
    ) {
        (Some(lhs), Some(rhs)) => lhs > rhs,
        _ => pct().is_none_or(|p| p > settings.max_margin_use_pct),
    };
    if over {
        let after = pct().map_or_else(|| "beyond range".to_string(), |p| p.round_dp(1).to_string());
        return refuse(
            RefusalCode::MaxMarginUse,
            format!(
                "margin use would be {after}% of simulated equity, the limit is {}% \
                 (max_margin_use_pct)",
                settings.max_margin_use_pct
            ),
        );
    }
    if not_positive(reference_price) {
        return refuse(
            RefusalCode::Exchange,
            format!("reference price {reference_price} is not positive"),
        );
    }
    // A leverage of exactly 1 (no leverage) multiplies to the same decimal, scale and all.
    let leveraged = if settings.leverage.scale() == 0 && settings.leverage.mantissa() == 1 {
        Some(margin)
    } else {
        margin.checked_mul(settings.leverage)
    };
    // The sizing's margin pays the entry's fee too: notional × (1/leverage + fee) = margin.
    let per_unit = if settings.fee_rate.is_zero() {
        Some(reference_price)
    } else {
        settings
            .fee_rate
            .checked_mul(settings.leverage)
            .and_then(|f| (Decimal::ONE + f).checked_mul(reference_price))
    };
    match leveraged.and_then(|l| per_unit.and_then(|p| l.checked_div(p))) {
        Some(qty) => Verdict::Approved {
            qty,
            leverage: settings.leverage,
            reduce_only: false,
            side,
        },
        None => Verdict::Refused(out_of_range(format!(
            "{margin} USDT × leverage {} at {reference_price}",
            settings.leverage
        ))),
    }
}

/// `d <= 0`, read off its sign (a comparison aligns the scales first).
fn not_positive(d: Decimal) -> bool {
    d.is_zero() || d.is_sign_negative()
}

/// `qty` rounded down to a multiple of `step` (above zero). A step of one unit of a
/// decimal place (every real qty step: 1, 0.1, 0.001, ...) with a positive `qty` is a
/// truncation, which costs a fraction of the division (a backtest does it at every entry).
/// Otherwise `qty − (qty mod step)`, one step lower for a negative remainder: the
/// quotient `qty / step` leaves `Decimal`'s range for huge quantities on fine steps, the
/// remainder never does. None only where even that cannot be represented.
fn floor_to_step(qty: Decimal, step: Decimal) -> Option<Decimal> {
    let unit = step.normalize();
    if unit.mantissa() == 1 && qty.is_sign_positive() {
        return Some(qty.trunc_with_scale(unit.scale()));
    }
    let rem = qty.checked_rem(step)?;
    let down = qty.checked_sub(rem)?;
    let down = if rem.is_sign_negative() && !rem.is_zero() {
        down.checked_sub(step)?
    } else {
        down
    };
    // Beyond 28 significant digits the subtraction rounds, off the grid: not a quantity.
    down.checked_rem(step)?.is_zero().then_some(down)
}

fn out_of_range(what: String) -> Refusal {
    Refusal {
        code: RefusalCode::OutOfRange,
        reason: format!("{what}: beyond the range the sizing can compute exactly"),
    }
}

/// A quantity rounded down to the instrument's qty step, or the refusal when it falls
/// below the minimum quantity or the minimum notional at `price`. Never panics: any qty,
/// price or step (a user's or the exchange's) gives a quantity or a refusal with its
/// reason (property-tested over the whole range of `Decimal`).
pub fn round_qty(qty: Decimal, price: Decimal, inst: &Instrument) -> Result<Decimal, Refusal> {
    let step = inst.qty_step;
    let rounded = if step > Decimal::ZERO {
        floor_to_step(qty, step)
            .ok_or_else(|| out_of_range(format!("{} {qty} on the qty step {step}", inst.symbol)))?
            .normalize()
    } else {
        qty
    };
    let rounded = rounded.min(inst.max_market_order_qty.max(inst.min_order_qty));
    if not_positive(rounded) || rounded < inst.min_order_qty {
        return Err(Refusal {
            code: RefusalCode::BelowMinQty,
            reason: format!(
                "{} {qty} rounds to {rounded} on the qty step {step}, below the minimum order \
                 quantity {}",
                inst.symbol, inst.min_order_qty
            ),
        });
    }
    // Without a minimum (a market of a bare CSV file) only a negative price falls below
    // it: the product is not needed. A product beyond `Decimal`'s range is far above any
    // minimum for a positive price.
    let below = if inst.min_notional.is_zero() {
        price.is_sign_negative() && !price.is_zero()
    } else {
        match rounded.checked_mul(price) {
            Some(notional) => notional < inst.min_notional,
            None => price.is_sign_negative(),
        }
    };
    if below {
        let notional = rounded
            .checked_mul(price)
            .map_or_else(|| "beyond range".to_string(), |n| n.round_dp(4).to_string());
        return Err(Refusal {
            code: RefusalCode::BelowMinNotional,
            reason: format!(
                "{} {rounded} at {price} is {notional} USDT, below the minimum order value {} USDT",
                inst.symbol, inst.min_notional
            ),
        });
    }
    Ok(rounded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;
    use rust_decimal_macros::dec;
    use shardbot_protocol::Interval;

    use crate::test_settings as settings;

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    fn intent(symbol: &str, action: IntentAction) -> OrderIntent {
        OrderIntent::new(
            "trend_following",
            sym(symbol),
            Interval::M5,
            1_000_000,
            action,
            dec!(100),
            None,
            None,
            0,
        )
    }

    fn position(symbol: &str, size: Decimal, upnl: Decimal) -> Position {
        Position {
            symbol: sym(symbol),
            side: Side::Buy,
            size,
            avg_price: dec!(100),
            mark_price: None,
            leverage: dec!(2),
            unrealised_pnl: upnl,
            liq_price: None,
            stop_loss: None,
            take_profit: None,
            updated_ms: 0,
            strategy: Some("trend_following".into()),
        }
    }

    #[rstest]
    #[case::its_owner(Some("trend_following"), "trend_following", None)]
    #[case::another_strategy(
        Some("mean_reversion"),
        "trend_following",
        Some(RefusalCode::NotOwner)
    )]
    #[case::opened_by_hand(None, "trend_following", Some(RefusalCode::NotOwner))]
    fn only_the_owner_exits_a_position(
        #[case] owner: Option<&str>,
        #[case] exiting: &str,
        #[case] want: Option<RefusalCode>,
    ) {
        let mut b = book(&[("BTCUSDT", dec!(2), dec!(0))]);
        if let Some(p) = b.positions.get_mut(&sym("BTCUSDT")) {
            p.strategy = owner.map(str::to_owned);
        }
        let mut exit = intent("BTCUSDT", IntentAction::Exit);
        exit.strategy = exiting.to_owned();
        match (decide(&settings(), &b, &exit, 0), want) {
            (RiskDecision::Approved { qty, .. }, None) => assert_eq!(qty, dec!(2)),
            (RiskDecision::Refused { refusal, .. }, Some(code)) => {
                assert_eq!(refusal.code, code);
                assert!(
                    refusal.reason.contains("one owner per position"),
                    "{}",
                    refusal.reason
                );
            }
            (got, _) => panic!("{got:?}"),
        }
    }

    fn book(positions: &[(&str, Decimal, Decimal)]) -> Book {
        Book {
            positions: positions
                .iter()
                .map(|(s, q, u)| (sym(s), position(s, *q, *u)))
                .collect(),
            simulated_balance: dec!(1000),
            ..Book::default()
        }
    }

    const BUY: IntentAction = IntentAction::Enter { side: Side::Buy };

    fn code(d: &RiskDecision) -> Option<RefusalCode> {
        match d {
            RiskDecision::Refused { refusal, .. } => Some(refusal.code),
            RiskDecision::Approved { .. } => None,
        }
    }

    fn exposure(open: u32, margin_used: Decimal, mode: TradingMode, daily: Decimal) -> Exposure {
        Exposure {
            held: None,
            open_positions: open,
            unrealised: Decimal::ZERO,
            margin_used,
            simulated_balance: dec!(1000),
            realised_today: daily,
            mode,
            stopped_out_at: None,
        }
    }

    /// Fixed 50 USDT a trade on 1,000 at up to 90 % margin use: 18 entries' margin.
    #[rstest]
    #[case::the_count_binds(10, 7, dec!(0), TradingMode::Normal, dec!(0), Some(3))]
    #[case::the_margin_binds(200, 0, dec!(0), TradingMode::Normal, dec!(0), Some(17))]
    #[case::margin_in_use(200, 5, dec!(400), TradingMode::Normal, dec!(0), Some(9))]
    #[case::no_count_left(10, 10, dec!(0), TradingMode::Normal, dec!(0), Some(0))]
    #[case::margin_exhausted(200, 18, dec!(900), TradingMode::Normal, dec!(0), Some(0))]
    #[case::halted(200, 0, dec!(0), TradingMode::Halted, dec!(0), Some(0))]
    #[case::reduce_only(200, 0, dec!(0), TradingMode::ReduceOnly, dec!(0), Some(0))]
    #[case::daily_loss_reached(200, 0, dec!(0), TradingMode::Normal, dec!(-100), Some(0))]
    fn the_room_for_a_close(
        #[case] max_open: u32,
        #[case] open: u32,
        #[case] margin_used: Decimal,
        #[case] mode: TradingMode,
        #[case] daily: Decimal,
        #[case] want: Option<u32>,
    ) {
        let s = TradingSettings {
            sizing: Sizing::Fixed(dec!(50)),
            max_open_positions: max_open,
            max_margin_use_pct: dec!(90),
            daily_loss_limit: dec!(100),
            ..settings()
        };
        assert_eq!(room(&s, &exposure(open, margin_used, mode, daily)), want);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The room is sound: that many entries, judged one after another and booked as
        /// the ledger books an approval, are all approved, whatever their prices.
        #[test]
        fn the_room_never_promises_an_entry_the_rules_refuse(
            balance in 1u64..1_000_000,
            pct_sizing in proptest::option::of(1u32..=100),
            fixed in 1u64..5_000,
            leverage in 1u32..=20,
            fee_bp in proptest::sample::select(vec![0u32, 2, 55]),
            max_pct in 1u32..=100,
            max_open in 1u32..=300,
            open in 0u32..300,
            used_frac in 0u32..=100,
            prices in proptest::collection::vec(1u64..10_000_000, 300),
            price_scale in 0u32..=8,
        ) {
            let settings = TradingSettings {
                sizing: pct_sizing.map_or(Sizing::Fixed(Decimal::from(fixed)), |p| Sizing::Percent(Decimal::from(p))),
                leverage: Decimal::from(leverage),
                fee_rate: Decimal::new(i64::from(fee_bp), 4),
                max_margin_use_pct: Decimal::from(max_pct),
                max_open_positions: max_open,
                daily_loss_limit: dec!(1000000000),
                ..settings()
            };
            let balance = Decimal::from(balance);
            let mut tally = Tally {
                open,
                margin: margin_units(balance * Decimal::from(used_frac) / dec!(100)),
                unrealised: 0,
            };
            let exposure = |t: &Tally| t.exposure(None, balance, Decimal::ZERO, TradingMode::Normal, None);
            let r = room(&settings, &exposure(&tally)).unwrap();
            for (i, p) in prices.iter().take(r as usize).enumerate() {
                let price = Decimal::new(i64::try_from(*p).unwrap(), price_scale);
                match judge(&settings, &exposure(&tally), "BTCUSDT", BUY, price, 0) {
                    Verdict::Approved { qty, leverage, .. } => {
                        tally.approve(qty, price, leverage);
                    }
                    Verdict::Refused(why) => proptest::prop_assert!(false, "entry {} of a room of {r} refused: {}", i + 1, why.reason),
                }
            }
        }
    }

    proptest::proptest! {
        /// The truncation equals the general rounding, value and decimals alike.
        #[test]
        fn flooring_to_a_step_truncates_exactly_as_dividing(
            m in -(1i128 << 64)..(1i128 << 64),
            scale in 0u32..=28,
            step in proptest::sample::select(vec![dec!(1), dec!(0.1), dec!(0.001), dec!(0.00000001), dec!(0.0010), dec!(10), dec!(0.5), dec!(0.025)]),
        ) {
            let qty = Decimal::from_i128_with_scale(m, scale);
            let want = ((qty / step).floor() * step).normalize();
            let got = floor_to_step(qty, step).unwrap().normalize();
            proptest::prop_assert_eq!((got, got.scale()), (want, want.scale()));
        }
    }

    /// Any decimal at all: every mantissa of 96 bits, sign and scale.
    fn any_decimal() -> impl proptest::strategy::Strategy<Value = Decimal> {
        use proptest::prelude::*;
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            0u32..=28,
        )
            .prop_map(|(lo, mid, hi, neg, scale)| Decimal::from_parts(lo, mid, hi, neg, scale))
    }

    /// Decimals where arithmetic overflows: near the range's ends and near zero, as well
    /// as ordinary ones.
    fn edgy_decimal() -> impl proptest::strategy::Strategy<Value = Decimal> {
        use proptest::prelude::*;
        prop_oneof![
            any_decimal(),
            proptest::sample::select(vec![
                Decimal::MAX,
                Decimal::MIN,
                Decimal::ZERO,
                Decimal::new(1, 28),
                Decimal::new(-1, 28),
                dec!(0.025),
                dec!(0.5),
                dec!(7),
                dec!(1e20),
            ]),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// round_qty never panics: a quantity on the grid within the limits, or a
        /// refusal with a reason.
        #[test]
        fn round_qty_answers_every_input(
            qty in edgy_decimal(),
            price in edgy_decimal(),
            step in edgy_decimal(),
            min_qty in edgy_decimal(),
            max_qty in edgy_decimal(),
            min_notional in edgy_decimal(),
        ) {
            let inst = Instrument {
                qty_step: step,
                min_order_qty: min_qty,
                max_market_order_qty: max_qty,
                min_notional,
                ..inst()
            };
            match round_qty(qty, price, &inst) {
                Ok(q) => {
                    proptest::prop_assert!(q > Decimal::ZERO && q >= min_qty);
                    proptest::prop_assert!(q <= qty || q <= max_qty.max(min_qty));
                    if step > Decimal::ZERO && q < max_qty.max(min_qty) {
                        proptest::prop_assert!((q % step).is_zero(), "{q} off the step {step}");
                    }
                }
                Err(r) => proptest::prop_assert!(r.reason.len() > 20, "{}", r.reason),
            }
        }

        /// The rules never panic on any balance, PnL, margin, price or limit: an approval
        /// with a positive quantity, or a refusal with a reason.
        #[test]
        fn judge_answers_every_input(
            balance in edgy_decimal(),
            unrealised in edgy_decimal(),
            realised in edgy_decimal(),
            margin_used in edgy_decimal(),
            price in edgy_decimal(),
            pct in edgy_decimal(),
            fixed in proptest::option::of(edgy_decimal()),
            leverage in edgy_decimal(),
            loss_limit in edgy_decimal(),
            stopped in proptest::option::of(proptest::prelude::any::<i64>()),
            now in proptest::prelude::any::<i64>(),
        ) {
            let settings = TradingSettings {
                sizing: match fixed {
                    Some(f) => Sizing::Fixed(f),
                    None => Sizing::Percent(pct.abs().min(dec!(100))),
                },
                leverage,
                daily_loss_limit: loss_limit,
                max_margin_use_pct: pct,
                max_open_positions: 10,
                ..settings()
            };
            let exposure = Exposure {
                held: None,
                open_positions: 0,
                unrealised,
                margin_used,
                simulated_balance: balance,
                realised_today: realised,
                mode: TradingMode::Normal,
                stopped_out_at: stopped,
            };
            match judge(&settings, &exposure, "BTCUSDT", BUY, price, now) {
                Verdict::Approved { qty, .. } => {
                    proptest::prop_assert!(price > Decimal::ZERO);
                    let _ = round_qty(qty, price, &inst());
                }
                Verdict::Refused(r) => proptest::prop_assert!(r.reason.len() > 20, "{}", r.reason),
            }
        }
    }

    #[test]
    fn huge_quantities_on_fine_steps_are_refused_not_a_panic() {
        // Was: "Division overflowed" from (qty / step).floor() * step.
        let coarse = Instrument {
            qty_step: dec!(0.025),
            max_market_order_qty: Decimal::MAX,
            ..inst()
        };
        assert_eq!(
            round_qty(Decimal::MAX, dec!(50000), &coarse),
            Ok(Decimal::MAX)
        );
        assert_eq!(
            round_qty(dec!(700000000000000000000000000.01), dec!(50000), &coarse),
            Ok(dec!(700000000000000000000000000))
        );
        let fine = Instrument {
            qty_step: Decimal::new(3, 28),
            ..inst()
        };
        assert_eq!(
            round_qty(dec!(7.0000000000000000000000000001), dec!(50000), &fine),
            Ok(dec!(6.9999999999999999999999999999))
        );
        // 22 digits on a step of 20 digits: no multiple of the step within 28 digits.
        let odd = Instrument {
            qty_step: dec!(553402322211.28654848),
            max_market_order_qty: Decimal::MAX,
            ..inst()
        };
        assert_eq!(
            round_qty(dec!(6179659264323764909885.8089677), dec!(1), &odd).map_err(|r| r.code),
            Err(RefusalCode::OutOfRange)
        );
    }

    /// A fill of `closed` (or of 0.5 when it closes nothing).
    fn close_fill(symbol: &str, side: Side, closed: Decimal, price: Decimal, fee: Decimal) -> Fill {
        let qty = if closed.is_zero() { dec!(0.5) } else { closed };
        Fill {
            exec_id: "e1".into(),
            order_id: "o1".into(),
            order_link_id: "sb-1".into(),
            symbol: sym(symbol),
            side,
            exec_qty: qty,
            exec_price: price,
            exec_value: qty * price,
            exec_fee: fee,
            fee_rate: None,
            is_maker: false,
            closed_size: closed,
            exec_time_ms: 0,
            exec_type: "Trade".into(),
            stop_order_type: None,
        }
    }

    /// A closing fill moves the balance as the wallet does (gross PnL at the position's
    /// average price, 100 here, less the fill's fee) and shrinks the position.
    #[rstest]
    // long 1.5 @ 100 sold at 90: −15 − 0.05
    #[case::long_closed_at_a_loss(Side::Buy, dec!(1.5), Side::Sell, dec!(1.5), dec!(90), dec!(984.95), None)]
    // short 1.5 @ 100 bought back at 90: +15 − 0.05
    #[case::short_closed_at_a_gain(Side::Sell, dec!(1.5), Side::Buy, dec!(1.5), dec!(90), dec!(1014.95), None)]
    // half of it: the rest stays open
    #[case::part_of_it(Side::Buy, dec!(1.5), Side::Sell, dec!(0.5), dec!(110), dec!(1004.95), Some(dec!(1.0)))]
    // a fill on the position's own side (closing nothing) adds: only its fee is paid
    #[case::an_add(Side::Buy, dec!(1.5), Side::Buy, dec!(0), dec!(110), dec!(999.95), Some(dec!(2.0)))]
    fn a_closing_fill_is_booked_at_once(
        #[case] held: Side,
        #[case] size: Decimal,
        #[case] fill_side: Side,
        #[case] closed: Decimal,
        #[case] price: Decimal,
        #[case] balance: Decimal,
        #[case] left: Option<Decimal>,
    ) {
        let mut b = book(&[("BTCUSDT", size, dec!(0))]);
        b.positions.get_mut(&sym("BTCUSDT")).unwrap().side = held;
        b.positions.get_mut(&sym("BTCUSDT")).unwrap().liq_price = Some(dec!(51));
        let booked = b.book_fill(
            &close_fill("BTCUSDT", fill_side, closed, price, dec!(0.05)),
            true,
        );
        assert!(booked);
        assert_eq!(b.simulated_balance, balance);
        let p = b.positions.get(&sym("BTCUSDT"));
        assert_eq!(p.map(|p| p.size), left);
        // The exchange's liquidation price was of the size before the fill.
        assert!(p.is_none_or(|p| p.liq_price.is_none()), "{p:?}");
        if fill_side == held {
            // an add: the fee paid, the average price weighted (1.5 @ 100 + 0.5 @ 110)
            assert_eq!(p.unwrap().avg_price, dec!(102.5));
        }
        // Nothing to close, or a position the book only guessed: not booked.
        assert!(!book(&[]).book_fill(
            &close_fill("BTCUSDT", Side::Sell, dec!(1), dec!(90), dec!(0)),
            true
        ));
        let mut guessed = book(&[("BTCUSDT", dec!(1), dec!(0))]);
        assert!(!guessed.book_fill(
            &close_fill("BTCUSDT", Side::Sell, dec!(1), dec!(90), dec!(0)),
            false
        ));
        assert_eq!(guessed.simulated_balance, dec!(1000));
    }

    /// An opening fill replaces an approval's guess with the fill's numbers and pays its fee;
    /// a funding payment moves the balance.
    #[test]
    fn opening_fills_and_funding_are_booked() {
        let mut b = book(&[("BTCUSDT", dec!(1.23456), dec!(0))]); // the approval's guess
        let mut f = close_fill("BTCUSDT", Side::Buy, dec!(1.2), dec!(101), dec!(0.0666));
        f.closed_size = dec!(0);
        assert!(b.book_fill(&f, false));
        let p = &b.positions[&sym("BTCUSDT")];
        assert_eq!(
            (p.size, p.avg_price, p.side),
            (dec!(1.2), dec!(101), Side::Buy)
        );
        assert_eq!(b.simulated_balance, dec!(999.9334));
        let mut funding = f.clone();
        funding.exec_type = "Funding".into();
        funding.exec_fee = dec!(0.0334);
        assert!(b.book_fill(&funding, true));
        assert_eq!(b.simulated_balance, dec!(999.9));
    }

    #[test]
    fn sizes_from_the_simulated_balance() {
        // 10 % of 1,000 = 100 USDT margin, ×2 leverage = 200 USDT at 100 = 2 contracts
        let d = decide(&settings(), &book(&[]), &intent("BTCUSDT", BUY), 0);
        assert_eq!(
            d,
            RiskDecision::Approved {
                intent_id: intent("BTCUSDT", BUY).intent_id,
                qty: dec!(2),
                leverage: dec!(2),
                reduce_only: false,
                side: Side::Buy,
            }
        );
        let fixed = TradingSettings {
            sizing: Sizing::Fixed(dec!(25)),
            ..settings()
        };
        let RiskDecision::Approved { qty, .. } =
            decide(&fixed, &book(&[]), &intent("BTCUSDT", BUY), 0)
        else {
            panic!()
        };
        assert_eq!(qty, dec!(0.5));
    }

    /// The sizing's margin pays the entry's taker fee too: margin + fee = the sizing.
    #[rstest]
    // all in, no leverage: 1,000 / (100 × 1.00055)
    #[case::all_in(dec!(100), dec!(1), dec!(0.00055), dec!(1000))]
    // 10 % at 2x: 100 margin → notional 200 / 1.0011
    #[case::leveraged(dec!(10), dec!(2), dec!(0.00055), dec!(100))]
    #[case::no_fee(dec!(10), dec!(2), dec!(0), dec!(100))]
    fn margin_and_fee_make_the_sizing(
        #[case] pct: Decimal,
        #[case] leverage: Decimal,
        #[case] fee: Decimal,
        #[case] budget: Decimal,
    ) {
        let s = TradingSettings {
            sizing: Sizing::Percent(pct),
            leverage,
            fee_rate: fee,
            max_margin_use_pct: dec!(100),
            ..settings()
        };
        let RiskDecision::Approved { qty, .. } = decide(&s, &book(&[]), &intent("BTCUSDT", BUY), 0)
        else {
            panic!()
        };
        let notional = qty * dec!(100);
        let cost = notional / leverage + notional * fee;
        assert!(
            (cost - budget).abs() < dec!(0.000000001),
            "{qty}: costs {cost}, not {budget}"
        );
    }

    /// Each limit refuses the entry that would break it, and nothing else does.
    #[rstest]
    #[case::halted(TradingMode::Halted, &[], dec!(0), None, Some(RefusalCode::Halted))]
    #[case::reduce_only(TradingMode::ReduceOnly, &[], dec!(0), None, Some(RefusalCode::ReduceOnly))]
    #[case::one_per_symbol(TradingMode::Normal, &[("BTCUSDT", dec!(1), dec!(0))], dec!(0), None, Some(RefusalCode::PositionExists))]
    #[case::max_positions(TradingMode::Normal, &[("A", dec!(0.1), dec!(0)), ("B", dec!(0.1), dec!(0)), ("C", dec!(0.1), dec!(0))], dec!(0), None, Some(RefusalCode::MaxOpenPositions))]
    #[case::below_max_positions(TradingMode::Normal, &[("A", dec!(0.1), dec!(0)), ("B", dec!(0.1), dec!(0))], dec!(0), None, None)]
    #[case::daily_loss_realised(TradingMode::Normal, &[], dec!(-50), None, Some(RefusalCode::DailyLossLimit))]
    #[case::daily_loss_with_unrealised(TradingMode::Normal, &[("A", dec!(0.1), dec!(-20))], dec!(-30), None, Some(RefusalCode::DailyLossLimit))]
    #[case::daily_loss_not_yet(TradingMode::Normal, &[("A", dec!(0.1), dec!(-20))], dec!(-29.99), None, None)]
    // margin: A 5 @ 100 / 2x = 250, B 3 → 150 (3.1 → 155); the new trade 100; equity 1,000
    #[case::margin_at_the_limit(TradingMode::Normal, &[("A", dec!(5), dec!(0)), ("B", dec!(3), dec!(0))], dec!(0), None, None)]
    #[case::margin_over(TradingMode::Normal, &[("A", dec!(5), dec!(0)), ("B", dec!(3.1), dec!(0))], dec!(0), None, Some(RefusalCode::MaxMarginUse))]
    #[case::cooldown(TradingMode::Normal, &[], dec!(0), Some(29), Some(RefusalCode::Cooldown))]
    #[case::cooldown_over(TradingMode::Normal, &[], dec!(0), Some(30), None)]
    fn limits(
        #[case] mode: TradingMode,
        #[case] open: &[(&str, Decimal, Decimal)],
        #[case] realised: Decimal,
        #[case] stopped_min_ago: Option<i64>,
        #[case] want: Option<RefusalCode>,
    ) {
        let mut b = book(open);
        b.mode = mode;
        b.realised_today = realised;
        let now = 100 * 60_000;
        if let Some(m) = stopped_min_ago {
            b.stopped_out_at.insert(sym("BTCUSDT"), now - m * 60_000);
        }
        let d = decide(&settings(), &b, &intent("BTCUSDT", BUY), now);
        assert_eq!(code(&d), want, "{d:?}");
        if let RiskDecision::Refused { refusal, .. } = d {
            assert!(
                refusal.reason.len() > 20,
                "a reason a user can act on: {}",
                refusal.reason
            );
        }
    }

    /// The margin limit is compared exactly: a third of the equity is over a limit of
    /// 33.33333333333333333333333333 % (which the 28-digit quotient equals) and under the
    /// next larger one.
    #[rstest]
    #[case::a_third_over_its_rounding(dec!(33.33333333333333333333333333), Some(RefusalCode::MaxMarginUse))]
    #[case::a_third_under_a_finer_limit(dec!(33.33333333333333333333333334), None)]
    #[case::just_over(dec!(33.333333333333333333333333), Some(RefusalCode::MaxMarginUse))]
    fn the_margin_limit_is_compared_exactly(
        #[case] limit: Decimal,
        #[case] want: Option<RefusalCode>,
    ) {
        let settings = TradingSettings {
            simulated_balance: dec!(3),
            sizing: Sizing::Fixed(dec!(1)),
            max_margin_use_pct: limit,
            ..settings()
        };
        let exposure = Exposure {
            held: None,
            open_positions: 0,
            unrealised: dec!(0),
            margin_used: dec!(0),
            simulated_balance: dec!(3),
            realised_today: dec!(0),
            mode: TradingMode::Normal,
            stopped_out_at: None,
        };
        let v = judge(&settings, &exposure, "BTCUSDT", BUY, dec!(100), 0);
        let got = match &v {
            Verdict::Refused(r) => Some(r.code),
            Verdict::Approved { .. } => None,
        };
        assert_eq!(got, want, "{v:?}");
    }

    #[rstest]
    #[case::normal(TradingMode::Normal)]
    #[case::halted(TradingMode::Halted)]
    #[case::reduce_only(TradingMode::ReduceOnly)]
    fn exits_close_the_whole_position_in_every_mode(#[case] mode: TradingMode) {
        let mut b = book(&[("BTCUSDT", dec!(1.5), dec!(-100))]);
        b.mode = mode;
        b.realised_today = dec!(-1000);
        let d = decide(&settings(), &b, &intent("BTCUSDT", IntentAction::Exit), 0);
        assert!(
            matches!(d, RiskDecision::Approved { qty, reduce_only: true, side: Side::Sell, .. } if qty == dec!(1.5)),
            "the whole long closed by a sell: {d:?}"
        );
        let mut short = b.clone();
        if let Some(p) = short.positions.get_mut(&sym("BTCUSDT")) {
            p.side = Side::Sell;
        }
        let d = decide(
            &settings(),
            &short,
            &intent("BTCUSDT", IntentAction::Exit),
            0,
        );
        assert!(
            matches!(
                d,
                RiskDecision::Approved {
                    side: Side::Buy,
                    ..
                }
            ),
            "a short is closed by a buy: {d:?}"
        );
        let none = decide(
            &settings(),
            &book(&[]),
            &intent("BTCUSDT", IntentAction::Exit),
            0,
        );
        assert_eq!(code(&none), Some(RefusalCode::NoPosition));
    }

    fn inst() -> Instrument {
        Instrument {
            symbol: sym("BTCUSDT"),
            tick_size: dec!(0.1),
            qty_step: dec!(0.001),
            min_order_qty: dec!(0.001),
            max_market_order_qty: dec!(100),
            min_notional: dec!(5),
            max_leverage: dec!(100),
            funding_interval_min: 480,
        }
    }

    #[rstest]
    #[case(dec!(0.0123456), dec!(50000), Ok(dec!(0.012)))]
    #[case(dec!(250), dec!(50000), Ok(dec!(100)))]
    #[case(dec!(0.0009), dec!(50000), Err(RefusalCode::BelowMinQty))]
    #[case(dec!(0.001), dec!(4000), Err(RefusalCode::BelowMinNotional))]
    fn quantities_on_the_grid(
        #[case] qty: Decimal,
        #[case] price: Decimal,
        #[case] want: Result<Decimal, RefusalCode>,
    ) {
        assert_eq!(round_qty(qty, price, &inst()).map_err(|r| r.code), want);
    }

    /// A close's intents are judged in one order whatever order they arrived in: exits
    /// first, then entries by symbol, then strategy.
    #[test]
    fn a_closes_intents_are_judged_in_one_order_whatever_their_arrival() {
        let buy = IntentAction::Enter { side: Side::Buy };
        let mut mr = intent("ETHUSDT", buy);
        mr.strategy = "mean_reversion".into();
        let arrived = vec![
            intent("SOLUSDT", buy),
            intent("ETHUSDT", buy),
            intent("XRPUSDT", IntentAction::Exit),
            mr,
            intent("ADAUSDT", buy),
            intent("BTCUSDT", IntentAction::Exit),
        ];
        let order = |v: &[OrderIntent]| -> Vec<(String, String, bool)> {
            v.iter()
                .map(|i| {
                    (
                        i.symbol.as_str().to_owned(),
                        i.strategy.clone(),
                        i.action == IntentAction::Exit,
                    )
                })
                .collect()
        };
        let want = vec![
            ("BTCUSDT".to_owned(), "trend_following".to_owned(), true),
            ("XRPUSDT".to_owned(), "trend_following".to_owned(), true),
            ("ADAUSDT".to_owned(), "trend_following".to_owned(), false),
            ("ETHUSDT".to_owned(), "mean_reversion".to_owned(), false),
            ("ETHUSDT".to_owned(), "trend_following".to_owned(), false),
            ("SOLUSDT".to_owned(), "trend_following".to_owned(), false),
        ];
        for turn in 0..arrived.len() {
            let mut v = arrived.clone();
            v.rotate_left(turn);
            if turn % 2 == 1 {
                v.reverse();
            }
            judging_order(&mut v);
            assert_eq!(order(&v), want, "arrival turned {turn}");
        }
    }
}

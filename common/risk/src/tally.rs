//! The tally: the aggregates the rules judge an account by (positions open, margin held,
//! unrealised PnL), kept in integers of a fixed scale, and the booking of an approval as
//! an open position until its fill. One home for the risk manager's ledger (a [`Book`]'s
//! exposure is the tally of its positions, approvals' provisional ones included) and for
//! the backtester (which keeps a tally up to date as its positions open, fill and close,
//! so a judgement costs the same with 1 or 500 positions open). Both therefore count an
//! approval the same way (its unrounded quantity at the intent's reference price, at the
//! settings' leverage) and sum margins with the same rounding: an all-in entry (100 % of
//! the margin limit) is approved or refused alike in both.
//!
//! Integers, so taking one position out leaves exactly the sum of the others: a running
//! `Decimal` total kept 28-digit rounding residues and a running `f64` one drifted, and an
//! all-in entry was refused for either.
//!
//! [`Book`]: crate::Book

use rust_decimal::Decimal;
use shardbot_protocol::{Position, TimestampMs, TradingMode, on_scale};

use crate::{Exposure, Held};

/// Decimals of the margin sums.
pub const MARGIN_SCALE: u32 = 12;
/// Decimals of the unrealised PnL sums (a position's PnL is marked to these).
pub const PNL_SCALE: u32 = 8;

/// A margin in units of 10^-[`MARGIN_SCALE`] USDT (rounded half even), the resolution the
/// risk rules' margin sums are kept at.
pub fn margin_units(m: Decimal) -> i128 {
    to_units(m, MARGIN_SCALE)
}

/// An amount in units of 10^-[`PNL_SCALE`] USDT (rounded half even).
pub fn pnl_units(x: Decimal) -> i128 {
    to_units(x, PNL_SCALE)
}

fn to_units(x: Decimal, scale: u32) -> i128 {
    // Out of range only beyond 10^26 USDT: then the largest Decimal mantissa stands for
    // it (sums of such stay far inside i128).
    const BEYOND: i128 = (1 << 96) - 1;
    on_scale(x.mantissa(), x.scale(), scale).unwrap_or(BEYOND * x.mantissa().signum())
}

/// The margin a position of `notional` holds (`notional / leverage`, a leverage under 1
/// counting as 1), in [`margin_units`]. Without leverage nothing is divided: the all-in
/// backtests pay no division at every fill.
pub fn margin_of(notional: Decimal, leverage: Decimal) -> i128 {
    margin_units(if leverage <= Decimal::ONE {
        notional
    } else {
        notional / leverage
    })
}

/// An integer sum of `10^-scale` units as the `Decimal` the risk rules read (the largest
/// one beyond its range).
pub fn from_units(x: i128, scale: u32) -> Decimal {
    Decimal::try_from_i128_with_scale(x, scale).unwrap_or(if x < 0 {
        Decimal::MIN
    } else {
        Decimal::MAX
    })
}

/// The rules' aggregates of an account: its positions and the approvals counted open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Positions open and approvals not yet filled.
    pub open: u32,
    /// Their margin, in [`margin_units`].
    pub margin: i128,
    /// The open positions' unrealised PnL, in [`pnl_units`].
    pub unrealised: i128,
}

impl Tally {
    /// The tally of a book's positions (size above zero): each holds its size at its
    /// average price, at its leverage, and its unrealised PnL. An approval's provisional
    /// position (its quantity at the reference price) holds what [`Tally::approve`] holds.
    pub fn of<'a>(positions: impl IntoIterator<Item = &'a Position>) -> Tally {
        let mut t = Tally::default();
        for p in positions.into_iter().filter(|p| p.size > Decimal::ZERO) {
            t.approve(p.size, p.avg_price, p.leverage);
            t.unrealised += pnl_units(p.unrealised_pnl);
        }
        t
    }

    /// Books an approved entry as open from its approval: `qty` (unrounded, as approved)
    /// at `price` (the intent's reference price) and `leverage`. Returns the margin it
    /// holds, to be given back by [`Tally::fill`] or [`Tally::release`].
    #[inline]
    pub fn approve(&mut self, qty: Decimal, price: Decimal, leverage: Decimal) -> i128 {
        let margin = margin_of(qty * price, leverage);
        self.open += 1;
        self.margin += margin;
        margin
    }

    /// An approval (holding `approved`) filled: the position holds its filled quantity
    /// at its fill price from now on. Returns that margin.
    #[inline]
    pub fn fill(
        &mut self,
        approved: i128,
        qty: Decimal,
        price: Decimal,
        leverage: Decimal,
    ) -> i128 {
        let margin = margin_of(qty * price, leverage);
        self.margin += margin - approved;
        margin
    }

    /// A position closed, or an approval that will not fill: what it held is free.
    #[inline]
    pub fn release(&mut self, margin: i128, unrealised: i128) {
        self.open -= 1;
        self.margin -= margin;
        self.unrealised -= unrealised;
    }

    /// A position marked again: its unrealised PnL went from `before` to `after`.
    #[inline]
    pub fn mark(&mut self, before: i128, after: i128) {
        self.unrealised += after - before;
    }

    /// What the rules judge an intent against, on this tally.
    pub fn exposure(
        &self,
        held: Option<Held>,
        simulated_balance: Decimal,
        realised_today: Decimal,
        mode: TradingMode,
        stopped_out_at: Option<TimestampMs>,
    ) -> Exposure {
        Exposure {
            held,
            open_positions: self.open,
            unrealised: from_units(self.unrealised, PNL_SCALE),
            margin_used: from_units(self.margin, MARGIN_SCALE),
            simulated_balance,
            realised_today,
            mode,
            stopped_out_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use rust_decimal_macros::dec;
    use shardbot_protocol::{Side, Symbol};

    fn position(size: Decimal, price: Decimal, leverage: Decimal, pnl: Decimal) -> Position {
        Position {
            symbol: Symbol::new("BTCUSDT").unwrap(),
            side: Side::Buy,
            size,
            avg_price: price,
            mark_price: None,
            leverage,
            unrealised_pnl: pnl,
            liq_price: None,
            stop_loss: None,
            take_profit: None,
            updated_ms: 0,
            strategy: None,
        }
    }

    #[rstest]
    #[case::plain(dec!(2), dec!(100), dec!(1), dec!(200))]
    #[case::leveraged(dec!(2), dec!(100), dec!(4), dec!(50))]
    #[case::leverage_under_one_counts_one(dec!(2), dec!(100), dec!(0.5), dec!(200))]
    #[case::a_third_rounds_half_even(dec!(1), dec!(1), dec!(3), dec!(0.333333333333))]
    fn an_approval_holds_its_notional_over_leverage(
        #[case] qty: Decimal,
        #[case] price: Decimal,
        #[case] leverage: Decimal,
        #[case] margin: Decimal,
    ) {
        let mut t = Tally::default();
        let held = t.approve(qty, price, leverage);
        assert_eq!(from_units(held, MARGIN_SCALE), margin);
        assert_eq!((t.open, t.margin), (1, held));
    }

    /// Approve, fill at another price, mark, close: the tally ends where it began, and
    /// in between holds exactly what the position holds.
    #[test]
    fn an_approval_filled_and_closed_leaves_nothing_behind() {
        let mut t = Tally::default();
        let other = t.approve(dec!(1), dec!(3), dec!(7));
        let before = t;
        let held = t.approve(dec!(0.37), dec!(101.13), dec!(3));
        let filled = t.fill(held, dec!(0.37), dec!(101.2), dec!(3));
        assert_eq!(
            t.margin,
            other + margin_of(dec!(0.37) * dec!(101.2), dec!(3))
        );
        t.mark(0, 123_456);
        t.mark(123_456, -7);
        assert_eq!(t.unrealised, -7);
        t.release(filled, -7);
        assert_eq!(t, before);
    }

    /// A book's tally is the tally of approving each of its open positions: the risk
    /// manager's provisional positions and the backtester's approvals count the same.
    #[test]
    fn a_books_tally_is_its_positions_approved_one_by_one() {
        let positions = [
            position(dec!(0.37), dec!(101.13), dec!(3), dec!(1.234567891)),
            position(dec!(12), dec!(0.0136374), dec!(2), dec!(-0.5)),
            position(dec!(0), dec!(100), dec!(1), dec!(9)),
        ];
        let mut want = Tally::default();
        want.approve(dec!(0.37), dec!(101.13), dec!(3));
        want.approve(dec!(12), dec!(0.0136374), dec!(2));
        want.mark(0, pnl_units(dec!(1.234567891)) + pnl_units(dec!(-0.5)));
        assert_eq!(Tally::of(&positions), want);
        let e = want.exposure(None, dec!(1000), dec!(0), TradingMode::Normal, None);
        assert_eq!(e.unrealised, dec!(0.73456789));
        assert_eq!(e.margin_used, dec!(12.5545244));
    }

    proptest::proptest! {
        /// The integer margin is the exact margin rounded half even to its scale, as
        /// `Decimal::round_dp` rounds it.
        #[test]
        fn margin_units_are_round_dp(m in -(1i128 << 95)..(1i128 << 95), scale in 0u32..=28) {
            let d = Decimal::from_i128_with_scale(m, scale);
            let mut r = d.round_dp(MARGIN_SCALE);
            r.rescale(MARGIN_SCALE);
            if r.scale() == MARGIN_SCALE {
                proptest::prop_assert_eq!(margin_units(d), r.mantissa());
            }
        }
    }
}

//! Number helpers shared by the worker, the backtester and the router: strategy levels
//! (`f64`) put on an instrument's tick grid as exact decimals, and the rounding and decimal
//! building they need, fast enough for a backtest's every bar.

use rust_decimal::Decimal;

/// A strategy's price level (indicator math, `f64`) on a tick grid, to the nearest tick
/// (halves away from zero): the number of ticks is rounded in `f64` and the level rebuilt
/// exactly from it. The worker sends stop-loss and take-profit levels this way and the
/// backtest fills them this way, so both use the same price to the tick. `None` for a
/// level that is not finite, a tick that is not positive, or beyond 9e15 ticks.
pub fn price_on_tick(level: f64, tick: Decimal) -> Option<Decimal> {
    TickGrid::new(tick)?.level(level)
}

/// A positive tick size worked out once for [`price_on_tick`]: the backtest puts levels
/// on a symbol's grid at every entry, and the conversions of the tick cost more than the
/// rounding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickGrid {
    tick: Decimal,
    tick_f: f64,
    /// The decimals of a tick of one unit of a decimal place (0.1, 0.0001, ...: nearly
    /// every tick), whose multiples need no multiplication.
    unit_scale: Option<u32>,
}

impl TickGrid {
    /// `None` for a tick that is not positive.
    pub fn new(tick: Decimal) -> Option<TickGrid> {
        use rust_decimal::prelude::ToPrimitive;
        let tick_f = tick.to_f64().filter(|t| *t > 0.0)?;
        let unit = tick.normalize();
        Some(TickGrid {
            tick,
            tick_f,
            unit_scale: (unit.mantissa() == 1).then(|| unit.scale()),
        })
    }

    /// [`price_on_tick`] on this grid.
    pub fn level(&self, level: f64) -> Option<Decimal> {
        let n = round_half_away(level / self.tick_f);
        if !n.is_finite() || n.abs() >= 9.0e15 {
            return None;
        }
        Some(match self.unit_scale {
            Some(scale) => scaled_decimal(n as i64, scale),
            None => (Decimal::from(n as i64) * self.tick).normalize(),
        })
    }
}

/// `n · 10^-scale` as an integer count of `10^-to`, rounded half to even (as
/// `Decimal::round_dp`); None when it does not fit. 64/128-bit arithmetic: the `Decimal`
/// operations it stands for cost several times more, at every fill of a backtest.
pub fn on_scale(n: i128, scale: u32, to: u32) -> Option<i128> {
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

/// `y.round()` (to the nearest integer, halves away from zero), bit for bit, without the
/// library call `f64::round` is on the baseline x86-64 target (no SSE4.1 `roundsd`): the
/// fill and marking paths of a backtest round at every bar.
#[inline]
pub fn round_half_away(y: f64) -> f64 {
    // 2^52: from here on every f64 is an integer; NaN and infinities stay as they are.
    if y.is_nan() || y.abs() >= 4_503_599_627_370_496.0 {
        return y;
    }
    // Truncation through i64 is exact here, and so is the fraction.
    let t = y as i64 as f64;
    let f = y - t;
    let r = if f >= 0.5 {
        t + 1.0
    } else if f <= -0.5 {
        t - 1.0
    } else {
        t
    };
    // -0.3 rounds to -0.0, as `f64::round` gives.
    r.copysign(y)
}

/// `n · 10^-scale` without trailing zeros: what `Decimal::new(n, scale).normalize()`
/// gives, in 64-bit arithmetic (normalize divides a 96-bit mantissa by ten at a time,
/// several times slower).
pub fn scaled_decimal(mut n: i64, mut scale: u32) -> Decimal {
    if n == 0 {
        return Decimal::ZERO;
    }
    // Zeros stripped four, then two, then one at a time: a price read with 8 decimals
    // usually has several.
    for (k, p) in [(4, 10_000), (2, 100), (1, 10)] {
        while scale >= k && n % p == 0 {
            n /= p;
            scale -= k;
        }
    }
    Decimal::new(n, scale)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use rust_decimal_macros::dec;

    use super::*;

    #[rstest]
    #[case(99.0, dec!(0.1), Some(dec!(99)))]
    #[case(1.222_65, dec!(0.0001), Some(dec!(1.2227)))]
    #[case(1.222_649, dec!(0.0001), Some(dec!(1.2226)))]
    #[case(64_123.456, dec!(0.5), Some(dec!(64123.5)))]
    #[case(0.000_123_4, dec!(0.000001), Some(dec!(0.000123)))]
    #[case(f64::NAN, dec!(0.1), None)]
    #[case(f64::INFINITY, dec!(0.1), None)]
    #[case(10.0, Decimal::ZERO, None)]
    #[case(1e20, dec!(0.0001), None)]
    fn levels_land_on_the_nearest_tick(
        #[case] level: f64,
        #[case] tick: Decimal,
        #[case] want: Option<Decimal>,
    ) {
        assert_eq!(price_on_tick(level, tick), want);
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// The shortcut for decimal-unit ticks gives the general result, value and
        /// decimals alike.
        #[test]
        fn a_level_on_a_unit_tick_is_the_general_product(
            level in -200_000.0f64..200_000.0,
            tick in proptest::sample::select(vec![dec!(1), dec!(0.01), dec!(0.0001), dec!(0.00000001), dec!(10), dec!(0.0010)]),
        ) {
            use rust_decimal::prelude::ToPrimitive;
            let n = (level / tick.to_f64().unwrap()).round() as i64;
            let want = (Decimal::from(n) * tick).normalize();
            let got = price_on_tick(level, tick).unwrap();
            proptest::prop_assert_eq!((got, got.scale()), (want, want.scale()));
        }

        /// Stripping zeros in 64 bits gives `Decimal::normalize`'s value and decimals.
        #[test]
        fn scaled_decimal_is_the_normalized_decimal(
            n in proptest::prop_oneof![
                proptest::num::i64::ANY,
                (-100_000i64..100_000).prop_map(|n| n * 100_000_000),
                (-1_000i64..1_000).prop_map(|n| n * 1_000_000),
            ],
            scale in 0u32..=18,
        ) {
            let (got, want) = (scaled_decimal(n, scale), Decimal::new(n, scale).normalize());
            proptest::prop_assert_eq!((got, got.scale()), (want, want.scale()));
        }

        /// The rounding without a library call is `f64::round`, bit for bit.
        #[test]
        fn round_half_away_is_f64_round(
            y in proptest::prop_oneof![
                proptest::num::f64::ANY,
                -1e16f64..1e16,
                (-1_000_000i64..1_000_000).prop_map(|n| n as f64 / 2.0),
                -2.0f64..2.0,
            ],
        ) {
            let (got, want) = (round_half_away(y), y.round());
            proptest::prop_assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{y}: {got} against {want}"
            );
        }
    }
}

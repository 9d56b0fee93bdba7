//! The fixed-point kernel: f64 prices as the decimals they were written as, margins and
//! unrealised PnL as integers of a fixed scale, so that the per-bar path stays in f64 and
//! integers and only fills are booked in `Decimal`.

use std::str::FromStr;

use rust_decimal::{Decimal, prelude::ToPrimitive};
use shardbot_protocol::round_half_away;

/// `x` as the decimal it was written as: exact for prices with up to 8 decimals (every
/// kline file's), through f64's shortest round-trip text otherwise. A few ns on the fast
/// path against ~300 ns for text, which matters at every fill of a long backtest.
pub(crate) fn dec(x: f64) -> Decimal {
    let scaled = round_half_away(x * 1e8);
    if scaled.abs() < 9.0e15 && scaled / 1e8 == x {
        return shardbot_protocol::scaled_decimal(scaled as i64, 8);
    }
    Decimal::from_str(&format!("{x}"))
        .or_else(|_| Decimal::from_scientific(&format!("{x:e}")))
        .unwrap_or_default()
}

/// An amount for the risk rules' judgement (unrealised PnL): 8 decimals are plenty.
pub(crate) fn approx(x: f64) -> Decimal {
    Decimal::from_i128_with_scale(i128::from(units(x)), 8)
}

/// `n · 10^-scale` as an integer count of `10^-to`, rounded half to even (as
/// `Decimal::round_dp`); None when it does not fit. 64/128-bit arithmetic: the `Decimal`
/// operations it stands for cost several times more, at every fill.
pub(crate) fn on_scale(n: i128, scale: u32, to: u32) -> Option<i128> {
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
pub(crate) fn i128_f64(x: i128) -> f64 {
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
pub(crate) fn dec_f64(d: Decimal) -> f64 {
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
pub(crate) const MARGIN_SCALE: u32 = 12;

/// A margin in units of 10^-12 USDT (rounded half even), the resolution the risk rules'
/// margin sums are kept at.
pub(crate) fn margin_units(m: Decimal) -> i128 {
    // Out of range only beyond 10^26 USDT: then the largest Decimal mantissa stands for
    // it (sums of such stay far inside i128).
    const BEYOND: i128 = (1 << 96) - 1;
    on_scale(m.mantissa(), m.scale(), MARGIN_SCALE).unwrap_or(BEYOND * m.mantissa().signum())
}

/// The margin a position of `notional` holds (`notional / leverage`, a leverage under 1
/// counting as 1), in [`margin_units`]. Without leverage nothing is divided: the all-in
/// runs pay no division at every fill.
pub(crate) fn margin_of(notional: Decimal, leverage: Decimal) -> i128 {
    margin_units(if leverage <= Decimal::ONE {
        notional
    } else {
        notional / leverage
    })
}

/// An integer sum of `10^-scale` units as the `Decimal` the risk rules read (the largest
/// one beyond its range).
pub(crate) fn from_units(x: i128, scale: u32) -> Decimal {
    Decimal::try_from_i128_with_scale(x, scale).unwrap_or(if x < 0 {
        Decimal::MIN
    } else {
        Decimal::MAX
    })
}

/// `x` in units of 10^-8 (rounded half away from zero), 0 when not finite or beyond
/// 9·10^10. Every open position is marked this way at every bar.
#[inline]
pub(crate) fn units(x: f64) -> i64 {
    if x.is_nan() || x.abs() >= 9.0e10 {
        return 0;
    }
    round_half_away(x * 1e8) as i64
}

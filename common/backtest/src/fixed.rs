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

/// `x` in units of 10^-8 (rounded half away from zero), 0 when not finite or beyond
/// 9·10^10. Every open position is marked this way at every bar.
#[inline]
pub(crate) fn units(x: f64) -> i64 {
    if x.is_nan() || x.abs() >= 9.0e10 {
        return 0;
    }
    round_half_away(x * 1e8) as i64
}

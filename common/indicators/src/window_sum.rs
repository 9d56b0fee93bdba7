//! The exact sum of a sliding window of `f64`s, rounded once.
//!
//! A running total (add the newest, subtract the oldest) carries the rounding errors of
//! every value that ever passed through it, so two copies of an indicator fed the same
//! last `period` values but different earlier histories disagree in the last bits. A
//! strategy comparing two such averages (a crossover on a flat stretch, a close sitting on
//! a band) then decides differently in a worker restarted from 400 bars of history than in
//! one that ran for days. Here the window's sum is kept exactly, as a list of
//! non-overlapping partial sums (Shewchuk's algorithm, as in Python's `math.fsum`), and
//! rounded correctly when read: the result depends only on the values in the window.
//!
//! Written here rather than taken from a crate: it is some forty lines on the hot path of
//! every backtest, and needs removal (adding the negated value is exact) and an
//! allocation-free steady state, which the summation crates do not offer together.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub(crate) struct WindowSum {
    period: usize,
    window: VecDeque<f64>,
    /// Non-overlapping, in increasing magnitude, none zero; their exact sum is the sum of
    /// the finite values in the window.
    partials: Vec<f64>,
    /// Values in the window that are NaN or infinite (the sum is NaN while there are any).
    nonfinite: usize,
}

impl WindowSum {
    pub(crate) fn new(period: usize) -> WindowSum {
        let period = period.max(1);
        WindowSum {
            period,
            window: VecDeque::with_capacity(period + 1),
            partials: Vec::with_capacity(4),
            nonfinite: 0,
        }
    }

    pub(crate) fn period(&self) -> usize {
        self.period
    }

    /// Adds `x`; once the window holds `period` values, drops the oldest and returns the
    /// sum of the `period` newest values (including `x`).
    pub(crate) fn push(&mut self, x: f64) -> Option<f64> {
        self.window.push_back(x);
        if x.is_finite() {
            self.add(x);
        } else {
            self.nonfinite += 1;
        }
        if self.window.len() < self.period {
            return None;
        }
        let sum = self.sum();
        if let Some(oldest) = self.window.pop_front() {
            if oldest.is_finite() {
                // exact: the partials represent the sum without rounding
                self.add(-oldest);
            } else {
                self.nonfinite -= 1;
            }
        }
        Some(sum)
    }

    /// Adds a finite `x` to the partials, exactly.
    fn add(&mut self, x: f64) {
        let mut x = x;
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        if x != 0.0 {
            self.partials.push(x);
        }
    }

    /// The exact sum of the partials, correctly rounded (CPython's `math.fsum` final step,
    /// including its half-even correction across partials).
    fn sum(&self) -> f64 {
        if self.nonfinite > 0 {
            return f64::NAN;
        }
        let p = &self.partials;
        let mut n = p.len();
        let top = match p.as_slice() {
            [] => return 0.0,
            // the common case: the window's exact sum is one float
            [only] => return *only,
            [.., top] => *top,
        };
        n -= 1;
        let mut hi = top;
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Scale of the test values: integers times 2^-40, so the exact sum is an integer
    /// sum and `i128 as f64` rounds it correctly (to nearest, ties to even).
    const SCALE: f64 = 1.0 / (1u64 << 40) as f64;

    fn exact(ms: &[i128]) -> f64 {
        ms.iter().sum::<i128>() as f64 * SCALE
    }

    /// Integers that are exact as `f64` (53 significant bits at most) and of wildly
    /// different sizes, so that sums cancel and round.
    fn integer() -> impl Strategy<Value = i128> {
        (-(1i64 << 53)..(1i64 << 53), 0u32..60, 0u32..53)
            .prop_map(|(m, shift, drop)| (i128::from(m) >> drop) << shift)
    }

    proptest! {
        #[test]
        fn every_window_sum_is_the_correctly_rounded_exact_sum(
            ms in prop::collection::vec(integer(), 1..200),
            period in 1usize..12,
        ) {
            let mut w = WindowSum::new(period);
            for (i, &m) in ms.iter().enumerate() {
                let got = w.push(m as f64 * SCALE); // exact: 53 bits at most
                if i + 1 < period {
                    prop_assert_eq!(got, None);
                } else {
                    let want = exact(&ms[i + 1 - period..=i]);
                    prop_assert_eq!(got.map(f64::to_bits), Some(want.to_bits()), "window ending at {}", i);
                }
            }
        }
    }

    #[test]
    fn nan_and_infinity_spoil_only_the_windows_that_hold_them() {
        let mut w = WindowSum::new(2);
        let out: Vec<Option<f64>> = [1.0, f64::NAN, 2.0, 3.0, f64::INFINITY, 4.0, 5.0]
            .into_iter()
            .map(|x| w.push(x))
            .collect();
        let bits = |v: &[Option<f64>]| -> Vec<Option<u64>> {
            v.iter()
                .map(|o| o.map(|x| if x.is_nan() { 1 } else { x.to_bits() }))
                .collect()
        };
        let want = [
            None,
            Some(f64::NAN),
            Some(f64::NAN),
            Some(5.0),
            Some(f64::NAN),
            Some(f64::NAN),
            Some(9.0),
        ];
        assert_eq!(bits(&out), bits(&want));
    }

    #[test]
    fn the_half_even_correction_across_partials() {
        // Python: math.fsum([1e-16, 1.0, 1e16]) == 1.0000000000000002e16
        let mut w = WindowSum::new(3);
        let got = [1e-16, 1.0, 1e16]
            .into_iter()
            .filter_map(|x| w.push(x))
            .next_back();
        assert_eq!(got, Some(1.000_000_000_000_000_2e16));
    }
}

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
//! Fast path: prices (and their squares) in a window are almost always integer multiples
//! of one power of two with a sum that fits 62 bits. While they are, the sum is kept as
//! that integer, exactly; `i64 as f64` then rounds it once, to nearest with ties to even,
//! which is the very result the partials give (a property test holds the two paths equal
//! bit for bit). A value that does not fit rescales the window, or falls back to the
//! partials.
//!
//! Written here rather than taken from a crate: it is some forty lines on the hot path of
//! every backtest, and needs removal (adding the negated value is exact) and an
//! allocation-free steady state, which the summation crates do not offer together.

#[derive(Debug, Clone)]
pub(crate) struct WindowSum {
    period: usize,
    /// The last `period` values (fewer at first), oldest at `head` once full: a ring
    /// rather than a `VecDeque`, whose push and pop cost more than the sum itself. Each
    /// value has its integer at `fixed`'s scale beside it (kept while `fixed` is `Some`),
    /// so the value leaving is not converted again, and both are in one cache line.
    ring: Box<[Slot]>,
    head: usize,
    len: usize,
    /// The exact sum of the finite values in the window, as an integer times 2^-shift,
    /// while they all fit; otherwise `None` and the partials hold it.
    fixed: Option<Fixed>,
    /// Non-overlapping, in increasing magnitude, none zero; their exact sum is the sum of
    /// the finite values in the window (used only while `fixed` is `None`).
    partials: Vec<f64>,
    /// Values in the window that are NaN or infinite (the sum is NaN while there are any).
    nonfinite: usize,
    /// Pushes left before the partials try the integer path again.
    retry_fixed_in: usize,
    /// Whether the integer path may be used (false only in tests comparing the paths).
    allow_fixed: bool,
}

/// A value of the window and its integer.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    x: f64,
    n: i64,
}

/// A sum of values `x = n · 2^-shift`, kept as the integer Σn.
#[derive(Debug, Clone, Copy)]
struct Fixed {
    /// 2^shift and 2^-shift.
    scale: f64,
    inv: f64,
    sum: i64,
}

/// The integer path keeps |Σn| below 2^62 and every |n| below 2^62.
const FIXED_LIMIT: f64 = 4_611_686_018_427_387_904.0; // 2^62

impl Fixed {
    /// `x`'s integer at this scale, if `x` is an exact multiple of 2^-shift that fits.
    #[inline]
    fn int(&self, x: f64) -> Option<i64> {
        let y = x * self.scale; // exact: a power of two (bounded shift, no overflow)
        if y.abs() < FIXED_LIMIT {
            let n = y as i64;
            if n as f64 == y {
                return Some(n);
            }
        }
        None
    }

    /// The sum, correctly rounded: `i64 as f64` rounds to nearest, ties to even, and the
    /// power-of-two scaling back is exact (the shift is bounded well inside f64's range).
    #[inline]
    fn value(&self) -> f64 {
        self.sum as f64 * self.inv
    }

    /// A scale at which every finite value of `values` is an integer and their sum (and
    /// that of any `period` values of similar size) fits; `None` if there is none.
    fn for_values<'a>(values: impl Iterator<Item = &'a f64>, period: usize) -> Option<Fixed> {
        // x = m · 2^e with m odd: the shift must be at least -e for every x; the largest
        // bit of any |x| · 2^shift is (top + shift).
        let (mut need, mut top, mut any) = (i32::MIN, i32::MIN, false);
        for &x in values {
            if !x.is_finite() || x == 0.0 {
                continue;
            }
            let bits = x.to_bits();
            let exp_bits = ((bits >> 52) & 0x7ff) as i32;
            let frac = bits & ((1u64 << 52) - 1);
            let (m, e) = if exp_bits == 0 {
                (frac, -1074)
            } else {
                (frac | (1u64 << 52), exp_bits - 1075)
            };
            let tz = m.trailing_zeros() as i32;
            let (m, e) = (m >> tz, e + tz);
            need = need.max(-e);
            top = top.max(e + (64 - m.leading_zeros() as i32));
            any = true;
        }
        if !any {
            return Some(Fixed::at(0));
        }
        // Room for `period` values as large as the largest one, under 2^62.
        let room = 62 - (top + need) - (usize::BITS - period.leading_zeros()) as i32;
        if room < 0 {
            return None;
        }
        // Half the spare bits for finer values to come (a price falling a binade), half
        // for larger ones: fewer rescales.
        let shift = need + (room / 2).min(8);
        (-960..=960).contains(&shift).then(|| Fixed::at(shift))
    }

    fn at(shift: i32) -> Fixed {
        Fixed {
            scale: 2f64.powi(shift),
            inv: 2f64.powi(-shift),
            sum: 0,
        }
    }
}

impl WindowSum {
    pub(crate) fn new(period: usize) -> WindowSum {
        let period = period.max(1);
        WindowSum {
            period,
            ring: vec![Slot::default(); period].into_boxed_slice(),
            head: 0,
            len: 0,
            fixed: Some(Fixed::at(0)),
            partials: Vec::with_capacity(4),
            nonfinite: 0,
            retry_fixed_in: 0,
            allow_fixed: true,
        }
    }

    /// A window sum that only ever uses the partials (for tests comparing the paths).
    #[cfg(test)]
    fn partials_only(period: usize) -> WindowSum {
        let mut w = WindowSum::new(period);
        w.fixed = None;
        w.allow_fixed = false;
        w
    }

    pub(crate) fn period(&self) -> usize {
        self.period
    }

    /// The values in the window, oldest first.
    fn values(&self) -> impl Iterator<Item = &f64> {
        let (newer, older) = self.ring[..self.len].split_at(self.head);
        older.iter().chain(newer).map(|s| &s.x)
    }

    /// Adds `x` (dropping the oldest value once the window is full); once the window
    /// holds `period` values, returns their sum.
    #[inline]
    pub(crate) fn push(&mut self, x: f64) -> Option<f64> {
        // The steady state, nearly every push: a full window summed on the integer path,
        // without a NaN or infinity in it (so the value leaving has its integer), and `x`
        // fitting the scale. Nothing is changed before all of that is known.
        if self.len == self.period
            && self.nonfinite == 0
            && let Some(f) = &mut self.fixed
            && let Some(n_in) = f.int(x)
        {
            let at = self.head;
            if let Some(s) = f.sum.checked_add(n_in - self.ring[at].n) {
                f.sum = s;
                self.ring[at] = Slot { x, n: n_in };
                self.head = if at + 1 == self.period { 0 } else { at + 1 };
                return Some(f.value());
            }
        }
        self.push_any(x)
    }

    /// [`push`](Self::push) in every state: filling, after a NaN or infinity, off the
    /// integer path.
    fn push_any(&mut self, x: f64) -> Option<f64> {
        let full = self.len == self.period;
        // Until the window is full, `head` is 0 and values go in order.
        let at = if full { self.head } else { self.len };
        let out = full.then(|| self.ring[at].x);
        let n_out = if full { self.ring[at].n } else { 0 };
        self.ring[at].x = x;
        if full {
            self.head = if at + 1 == self.period { 0 } else { at + 1 };
        } else {
            self.len += 1;
        }
        // The integer path: `x` an integer at the scale (so finite), the sum still in
        // range. |n| < 2^62 each, so their difference cannot overflow.
        if let Some(f) = &mut self.fixed
            && let Some(n_in) = f.int(x)
            && let Some(s) = f.sum.checked_add(n_in - n_out)
        {
            f.sum = s;
            self.ring[at].n = n_in;
            // A NaN or infinity leaving (its integer is 0: never in the sum).
            if self.nonfinite > 0 && out.is_some_and(|o| !o.is_finite()) {
                self.nonfinite -= 1;
            }
        } else {
            self.slow_push(x, out);
        }
        (self.len == self.period).then(|| self.sum())
    }

    /// [`push`](Self::push) when the integer path does not take `x` (already in the ring)
    /// and `out` (already out of it).
    #[cold]
    fn slow_push(&mut self, x: f64, out: Option<f64>) {
        if let Some(o) = out
            && !o.is_finite()
        {
            self.nonfinite -= 1;
        }
        if !x.is_finite() {
            self.nonfinite += 1;
        }
        if self.fixed.is_some() {
            // A value that does not fit the scale: a new scale, or the partials.
            self.rebuild();
            return;
        }
        if let Some(o) = out.filter(|o| o.is_finite()) {
            // exact: the partials represent the sum without rounding
            self.add(-o);
        }
        if x.is_finite() {
            self.add(x);
            if self.allow_fixed {
                if self.retry_fixed_in == 0 {
                    self.rebuild();
                } else {
                    self.retry_fixed_in -= 1;
                }
            }
        }
    }

    /// Recomputes the sum of the window's finite values from scratch: as an integer at a
    /// scale they all fit, or else as partials (trying the integer path again after a
    /// window's worth of values).
    fn rebuild(&mut self) {
        self.fixed = None;
        self.partials.clear();
        if self.allow_fixed
            && let Some(mut f) = Fixed::for_values(self.values(), self.period)
        {
            let mut ok = true;
            for k in 0..self.len {
                let x = self.ring[k].x;
                if !x.is_finite() {
                    // Never leaves through the integer path: the window holds a NaN or
                    // infinity, so its sum is NaN until the value is gone.
                    self.ring[k].n = 0;
                    continue;
                }
                match f.int(x).and_then(|n| Some((n, f.sum.checked_add(n)?))) {
                    Some((n, s)) => {
                        self.ring[k].n = n;
                        f.sum = s;
                    }
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                self.fixed = Some(f);
                return;
            }
        }
        let values: Vec<f64> = self.values().copied().filter(|x| x.is_finite()).collect();
        for x in values {
            self.add(x);
        }
        self.retry_fixed_in = self.period;
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
        if let Some(f) = &self.fixed {
            return f.value();
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

    /// Price-like series: decimals with 0-8 places on a random walk, with jumps of up to
    /// a factor of 10^4 either way (so the integer path rescales and falls back), and
    /// their squares, as the Bollinger bands sum them.
    fn prices() -> impl Strategy<Value = Vec<f64>> {
        (
            0u32..=8,
            1i64..10_000_000,
            prop::collection::vec((-50i64..=50, 0u8..40), 1..300),
        )
            .prop_map(|(places, start, steps)| {
                let scale = 10f64.powi(places as i32);
                let mut k = start;
                let mut out = Vec::new();
                for (step, jump) in steps {
                    k = match jump {
                        0 => k.saturating_mul(10_000).min(1_000_000_000_000_000),
                        1 => (k / 10_000).max(1),
                        _ => (k + step).max(1),
                    };
                    out.push(k as f64 / scale);
                }
                out
            })
    }

    proptest! {
        #[test]
        fn the_integer_path_gives_the_partials_result_bit_for_bit(
            xs in prices(),
            period in 1usize..40,
            squares in any::<bool>(),
        ) {
            let mut fast = WindowSum::new(period);
            let mut slow = WindowSum::partials_only(period);
            for (i, &x) in xs.iter().enumerate() {
                let x = if squares { x * x } else { x };
                let (a, b) = (fast.push(x), slow.push(x));
                prop_assert_eq!(a.map(f64::to_bits), b.map(f64::to_bits), "value {} ({})", i, x);
            }
        }
    }

    #[test]
    fn ordinary_prices_stay_on_the_integer_path() {
        let mut w = WindowSum::new(30);
        for i in 0..10_000 {
            w.push(1234.56 + f64::from(i % 97) * 0.01);
            assert!(w.fixed.is_some(), "left the integer path at {i}");
        }
        let mut sq = WindowSum::new(20);
        for i in 0..10_000 {
            let x = 0.05321 + f64::from(i % 89) * 0.00001;
            sq.push(x * x);
            assert!(sq.fixed.is_some(), "squares left the integer path at {i}");
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

//! Incremental technical indicators: each `update` is O(1), and the values equal TA-Lib's
//! (same seeding, same warm-up length; to 1e-10 relative), so a strategy sees in live
//! trading what a TA-Lib-based computation of the same bars gives. A test compares every
//! series with TA-Lib itself on real data.
//!
//! Windowed sums (SMA, Bollinger) are exact over their window, so those values are a pure
//! function of the last `period` inputs, bit for bit: a worker restarted from a few hundred
//! bars of history computes exactly what one that never stopped does. Recursive smoothing
//! (EMA, RSI, ATR, MACD) remembers everything it was fed; two copies started at different
//! bars converge by a factor of about (period − 1)/period per bar, which is why a worker's
//! `history_bars` should be many times its longest period.
//!
//! Every indicator has `update(..) -> Option<output>` (`None` while warming up), `value()`,
//! `is_ready()`, `reset()` and `lookback()`: how many inputs come before the first output,
//! as TA-Lib's `*_Lookback` functions report it.

use std::collections::VecDeque;

mod window_sum;

use window_sum::WindowSum;

/// TA-Lib's `PER_TO_K`.
fn per_to_k(period: usize) -> f64 {
    2.0 / (period as f64 + 1.0)
}

/// TA-Lib's zero threshold. The C library bundled with TA-Lib 0.8 (0.6.x) uses 1e-14
/// (older releases used 1e-8, which wiped out the bands of coins priced around 0.001).
const ZERO: f64 = 1e-14;

/// TA-Lib's `TA_IS_ZERO`.
fn is_zero(v: f64) -> bool {
    -ZERO < v && v < ZERO
}

/// Simple moving average. The sum of the window is exact and rounded once (see
/// [`window_sum`]), so the average depends only on the last `period` inputs, never on what
/// came before them; TA-Lib's running total differs from it in the last bits.
#[derive(Debug, Clone)]
pub struct Sma {
    sum: WindowSum,
    /// The period as the divisor.
    n: f64,
    value: Option<f64>,
}

impl Sma {
    pub fn new(period: usize) -> Sma {
        let sum = WindowSum::new(period);
        Sma {
            n: sum.period() as f64,
            sum,
            value: None,
        }
    }

    fn period(&self) -> usize {
        self.sum.period()
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let sum = self.sum.push(x)?;
        self.value = Some(sum / self.n);
        self.value
    }

    pub fn value(&self) -> Option<f64> {
        self.value
    }

    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }

    pub fn reset(&mut self) {
        *self = Sma::new(self.period());
    }

    pub fn lookback(&self) -> usize {
        self.period() - 1
    }
}

/// Exponential moving average seeded with the simple average of its first `period` inputs.
#[derive(Debug, Clone)]
pub struct Ema {
    period: usize,
    k: f64,
    seed_sum: f64,
    seen: usize,
    value: Option<f64>,
}

impl Ema {
    pub fn new(period: usize) -> Ema {
        let period = period.max(1);
        Ema {
            period,
            k: per_to_k(period),
            seed_sum: 0.0,
            seen: 0,
            value: None,
        }
    }

    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.seen += 1;
        self.value = match self.value {
            Some(prev) => Some(((x - prev) * self.k) + prev),
            None => {
                self.seed_sum += x;
                (self.seen == self.period).then(|| self.seed_sum / self.period as f64)
            }
        };
        self.value
    }

    pub fn value(&self) -> Option<f64> {
        self.value
    }

    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }

    pub fn reset(&mut self) {
        *self = Ema::new(self.period);
    }

    pub fn lookback(&self) -> usize {
        self.period - 1
    }
}

/// Wilder's relative strength index (TA-Lib's, not Metastock's): the first value averages
/// the gains and losses of the first `period` changes; later ones smooth them.
#[derive(Debug, Clone)]
pub struct Rsi {
    period: usize,
    prev: Option<f64>,
    changes: usize,
    gain: f64,
    loss: f64,
}

impl Rsi {
    pub fn new(period: usize) -> Rsi {
        Rsi {
            period: period.max(1),
            prev: None,
            changes: 0,
            gain: 0.0,
            loss: 0.0,
        }
    }

    fn ratio(&self) -> f64 {
        let total = self.gain + self.loss;
        if is_zero(total) {
            0.0
        } else {
            100.0 * (self.gain / total)
        }
    }

    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.push(x);
        self.value()
    }

    /// [`update`](Self::update) without working out the value (a strategy that reads it
    /// only on some bars skips a division on the others); returns whether it is ready.
    #[inline]
    pub fn push(&mut self, x: f64) -> bool {
        let Some(prev) = self.prev.replace(x) else {
            return false;
        };
        let diff = x - prev;
        self.changes += 1;
        let p = self.period as f64;
        if self.changes <= self.period {
            if diff < 0.0 {
                self.loss -= diff;
            } else {
                self.gain += diff;
            }
            if self.changes == self.period {
                self.loss /= p;
                self.gain /= p;
            }
        } else {
            self.loss *= p - 1.0;
            self.gain *= p - 1.0;
            if diff < 0.0 {
                self.loss -= diff;
            } else {
                self.gain += diff;
            }
            self.loss /= p;
            self.gain /= p;
        }
        self.is_ready()
    }

    pub fn value(&self) -> Option<f64> {
        self.is_ready().then(|| self.ratio())
    }

    pub fn is_ready(&self) -> bool {
        self.changes >= self.period
    }

    pub fn reset(&mut self) {
        *self = Rsi::new(self.period);
    }

    pub fn lookback(&self) -> usize {
        self.period
    }
}

/// Bollinger bands around a simple moving average, `k` population standard deviations
/// wide (TA-Lib's BBANDS with MA type SMA: variance = mean of squares − square of mean).
/// Like the average, the sum of squares is exact over the window, so the bands depend
/// only on the last `period` inputs.
#[derive(Debug, Clone)]
pub struct Bollinger {
    sma: Sma,
    k: f64,
    squares: WindowSum,
    /// The window's sum of squares, once it is full.
    sum_sq: Option<f64>,
}

/// Upper, middle and lower band.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    pub upper: f64,
    pub middle: f64,
    pub lower: f64,
}

impl Bollinger {
    pub fn new(period: usize, k: f64) -> Bollinger {
        Bollinger {
            sma: Sma::new(period),
            k,
            squares: WindowSum::new(period),
            sum_sq: None,
        }
    }

    pub fn update(&mut self, x: f64) -> Option<Bands> {
        self.push(x);
        self.value()
    }

    /// [`update`](Self::update) without working out the bands (a strategy that reads
    /// only the middle on most bars skips a division and a square root); returns whether
    /// they are ready.
    #[inline]
    pub fn push(&mut self, x: f64) -> bool {
        let mean = self.sma.update(x);
        self.sum_sq = self.squares.push(x * x);
        mean.is_some() && self.sum_sq.is_some()
    }

    /// The middle band (the average), once ready.
    pub fn middle(&self) -> Option<f64> {
        self.sma.value()
    }

    pub fn value(&self) -> Option<Bands> {
        let (Some(mean), Some(sum_sq)) = (self.sma.value(), self.sum_sq) else {
            return None;
        };
        let variance = sum_sq / self.squares.period() as f64 - mean * mean;
        // TA_IS_ZERO_OR_NEG
        let sd = if variance < ZERO {
            0.0
        } else {
            variance.sqrt()
        };
        let width = sd * self.k;
        Some(Bands {
            upper: mean + width,
            middle: mean,
            lower: mean - width,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.sma.is_ready() && self.sum_sq.is_some()
    }

    pub fn reset(&mut self) {
        *self = Bollinger::new(self.sma.period(), self.k);
    }

    pub fn lookback(&self) -> usize {
        self.sma.period() - 1
    }
}

/// Wilder's average true range: the first value is the simple average of the first
/// `period` true ranges (the first bar has none: it has no previous close).
#[derive(Debug, Clone)]
pub struct Atr {
    period: usize,
    prev_close: Option<f64>,
    seed: Sma,
    value: Option<f64>,
}

impl Atr {
    pub fn new(period: usize) -> Atr {
        let period = period.max(1);
        Atr {
            period,
            prev_close: None,
            seed: Sma::new(period),
            value: None,
        }
    }

    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let pc = self.prev_close.replace(close)?;
        let mut tr = high - low;
        let v2 = (pc - high).abs();
        if v2 > tr {
            tr = v2;
        }
        let v3 = (pc - low).abs();
        if v3 > tr {
            tr = v3;
        }
        self.value = match self.value {
            Some(prev) => {
                let p = self.period as f64;
                Some((prev * (p - 1.0) + tr) / p)
            }
            None => self.seed.update(tr),
        };
        self.value
    }

    pub fn value(&self) -> Option<f64> {
        self.value
    }

    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }

    pub fn reset(&mut self) {
        *self = Atr::new(self.period);
    }

    pub fn lookback(&self) -> usize {
        self.period
    }
}

/// MACD line, signal line and histogram, aligned as TA-Lib aligns them: the fast EMA is
/// seeded on the `fast` inputs that end where the slow EMA's seed ends, so both start
/// together; the signal EMA is seeded on the first `signal` MACD values; all three are
/// output from then on.
#[derive(Debug, Clone)]
pub struct Macd {
    fast: usize,
    slow: usize,
    signal_period: usize,
    seen: usize,
    recent: VecDeque<f64>,
    fast_ema: Option<Ema>,
    slow_ema: Option<Ema>,
    signal: Ema,
    value: Option<MacdValue>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdValue {
    pub macd: f64,
    pub signal: f64,
    pub histogram: f64,
}

impl Macd {
    pub fn new(fast: usize, slow: usize, signal: usize) -> Macd {
        let (fast, slow) = if slow < fast {
            (slow, fast)
        } else {
            (fast, slow)
        };
        let (fast, slow, signal) = (fast.max(1), slow.max(1), signal.max(1));
        Macd {
            fast,
            slow,
            signal_period: signal,
            seen: 0,
            recent: VecDeque::with_capacity(slow),
            fast_ema: None,
            slow_ema: None,
            signal: Ema::new(signal),
            value: None,
        }
    }

    pub fn update(&mut self, x: f64) -> Option<MacdValue> {
        self.seen += 1;
        let (f, s) = match (self.fast_ema.as_mut(), self.slow_ema.as_mut()) {
            (Some(fe), Some(se)) => (fe.update(x), se.update(x)),
            _ => {
                self.recent.push_back(x);
                if self.seen < self.slow {
                    return None;
                }
                // Both EMAs start at input `slow - 1`, seeded on their own windows.
                let mut se = Ema::new(self.slow);
                let mut fe = Ema::new(self.fast);
                let mut s = None;
                for v in &self.recent {
                    s = se.update(*v);
                }
                let mut f = None;
                for v in self.recent.iter().skip(self.slow - self.fast) {
                    f = fe.update(*v);
                }
                self.recent.clear();
                self.fast_ema = Some(fe);
                self.slow_ema = Some(se);
                (f, s)
            }
        };
        let (Some(f), Some(s)) = (f, s) else {
            return None;
        };
        let macd = f - s;
        let signal = self.signal.update(macd)?;
        self.value = Some(MacdValue {
            macd,
            signal,
            histogram: macd - signal,
        });
        self.value
    }

    pub fn value(&self) -> Option<MacdValue> {
        self.value
    }

    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }

    pub fn reset(&mut self) {
        *self = Macd::new(self.fast, self.slow, self.signal_period);
    }

    pub fn lookback(&self) -> usize {
        self.slow - 1 + self.signal_period - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn hand_computed_cases() {
        let mut sma = Sma::new(3);
        let out: Vec<Option<f64>> = [1.0, 2.0, 3.0, 4.0]
            .iter()
            .map(|x| sma.update(*x))
            .collect();
        assert_eq!(out, [None, None, Some(2.0), Some(3.0)]);
        let mut ema = Ema::new(3); // k = 0.5, seeded with the average of 1, 2, 3
        let out: Vec<Option<f64>> = [1.0, 2.0, 3.0, 6.0]
            .iter()
            .map(|x| ema.update(*x))
            .collect();
        assert_eq!(out, [None, None, Some(2.0), Some(4.0)]);
        let mut rsi = Rsi::new(2); // changes +1, -1: gain 0.5, loss 0.5
        let out: Vec<Option<f64>> = [1.0, 2.0, 1.0, 3.0]
            .iter()
            .map(|x| rsi.update(*x))
            .collect();
        assert_eq!(out[..3], [None, None, Some(50.0)]);
        // then gain (0.5*1+2)/2 = 1.25, loss 0.5/2 = 0.25 -> 100*1.25/1.5
        assert!((out[3].unwrap() - 100.0 * 1.25 / 1.5).abs() < 1e-12);
        let mut atr = Atr::new(2); // TR: 2 (h-l), then |pc-h| = 3
        assert_eq!(atr.update(10.0, 8.0, 9.0), None);
        assert_eq!(atr.update(11.0, 9.0, 10.0), None);
        assert_eq!(atr.update(13.0, 12.0, 12.5), Some(2.5));
        let mut bb = Bollinger::new(2, 2.0); // 1 and 3: mean 2, population sd 1
        bb.update(1.0);
        assert_eq!(
            bb.update(3.0),
            Some(Bands {
                upper: 4.0,
                middle: 2.0,
                lower: 0.0
            })
        );
    }

    #[rstest]
    #[case(10)]
    #[case(1)]
    fn reset_starts_over_and_lookback_is_the_warm_up(#[case] period: usize) {
        let mut sma = Sma::new(period);
        let first_ready = (0..100)
            .position(|i| sma.update(i as f64).is_some())
            .unwrap();
        assert_eq!(first_ready, sma.lookback());
        sma.reset();
        assert!(!sma.is_ready());
        let mut macd = Macd::new(12, 26, 9);
        let first = (0..200)
            .position(|i| macd.update((i as f64).sin()).is_some())
            .unwrap();
        assert_eq!((first, macd.lookback()), (33, 33));
        let mut rsi = Rsi::new(14);
        assert_eq!(
            (0..100).position(|i| rsi.update((i as f64).cos()).is_some()),
            Some(14)
        );
        let mut atr = Atr::new(14);
        assert_eq!(
            (0..100).position(|i| atr
                .update(i as f64 + 1.0, i as f64, i as f64 + 0.5)
                .is_some()),
            Some(14)
        );
    }

    proptest::proptest! {
        /// What a restarted worker relies on: fed a different history, the averages and
        /// bands of the same last `period` prices are the same, bit for bit.
        #[test]
        fn windowed_values_do_not_depend_on_what_came_before(
            history in proptest::collection::vec(0.0001f64..100_000.0, 0..300),
            window in proptest::collection::vec(0.0001f64..100_000.0, 20),
            period in 1usize..=20,
        ) {
            let fed = |prefix: &[f64]| {
                let (mut sma, mut bb) = (Sma::new(period), Bollinger::new(period, 2.0));
                let mut last = (None, None);
                for &x in prefix.iter().chain(&window) {
                    last = (sma.update(x), bb.update(x));
                }
                let (m, b) = last;
                (m.map(f64::to_bits), b.map(|b| (b.upper.to_bits(), b.middle.to_bits(), b.lower.to_bits())))
            };
            proptest::prop_assert_eq!(fed(&history), fed(&[]));
        }
    }
}

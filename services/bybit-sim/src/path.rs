//! A deterministic price path per symbol.
//!
//! The log-price is a Brownian motion sampled every [`STEP_MS`] (5 s), built by Lévy's
//! midpoint construction over a dyadic tree of 2^[`LEVELS`] steps: the value at any grid
//! point is a pure function of (seed, symbol, index), computed in O(LEVELS), and a
//! contiguous range is filled in O(range + LEVELS). So klines served over REST, ticks
//! streamed over WebSocket and fills all read the same path, at any sim time, without
//! storing history.
//!
//! Between grid points the price moves linearly, so a bar's high and low are the extremes
//! of the grid points inside it, and a stream of ticks touches exactly those extremes.
//!
//! The random numbers come from SplitMix64 written out here (not a crate's RNG): the path
//! is part of the sim's contract (same seed, same market, in every build), so its
//! generator must never change with a dependency upgrade.

/// Grid spacing of the path.
pub const STEP_MS: i64 = 5_000;
/// Depth of the dyadic tree: 2^36 steps of 5 s is over 10,000 years.
pub const LEVELS: u32 = 36;
/// Grid index 0: 2020-01-01T00:00:00Z.
pub const ORIGIN_MS: i64 = 1_577_836_800_000;
const N: u64 = 1 << LEVELS;

/// SplitMix64: one 64-bit output per input, statistically good, trivially reproducible.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform in (0, 1) from a key.
pub fn uniform(key: u64) -> f64 {
    ((mix(key) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A standard normal from a key (Box–Muller).
pub fn normal(key: u64) -> f64 {
    let u1 = uniform(key);
    let u2 = uniform(key ^ 0xA5A5_A5A5_5A5A_5A5A);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One symbol's Brownian motion (unit variance per step).
#[derive(Debug, Clone, Copy)]
pub struct Brownian {
    key: u64,
}

/// A 64-bit hash of a string under a seed.
pub fn hash_str(seed: u64, s: &str) -> u64 {
    let mut key = mix(seed);
    for b in s.bytes() {
        key = mix(key ^ u64::from(b));
    }
    key
}

impl Brownian {
    pub fn new(seed: u64, symbol: &str) -> Brownian {
        Brownian {
            key: hash_str(seed, symbol),
        }
    }

    fn z(&self, node: u64) -> f64 {
        normal(self.key ^ mix(node))
    }

    fn end(&self) -> f64 {
        (N as f64).sqrt() * self.z(N)
    }

    /// W at grid index `n` (0 <= n <= 2^LEVELS).
    pub fn at(&self, n: u64) -> f64 {
        let n = n.min(N);
        let (mut l, mut r, mut wl, mut wr) = (0u64, N, 0.0, self.end());
        loop {
            if n == l {
                return wl;
            }
            if n == r {
                return wr;
            }
            let mid = l + (r - l) / 2;
            let wm = 0.5 * (wl + wr) + (((r - l) as f64) / 4.0).sqrt() * self.z(mid);
            if n < mid {
                (r, wr) = (mid, wm);
            } else {
                (l, wl) = (mid, wm);
            }
        }
    }

    /// W at every grid index in `from..=to`.
    pub fn range(&self, from: u64, to: u64) -> Vec<f64> {
        let (from, to) = (from.min(N), to.min(N));
        let mut out = Vec::with_capacity((to.saturating_sub(from) + 1) as usize);
        if from <= to {
            self.fill(0, N, 0.0, self.end(), from, to, &mut out);
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(&self, l: u64, r: u64, wl: f64, wr: f64, from: u64, to: u64, out: &mut Vec<f64>) {
        if r < from || l > to {
            return;
        }
        if r - l == 1 {
            // Leaves are visited left to right: each contributes its right end, and the
            // first one also its left end when that is in range.
            if l >= from && out.is_empty() {
                out.push(wl);
            }
            if r <= to {
                out.push(wr);
            }
            return;
        }
        let mid = l + (r - l) / 2;
        let wm = 0.5 * (wl + wr) + (((r - l) as f64) / 4.0).sqrt() * self.z(mid);
        self.fill(l, mid, wl, wm, from, to, out);
        self.fill(mid, r, wm, wr, from, to, out);
    }
}

/// Grid index of a time (floor).
pub fn index_of(t_ms: i64) -> u64 {
    ((t_ms - ORIGIN_MS).max(0) / STEP_MS) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_agrees_with_point_evaluation() {
        let b = Brownian::new(42, "BTCUSDT");
        for (from, to) in [
            (0, 10),
            (1_000_000, 1_000_100),
            (41_234_567, 41_235_000),
            (5, 5),
            (N - 3, N),
        ] {
            let r = b.range(from, to);
            assert_eq!(r.len() as u64, to - from + 1, "{from}..={to}");
            for (i, w) in r.iter().enumerate() {
                assert_eq!(*w, b.at(from + i as u64), "index {}", from + i as u64);
            }
        }
    }

    #[test]
    fn increments_have_unit_variance_and_no_memory() {
        let b = Brownian::new(7, "ETHUSDT");
        let w = b.range(40_000_000, 40_200_000);
        let inc: Vec<f64> = w.windows(2).map(|p| p[1] - p[0]).collect();
        let n = inc.len() as f64;
        let mean = inc.iter().sum::<f64>() / n;
        let var = inc.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let lag1 = inc
            .windows(2)
            .map(|p| (p[0] - mean) * (p[1] - mean))
            .sum::<f64>()
            / n
            / var;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!(lag1.abs() < 0.01, "lag-1 autocorrelation {lag1}");
    }

    #[test]
    fn symbols_and_seeds_give_different_paths_and_the_same_inputs_the_same_path() {
        let a = Brownian::new(1, "AUSDT").at(123_456);
        assert_eq!(a, Brownian::new(1, "AUSDT").at(123_456));
        assert_ne!(a, Brownian::new(2, "AUSDT").at(123_456));
        assert_ne!(a, Brownian::new(1, "BUSDT").at(123_456));
    }
}

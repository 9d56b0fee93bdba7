//! The sim's market: instruments with Bybit-style filters, and prices and klines read from
//! each symbol's deterministic path (see [`crate::path`]).

use std::{collections::HashMap, path::Path};

use rust_decimal::{
    Decimal,
    prelude::{FromPrimitive, ToPrimitive},
};

use crate::path::{Brownian, STEP_MS, hash_str, index_of, mix, uniform};

/// Prices are anchored here: the path's level at this time is the symbol's anchor price.
const ANCHOR_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const YEAR_STEPS: f64 = 365.25 * 86_400_000.0 / STEP_MS as f64;
const MINUTE_MS: i64 = 60_000;

/// One tradable symbol: its filters and the parameters of its price path.
#[derive(Debug, Clone)]
pub struct Instrument {
    pub symbol: String,
    pub tick: Decimal,
    pub qty_step: Decimal,
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    pub max_mkt_qty: Decimal,
    pub min_notional: Decimal,
    pub max_leverage: Decimal,
    pub funding_interval_min: u32,
    /// Whether the name and filters come from a real Bybit instruments list.
    pub real: bool,
    anchor_price: f64,
    sigma_step: f64,
    usdt_per_minute: f64,
    path: Brownian,
    w_anchor: f64,
    volume_key: u64,
    /// When set, prices come from recorded klines instead of the generated path.
    replay: Option<std::sync::Arc<Replay>>,
}

/// Recorded klines of one symbol, replayed: inside each bar the price moves
/// open -> (low, high) -> close for a rising bar and open -> (high, low) -> close for a
/// falling one, linearly between those points, so the bar's extremes are touched and the
/// first price after a bar closes is the next bar's open. With a hold, the price stays at
/// the open for the bar's first `hold` ms and at the close for its last `hold` ms (the
/// moves happen in between): an order sent on a bar's close fills at the next bar's open
/// however long the trip to the exchange takes, up to the hold, and a stop triggered
/// inside a bar is known before the bar closes.
#[derive(Debug)]
pub struct Replay {
    /// Bar length of the file.
    pub len: i64,
    pub rows: Vec<Kline>,
    /// Sim ms the price stays at each bar's open and at its close.
    pub hold: i64,
}

impl Replay {
    /// The bar containing `t` (the last one after the data ends, the first before it).
    fn row_at(&self, t: i64) -> usize {
        match self.rows.binary_search_by_key(&t, |r| r.start_ms) {
            Ok(i) => i,
            Err(0) => 0,
            Err(i) => i - 1,
        }
    }

    /// The corner points of bar `i`'s price path, in time order (a hold adds the ends of
    /// the still stretches).
    fn vertices(&self, i: usize) -> Vec<(i64, Decimal)> {
        let r = &self.rows[i];
        let (a, b) = if r.close >= r.open {
            (r.low, r.high)
        } else {
            (r.high, r.low)
        };
        let t = r.start_ms;
        if self.hold <= 0 {
            return vec![
                (t, r.open),
                (t + self.len / 3, a),
                (t + 2 * self.len / 3, b),
                (t + self.len - 1, r.close),
            ];
        }
        let (from, to) = (t + self.hold, t + self.len - 1 - self.hold);
        let moving = to - from;
        vec![
            (t, r.open),
            (from, r.open),
            (from + moving / 3, a),
            (from + 2 * moving / 3, b),
            (to, r.close),
            (t + self.len - 1, r.close),
        ]
    }

    /// Whether a bar opens at `t`: the price gets there by a jump from the previous close,
    /// not by moving through the prices in between.
    fn opens_bar(&self, t: i64) -> bool {
        self.rows.binary_search_by_key(&t, |r| r.start_ms).is_ok()
    }

    fn price_at(&self, t: i64) -> Decimal {
        let i = self.row_at(t);
        let first = &self.rows[i];
        if t < first.start_ms {
            return first.open;
        }
        if t >= first.start_ms + self.len {
            return first.close; // after the data ends the price stays at the last close
        }
        let v = self.vertices(i);
        for w in v.windows(2) {
            let ((t0, p0), (t1, p1)) = (w[0], w[1]);
            if t >= t0 && t <= t1 {
                if t1 == t0 {
                    return p1;
                }
                return p0 + (p1 - p0) * Decimal::from(t - t0) / Decimal::from(t1 - t0);
            }
        }
        first.close
    }

    fn vertices_between(&self, after: i64, to: i64) -> Vec<(i64, Decimal)> {
        let mut out = Vec::new();
        let mut i = self.row_at(after);
        while i < self.rows.len() && self.rows[i].start_ms <= to {
            out.extend(
                self.vertices(i)
                    .into_iter()
                    .filter(|(t, _)| *t > after && *t <= to),
            );
            i += 1;
        }
        out
    }
}

/// One kline, prices and sizes as Bybit prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kline {
    pub start_ms: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
    pub turnover: Decimal,
}

fn pow10(e: i32) -> Decimal {
    if e >= 0 {
        Decimal::from(10u64.pow(e as u32))
    } else {
        Decimal::new(1, (-e) as u32)
    }
}

impl Instrument {
    fn with_path(mut self, seed: u64) -> Instrument {
        self.path = Brownian::new(seed, &self.symbol);
        self.w_anchor = self.path.at(index_of(ANCHOR_MS));
        self
    }

    /// A generated instrument: price, volatility and filters drawn from the name.
    fn generated(symbol: String, seed: u64) -> Instrument {
        // Parameters drawn from the name, independent of the path itself.
        let h = hash_str(seed ^ 0x005E_ED0F_9A4A, &symbol);
        // Prices log-uniform from 0.001 to 50,000 USDT; annual volatility 40 %-100 %, the
        // range of crypto perpetuals.
        let price = 10f64.powf(-3.0 + 7.7 * uniform(h));
        let annual_vol = 0.4 + 0.6 * uniform(h ^ 1);
        let tick = pow10(price.log10().floor() as i32 - 4);
        let qty_step =
            pow10(((100.0 / price).log10().floor() as i32).min(0)).max(Decimal::new(1, 3));
        Instrument {
            tick,
            qty_step,
            min_qty: qty_step,
            max_qty: (Decimal::from_f64(2_000_000.0 / price).unwrap_or(Decimal::ONE) / qty_step)
                .floor()
                * qty_step,
            max_mkt_qty: (Decimal::from_f64(1_000_000.0 / price).unwrap_or(Decimal::ONE)
                / qty_step)
                .floor()
                * qty_step,
            min_notional: Decimal::from(5),
            max_leverage: [
                Decimal::from(25),
                Decimal::from(50),
                Decimal::from(75),
                Decimal::from(100),
            ][(h % 4) as usize],
            funding_interval_min: if h.is_multiple_of(5) { 240 } else { 480 },
            real: false,
            anchor_price: price,
            sigma_step: annual_vol / YEAR_STEPS.sqrt(),
            usdt_per_minute: 10f64.powf(3.0 + 3.0 * uniform(h ^ 2)),
            path: Brownian::new(seed, &symbol),
            w_anchor: 0.0,
            volume_key: h ^ 0xB0_1D,
            replay: None,
            symbol,
        }
        .with_path(seed)
    }

    /// The exact (unquantised) price at grid index `n`.
    fn raw_at(&self, w: f64) -> f64 {
        self.anchor_price * (self.sigma_step * (w - self.w_anchor)).exp()
    }

    /// A price rounded to the tick (never below one tick).
    pub fn quantise(&self, price: f64) -> Decimal {
        let tick = self.tick.to_string().parse::<f64>().unwrap_or(1.0);
        let ticks = (price / tick).round().max(1.0) as i64;
        Decimal::from(ticks) * self.tick
    }

    /// 24-hour statistics for tickers: high and low sampled every 15 minutes (and now), and
    /// the expected base and quote volume. Approximations, cheap enough to serve the whole
    /// universe in one reply; klines carry the exact figures.
    pub fn day_stats(&self, now: i64) -> (Decimal, Decimal, Decimal, Decimal) {
        let (mut high, mut low) = (self.price_at(now), self.price_at(now));
        for k in 1..=96 {
            let p = self.price_at(now - k * 900_000);
            high = high.max(p);
            low = low.min(p);
        }
        let turnover = Decimal::from_f64(self.usdt_per_minute * 1440.0)
            .unwrap_or_default()
            .round_dp(2);
        let last = self.price_at(now);
        let volume = if last.is_zero() {
            Decimal::ZERO
        } else {
            ((turnover / last) / self.qty_step).floor() * self.qty_step
        };
        (high, low, volume, turnover)
    }

    /// The path's price at `t_ms` before rounding to the tick where it is known (replay),
    /// so that crossing times between corners are exact.
    fn unrounded_price_at(&self, t_ms: i64) -> Decimal {
        match &self.replay {
            Some(r) => r.price_at(t_ms),
            None => self.price_at(t_ms),
        }
    }

    /// The last traded price at `t_ms` (linear between grid points).
    pub fn price_at(&self, t_ms: i64) -> Decimal {
        if let Some(r) = &self.replay {
            return self.quantise_dec(r.price_at(t_ms));
        }
        let n = index_of(t_ms);
        let frac = (((t_ms - crate::path::ORIGIN_MS).rem_euclid(STEP_MS)) as f64) / STEP_MS as f64;
        let (a, b) = (
            self.raw_at(self.path.at(n)),
            self.raw_at(self.path.at(n + 1)),
        );
        self.quantise(a + (b - a) * frac)
    }

    /// [`grid_prices`](Self::grid_prices) and, between two of them, the first moment the
    /// path reaches each of `levels` (the price is then exactly the level): what a stop
    /// or a limit resting at a level sees. A replayed bar's open is reached by a jump (a
    /// gap), so a level jumped over is first seen at the open.
    pub fn prices_through(&self, after: i64, to: i64, levels: &[Decimal]) -> Vec<(i64, Decimal)> {
        let points = self.grid_prices(after, to);
        if levels.is_empty() || to <= after {
            return points;
        }
        let mut out = Vec::with_capacity(points.len() + 2);
        let (mut t0, mut p0) = (after, self.unrounded_price_at(after));
        // The stretch after the last corner up to `to` is searched too (its end is not a
        // price of the path's own): the next call starts beyond a level crossed there.
        let tail = points
            .last()
            .is_none_or(|(t, _)| *t < to)
            .then(|| (to, self.unrounded_price_at(to)));
        let last = points.len();
        for (k, (t1, p1)) in points.into_iter().chain(tail).enumerate() {
            let jump = self.replay.as_ref().is_some_and(|r| r.opens_bar(t1));
            if !jump && p1 != p0 && t1 > t0 {
                let mut crossings: Vec<(i64, Decimal)> = levels
                    .iter()
                    .filter(|l| (p0 < **l && **l < p1) || (p1 < **l && **l < p0))
                    .map(|l| {
                        let frac = (*l - p0) / (p1 - p0);
                        let dt = (frac * Decimal::from(t1 - t0)).ceil();
                        let dt = dt.to_i64().unwrap_or(t1 - t0);
                        ((t0 + dt).clamp(t0 + 1, t1), *l)
                    })
                    .collect();
                // Nearest to the segment's start first.
                crossings.sort_by_key(|(_, l)| (*l - p0).abs());
                out.extend(crossings);
            }
            if k < last {
                out.push((t1, p1));
            }
            (t0, p0) = (t1, p1);
        }
        out
    }

    /// The prices at the grid points in `(after, to]`, with their times: every price the
    /// path visits, in order (between them it moves linearly).
    pub fn grid_prices(&self, after: i64, to: i64) -> Vec<(i64, Decimal)> {
        if to <= after {
            return Vec::new();
        }
        if let Some(r) = &self.replay {
            return r
                .vertices_between(after, to)
                .into_iter()
                .map(|(t, p)| (t, self.quantise_dec(p)))
                .collect();
        }
        let (n0, n1) = (index_of(after) + 1, index_of(to));
        if n1 < n0 {
            return Vec::new();
        }
        self.path
            .range(n0, n1)
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                (
                    crate::path::ORIGIN_MS + (n0 + i as u64) as i64 * STEP_MS,
                    self.quantise(self.raw_at(w)),
                )
            })
            .collect()
    }

    /// The bar covering `[start, start + len)`, cut at `now` if still open. The close of a
    /// closed bar is the price at its end, which is the next bar's open.
    pub fn bar(&self, start: i64, len: i64, now: i64) -> Kline {
        if let Some(r) = &self.replay {
            return self.replay_bar(r, start, len, now);
        }
        let end = (start + len).min(now).max(start);
        let (n0, n1) = (index_of(start), index_of(end));
        let ws = self.path.range(n0, n1);
        let prices: Vec<f64> = ws.iter().map(|&w| self.raw_at(w)).collect();
        let open = self.price_at(start);
        let close = self.price_at(end);
        let mut high = open.max(close);
        let mut low = open.min(close);
        // Interior grid points (those strictly inside the bar) are touched by the path.
        for (i, p) in prices.iter().enumerate() {
            let t = crate::path::ORIGIN_MS + (n0 + i as u64) as i64 * STEP_MS;
            if t > start && t < end {
                let q = self.quantise(*p);
                high = high.max(q);
                low = low.min(q);
            }
        }
        let (mut volume, mut turnover) = (Decimal::ZERO, Decimal::ZERO);
        let mut m = start - start.rem_euclid(MINUTE_MS);
        while m + MINUTE_MS <= end {
            let usdt =
                self.usdt_per_minute * (0.25 + 1.5 * uniform(mix(m as u64) ^ self.volume_key));
            let px = self.price_at(m).to_string().parse::<f64>().unwrap_or(1.0);
            let qty = Decimal::from_f64(usdt / px).unwrap_or_default();
            let qty = (qty / self.qty_step).floor() * self.qty_step;
            volume += qty;
            turnover += (qty * self.price_at(m)).round_dp(4);
            m += MINUTE_MS;
        }
        Kline {
            start_ms: start,
            open,
            high,
            low,
            close,
            volume,
            turnover,
        }
    }
}

impl Instrument {
    /// Moves the price level to `price`. With `filters`, the tick and qty filters are
    /// derived from it (five significant digits; about 100 USDT per qty step at most);
    /// without, the tick is only made finer if the level would be too coarse for it.
    fn anchor_at(&mut self, price: f64, at_ms: i64, filters: bool) {
        if !(price.is_finite() && price > 0.0) {
            return;
        }
        // The path passes through `price` at `at_ms`: the real level at its real time.
        self.anchor_price = price;
        self.w_anchor = self.path.at(index_of(at_ms));
        let fine = pow10(price.log10().floor() as i32 - 4);
        if filters {
            self.tick = fine;
            self.qty_step =
                pow10(((100.0 / price).log10().floor() as i32).min(0)).max(Decimal::new(1, 3));
            self.min_qty = self.qty_step;
            let cap = |usdt: f64| {
                (Decimal::from_f64(usdt / price).unwrap_or(Decimal::ONE) / self.qty_step).floor()
                    * self.qty_step
            };
            self.max_mkt_qty = cap(1_000_000.0).max(self.qty_step);
            self.max_qty = cap(2_000_000.0).max(self.qty_step);
        } else if self.tick > fine * Decimal::from(10) {
            self.tick = fine;
        }
    }

    fn quantise_dec(&self, p: Decimal) -> Decimal {
        ((p / self.tick).round() * self.tick).max(self.tick)
    }

    /// A bar from recorded rows: the file's own rows exactly when the interval matches,
    /// merged rows for longer intervals, the price path for shorter ones or the open bar.
    fn replay_bar(&self, r: &Replay, start: i64, len: i64, now: i64) -> Kline {
        let end = (start + len).min(now).max(start);
        let closed: Vec<&Kline> = r
            .rows
            .iter()
            .filter(|k| k.start_ms >= start && k.start_ms + r.len <= end)
            .collect();
        let whole =
            len >= r.len && !closed.is_empty() && closed.len() as i64 * r.len == end - start;
        if whole {
            return Kline {
                start_ms: start,
                open: closed[0].open,
                high: closed.iter().map(|k| k.high).max().unwrap_or_default(),
                low: closed.iter().map(|k| k.low).min().unwrap_or_default(),
                close: closed[closed.len() - 1].close,
                volume: closed.iter().map(|k| k.volume).sum(),
                turnover: closed.iter().map(|k| k.turnover).sum(),
            };
        }
        let open = self.price_at(start);
        let close = self.price_at(end);
        let (mut high, mut low) = (open.max(close), open.min(close));
        for (_, p) in self.grid_prices(start, end) {
            high = high.max(p);
            low = low.min(p);
        }
        // Volume: whole rows inside, and the elapsed share of partly covered ones.
        let mut volume = Decimal::ZERO;
        for k in r
            .rows
            .iter()
            .filter(|k| k.start_ms < end && k.start_ms + r.len > start)
        {
            let overlap = (k.start_ms + r.len).min(end) - k.start_ms.max(start);
            volume += k.volume * Decimal::from(overlap) / Decimal::from(r.len);
        }
        let volume = (volume / self.qty_step).floor() * self.qty_step;
        Kline {
            start_ms: start,
            open,
            high,
            low,
            close,
            volume,
            turnover: (volume * close).round_dp(4),
        }
    }
}

/// The last close of every `<SYMBOL>.csv` in the folder `dir`, and the open time of that
/// bar; or the same from a price-level file ([`price_level_file`]).
fn price_levels(dir: &Path) -> Result<Vec<(String, f64, i64)>, String> {
    if dir.is_file() {
        return price_level_file(dir);
    }
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("price folder {}: {e}", dir.display()))?;
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let Some(symbol) = f.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let last: Vec<&str> = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.split(',').collect())
            .unwrap_or_default();
        let (Some(t), Some(close)) = (
            last.first().and_then(|t| t.trim().parse::<i64>().ok()),
            last.get(4).and_then(|c| c.trim().parse::<f64>().ok()),
        ) else {
            continue;
        };
        out.push((symbol.to_owned(), close, t));
    }
    Ok(out)
}

/// Price levels from one CSV of `symbol,open_time_ms,close` rows (a header first): each
/// symbol's last daily close, as the folder form gives it, in a few kB
/// (`deploy/sim/universe_prices.csv`).
fn price_level_file(file: &Path) -> Result<Vec<(String, f64, i64)>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = || {
            format!(
                "{}:{}: expected symbol,open_time_ms,close, got `{line}`",
                file.display(),
                n + 1
            )
        };
        let [symbol, t, close] = f[..] else {
            return Err(bad());
        };
        let t: i64 = t.parse().map_err(|_| bad())?;
        let close: f64 = close.parse().map_err(|_| bad())?;
        if symbol.is_empty() || !close.is_finite() || close <= 0.0 {
            return Err(bad());
        }
        out.push((symbol.to_owned(), close, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Decimal places of a number as written.
fn decimals(s: &str) -> u32 {
    s.split_once('.').map_or(0, |(_, f)| f.len() as u32)
}

/// Reads one recorded kline file (`open_time_ms,open,high,low,close,volume`, oldest first).
fn read_replay(file: &Path) -> Result<(Replay, u32, u32), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut rows = Vec::new();
    let (mut price_dp, mut qty_dp) = (0u32, 0u32);
    for (n, line) in text.lines().enumerate() {
        if n == 0 && line.starts_with("open_time") {
            continue;
        }
        let f: Vec<&str> = line.trim().split(',').collect();
        let bad = |what: &str| format!("{}:{}: {what} in `{line}`", file.display(), n + 1);
        if f.len() < 6 {
            return Err(bad("expected open_time_ms,open,high,low,close,volume"));
        }
        let dec = |i: usize| f[i].parse::<Decimal>().map_err(|_| bad("not a number"));
        for x in &f[1..5] {
            price_dp = price_dp.max(decimals(x));
        }
        qty_dp = qty_dp.max(decimals(f[5].trim_end_matches('0').trim_end_matches('.')));
        let (open, close, volume) = (dec(1)?, dec(4)?, dec(5)?);
        rows.push(Kline {
            start_ms: f[0].parse().map_err(|_| bad("bad open_time_ms"))?,
            open,
            high: dec(2)?,
            low: dec(3)?,
            close,
            volume,
            turnover: (volume * close).round_dp(4),
        });
    }
    if rows.len() < 2 {
        return Err(format!("{}: fewer than two klines", file.display()));
    }
    if !rows.windows(2).all(|w| w[1].start_ms > w[0].start_ms) {
        return Err(format!("{}: open times are not increasing", file.display()));
    }
    let mut gaps: Vec<i64> = rows
        .windows(2)
        .map(|w| w[1].start_ms - w[0].start_ms)
        .collect();
    gaps.sort_unstable();
    let len = gaps[gaps.len() / 2];
    Ok((Replay { len, rows, hold: 0 }, price_dp, qty_dp))
}

/// Kline interval lengths as Bybit spells them; weekly bars start on Monday 00:00 UTC.
pub fn interval_ms(interval: &str) -> Option<(i64, i64)> {
    const MIN: i64 = 60_000;
    let minutes = match interval {
        "1" | "3" | "5" | "15" | "30" | "60" | "120" | "240" | "360" | "720" => {
            interval.parse().ok()?
        }
        "D" => 1440,
        "W" => 10_080,
        _ => return None,
    };
    // (length, alignment offset): the Unix epoch was a Thursday, Monday is 4 days later.
    let offset = if interval == "W" { 4 * 1440 * MIN } else { 0 };
    Some((minutes * MIN, offset))
}

/// Start of the bar of length `len` (aligned with `offset`) that contains `t`.
pub fn bar_start(t: i64, len: i64, offset: i64) -> i64 {
    (t - offset).div_euclid(len) * len + offset
}

/// The whole universe: every listed instrument with its price path (one symbol's market in
/// a backtest is `shardbot_backtest::Market`).
#[derive(Debug)]
pub struct Universe {
    pub instruments: Vec<Instrument>,
    by_symbol: HashMap<String, usize>,
    /// Charged at every settlement (longs pay a positive rate) and shown in tickers.
    pub funding_rate: Decimal,
}

/// A real instrument's filters read from a Bybit instruments-info file.
fn real_instruments(file: &Path, seed: u64) -> Result<Vec<Instrument>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let list = v
        .get("result")
        .unwrap_or(&v)
        .get("list")
        .and_then(|l| l.as_array())
        .ok_or_else(|| format!("{}: no `list`", file.display()))?;
    let dec = |x: &serde_json::Value, k: &str| {
        x.get(k)
            .and_then(|s| s.as_str())
            .and_then(|s| s.parse::<Decimal>().ok())
    };
    let mut out = Vec::new();
    for i in list {
        let s = |k: &str| i.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        if s("contractType") != "LinearPerpetual"
            || s("settleCoin") != "USDT"
            || s("status") != "Trading"
        {
            continue;
        }
        let (Some(lot), Some(pf), Some(lev)) = (
            i.get("lotSizeFilter"),
            i.get("priceFilter"),
            i.get("leverageFilter"),
        ) else {
            continue;
        };
        let (Some(tick), Some(step), Some(min_qty), Some(max_qty), Some(max_lev)) = (
            dec(pf, "tickSize"),
            dec(lot, "qtyStep"),
            dec(lot, "minOrderQty"),
            dec(lot, "maxOrderQty"),
            dec(lev, "maxLeverage"),
        ) else {
            continue;
        };
        let symbol = s("symbol").to_owned();
        let mut g = Instrument::generated(symbol.clone(), seed);
        // A price consistent with the real tick: 10^3.5 to 10^5 ticks.
        let tick_f = tick.to_string().parse::<f64>().unwrap_or(0.01);
        g.anchor_price = tick_f * 10f64.powf(3.5 + 1.5 * uniform(g.volume_key ^ 0x7));
        g.tick = tick;
        g.qty_step = step;
        g.min_qty = min_qty;
        g.max_qty = max_qty;
        g.max_mkt_qty = dec(lot, "maxMktOrderQty").unwrap_or(max_qty);
        g.min_notional = dec(lot, "minNotionalValue").unwrap_or(Decimal::from(5));
        g.max_leverage = max_lev;
        g.funding_interval_min = i
            .get("fundingInterval")
            .and_then(|f| f.as_u64())
            .unwrap_or(480) as u32;
        g.real = true;
        out.push(g);
    }
    Ok(out)
}

/// A pronounceable made-up base coin from a number, e.g. `ZORAV`.
fn made_up_name(n: u64) -> String {
    const C: &[u8] = b"BCDFGHKLMNPRSTVXZ";
    const V: &[u8] = b"AEIOU";
    let mut h = mix(n);
    let len = 2 + (h % 2) as usize;
    let mut s = String::new();
    for _ in 0..len {
        s.push(C[(h % C.len() as u64) as usize] as char);
        h /= C.len() as u64;
        s.push(V[(h % V.len() as u64) as usize] as char);
        h /= V.len() as u64;
    }
    format!("{s}{}USDT", n % 10)
}

impl Universe {
    /// The universe of a folder of recorded kline files, one `<SYMBOL>.csv` per symbol,
    /// each bar's price held `hold_ms` at its open and at its close (see [`Replay`]).
    pub fn from_replay(dir: &Path, seed: u64, hold_ms: i64) -> Result<Universe, String> {
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("replay folder {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("replay folder {} has no .csv files", dir.display()));
        }
        let mut instruments = Vec::new();
        for f in files {
            let symbol = f
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let (mut replay, price_dp, qty_dp) = read_replay(&f)?;
            if hold_ms < 0 || 3 * hold_ms >= replay.len {
                return Err(format!(
                    "sim.replay_hold_ms = {hold_ms}: must be 0 or more and under a third of \
                     the bar length of {} ({} ms)",
                    f.display(),
                    replay.len
                ));
            }
            replay.hold = hold_ms;
            let mut i = Instrument::generated(symbol, seed);
            i.tick = Decimal::new(1, price_dp);
            i.qty_step = Decimal::new(1, qty_dp.min(8));
            i.min_qty = i.qty_step;
            let last = replay.rows[replay.rows.len() - 1].close.max(i.tick);
            i.max_mkt_qty = ((Decimal::from(1_000_000) / last) / i.qty_step).floor() * i.qty_step;
            i.max_qty = i.max_mkt_qty * Decimal::from(2);
            i.real = true;
            i.replay = Some(std::sync::Arc::new(replay));
            instruments.push(i);
        }
        Ok(Universe::from_instruments(instruments))
    }

    /// The earliest open time of the recorded data, and its bar length (replay only).
    pub fn replay_start(&self) -> Option<(i64, i64)> {
        self.instruments
            .iter()
            .filter_map(|i| i.replay.as_ref().map(|r| (r.rows[0].start_ms, r.len)))
            .min()
    }

    /// `count` symbols: the real ones of `universe_file` (if given and readable) first,
    /// then generated ones. Sorted by symbol, as Bybit lists them.
    pub fn new(seed: u64, count: usize, universe_file: Option<&Path>) -> Result<Universe, String> {
        Universe::with_price_levels(seed, count, universe_file, None)
    }

    /// Like [`Universe::new`], and with real symbols and price levels from `price_dir`: a
    /// folder of daily kline files whose last close anchors each symbol's price. Symbols
    /// already listed by `universe_file` keep its filters (a tick finer where needed).
    pub fn with_price_levels(
        seed: u64,
        count: usize,
        universe_file: Option<&Path>,
        price_dir: Option<&Path>,
    ) -> Result<Universe, String> {
        let mut instruments = match universe_file {
            Some(f) => real_instruments(f, seed)?,
            None => Vec::new(),
        };
        if let Some(dir) = price_dir {
            for (symbol, close, at_ms) in price_levels(dir)? {
                match instruments.iter_mut().find(|i| i.symbol == symbol) {
                    Some(i) => i.anchor_at(close, at_ms, false),
                    None => {
                        let mut g = Instrument::generated(symbol, seed);
                        g.anchor_at(close, at_ms, true);
                        g.real = true;
                        instruments.push(g);
                    }
                }
            }
        }
        instruments.truncate(count);
        let mut names: std::collections::HashSet<String> =
            instruments.iter().map(|i| i.symbol.clone()).collect();
        let mut n = 0u64;
        while instruments.len() < count {
            let name = made_up_name(seed ^ n);
            n += 1;
            if names.insert(name.clone()) {
                instruments.push(Instrument::generated(name, seed));
            }
        }
        Ok(Universe::from_instruments(instruments))
    }

    /// Lists `instruments` sorted by symbol, as Bybit lists them, and indexes them.
    fn from_instruments(mut instruments: Vec<Instrument>) -> Universe {
        instruments.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        let by_symbol = instruments
            .iter()
            .enumerate()
            .map(|(i, x)| (x.symbol.clone(), i))
            .collect();
        Universe {
            instruments,
            by_symbol,
            funding_rate: Decimal::new(1, 4),
        }
    }

    pub fn get(&self, symbol: &str) -> Option<&Instrument> {
        self.by_symbol.get(symbol).map(|&i| &self.instruments[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market() -> Universe {
        Universe::new(42, 650, None).unwrap()
    }

    #[test]
    fn the_universe_has_the_requested_size_unique_sorted_and_valid() {
        let m = market();
        assert_eq!(m.instruments.len(), 650);
        assert!(m.instruments.windows(2).all(|w| w[0].symbol < w[1].symbol));
        for i in &m.instruments {
            assert!(
                i.symbol.ends_with("USDT") && i.symbol.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{}",
                i.symbol
            );
            assert!(
                i.tick > Decimal::ZERO && i.qty_step > Decimal::ZERO && i.min_qty >= i.qty_step
            );
            let p = i.price_at(ANCHOR_MS);
            assert!(p >= i.tick, "{}: {p}", i.symbol);
            assert_eq!(
                p % i.tick,
                Decimal::ZERO,
                "{}: price on the tick grid",
                i.symbol
            );
        }
    }

    #[test]
    fn consecutive_bars_chain_and_contain_their_prices() {
        let m = market();
        let i = &m.instruments[17];
        let (len, off) = interval_ms("5").unwrap();
        let now = ANCHOR_MS + 10 * 86_400_000;
        let start = bar_start(now - 50 * len, len, off);
        let bars: Vec<Kline> = (0..40).map(|k| i.bar(start + k * len, len, now)).collect();
        for w in bars.windows(2) {
            assert_eq!(
                w[0].close, w[1].open,
                "the first price after a close is the next open"
            );
        }
        for b in &bars {
            assert!(
                b.low <= b.open.min(b.close) && b.high >= b.open.max(b.close),
                "{b:?}"
            );
            assert!(b.volume > Decimal::ZERO);
        }
        // an open bar ends at now
        let open_bar = i.bar(bar_start(now, len, off), len, now);
        assert_eq!(open_bar.close, i.price_at(now));
    }

    #[test]
    fn weekly_bars_start_on_monday() {
        let (len, off) = interval_ms("W").unwrap();
        // 2026-01-01 is a Thursday; its week starts Monday 2025-12-29.
        assert_eq!(bar_start(ANCHOR_MS, len, off), 1_766_966_400_000);
        assert_eq!(interval_ms("M"), None);
        assert_eq!(interval_ms("7"), None);
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn market() -> (tempfile::TempDir, Universe) {
        market_held(0)
    }

    fn market_held(hold_ms: i64) -> (tempfile::TempDir, Universe) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("TESTUSDT.csv"),
            "open_time_ms,open,high,low,close,volume\n\
             1000000,100.0,103.5,99.0,102.0,12.5\n\
             1300000,102.1,102.4,97.0,98.0,7.25\n\
             1600000,98.0,99.9,98.0,99.5,1.0\n",
        )
        .unwrap();
        let m = Universe::from_replay(dir.path(), 1, hold_ms).unwrap();
        (dir, m)
    }

    #[test]
    fn a_held_bar_stays_at_its_open_and_at_its_close() {
        let (_d, m) = market_held(60_000);
        let i = m.get("TESTUSDT").unwrap();
        let (t, len, hold) = (1_000_000, 300_000, 60_000);
        for dt in [0, 1, hold / 2, hold] {
            assert_eq!(i.price_at(t + dt), dec!(100.0), "{dt} ms into the bar");
        }
        assert!(
            i.price_at(t + hold + 30_000) < dec!(100.0),
            "moving after the hold"
        );
        for dt in [len - 1 - hold, len - hold / 2, len - 1] {
            assert_eq!(i.price_at(t + dt), dec!(102.0), "{dt} ms into the bar");
        }
        // Still open -> low -> high -> close, every extreme touched.
        let seen: Vec<Decimal> = i
            .grid_prices(t, t + len - 1)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(
            seen,
            [
                dec!(100.0),
                dec!(99.0),
                dec!(103.5),
                dec!(102.0),
                dec!(102.0)
            ]
        );
        let e = Universe::from_replay(_d.path(), 1, 100_000).unwrap_err();
        assert!(e.contains("replay_hold_ms = 100000"), "{e}");
    }

    #[test]
    fn a_level_is_seen_where_the_path_crosses_it_or_at_the_open_it_gapped_to() {
        let (_d, m) = market();
        let i = m.get("TESTUSDT").unwrap();
        // Inside the rising bar: 100.0 -> 99.0 over 100 s crosses 99.5 half way.
        let p = i.prices_through(1_000_000, 1_100_000, &[dec!(99.5), dec!(50.0)]);
        assert_eq!(p, [(1_050_000, dec!(99.5)), (1_100_000, dec!(99.0))]);
        // Both levels on one segment: the nearer one first (99.0 -> 103.5).
        let p = i.prices_through(1_100_000, 1_200_000, &[dec!(103.0), dec!(100.0)]);
        assert_eq!(
            p.iter().map(|x| x.1).collect::<Vec<_>>(),
            [dec!(100.0), dec!(103.0), dec!(103.5)]
        );
        assert!(p[0].0 < p[1].0 && p[1].0 < p[2].0, "{p:?}");
        // A crossing between two corners is found however time is cut: in calls that
        // see no corner at all, and in the stretch after the last one.
        let p = i.prices_through(1_010_000, 1_060_000, &[dec!(99.5)]);
        assert_eq!(p, [(1_050_000, dec!(99.5))]);
        let p = i.prices_through(1_090_000, 1_150_000, &[dec!(100.0)]);
        assert_eq!(p, [(1_100_000, dec!(99.0)), (1_122_223, dec!(100.0))]);
        // 102.0 closes, 102.1 opens the next bar: 102.05 is jumped over, never quoted.
        let p = i.prices_through(1_299_000, 1_300_000, &[dec!(102.05)]);
        assert_eq!(p, [(1_299_999, dec!(102.0)), (1_300_000, dec!(102.1))]);
    }

    #[test]
    fn the_path_visits_open_extremes_and_close_in_order() {
        let (_d, m) = market();
        let i = m.get("TESTUSDT").unwrap();
        assert_eq!(
            (i.tick, i.qty_step),
            (dec!(0.1), dec!(0.01)),
            "filters from the file's precision"
        );
        let len = 300_000;
        // Rising bar: open -> low -> high -> close.
        assert_eq!(i.price_at(1_000_000), dec!(100.0));
        assert_eq!(i.price_at(1_000_000 + len / 3), dec!(99.0));
        assert_eq!(i.price_at(1_000_000 + 2 * len / 3), dec!(103.5));
        assert_eq!(i.price_at(1_000_000 + len - 1), dec!(102.0));
        // The first price after a close is the next bar's open; falling bar: high first.
        assert_eq!(i.price_at(1_300_000), dec!(102.1));
        assert_eq!(i.price_at(1_300_000 + len / 3), dec!(102.4));
        assert_eq!(i.price_at(1_300_000 + 2 * len / 3), dec!(97.0));
        // After the data: the last close.
        assert_eq!(i.price_at(9_000_000), dec!(99.5));
        let touched: Vec<Decimal> = i
            .grid_prices(1_300_000, 1_600_000)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(touched, [dec!(102.4), dec!(97.0), dec!(98.0), dec!(98.0)]);
    }

    #[test]
    fn bars_are_the_recorded_rows() {
        let (_d, m) = market();
        let i = m.get("TESTUSDT").unwrap();
        let b = i.bar(1_300_000, 300_000, 9_000_000);
        assert_eq!(
            (b.open, b.high, b.low, b.close, b.volume),
            (dec!(102.1), dec!(102.4), dec!(97.0), dec!(98.0), dec!(7.25))
        );
        // Two rows merged into a 10-minute bar.
        let b = i.bar(1_000_000, 600_000, 9_000_000);
        assert_eq!(
            (b.open, b.high, b.low, b.close, b.volume),
            (
                dec!(100.0),
                dec!(103.5),
                dec!(97.0),
                dec!(98.0),
                dec!(19.75)
            )
        );
        // The open bar so far, from the path.
        let b = i.bar(1_600_000, 300_000, 1_600_000 + 100_000);
        assert_eq!(b.open, dec!(98.0));
        assert_eq!(b.close, i.price_at(1_700_000));
    }

    #[test]
    fn a_malformed_file_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("BADUSDT.csv"),
            "open_time_ms,open,high,low,close,volume\n1,2,3,4,5,6\n2,2,x,4,5,6\n",
        )
        .unwrap();
        let e = Universe::from_replay(dir.path(), 1, 0).unwrap_err();
        assert!(e.contains("BADUSDT.csv:3"), "{e}");
    }
}

#[cfg(test)]
mod universe_tests {
    use super::*;

    /// The default configuration's price levels (deploy/sim/universe_prices.csv).
    fn default_prices() -> std::path::PathBuf {
        shardbot_testdata::repo_root().join("deploy/sim/universe_prices.csv")
    }

    /// The price-level file holds, for each daily series, its folder form's level: checked on
    /// the repository's daily files (and on all 329 where the full data is at hand).
    #[test]
    fn the_price_level_file_is_the_daily_files_last_closes() {
        let file: std::collections::HashMap<String, (f64, i64)> = price_levels(&default_prices())
            .unwrap()
            .into_iter()
            .map(|(s, c, t)| (s, (c, t)))
            .collect();
        assert_eq!(file.len(), 329);
        let mut folders = vec![shardbot_testdata::klines("bybit_linear_1d")];
        folders.extend(shardbot_testdata::full_klines("bybit_linear_1d").ok());
        for dir in folders {
            for (symbol, close, t) in price_levels(&dir).unwrap() {
                assert_eq!(file.get(&symbol), Some(&(close, t)), "{symbol}");
            }
        }
        // A malformed row is refused, naming the file and line.
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("prices.csv");
        std::fs::write(&bad, "symbol,open_time_ms,close\nBTCUSDT,1,x\n").unwrap();
        let e = price_levels(&bad).unwrap_err();
        assert!(
            e.contains("prices.csv:2") && e.contains("BTCUSDT,1,x"),
            "{e}"
        );
    }

    #[test]
    fn real_names_and_price_levels_come_from_the_fixture_and_the_data() {
        let file = shardbot_testdata::bybit_fixture(
            "rest/v5_market_instruments_info_linear_full_testnet_2023_result.json",
        );
        let prices = default_prices();
        let m = Universe::with_price_levels(7, 600, Some(&file), Some(&prices)).unwrap();
        assert_eq!(m.instruments.len(), 600);
        // Every name of both sources is listed, once.
        let mut names: std::collections::HashSet<String> = real_instruments(&file, 7)
            .unwrap()
            .into_iter()
            .map(|i| i.symbol)
            .collect();
        names.extend(
            price_levels(&prices)
                .unwrap()
                .into_iter()
                .map(|(s, _, _)| s),
        );
        let real: std::collections::HashSet<String> = m
            .instruments
            .iter()
            .filter(|i| i.real)
            .map(|i| i.symbol.clone())
            .collect();
        assert_eq!(real, names);
        assert!(real.len() > 300, "{} real names", real.len());
        // BTCUSDT: the fixture's filters, the data's price level (its last daily bar).
        let last_row: Vec<String> =
            std::fs::read_to_string(shardbot_testdata::klines("bybit_linear_1d/BTCUSDT.csv"))
                .unwrap()
                .lines()
                .last()
                .unwrap()
                .split(',')
                .map(str::to_owned)
                .collect();
        let (btc_time, btc_close): (i64, f64) =
            (last_row[0].parse().unwrap(), last_row[4].parse().unwrap());
        let btc = m.get("BTCUSDT").unwrap();
        assert_eq!(
            (btc.tick, btc.qty_step),
            (Decimal::new(1, 1), Decimal::new(1, 3)),
            "fixture filters"
        );
        let at_anchor: f64 = btc.price_at(btc_time).to_string().parse().unwrap();
        assert!(
            (at_anchor - btc_close).abs() <= 0.1,
            "{at_anchor} vs {btc_close}"
        );
        // every real price has at least 1 % resolution on its tick
        for i in m.instruments.iter().filter(|i| i.real) {
            let p = i.price_at(ANCHOR_MS);
            assert!(
                p / i.tick >= Decimal::from(100),
                "{}: {p} on a {} tick",
                i.symbol,
                i.tick
            );
        }
    }
}

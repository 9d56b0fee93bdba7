//! Kline CSV files (`open_time_ms,open,high,low,close,volume`, a header line, oldest
//! first), as `../shared/data/klines` holds them and `shardbot download` writes them; and
//! a [`Market`], a series with its instrument's trading rules, which a backtest runs over.

use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use shardbot_protocol::{Instrument, Symbol};
use shardbot_strategy::Candle;

use crate::BacktestError;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Bad {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0} holds no .csv files")]
    Empty(PathBuf),
}

/// One symbol's candles.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub symbol: String,
    pub candles: Vec<Candle>,
    /// The most decimals any price of the file was written with (at most 8): the tick a
    /// file without instrument rules is assumed to trade on.
    pub price_decimals: u32,
}

/// Reads one kline CSV; the symbol is the file's stem. Rows must be strictly ascending in
/// time with low ≤ open, close ≤ high.
pub fn load_csv(path: &Path) -> Result<Series, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        source,
    })?;
    let bad = |line: usize, reason: String| DataError::Bad {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut candles = Vec::with_capacity(text.len() / 48);
    let mut price_decimals = 0u32;
    for (n, l) in text.lines().enumerate() {
        let line = n + 1;
        if l.trim().is_empty() || (n == 0 && l.starts_with("open_time")) {
            continue;
        }
        let mut f = l.split(',');
        let mut next = |name: &str| {
            f.next().ok_or_else(|| {
                bad(
                    line,
                    format!("missing {name} (expected open_time_ms,open,high,low,close,volume)"),
                )
            })
        };
        let t = next("open_time_ms")?;
        let open_time_ms: i64 = t
            .trim()
            .parse()
            .map_err(|_| bad(line, format!("open_time_ms `{t}` is not an integer")))?;
        let mut v = [0.0; 5];
        for (i, name) in ["open", "high", "low", "close", "volume"]
            .iter()
            .enumerate()
        {
            let x = next(name)?;
            if i < 4 {
                let d = x
                    .trim()
                    .split_once('.')
                    .map_or(0, |(_, f)| f.trim_end_matches('0').len());
                price_decimals = price_decimals.max(d.min(8) as u32);
            }
            v[i] = x
                .trim()
                .parse()
                .map_err(|_| bad(line, format!("{name} `{x}` is not a number")))?;
        }
        let c = Candle {
            open_time_ms,
            open: v[0],
            high: v[1],
            low: v[2],
            close: v[3],
            volume: v[4],
        };
        // Bybit's first bar of a new listing can open at 0: kept as recorded.
        if !(c.low <= c.open.min(c.close) && c.high >= c.open.max(c.close)) || c.low < 0.0 {
            return Err(bad(
                line,
                "not a valid bar (needs 0 ≤ low ≤ open, close ≤ high)".into(),
            ));
        }
        if let Some(p) = candles.last().map(|p: &Candle| p.open_time_ms)
            && open_time_ms <= p
        {
            return Err(bad(
                line,
                format!("open_time_ms {open_time_ms} is not after the previous row's {p}"),
            ));
        }
        candles.push(c);
    }
    let symbol = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Series {
        symbol,
        candles,
        price_decimals,
    })
}

impl Series {
    /// A series from the history store's bars (one symbol, oldest first).
    pub fn from_bars(symbol: &str, bars: &[shardbot_protocol::Bar]) -> Series {
        use rust_decimal::prelude::ToPrimitive;
        let f = |d: rust_decimal::Decimal| d.to_f64().unwrap_or(0.0);
        Series {
            symbol: symbol.to_owned(),
            price_decimals: bars
                .iter()
                .flat_map(|b| [b.open, b.high, b.low, b.close])
                .map(|d| d.normalize().scale())
                .max()
                .unwrap_or(0)
                .min(8),
            candles: bars
                .iter()
                .map(|b| Candle {
                    open_time_ms: b.open_time_ms,
                    open: f(b.open),
                    high: f(b.high),
                    low: f(b.low),
                    close: f(b.close),
                    volume: f(b.volume),
                })
                .collect(),
        }
    }
}

/// Every `.csv` of a folder (sorted by name), or the one file `path` names.
pub fn load_path(path: &Path) -> Result<Vec<Series>, DataError> {
    if !path.is_dir() {
        return Ok(vec![load_csv(path)?]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| DataError::Io {
            path: path.to_owned(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DataError::Empty(path.to_owned()));
    }
    files.iter().map(|f| load_csv(f)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("BTCUSDT.csv");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn a_file_with_its_header_and_its_tick() {
        let (_d, p) = write(
            "open_time_ms,open,high,low,close,volume\n1000,100.5,101.25,99.0,100.0,3\n2000,0.0,101,0,100.125,1\n",
        );
        let s = load_csv(&p).unwrap();
        assert_eq!(s.symbol, "BTCUSDT");
        assert_eq!(s.candles.len(), 2);
        assert_eq!(s.candles[0].high, 101.25);
        assert_eq!(s.price_decimals, 3, "100.125");
    }

    #[rstest]
    #[case::not_a_number("1000,abc,1,1,1,1\n", "line 1: open `abc` is not a number")]
    #[case::missing_field("1000,1,1,1\n", "line 1: missing close")]
    #[case::high_below_close("1000,1,1,1,2,1\n", "line 1: not a valid bar")]
    #[case::not_ascending(
        "2000,1,1,1,1,1\n1000,1,1,1,1,1\n",
        "line 2: open_time_ms 1000 is not after"
    )]
    fn bad_rows_are_named_with_file_and_line(#[case] text: &str, #[case] says: &str) {
        let (_d, p) = write(text);
        let e = load_csv(&p).unwrap_err().to_string();
        assert!(e.contains("BTCUSDT.csv") && e.contains(says), "{e}");
    }
}

/// One symbol's data and trading rules. Without known rules (a bare CSV) use
/// [`Market::unrestricted`]: the tick its prices were written with, quantities to 8
/// decimals, no minimums.
#[derive(Debug, Clone)]
pub struct Market {
    pub series: Series,
    pub instrument: Instrument,
}

impl Market {
    pub fn unrestricted(series: Series) -> Result<Market, BacktestError> {
        let price_decimals = series.price_decimals;
        let symbol = Symbol::new(&series.symbol)
            .map_err(|e| BacktestError::Symbol(series.symbol.clone(), e.to_string()))?;
        Ok(Market {
            series,
            instrument: Instrument {
                symbol,
                tick_size: Decimal::new(1, price_decimals),
                // Fractional sizes, as other backtesters trade them; 8 decimals keep every
                // product of money exact without 28-digit arithmetic.
                qty_step: Decimal::new(1, 8),
                min_order_qty: Decimal::ZERO,
                max_market_order_qty: Decimal::MAX,
                min_notional: Decimal::ZERO,
                max_leverage: Decimal::ONE_HUNDRED,
                funding_interval_min: 480,
            },
        })
    }
}

/// A candle's price as the backtest fills at it: the decimal it was written as (exact up to
/// 8 decimals, every kline file's).
pub fn decimal_price(x: f64) -> rust_decimal::Decimal {
    crate::fixed::dec(x)
}

//! The history store: closed klines per symbol and interval.
//!
//! Layout: `<root>/<interval>/<SYMBOL>.klines`, one file per series, an 8-byte header
//! (`SBKLIN` + format version) followed by fixed-size records in ascending open time:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | open time, Unix ms, i64 little-endian |
//! | 6 × 16 | open, high, low, close, volume, turnover as `rust_decimal`'s 16-byte form |
//!
//! Fixed-size records make a range lookup a binary search and a read a straight copy, so
//! backtests read millions of bars per second; decimals keep the exchange's prices
//! without loss. Written by the market-data gateway (every closed bar) and by
//! `shardbot download` / `import`; read by the gateway's history replies and by backtests.
//!
//! A series is append-only: a write keeps only bars newer than the newest stored one.
//! A crash in the middle of an append leaves at most a partial last record, which the next
//! append cuts off (it was never acknowledged). One process writes a series at a time.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use rust_decimal::Decimal;
use shardbot_protocol::{Bar, Interval, Symbol, TimestampMs};

const MAGIC: &[u8; 8] = b"SBKLIN\x00\x01";
const HEADER: u64 = 8;
/// Bytes per stored bar.
pub const RECORD: usize = 8 + 6 * 16;
const EXT: &str = "klines";

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a shardbot kline file (bad header)")]
    BadHeader { path: PathBuf },
    #[error("bars of one append must share a symbol and interval ({0})")]
    MixedSeries(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError + '_ {
    move |source| HistoryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A folder of kline series.
#[derive(Debug, Clone)]
pub struct HistoryStore {
    root: PathBuf,
}

impl HistoryStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<HistoryStore, HistoryError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io(&root))?;
        Ok(HistoryStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of one series.
    pub fn path(&self, symbol: &Symbol, interval: Interval) -> PathBuf {
        self.root
            .join(interval.as_str())
            .join(format!("{}.{EXT}", symbol.as_str()))
    }

    /// Appends the bars newer than the newest stored one (in open-time order; bars of
    /// other series are refused). Returns how many were written.
    pub fn append(&self, bars: &[Bar]) -> Result<usize, HistoryError> {
        self.append_newest(bars).map(|(written, _)| written)
    }

    /// [`append`](Self::append), also giving the open time of the newest bar stored after
    /// it: the caller's newest bar's when the series holds everything up to it, a later one
    /// when the store is ahead of the caller (written by a run whose clock was ahead).
    pub fn append_newest(
        &self,
        bars: &[Bar],
    ) -> Result<(usize, Option<TimestampMs>), HistoryError> {
        let Some(first) = bars.first() else {
            return Ok((0, None));
        };
        if let Some(b) = bars
            .iter()
            .find(|b| b.symbol != first.symbol || b.interval != first.interval)
        {
            return Err(HistoryError::MixedSeries(format!(
                "{} {} and {} {}",
                first.symbol, first.interval, b.symbol, b.interval
            )));
        }
        let path = self.path(&first.symbol, first.interval);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        let mut last = None;
        let end = if len < HEADER {
            file.set_len(0).map_err(io(&path))?;
            file.write_all(MAGIC).map_err(io(&path))?;
            HEADER
        } else {
            check_header(&mut file, &path)?;
            let whole = HEADER + (len - HEADER) / RECORD as u64 * RECORD as u64;
            if whole != len {
                file.set_len(whole).map_err(io(&path))?;
            }
            if whole > HEADER {
                let mut rec = [0u8; RECORD];
                file.seek(SeekFrom::Start(whole - RECORD as u64))
                    .map_err(io(&path))?;
                file.read_exact(&mut rec).map_err(io(&path))?;
                last = Some(open_time(&rec));
            }
            whole
        };
        let mut buf = Vec::with_capacity(bars.len() * RECORD);
        let mut written = 0;
        for b in bars {
            if last.is_some_and(|l| b.open_time_ms <= l) {
                continue;
            }
            encode(b, &mut buf);
            last = Some(b.open_time_ms);
            written += 1;
        }
        if written > 0 {
            file.seek(SeekFrom::Start(end)).map_err(io(&path))?;
            file.write_all(&buf).map_err(io(&path))?;
        }
        Ok((written, last))
    }

    /// Writes bars of one series wherever they belong, older ones too: bars newer than the
    /// stored ones are appended; otherwise the series is rewritten merged (stored bars win
    /// over new ones at the same open time) into a temporary file that replaces it
    /// atomically. For `shardbot download` / `import`; do not merge into a series the
    /// gateway is appending to at that moment (its append could be lost). Returns how many
    /// bars were new.
    pub fn merge(&self, bars: &[Bar]) -> Result<usize, HistoryError> {
        let Some(first) = bars.first() else {
            return Ok(0);
        };
        let (symbol, interval) = (first.symbol.clone(), first.interval);
        let stored = self.read(&symbol, interval, None, None, None)?;
        let newest = stored.last().map(|b| b.open_time_ms);
        let mut sorted: Vec<&Bar> = bars.iter().collect();
        sorted.sort_by_key(|b| b.open_time_ms);
        if newest.is_none_or(|n| sorted[0].open_time_ms > n) {
            let owned: Vec<Bar> = sorted.into_iter().cloned().collect();
            return self.append(&owned);
        }
        if let Some(b) = bars
            .iter()
            .find(|b| b.symbol != symbol || b.interval != interval)
        {
            return Err(HistoryError::MixedSeries(format!(
                "{symbol} {interval} and {} {}",
                b.symbol, b.interval
            )));
        }
        let mut all: std::collections::BTreeMap<TimestampMs, &Bar> =
            sorted.into_iter().map(|b| (b.open_time_ms, b)).collect();
        let before = stored.len();
        for b in &stored {
            all.insert(b.open_time_ms, b);
        }
        let added = all.len() - before;
        if added == 0 {
            return Ok(0);
        }
        let path = self.path(&symbol, interval);
        let tmp = path.with_extension("klines.tmp");
        let mut buf = Vec::with_capacity(HEADER as usize + all.len() * RECORD);
        buf.extend_from_slice(MAGIC);
        for b in all.values() {
            encode(b, &mut buf);
        }
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&buf).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(added)
    }

    /// Bars of a series opening in `[start_ms, end_ms]` (either bound optional), oldest
    /// first; with `limit`, only the newest `limit` of them.
    pub fn read(
        &self,
        symbol: &Symbol,
        interval: Interval,
        start_ms: Option<TimestampMs>,
        end_ms: Option<TimestampMs>,
        limit: Option<usize>,
    ) -> Result<Vec<Bar>, HistoryError> {
        let path = self.path(symbol, interval);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        if data.len() < HEADER as usize || &data[..HEADER as usize] != MAGIC {
            return Err(HistoryError::BadHeader { path });
        }
        let records: Vec<&[u8]> = data[HEADER as usize..].chunks_exact(RECORD).collect();
        let lo = start_ms.map_or(0, |s| records.partition_point(|r| open_time(r) < s));
        let hi = end_ms.map_or(records.len(), |e| {
            records.partition_point(|r| open_time(r) <= e)
        });
        let lo = match limit {
            Some(n) if hi.saturating_sub(lo) > n => hi - n,
            _ => lo,
        };
        Ok(records
            .get(lo..hi.max(lo))
            .unwrap_or_default()
            .iter()
            .map(|r| decode(r, symbol, interval))
            .collect())
    }

    /// Open time of the newest stored bar of a series.
    pub fn last_open(
        &self,
        symbol: &Symbol,
        interval: Interval,
    ) -> Result<Option<TimestampMs>, HistoryError> {
        Ok(self
            .read(symbol, interval, None, None, Some(1))?
            .first()
            .map(|b| b.open_time_ms))
    }

    /// The symbols stored for an interval, sorted.
    pub fn symbols(&self, interval: Interval) -> Result<Vec<Symbol>, HistoryError> {
        let dir = self.root.join(interval.as_str());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(io(&dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(EXT) {
                continue;
            }
            if let Some(sym) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| Symbol::new(s).ok())
            {
                out.push(sym);
            }
        }
        out.sort();
        Ok(out)
    }
}

fn check_header(file: &mut File, path: &Path) -> Result<(), HistoryError> {
    let mut magic = [0u8; HEADER as usize];
    file.seek(SeekFrom::Start(0)).map_err(io(path))?;
    file.read_exact(&mut magic).map_err(io(path))?;
    if &magic != MAGIC {
        return Err(HistoryError::BadHeader {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn encode(b: &Bar, out: &mut Vec<u8>) {
    out.extend_from_slice(&b.open_time_ms.to_le_bytes());
    for d in [b.open, b.high, b.low, b.close, b.volume, b.turnover] {
        out.extend_from_slice(&d.serialize());
    }
}

fn open_time(rec: &[u8]) -> TimestampMs {
    let mut t = [0u8; 8];
    t.copy_from_slice(&rec[..8]);
    i64::from_le_bytes(t)
}

fn decimal_at(rec: &[u8], i: usize) -> Decimal {
    let mut d = [0u8; 16];
    let at = 8 + i * 16;
    d.copy_from_slice(&rec[at..at + 16]);
    Decimal::deserialize(d)
}

fn decode(rec: &[u8], symbol: &Symbol, interval: Interval) -> Bar {
    Bar {
        symbol: symbol.clone(),
        interval,
        open_time_ms: open_time(rec),
        open: decimal_at(rec, 0),
        high: decimal_at(rec, 1),
        low: decimal_at(rec, 2),
        close: decimal_at(rec, 3),
        volume: decimal_at(rec, 4),
        turnover: decimal_at(rec, 5),
        published_ms: None,
        stamps: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn bar(sym: &str, t: i64, close: &str) -> Bar {
        let c = Decimal::from_str(close).unwrap();
        Bar {
            symbol: Symbol::new(sym).unwrap(),
            interval: Interval::M5,
            open_time_ms: t,
            open: c,
            high: c,
            low: c,
            close: c,
            volume: Decimal::from_str("12.345").unwrap(),
            turnover: Decimal::from_str("0.000000001").unwrap(),
            published_ms: None,
            stamps: Default::default(),
        }
    }

    /// The newest stored bar after an append: the caller's own when the store holds the
    /// series up to it; a later one when the store is ahead of the caller.
    #[test]
    fn an_append_says_whether_the_store_holds_the_series_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(dir.path()).unwrap();
        let bars =
            |ts: &[i64]| -> Vec<Bar> { ts.iter().map(|t| bar("BTCUSDT", *t, "1")).collect() };
        assert_eq!(
            store.append_newest(&bars(&[1, 2, 3])).unwrap(),
            (3, Some(3))
        );
        assert_eq!(
            store.append_newest(&bars(&[2, 3, 4, 5])).unwrap(),
            (2, Some(5))
        );
        assert_eq!(store.append_newest(&bars(&[3, 4])).unwrap(), (0, Some(5)));
        assert_eq!(store.append_newest(&[]).unwrap(), (0, None));
    }

    #[test]
    fn older_bars_are_merged_in_and_stored_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(dir.path()).unwrap();
        let s = Symbol::new("BTCUSDT").unwrap();
        assert_eq!(
            store
                .merge(&[bar("BTCUSDT", 300_000, "3"), bar("BTCUSDT", 600_000, "4")])
                .unwrap(),
            2
        );
        // Older bars (and one already stored, with another price): merged, stored wins.
        assert_eq!(
            store
                .merge(&[
                    bar("BTCUSDT", 0, "1"),
                    bar("BTCUSDT", 300_000, "99"),
                    bar("BTCUSDT", 900_000, "5")
                ])
                .unwrap(),
            2
        );
        let got: Vec<(i64, String)> = store
            .read(&s, Interval::M5, None, None, None)
            .unwrap()
            .iter()
            .map(|b| (b.open_time_ms, b.close.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "1".into()),
                (300_000, "3".into()),
                (600_000, "4".into()),
                (900_000, "5".into())
            ]
        );
        // Nothing new: nothing written.
        assert_eq!(store.merge(&[bar("BTCUSDT", 0, "7")]).unwrap(), 0);
    }

    #[test]
    fn appends_only_newer_bars_and_reads_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(dir.path()).unwrap();
        let s = Symbol::new("BTCUSDT").unwrap();
        let bars: Vec<Bar> = (1..=10)
            .map(|i| bar("BTCUSDT", i * 300_000, &format!("{i}.10")))
            .collect();
        assert_eq!(store.append(&bars[..6]).unwrap(), 6);
        // overlapping append keeps only the new ones
        assert_eq!(store.append(&bars[4..]).unwrap(), 4);
        assert_eq!(store.append(&bars).unwrap(), 0);
        let all = store.read(&s, Interval::M5, None, None, None).unwrap();
        assert_eq!(all, bars, "lossless round trip");
        let mid = store
            .read(&s, Interval::M5, Some(900_000), Some(1_500_000), None)
            .unwrap();
        assert_eq!(mid, bars[2..5]);
        let newest = store.read(&s, Interval::M5, None, None, Some(3)).unwrap();
        assert_eq!(newest, bars[7..]);
        assert_eq!(store.last_open(&s, Interval::M5).unwrap(), Some(3_000_000));
        assert_eq!(store.symbols(Interval::M5).unwrap(), vec![s.clone()]);
        let none = Symbol::new("NOPEUSDT").unwrap();
        assert!(
            store
                .read(&none, Interval::M5, None, None, None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_torn_last_record_is_cut_off_by_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(dir.path()).unwrap();
        let s = Symbol::new("ETHUSDT").unwrap();
        store
            .append(&[bar("ETHUSDT", 1, "1"), bar("ETHUSDT", 2, "2")])
            .unwrap();
        let path = store.path(&s, Interval::M5);
        let len = fs::metadata(&path).unwrap().len();
        // a crash half-way through the second record
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 50)
            .unwrap();
        store.append(&[bar("ETHUSDT", 3, "3")]).unwrap();
        let got = store.read(&s, Interval::M5, None, None, None).unwrap();
        assert_eq!(got, vec![bar("ETHUSDT", 1, "1"), bar("ETHUSDT", 3, "3")]);
    }

    #[test]
    fn refuses_mixed_series_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(dir.path()).unwrap();
        let err = store
            .append(&[bar("ETHUSDT", 1, "1"), bar("BTCUSDT", 2, "2")])
            .unwrap_err();
        assert!(err.to_string().contains("ETHUSDT"), "{err}");
        let s = Symbol::new("XUSDT").unwrap();
        let p = store.path(&s, Interval::M5);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"open_time_ms,open\n").unwrap();
        assert!(matches!(
            store.read(&s, Interval::M5, None, None, None),
            Err(HistoryError::BadHeader { .. })
        ));
        assert!(store.append(&[bar("XUSDT", 1, "1")]).is_err());
    }

    proptest! {
        #[test]
        fn range_reads_match_a_filter(
            n in 0usize..80, start in -5i64..90, end in -5i64..90, limit in proptest::option::of(0usize..20),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = HistoryStore::open(dir.path()).unwrap();
            let bars: Vec<Bar> = (0..n as i64).map(|i| bar("AUSDT", i, "1.5")).collect();
            store.append(&bars).unwrap();
            let s = Symbol::new("AUSDT").unwrap();
            let got = store.read(&s, Interval::M5, Some(start), Some(end), limit).unwrap();
            let mut want: Vec<Bar> = bars.iter().filter(|b| b.open_time_ms >= start && b.open_time_ms <= end).cloned().collect();
            if let Some(l) = limit { let k = want.len().saturating_sub(l); want.drain(..k); }
            prop_assert_eq!(got, want);
        }
    }
}

//! Where the tests and the benchmarks find real data.
//!
//! - [`klines`]: the repository's own compact set of real candles (`common/testdata/klines`,
//!   provenance in `common/testdata/SOURCES.md`). Every test of the README's test command
//!   reads its candles from here, so a clone of the repository alone runs them.
//! - [`bybit_fixture`]: Bybit's captured REST and WebSocket payloads
//!   (`common/bybit/test_data`, provenance in its `SOURCES.md`).
//! - [`full_klines`]: the full data set (300 days of 5-minute bars, 329 daily series), for
//!   the benchmarks and full-data runs: the folder `SHARDBOT_DATA` names, by default
//!   `../shared/data` beside the repository. When it is missing the error says so and how
//!   to fill it, rather than failing later with a bare path.

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file or folder of the repository's own klines, e.g. `bybit_linear_5m/BTCUSDT.csv` or
/// `bybit_linear_4h`. Panics naming the path when it is not there (a broken checkout).
pub fn klines(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("klines")
        .join(rel);
    assert!(
        p.exists(),
        "{} is not in the repository's test data (common/testdata/SOURCES.md lists it)",
        p.display()
    );
    p
}

/// A captured Bybit payload, e.g. `rest/v5_market_tickers_linear_result_testnet_2023.json`.
pub fn bybit_fixture(rel: &str) -> PathBuf {
    let p = repo_root().join("common/bybit/test_data").join(rel);
    assert!(
        p.exists(),
        "{} is not among the captured Bybit payloads (common/bybit/test_data/SOURCES.md)",
        p.display()
    );
    p
}

/// The full data folder was not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingData {
    /// What was looked for.
    pub path: PathBuf,
    /// Whether `SHARDBOT_DATA` named the folder.
    pub from_env: bool,
}

impl fmt::Display for MissingData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whence = if self.from_env {
            "named by SHARDBOT_DATA"
        } else {
            "the default, ../shared/data beside the repository"
        };
        write!(
            f,
            "{} is missing (the full data folder, {whence}). Point SHARDBOT_DATA at a folder \
             holding klines/<source>_<interval>/<SYMBOL>.csv (open_time_ms,open,high,low,\
             close,volume), e.g. a copy of the project's shared data set; or download \
             candles with `shardbot download` and backtest them with `--data store:<interval>`. \
             The repository's own compact set is common/testdata/klines.",
            self.path.display()
        )
    }
}

impl std::error::Error for MissingData {}

/// The full data folder: `SHARDBOT_DATA`, else `../shared/data` beside the repository.
pub fn full_data() -> (PathBuf, bool) {
    match std::env::var_os("SHARDBOT_DATA") {
        Some(p) => (PathBuf::from(p), true),
        None => (repo_root().join("../shared/data"), false),
    }
}

/// A file or folder of the full data set's klines, e.g. `bybit_linear_5m`.
pub fn full_klines(rel: &str) -> Result<PathBuf, MissingData> {
    let (root, from_env) = full_data();
    let p = root.join("klines").join(rel);
    if p.exists() {
        Ok(p)
    } else {
        Err(MissingData { path: p, from_env })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_bundled_series_are_whole_and_in_order() {
        for set in ["bybit_linear_5m", "bybit_linear_4h", "bybit_linear_1d"] {
            let dir = klines(set);
            let mut files = 0;
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                let text = std::fs::read_to_string(&f).unwrap();
                let mut lines = text.lines();
                assert_eq!(
                    lines.next(),
                    Some("open_time_ms,open,high,low,close,volume"),
                    "{}",
                    f.display()
                );
                let times: Vec<i64> = lines
                    .map(|l| l.split(',').next().unwrap().parse().unwrap())
                    .collect();
                assert!(times.len() > 500, "{}: {} rows", f.display(), times.len());
                let step = times[1] - times[0];
                assert!(
                    times.windows(2).all(|w| w[1] - w[0] == step),
                    "{}: a gap or a row out of order",
                    f.display()
                );
                files += 1;
            }
            assert!(files >= 3, "{set}: {files} files");
        }
    }

    #[test]
    fn a_missing_full_data_folder_says_how_to_fill_it() {
        let e = MissingData {
            path: PathBuf::from("/nowhere/klines/bybit_linear_5m"),
            from_env: true,
        };
        let text = e.to_string();
        assert!(
            text.contains("/nowhere/klines/bybit_linear_5m is missing"),
            "{text}"
        );
        assert!(
            text.contains("SHARDBOT_DATA") && text.contains("shardbot download"),
            "{text}"
        );
    }
}

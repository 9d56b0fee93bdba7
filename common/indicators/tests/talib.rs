//! Every indicator against TA-Lib itself (the Python wheel, which bundles the C library),
//! on real klines from ../shared/data: the same warm-up (None exactly where TA-Lib has NaN)
//! and the same values to within 1e-10 relative. The interpreter is the project's venv
//! made by scripts/install-deps (or SHARDBOT_PYTHON).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{collections::HashMap, path::PathBuf, process::Command};

use rstest::rstest;
use shardbot_indicators::{Atr, Bollinger, Ema, Macd, Rsi, Sma};

fn python() -> PathBuf {
    std::env::var_os("SHARDBOT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../var/pyenv/bin/python")
        })
}

fn ours(csv: &str, rows: usize) -> HashMap<&'static str, Vec<Option<f64>>> {
    let text = std::fs::read_to_string(csv).unwrap();
    let (mut sma10, mut sma30, mut ema12, mut ema26) =
        (Sma::new(10), Sma::new(30), Ema::new(12), Ema::new(26));
    let (mut rsi, mut atr, mut bb, mut macd) = (
        Rsi::new(14),
        Atr::new(14),
        Bollinger::new(20, 2.0),
        Macd::new(12, 26, 9),
    );
    let mut out: HashMap<&'static str, Vec<Option<f64>>> = HashMap::new();
    for line in text.lines().skip(1).take(rows) {
        let f: Vec<f64> = line
            .split(',')
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        let (h, l, c) = (f[1], f[2], f[3]);
        let mut push = |k: &'static str, v: Option<f64>| out.entry(k).or_default().push(v);
        push("sma_10", sma10.update(c));
        push("sma_30", sma30.update(c));
        push("ema_12", ema12.update(c));
        push("ema_26", ema26.update(c));
        push("rsi_14", rsi.update(c));
        push("atr_14", atr.update(h, l, c));
        let b = bb.update(c);
        push("bb_upper_20_2", b.map(|b| b.upper));
        push("bb_middle_20_2", b.map(|b| b.middle));
        push("bb_lower_20_2", b.map(|b| b.lower));
        let m = macd.update(c);
        push("macd_12_26_9", m.map(|m| m.macd));
        push("macd_signal_12_26_9", m.map(|m| m.signal));
        push("macd_hist_12_26_9", m.map(|m| m.histogram));
    }
    out
}

#[rstest]
#[case("bybit_linear_5m/BTCUSDT.csv", 5000)]
#[case("bybit_linear_1d/1000000BABYDOGEUSDT.csv", 400)]
fn every_series_equals_ta_lib(#[case] file: &str, #[case] rows: usize) {
    let py = python();
    let ok = Command::new(&py)
        .args(["-c", "import talib"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "TA-Lib is not importable with {}: run scripts/install-deps, or set SHARDBOT_PYTHON",
        py.display()
    );
    let csv = shardbot_testdata::klines(file);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/talib_reference.py");
    let out = Command::new(&py)
        .arg(script)
        .arg(&csv)
        .arg(rows.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: HashMap<String, Vec<Option<f64>>> = serde_json::from_slice(&out.stdout).unwrap();
    let mine = ours(csv.to_str().unwrap(), rows);
    assert_eq!(reference.len(), mine.len());
    for (name, want) in &reference {
        let got = &mine[name.as_str()];
        assert_eq!(got.len(), want.len(), "{name}");
        let mut worst = 0f64;
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            match (g, w) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    let rel = (g - w).abs() / w.abs().max(1e-300);
                    worst = worst.max(rel);
                    assert!(
                        rel < 1e-10 || (g - w).abs() < 1e-12,
                        "{name}[{i}]: ours {g}, TA-Lib {w}"
                    );
                }
                _ => panic!("{name}[{i}]: warm-up differs: ours {g:?}, TA-Lib {w:?}"),
            }
        }
        println!("{name}: max relative difference {worst:e}");
    }
}

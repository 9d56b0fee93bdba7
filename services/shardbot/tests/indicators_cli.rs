//! `shardbot indicators` run as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{path::PathBuf, process::Command};

use shardbot_indicators::{Macd, Rsi};

fn btc() -> PathBuf {
    shardbot_testdata::klines("bybit_linear_5m/BTCUSDT.csv")
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shardbot"))
        .arg("indicators")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn writes_the_standard_columns_with_empty_warm_up_cells() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ind.csv");
    let o = run(&[
        "--data",
        btc().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows[0].join(","),
        "open_time_ms,sma_10,sma_20,sma_30,ema_10,ema_12,ema_20,ema_26,rsi_14,bb_upper_20_2,bb_middle_20_2,bb_lower_20_2,atr_14,macd_12_26_9,macd_signal_12_26_9,macd_hist_12_26_9"
    );
    let input = std::fs::read_to_string(btc()).unwrap();
    assert_eq!(
        rows.len(),
        input.lines().count(),
        "one row per kline plus the header"
    );
    let col = |name: &str| rows[0].iter().position(|c| *c == name).unwrap();
    // warm-up: sma_10 empty for 9 rows, rsi_14 for 14, MACD for 33
    assert!(rows[9][col("sma_10")].is_empty() && !rows[10][col("sma_10")].is_empty());
    assert!(rows[14][col("rsi_14")].is_empty() && !rows[15][col("rsi_14")].is_empty());
    assert!(rows[33][col("macd_12_26_9")].is_empty() && !rows[34][col("macd_12_26_9")].is_empty());
    // values are the library's, printed without loss
    let (mut rsi, mut macd) = (Rsi::new(14), Macd::new(12, 26, 9));
    let (mut r, mut m) = (None, None);
    for line in input.lines().skip(1) {
        let close: f64 = line.split(',').nth(4).unwrap().parse().unwrap();
        r = rsi.update(close);
        m = macd.update(close);
    }
    let last = rows.last().unwrap();
    assert_eq!(last[col("rsi_14")].parse::<f64>().unwrap(), r.unwrap());
    assert_eq!(
        last[col("macd_hist_12_26_9")].parse::<f64>().unwrap(),
        m.unwrap().histogram
    );
}

#[test]
fn only_selects_indicators_and_other_periods() {
    let o = run(&[
        "--data",
        btc().to_str().unwrap(),
        "--only",
        "sma_50,bb_upper_20_2.5,bb_lower_20_2.5,macd_signal_8_21_5",
    ]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "open_time_ms,sma_50,bb_upper_20_2.5,bb_middle_20_2.5,bb_lower_20_2.5,macd_8_21_5,macd_signal_8_21_5,macd_hist_8_21_5"
    );
}

#[test]
fn bad_input_is_one_clear_line() {
    let o = run(&["--data", btc().to_str().unwrap(), "--only", "wma_10"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown indicator spec `wma_10`"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "open_time_ms,open,high,low,close,volume\n1,2,3,1,2,5\n2,2,x,1,2,5\n",
    )
    .unwrap();
    let o = run(&["--data", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("bad.csv:3") && err.contains("`x`"),
        "{err}"
    );
    let o = run(&["--data", "/nonexistent.csv"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot open /nonexistent.csv"));
}

/// `shardbot indicators ... | head -1`: the reader goes away after one line and the
/// command ends quietly with a shell's SIGPIPE status, as Unix tools do (it printed
/// "Broken pipe" as an error, or panicked in `println!`).
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardbot"))
        .args(["indicators", "--data", btc().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("open_time_ms"), "{first}");
    // The reader is dropped: the pipe is closed.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141));
    assert!(
        out.stderr.is_empty(),
        "nothing to say about a closed pipe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

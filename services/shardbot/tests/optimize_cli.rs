//! `shardbot optimize` run as a user runs it, on the repository's real daily candles: the
//! walk-forward's windows, its stitched out-of-sample figures and the record it writes,
//! the thresholds that refuse to write, and the errors of a bad plan.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{path::Path, process::Command};

const DAY_MS: i64 = 86_400_000;

fn optimize(params_file: &Path, extra: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_shardbot"))
        .args(["optimize", "--strategy", "trend_following", "--data"])
        .arg(shardbot_testdata::klines("bybit_linear_1d"))
        .args([
            "--trials",
            "16",
            "--min-trades",
            "3",
            "--seed",
            "5",
            "--threads",
            "2",
        ])
        .arg("--params-file")
        .arg(params_file)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The first and last open time over the data's files, read here from the CSVs.
fn data_span() -> (i64, i64) {
    let mut first = i64::MAX;
    let mut last = i64::MIN;
    for f in std::fs::read_dir(shardbot_testdata::klines("bybit_linear_1d")).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        for line in text.lines().skip(1) {
            let t: i64 = line.split(',').next().unwrap().parse().unwrap();
            first = first.min(t);
            last = last.max(t);
        }
    }
    (first, last)
}

fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// Rolling 365 days of train, 180 of test: the windows are where the data puts them, the
/// stitched return compounds the windows' own returns (each window trades on the balance
/// the one before left), its trades are theirs, and the record says so; `params list`
/// shows the walk-forward beside "optimized ✓".
#[test]
fn a_rolling_walk_forward_writes_its_windows_and_out_of_sample_figures() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimized_parameters.json");
    let (ok, out, err) = optimize(
        &file,
        &[
            "--walk-forward",
            "rolling",
            "--train",
            "365d",
            "--test",
            "180d",
            "--min-oos-return",
            "-100",
        ],
    );
    assert!(ok, "{out}\n{err}");
    let (first, last) = data_span();
    // Daily bars: the data ends a day after the last open.
    let days = (last + DAY_MS - first) / DAY_MS;
    let want_windows = (days - 365 - 180) / 180 + 1;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let entry = &json["trend_following"];
    let wf = &entry["walk_forward"];
    assert_eq!(wf["mode"], "rolling");
    assert_eq!(
        (
            wf["train"].as_str(),
            wf["test"].as_str(),
            wf["step"].as_str()
        ),
        (Some("365 days"), Some("180 days"), Some("180 days"))
    );
    let windows = wf["windows"].as_array().unwrap();
    assert_eq!(windows.len() as i64, want_windows, "{out}");
    let mut compounded = 1.0;
    let mut trades = 0;
    for (k, w) in windows.iter().enumerate() {
        let k = k as i64;
        assert_eq!(w["train_from"], date(first + k * 180 * DAY_MS));
        assert_eq!(w["test_from"], date(first + (365 + k * 180) * DAY_MS));
        assert_eq!(w["test_to"], date(first + (545 + k * 180) * DAY_MS));
        let oos = &w["out_of_sample"];
        compounded *= 1.0 + oos["total_return_pct"].as_f64().unwrap() / 100.0;
        trades += oos["trades"].as_u64().unwrap();
        if !w["params"].is_null() {
            assert!(w["params"]["fast"].as_i64().is_some(), "{w}");
        }
    }
    let oos = &wf["out_of_sample"];
    let stitched = oos["total_return_pct"].as_f64().unwrap();
    assert!(
        (compounded - (1.0 + stitched / 100.0)).abs() < 1e-9,
        "stitched {stitched} % against the windows compounded {compounded}"
    );
    assert_eq!(oos["trades"].as_u64().unwrap(), trades);
    assert!(trades > 0, "{out}");
    assert_eq!(oos["from"], date(first + 365 * DAY_MS));
    // The parameters written are the newest 365 days' winner.
    assert_eq!(
        entry["data_range"]["train_from"],
        date(last + DAY_MS - 365 * DAY_MS)
    );
    assert!(entry["params"]["slow"].as_i64().is_some());
    let stability = wf["stability"].as_array().unwrap();
    assert_eq!(stability.len(), 5, "one row per parameter");
    for s in stability {
        let spread = s["spread"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&spread), "{s}");
    }
    assert_eq!(
        wf["passed"][0]
            .as_str()
            .map(|p| p.starts_with("total return % ")),
        Some(true),
        "{wf}"
    );
    assert!(out.contains("out of sample, stitched"), "{out}");
    let listed = Command::new(env!("CARGO_BIN_EXE_shardbot"))
        .args(["params", "--file"])
        .arg(&file)
        .arg("list")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(&format!(
            "walk-forward rolling ({want_windows} windows), out of sample {stitched:+.2} %"
        )),
        "{listed}"
    );
}

/// A threshold the out-of-sample figures fail writes nothing, and says which and why.
#[test]
fn a_failed_out_of_sample_threshold_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimized_parameters.json");
    let before = r#"{"mean_reversion": {"optimized_at": "2026-11-20", "objective": "sharpe", "params": {}}}"#;
    std::fs::write(&file, before).unwrap();
    let (ok, out, err) = optimize(
        &file,
        &[
            "--walk-forward",
            "anchored",
            "--train",
            "700d",
            "--test",
            "365d",
            "--min-oos-sharpe",
            "50",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        err.contains("not written: the out-of-sample sharpe (")
            && err.contains("is below the threshold 50"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    // Without a walk-forward, the test part is what the threshold reads.
    let (ok, _, err) = optimize(&file, &["--min-oos-return", "10000"]);
    assert!(
        !ok && err.contains("out-of-sample total return % ("),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}

#[test]
fn a_bad_walk_forward_plan_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    for (args, says) in [
        (
            &[
                "--walk-forward",
                "rolling",
                "--train",
                "365d",
                "--test",
                "30",
            ][..],
            "must all be in bars or all in days",
        ),
        (
            &[
                "--walk-forward",
                "rolling",
                "--train",
                "5000d",
                "--test",
                "90d",
            ][..],
            "is too short for one window of 5000 days train + 90 days test",
        ),
        (
            &[
                "--walk-forward",
                "rolling",
                "--train",
                "365d",
                "--test",
                "90d",
                "--step",
                "30d",
            ][..],
            "the step (30 days) is shorter than the test part (90 days)",
        ),
        (
            &[
                "--walk-forward",
                "rolling",
                "--train",
                "365d",
                "--test",
                "3w",
            ][..],
            "write bars (`500`) or days (`90d`)",
        ),
        (&["--walk-forward", "rolling"][..], "--train"),
        (&["--train", "365d"][..], "--walk-forward"),
    ] {
        let (ok, _, err) = optimize(&file, args);
        assert!(!ok && err.contains(says), "{args:?}: {err}");
        assert!(!file.exists(), "{args:?} wrote the file");
    }
}

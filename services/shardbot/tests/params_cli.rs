//! `shardbot params` run as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_shardbot"))
        .arg("params")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn shows_optimized_status_and_per_symbol_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimized_parameters.json");
    std::fs::write(
        &file,
        r#"{"trend_following": {"optimized_at": "2026-11-20", "objective": "sharpe",
            "params": {"fast": 8, "slow": 34}, "symbols": {"BTCUSDT": {"fast": 12}}}}"#,
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (ok, out, _) = run(&["--file", f, "list"]);
    assert!(ok);
    assert!(
        out.contains(
            "trend_following    optimized ✓ 2026-11-20 (sharpe), 1 symbol(s) with their own values"
        ),
        "{out}"
    );
    assert!(
        out.contains("mean_reversion     defaults (not optimized)"),
        "{out}"
    );
    let (ok, out, _) = run(&[
        "--file",
        f,
        "show",
        "trend_following",
        "--symbol",
        "BTCUSDT",
    ]);
    assert!(ok);
    let fast = out.lines().find(|l| l.starts_with("fast ")).unwrap();
    let slow = out.lines().find(|l| l.starts_with("slow ")).unwrap();
    assert_eq!(
        fast.split_whitespace().take(3).collect::<Vec<_>>(),
        ["fast", "12", "10"],
        "{out}"
    );
    assert_eq!(
        slow.split_whitespace().take(3).collect::<Vec<_>>(),
        ["slow", "34", "30"],
        "{out}"
    );
    assert!(
        out.starts_with("trend_following: optimized ✓ 2026-11-20 (sharpe, per symbol)"),
        "{out}"
    );
}

#[test]
fn errors_name_the_problem() {
    let (ok, _, err) = run(&["show", "scalper"]);
    assert!(!ok && err.contains("unknown strategy `scalper`"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    std::fs::write(&file, r#"{"mean_reversion": {"optimized_at": "x", "objective": "sharpe", "params": {"rsi_low": 80.0}}}"#).unwrap();
    let (ok, _, err) = run(&["--file", file.to_str().unwrap(), "list"]);
    assert!(
        !ok && err.contains("mean_reversion.rsi_low") && err.contains("p.json"),
        "{err}"
    );
}

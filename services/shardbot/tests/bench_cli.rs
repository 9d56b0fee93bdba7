//! The `shardbot` binary, run as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::Command;

fn shardbot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardbot"))
}

#[test]
fn bench_bus_runs_across_processes_and_loses_nothing_at_a_low_rate() {
    let out = shardbot()
        .args([
            "bench",
            "bus",
            "--messages",
            "2000",
            "--subscribers",
            "1,2",
            "--rates",
            "1000",
        ])
        .args([
            "--paced-secs",
            "0.3",
            "--round-trips",
            "200",
            "--codec-iterations",
            "2000",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Rows: subs, "paced", "1k", sent/s, recv/s, lost, lost %, p50, p99.
    let paced: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.get(1) == Some(&"paced"))
        .collect();
    assert_eq!(
        paced.len(),
        2,
        "one paced row per subscriber count:\n{stdout}"
    );
    for row in paced {
        assert_eq!(
            row[5], "0",
            "1,000 frames/s to {} subscriber(s) must lose nothing:\n{stdout}",
            row[0]
        );
    }
    assert!(stdout.contains("REQ/REP round trip"), "{stdout}");
    assert!(stdout.contains("encode+decode"), "{stdout}");
}

#[test]
fn help_explains_the_commands() {
    let out = shardbot().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("bench"), "{text}");
    let out = shardbot()
        .args(["bench", "bus", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--subscribers") && text.contains("REQ/REP"),
        "{text}"
    );
    // the internal child-process commands are not advertised
    assert!(
        !String::from_utf8_lossy(
            &shardbot()
                .args(["bench", "--help"])
                .output()
                .unwrap()
                .stdout
        )
        .contains("bus-sub")
    );
}

#[test]
fn a_bad_argument_is_a_clear_error() {
    let out = shardbot()
        .args(["bench", "bus", "--subscribers", "two"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--subscribers") && err.contains("two"),
        "{err}"
    );
}

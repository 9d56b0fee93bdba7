//! Bybit's official Python SDK works against bybit-sim with only its base URL changed (and
//! a race of its own `subscribe` guarded, forced here on every run: see pybit_compat.py):
//! instruments over pages, klines, tickers, a market order, positions, closed PnL, the
//! wallet, and the public WebSocket (tickers and klines). The interpreter is the project's
//! venv made by scripts/install-deps (or SHARDBOT_PYTHON); without pybit the test fails and
//! says how to install it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::{path::PathBuf, process::Command};

use common::{KEY, SECRET, settings, start};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SHARDBOT_PYTHON") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../var/pyenv/bin/python")
}

#[test]
fn pybit_trades_and_streams_against_the_sim() {
    let py = python();
    let has_pybit = Command::new(&py)
        .args(["-c", "import pybit"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_pybit,
        "pybit is not importable with {}: run scripts/install-deps (it makes var/pyenv with pybit), \
         or set SHARDBOT_PYTHON to an interpreter that has it",
        py.display()
    );
    let url = start(settings());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pybit_compat.py");
    let mut child = Command::new(&py)
        .arg(&script)
        .args([&url, KEY, SECRET])
        // pybit's subscribe race forced (see pybit_compat.py): a snapshot before the
        // callback must not end the stream.
        .env("SUBSCRIBE_DELAY_S", "0.5")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A hung script fails the test instead of hanging CI.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "pybit against bybit-sim failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("pybit OK"), "{stdout}");
}

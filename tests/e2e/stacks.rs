//! Two account stacks at once, sharing one market: `scripts/stack up` (bybit-sim's demo
//! account) and `scripts/stack up --account second` (another bybit-sim account), both
//! paper trading from the same gateway; `down --account second` stops only that stack.
//! `shardbot risk show` finds the stack to talk to: `--account NAME`, or the one running;
//! with two running and no name it says which are.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shardbot_e2e::{FAST_PARAMS, ScriptStack};
use shardbot_journal::Journal;

#[test]
fn two_account_stacks_share_one_gateway() {
    let replay = shardbot_testdata::klines("bybit_linear_5m");
    let stack = ScriptStack::new(&format!(
        r#"[sim]
replay_dir = "{}"
replay_warmup_bars = 300
clock_speed = 300.0

[[sim.accounts]]
name = "demo"
api_key = "sim-demo-key"
api_secret = "sim-demo-secret"
usdt = "100000"

[[sim.accounts]]
name = "second"
api_key = "sim-second-key"
api_secret = "sim-second-secret"
usdt = "50000"

[strategy]
interval = "5"
parameters_file = "{{dir}}/optimized_parameters.json"
history_bars = 300
"#,
        replay.display()
    ));
    std::fs::write(stack.path("optimized_parameters.json"), FAST_PARAMS).unwrap();
    stack.up(&["--workers", "1"]);
    let out = stack.up(&["--account", "second", "--workers", "1"]);
    assert!(
        out.contains("up: account stack 'second' (sim) with 1 workers"),
        "{out}"
    );

    // One market, two account stacks.
    let sup = stack.supervisor();
    let count = |p: &str| sup.keys().filter(|k| k.starts_with(p)).count();
    assert_eq!(
        (count("market-data"), count("bybit-sim")),
        (1, 1),
        "{sup:?}"
    );
    for p in [
        "sim-order-router",
        "second-order-router",
        "second-workers-1",
    ] {
        assert_eq!(
            sup.get(p).map(|s| s.0.as_str()),
            Some("RUNNING"),
            "{p}: {sup:?}"
        );
    }

    // Both trade, each on its own account and journal.
    let journal = |name: &str| {
        stack.wait(
            &format!("{name}'s journal"),
            Duration::from_secs(30),
            || Journal::open(&stack.path(&format!("run/{name}/journal.sqlite"))).ok(),
        )
    };
    let (first, second) = (journal("sim"), journal("second"));
    let fills = |j: &Journal| j.fills_since(0).unwrap();
    stack.wait("fills in both stacks", Duration::from_secs(120), || {
        (fills(&first).len() >= 2 && fills(&second).len() >= 2).then_some(())
    });
    let overlap = fills(&first)
        .iter()
        .filter(|f| fills(&second).iter().any(|g| g.exec_id == f.exec_id))
        .count();
    assert_eq!(overlap, 0, "each journal has its own account's fills");
    let risk_log = stack.log("second/risk-manager.log");
    assert!(
        risk_log.contains("exchange_balance=50000"),
        "the second stack trades the 50,000 USDT account:\n{risk_log}"
    );

    // The command line finds the stacks scripts/stack started (no --config).
    let (ok, out) = stack.shardbot(&["risk", "show"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("several account stacks are running (second, sim): say which with --account"),
        "{out}"
    );
    let (ok, out) = stack.shardbot(&["risk", "show", "--account", "second"]);
    assert!(ok, "{out}");
    assert!(out.contains("mode ") && out.contains("simulated "), "{out}");
    // Health of an account's services and of the market group they share.
    let (ok, out) = stack.shardbot(&[
        "health",
        "--account",
        "second",
        "order-router/main",
        "market-data/main",
        "--tsv",
    ]);
    assert!(ok, "{out}");
    for service in ["order-router", "market-data"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{service}\t")))
            .unwrap_or("");
        assert!(line.contains("\trunning\t"), "{service} in:\n{out}");
    }
    let (ok, out) = stack.shardbot(&["risk", "show", "--account", "third"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("'third' is not running: running here: second, sim"),
        "{out}"
    );

    // Stopping one stack leaves the other trading.
    let (ok, out) = stack.run(&["down", "--account", "second"]);
    assert!(ok, "{out}");
    // ... and is the one the command line talks to.
    let (ok, out) = stack.shardbot(&["risk", "show"]);
    assert!(ok, "{out}");
    let sup = stack.supervisor();
    assert!(!sup.keys().any(|k| k.starts_with("second-")), "{sup:?}");
    let before = fills(&first).len();
    stack.wait(
        "the first stack trading on",
        Duration::from_secs(90),
        || (fills(&first).len() >= before + 2).then_some(()),
    );
}

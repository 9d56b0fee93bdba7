//! The operator's commands against the stack a new user starts: `scripts/stack up` with no
//! configuration and no other flag (bybit-sim, 600 symbols on a real-time clock, the
//! default account stack `sim`). Every `shardbot` verb that talks to or reads a running
//! stack finds it by itself, as an operator types it with the dashboard down: `health`
//! (with or without the processes named),
//! `risk show|halt|reduce-only|resume|flatten`, `reconcile`, `report`, `trades`. And the
//! sim's default universe comes from the repository's own files (real names and filters),
//! with nothing beside the checkout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rust_decimal::Decimal;
use shardbot_e2e::ScriptStack;

#[test]
fn every_cli_verb_finds_a_plain_stack() {
    let stack = ScriptStack::new("");
    stack.up_plain();
    // The risk manager has read the account: `risk show` answers with its state.
    let shown = stack.wait(
        "`shardbot risk show` to answer",
        Duration::from_secs(120),
        || {
            let (ok, out) = stack.shardbot(&["risk", "show"]);
            (ok && out.contains("simulated")).then_some(out)
        },
    );
    assert!(shown.contains("mode              Normal"), "{shown}");

    let processes = [
        "market-data/main",
        "order-router/main",
        "risk-manager/main",
        "reconciler/main",
        "strategy-worker/0-2",
        "strategy-worker/1-2",
    ];
    // Named, and not: every process of the stack, found by itself.
    let mut args = vec!["health"];
    args.extend(processes);
    let (ok, named) = stack.shardbot(&args);
    assert!(ok, "{named}");
    let (ok, all) = stack.shardbot(&["health"]);
    assert!(ok, "{all}");
    for (p, out) in processes.iter().flat_map(|p| [(p, &named), (p, &all)]) {
        let (service, instance) = p.split_once('/').unwrap();
        assert!(
            out.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 3 && f[0] == service && f[1] == instance
            }),
            "health hears {p}:\n{out}"
        );
    }

    for (verb, mode) in [
        ("halt", "Halted"),
        ("reduce-only", "ReduceOnly"),
        ("resume", "Normal"),
    ] {
        let (ok, out) = stack.shardbot(&["risk", verb]);
        assert!(
            ok && out.contains(&format!("(mode: {mode})")),
            "risk {verb}:\n{out}"
        );
        let (ok, out) = stack.shardbot(&["risk", "show"]);
        assert!(
            ok && out.contains(&format!("mode              {mode}")),
            "after {verb}:\n{out}"
        );
    }
    // The kill switch from a terminal reaches the stack and ends flat (nothing is open).
    let (ok, out) = stack.shardbot(&["risk", "flatten"]);
    assert!(ok, "risk flatten:\n{out}");
    assert!(out.contains("FLAT"), "risk flatten:\n{out}");
    let (ok, out) = stack.shardbot(&["risk", "resume"]);
    assert!(ok, "{out}");

    let (ok, out) = stack.shardbot(&["reconcile"]);
    assert!(ok && out.contains("sweep:"), "reconcile:\n{out}");
    // The journal read is the running stack's (run/sim/journal.sqlite here).
    let (ok, out) = stack.shardbot(&["report"]);
    assert!(ok, "report:\n{out}");
    let (ok, out) = stack.shardbot(&["trades", "--csv", "-"]);
    assert!(
        ok && out.starts_with("trade_key,symbol,side"),
        "trades:\n{out}"
    );
    // The order path's stages from the same journal (none placed yet, or the table).
    let (ok, out) = stack.shardbot(&["stages"]);
    assert!(
        ok && (out.starts_with("no placed intent") || out.contains("router → approved")),
        "stages:\n{out}"
    );
    // A name that is not running is refused, naming the one that is.
    let (ok, out) = stack.shardbot(&["risk", "show", "--account", "other"]);
    assert!(!ok && out.contains("running here: sim"), "{out}");

    // The default universe: the repository's captured instruments lend BTCUSDT its
    // filters (tick 0.1, qty step 0.001), 600 symbols in all.
    let client = stack.client();
    let instruments =
        shardbot_e2e::block_on(async move { client.usdt_perpetuals().await }).unwrap();
    assert_eq!(instruments.len(), 600);
    let btc = instruments.iter().find(|i| i.symbol == "BTCUSDT").unwrap();
    assert_eq!(
        (btc.price_filter.tick_size, btc.lot_size_filter.qty_step),
        (Decimal::new(1, 1), Decimal::new(1, 3))
    );
    let (ok, out) = stack.run(&["status"]);
    assert!(ok, "{out}");
}

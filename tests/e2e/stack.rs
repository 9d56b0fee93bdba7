//! The whole stack as a user runs it (`scripts/stack` over supervisord): bybit-sim
//! replaying eight real Bybit 5-minute series at 300× (a bar a second), the gateway, two
//! workers, the router, the risk manager and the reconciler, paper trading the sim's demo
//! account. While it trades, each service is killed with SIGKILL in turn (the supervisor
//! restarts it), the sim drops every WebSocket connection, answers a quarter of REST calls
//! with 10006 and delays a fifth past the client's timeout, and the workers are scaled
//! 2 → 4 → 1. After every fault trading resumes; at the end: no intent became two orders,
//! the journal holds exactly the exchange's executions, the risk manager's positions are
//! the exchange's, and the reconciler has verified every closed trade against the
//! exchange's records, with the expected balance equal to the wallet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shardbot_bybit::rest::BybitClient;
use shardbot_e2e::{Books, FAST_PARAMS, ScriptStack, replay_config};
use shardbot_journal::Journal;

const SYMBOLS: [&str; 8] = [
    "AAVEUSDT", "ADAUSDT", "APEUSDT", "AVAXUSDT", "BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT",
];

struct Run {
    stack: ScriptStack,
    rt: tokio::runtime::Runtime,
    sim: BybitClient,
    journal: Journal,
    start_ms: i64,
}

impl Run {
    fn books(&self) -> Books<'_> {
        Books {
            rt: &self.rt,
            sim: &self.sim,
            journal: &self.journal,
            risk_url: format!(
                "ipc://{}/sim/risk-manager.rep",
                self.stack.path("ipc").display()
            ),
            symbols: &SYMBOLS,
            start_ms: self.start_ms,
        }
    }

    fn fills(&self) -> usize {
        self.books().fills()
    }

    fn verified(&self) -> usize {
        self.books().verified()
    }

    /// Trading goes on: at least two more fills in the journal than `from`.
    fn resumes(&self, after: &str, from: usize) {
        self.stack.wait(
            &format!("new fills after {after}"),
            Duration::from_secs(90),
            || (self.fills() >= from + 2).then_some(()),
        );
    }

    /// What must hold after every fault ([`Books::invariants`]); returns the number of
    /// orders.
    fn invariants(&self, after: &str) -> usize {
        self.books().invariants(after)
    }
}

#[test]
fn the_whole_stack_trades_and_survives_every_fault() {
    let stack = ScriptStack::new(&replay_config("", ""));
    std::fs::write(stack.path("optimized_parameters.json"), FAST_PARAMS).unwrap();
    let out = stack.up(&["--workers", "2"]);
    assert!(
        out.contains("up: account stack 'sim' (sim) with 2 workers"),
        "{out}"
    );
    let (ok, status) = stack.run(&["status"]);
    assert!(ok, "{status}");
    for p in [
        "bybit-sim",
        "market-data",
        "sim-order-router",
        "sim-risk-manager",
        "sim-reconciler",
        "sim-workers-2:sim-workers-2-0",
        "sim-workers-2:sim-workers-2-1",
    ] {
        let line = status.lines().find(|l| l.starts_with(p)).unwrap_or("");
        assert!(line.contains("RUNNING"), "{p} in:\n{status}");
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = stack.client();
    rt.block_on(sim.sync_time()).unwrap();
    // Everything of this run (the sim started moments ago; its clock runs at 300×).
    let start_ms = sim.raw().clock().now_ms() - 6 * 86_400_000;
    let journal = stack.wait("the journal", Duration::from_secs(30), || {
        Journal::open(&stack.path("run/sim/journal.sqlite")).ok()
    });
    let run = Run {
        stack,
        rt,
        sim,
        journal,
        start_ms,
    };
    run.stack.wait(
        "the first verified round trips",
        Duration::from_secs(120),
        || (run.verified() >= 3).then_some(()),
    );

    // A running worker's status says when the next bar closes and what the last gave.
    let (ok, status) = run.stack.run(&["status"]);
    assert!(ok, "{status}");
    let worker = status
        .lines()
        .find(|l| l.starts_with("sim-workers-2:sim-workers-2-0"))
        .unwrap_or("");
    assert!(
        worker.contains("next close ")
            && worker.contains(" signals, ")
            && worker.contains(" refused"),
        "{status}"
    );

    // --- kill -9 every service in turn; the supervisor restarts it, trading resumes -----
    for program in [
        "sim-workers-2:sim-workers-2-0",
        "sim-order-router",
        "sim-risk-manager",
        "market-data",
        "sim-reconciler",
    ] {
        let before = run.fills();
        run.stack.kill9(program, Duration::from_secs(60));
        run.resumes(&format!("kill -9 {program}"), before);
        run.invariants(&format!("kill -9 {program}"));
    }
    // The restarted reconciler goes on verifying.
    let verified = run.verified();
    run.stack.wait(
        "verification after the reconciler's restart",
        Duration::from_secs(90),
        || (run.verified() > verified).then_some(()),
    );

    // --- every WebSocket connection dropped ------------------------------------------------
    let before = run.fills();
    run.stack.admin("/admin/ws/drop", "");
    run.resumes("the WebSocket drop", before);
    run.invariants("the WebSocket drop");
    // The gateway's and the router's reconnects are counted, and Prometheus sees them
    // through the dashboard.
    for service in ["market-data", "order-router"] {
        let line =
            format!("shardbot_ws_reconnects_total{{service=\"{service}\",instance=\"main\"}} ");
        let mut last = String::new();
        let n = run.stack.wait_or(Duration::from_secs(20), || {
            last = run.stack.dashboard_get("/metrics");
            let rest = &last[last.find(&line)? + line.len()..];
            rest.lines()
                .next()?
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
        });
        let about: Vec<&str> = last
            .lines()
            .filter(|l| {
                l.contains(&format!("service=\"{service}\""))
                    || l.starts_with("shardbot_dashboard_problems")
            })
            .collect();
        assert!(
            n.is_some(),
            "{service}'s reconnects never reached /metrics; its series:\n{}",
            about.join("\n")
        );
    }

    // --- 10006 bursts and replies slower than the client waits -----------------------------
    let before = run.fills();
    run.stack.admin(
        "/admin/faults",
        r#"{"rest_10006": 0.25, "slow": 0.2, "slow_ms": 12000}"#,
    );
    let served = |kind: &str| {
        run.stack.admin_get("/admin/faults/served")[kind]
            .as_u64()
            .unwrap()
    };
    let (n10006, nslow) = (served("rest_10006"), served("slow"));
    run.stack.wait(
        "10006 bursts and slow replies met, and trading on through them",
        Duration::from_secs(120),
        || {
            (served("rest_10006") >= n10006 + 3
                && served("slow") >= nslow + 3
                && run.fills() >= before + 2)
                .then_some(())
        },
    );
    run.stack.admin("/admin/faults", "{}");
    run.resumes("10006 bursts and slow replies", run.fills());
    run.invariants("10006 bursts and slow replies");

    // --- scale workers 2 -> 4 -> 1 while trading -----------------------------------------
    for n in ["4", "1"] {
        let before = run.fills();
        let (ok, out) = run.stack.run(&["scale", "workers", n]);
        assert!(ok, "scale workers {n}:\n{out}");
        assert!(out.contains(&format!("'sim' runs {n} workers")), "{out}");
        run.resumes(&format!("scale workers {n}"), before);
        run.invariants(&format!("scale workers {n}"));
    }
    let sup = run.stack.supervisor();
    assert!(sup.contains_key("sim-workers-1"), "{sup:?}");
    assert!(
        !sup.keys()
            .any(|k| k.starts_with("sim-workers-2") || k.starts_with("sim-workers-4")),
        "the old workers are gone: {sup:?}"
    );

    let ipc = run.stack.path("ipc").display().to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(shardbot_e2e::bin("shardbot"))
            .args(args)
            .env(
                "SHARDBOT__ENDPOINTS__RECONCILER_REP",
                format!("ipc://{ipc}/sim/reconciler.rep"),
            )
            .env(
                "SHARDBOT__ENDPOINTS__RISK_MANAGER_REP",
                format!("ipc://{ipc}/sim/risk-manager.rep"),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shardbot {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The kill switch (no new entries) lets positions settle for the checks below.
    cli(&["risk", "halt"]);

    let orders = run.invariants("the end of the run");
    assert!(orders >= 10, "too few orders to judge: {orders}");

    // --- every closed trade verified; the wallet is what the trades explain -------------
    run.stack.wait(
        "every closed trade verified",
        Duration::from_secs(120),
        || {
            cli(&["reconcile"]);
            let trades = run.journal.trades().unwrap();
            let closed: Vec<_> = trades.iter().filter(|t| t.is_closed()).collect();
            (closed.len() >= 5 && closed.iter().all(|t| t.verified())).then_some(())
        },
    );
    let snapshot = run.journal.snapshots(1).unwrap();
    let last = snapshot.first().expect("a balance check");
    assert_eq!(
        last.status, "ok",
        "expected balance vs wallet after every fault: {last:?}"
    );
    let journal_path = run.stack.path("run/sim/journal.sqlite");
    let report = cli(&["report", "--journal", &journal_path.display().to_string()]);
    assert!(
        report.contains("trades verified against the exchange"),
        "{report}"
    );

    // --- down stops everything ------------------------------------------------------------
    let (ok, out) = run.stack.run(&["down"]);
    assert!(ok, "{out}");
    let (_, status) = run.stack.run(&["status"]);
    assert!(status.contains("not running"), "{status}");
}

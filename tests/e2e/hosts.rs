//! A stack split over two hosts, for real: the hub (bybit-sim, gateway, router, risk
//! manager, reconciler) in one network namespace and the strategy workers in another,
//! joined only by a veth pair on a private link, every bus endpoint `tcp://` as
//! `deploy/README.md` describes. (The test itself reaches the hub over a link of its own,
//! never cut, to read the exchange and ask the risk manager.) It trades; the link is cut for 10 s and
//! restored; it keeps trading, with the stack test's invariants: no intent placed twice,
//! the journal holding exactly the exchange's executions, the risk manager's positions the
//! exchange's, and the closed trades verified. (A cut this short leaves the TCP
//! connections established: what was sent waits in the kernels and arrives after, and
//! the workers' resent intents meet the router's exactly-once and staleness rules.)
//!
//! Needs root and `ip` (iproute2) to make the namespace: skipped with a message saying so
//! where the machine cannot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use shardbot_bus::{BusOptions, Subscriber};
use shardbot_e2e::{Books, FAST_PARAMS, Stack, free_port, poll_or, replay_config_with};
use shardbot_journal::Journal;
use shardbot_protocol::{Event, Topic};

const SYMBOLS: [&str; 8] = [
    "AAVEUSDT", "ADAUSDT", "APEUSDT", "AVAXUSDT", "BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT",
];

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The hub's and the workers' namespaces, the private link between them, and a link from
/// the test's namespace to the hub's (never cut) through which the test reads the sim and
/// asks the risk manager; all removed on drop.
struct Link {
    hub: String,
    workers: String,
    /// The hub's end of the private link (in the hub's namespace), and its address.
    hub_dev: String,
    hub_ip: String,
    /// The test's end of its link to the hub, and the hub's address on it.
    test_dev: String,
    hub_mgmt_ip: String,
}

impl Link {
    fn make() -> Result<Link, String> {
        let id = std::process::id() % 100_000;
        let net = std::process::id() % 250 + 1;
        let link = Link {
            hub: format!("sbhub{id}"),
            workers: format!("sbwrk{id}"),
            hub_dev: format!("sbh{id}"),
            hub_ip: format!("10.213.{net}.1"),
            test_dev: format!("sbt{id}"),
            hub_mgmt_ip: format!("10.214.{net}.1"),
        };
        ip(&["netns", "add", &link.hub])?;
        ip(&["netns", "add", &link.workers])?;
        // The private link, hub <-> workers.
        veth(
            (
                Some(&link.hub),
                &link.hub_dev,
                &format!("{}/30", link.hub_ip),
            ),
            (
                Some(&link.workers),
                &format!("sbw{id}"),
                &format!("10.213.{net}.2/30"),
            ),
        )?;
        for ns in [&link.hub, &link.workers] {
            ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        }
        // The test's link to the hub, and its route to the hub's private address.
        veth(
            (None, &link.test_dev, &format!("10.214.{net}.2/30")),
            (
                Some(&link.hub),
                &format!("sbm{id}"),
                &format!("{}/30", link.hub_mgmt_ip),
            ),
        )?;
        ip(&[
            "route",
            "add",
            &format!("{}/32", link.hub_ip),
            "via",
            &link.hub_mgmt_ip,
        ])?;
        Ok(link)
    }

    /// Cuts (false) or restores (true) the private link, at the hub's end.
    fn set(&self, up: bool) {
        ip(&[
            "netns",
            "exec",
            &self.hub,
            "ip",
            "link",
            "set",
            &self.hub_dev,
            if up { "up" } else { "down" },
        ])
        .unwrap();
    }
}

/// A veth pair between two namespaces (`None`: the test's), each end with its address
/// (`a.b.c.d/n`) and up.
fn veth(a: (Option<&str>, &str, &str), b: (Option<&str>, &str, &str)) -> Result<(), String> {
    ip(&["link", "add", a.1, "type", "veth", "peer", "name", b.1])?;
    for (ns, dev, addr) in [a, b] {
        let mut exec: Vec<&str> = Vec::new();
        if let Some(ns) = ns {
            ip(&["link", "set", dev, "netns", ns])?;
            exec = vec!["netns", "exec", ns, "ip"];
        }
        ip(&[exec.as_slice(), &["addr", "add", addr, "dev", dev]].concat())?;
        ip(&[exec.as_slice(), &["link", "set", dev, "up"]].concat())?;
    }
    Ok(())
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a veth end deletes its pair (and the route through it).
        let _ = ip(&["link", "del", &self.test_dev]);
        let _ = ip(&["netns", "del", &self.workers]);
        let _ = ip(&["netns", "del", &self.hub]);
    }
}

/// Whether worker `instance` shows running (its links up) within `within`.
fn worker_running(sub: &Subscriber, instance: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if let Ok(Some(r)) = sub.recv(Some(left))
            && let Event::Heartbeat(h) = r.event
            && h.service == "strategy-worker"
            && h.instance == instance
            && h.shown_state().0 == "running"
        {
            return true;
        }
    }
}

#[test]
fn a_stack_split_over_two_hosts_trades_through_a_cut_link() {
    let link = match Link::make() {
        Ok(l) => l,
        Err(why) => {
            eprintln!(
                "SKIPPED: this machine cannot make a network namespace and a veth pair \
                 (needs root and iproute2): {why}"
            );
            return;
        }
    };
    let hub = &link.hub_ip;
    let endpoint = || format!("tcp://{hub}:{}", free_port());
    let risk_rep = endpoint();
    let endpoints = format!(
        r#"market_data_pub = "{}"
market_data_rep = "{}"
order_router_pub = "{}"
order_router_rep = "{}"
risk_manager_pub = "{}"
risk_manager_rep = "{}"
reconciler_rep = "{}"
heartbeat = "ipc://{{dir}}/hb-{{service}}-{{instance}}.pub""#,
        endpoint(),
        endpoint(),
        endpoint(),
        endpoint(),
        endpoint(),
        risk_rep,
        endpoint(),
    );
    // The sim listens on every address of the hub: its services reach it on the hub's
    // loopback, the test on the hub's end of its own link.
    let config = replay_config_with(300.0, "listen = \"0.0.0.0:{sim_port}\"", "", "", "");
    let mut stack = Stack::with_endpoints(&endpoints, &config);
    std::fs::write(stack.path("optimized_parameters.json"), FAST_PARAMS).unwrap();
    // The settings a new account stack starts with (scripts/stack copies the same file).
    let settings = shardbot_e2e::script::root().join("deploy/config/trading_settings.example.json");
    std::fs::copy(settings, stack.path("trading_settings.json")).unwrap();
    let text = std::fs::read_to_string(&stack.config).unwrap();
    assert!(
        text.matches("ipc://").count() == 1,
        "only the heartbeats stay on ipc:// (each host watches its own): {text}"
    );
    let port = stack.sim_url.rsplit(':').next().unwrap().to_owned();
    stack.sim_url = format!("http://{}:{port}", link.hub_mgmt_ip);
    let (rt, sim) = stack.start_sim_in(&link.hub);
    for service in ["market-data", "risk-manager", "order-router", "reconciler"] {
        stack.spawn_in(&link.hub, service, service, &[], &[]);
    }
    stack.wait_output("order-router", "router ready", Duration::from_secs(60));
    for (i, shard) in ["0/2", "1/2"].into_iter().enumerate() {
        stack.spawn_in(
            &link.workers,
            &format!("worker-{i}"),
            "strategy-worker",
            &["--shard", shard],
            &[],
        );
    }
    let hb = Subscriber::dial(
        &[
            stack.ipc("hb-strategy-worker-0-2.pub"),
            stack.ipc("hb-strategy-worker-1-2.pub"),
        ],
        &BusOptions::default(),
    )
    .unwrap();
    hb.subscribe(Topic::HEARTBEAT_PREFIX).unwrap();

    let journal = loop {
        if let Ok(j) = Journal::open(&stack.path("var/journal.sqlite")) {
            break j;
        }
        stack.assert_alive();
        std::thread::sleep(Duration::from_millis(200)); // the router creates it
    };
    let start_ms = sim.raw().clock().now_ms() - 6 * 86_400_000;
    let books = Books {
        rt: &rt,
        sim: &sim,
        journal: &journal,
        risk_url: risk_rep.clone(),
        symbols: &SYMBOLS,
        start_ms,
    };
    let trading = |what: &str, from: usize, stack: &mut Stack| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while books.fills() < from + 2 {
            stack.assert_alive();
            assert!(
                Instant::now() < deadline,
                "no new fills {what} within 120 s\n--- worker-0:\n{}",
                stack.output("worker-0")
            );
            std::thread::sleep(Duration::from_millis(200)); // polling the journal
        }
    };
    trading("before the cut", 0, &mut stack);
    assert!(
        poll_or(Duration::from_secs(120), || (books.verified() >= 2)
            .then_some(()))
        .is_some(),
        "no verified round trip before the cut"
    );
    books.invariants("trading over tcp:// between the namespaces");
    for instance in ["0-2", "1-2"] {
        assert!(
            worker_running(&hb, instance, Duration::from_secs(10)),
            "worker {instance} is not running over the link"
        );
    }

    // --- the link is cut for 10 s -----------------------------------------------------
    link.set(false);
    // The outage lasts its 10 s (it is the fault, not a wait for a result).
    std::thread::sleep(Duration::from_secs(10));
    let before = books.fills();
    link.set(true);

    // --- restored: trading goes on, every invariant holds -----------------------------
    for instance in ["0-2", "1-2"] {
        assert!(
            worker_running(&hb, instance, Duration::from_secs(30)),
            "worker {instance} did not come back over the restored link"
        );
    }
    trading("after the link came back", before, &mut stack);
    let verified = books.verified();
    assert!(
        poll_or(Duration::from_secs(120), || (books.verified() > verified)
            .then_some(()))
        .is_some(),
        "no round trip verified after the link came back"
    );
    let orders = books.invariants("the cut link");
    assert!(orders >= 4, "{orders} orders");
    stack.assert_alive();
}

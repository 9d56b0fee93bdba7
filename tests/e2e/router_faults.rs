//! The router under fire: bybit-sim answers a quarter of REST calls with 10006 and delays
//! a fifth past the client's timeout (carrying them out), while intents arrive and are
//! retried the way workers retry them. No intent becomes two orders, and the journal's
//! fills are exactly the exchange's executions, number for number.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rust_decimal::Decimal;
use shardbot_bus::{BusOptions, Requester};
use shardbot_e2e::Stack;
use shardbot_journal::Journal;
use shardbot_protocol::{
    IntentAction, Interval, OrderIntent, RiskReply, RiskRequest, RouterReply, RouterRequest, Side,
    Symbol,
};

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 33
symbols = 30
universe_file = ""
universe_price_dir = ""

[risk]
state_file = "risk-state.json"
sync_interval_ms = 500

# This test is about exactly-once under faults, with each intent retried for as long as
# the faults last (tens of seconds): none is refused for its age here.
[router]
max_entry_age_ms = 600000
"#;

const SETTINGS: &str = r#"{"simulated_balance": 1000, "sizing": {"percent": 4}, "leverage": 2,
  "daily_loss_limit": 500, "max_open_positions": 20, "max_margin_use_pct": 90,
  "cooldown_after_stop_min": 30}"#;

#[test]
fn no_duplicate_order_and_no_lost_fill_under_10006_bursts_and_slow_replies() {
    let mut stack = Stack::new(CONFIG);
    stack.write("trading_settings.json", SETTINGS);
    let (rt, sim) = stack.start_sim();
    let instruments = rt.block_on(sim.usdt_perpetuals()).unwrap();
    let tickers = rt.block_on(sim.tickers()).unwrap();
    let start_ms = sim.raw().clock().now_ms() - 1000;

    // REST calls time out after 1 s, so the sim's 1.5 s replies are outcomes unknown.
    let timeout = [("SHARDBOT__EXCHANGE__REQUEST_TIMEOUT_MS", "1000")];
    stack.spawn("risk-manager", "risk-manager", &[], &timeout);
    stack.spawn("order-router", "order-router", &[], &timeout);
    stack.wait_output("order-router", "router ready", Duration::from_secs(30));
    let risk = Requester::dial(&stack.ipc("risk.rep"), &BusOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        risk.request_within::<_, RiskReply>(&RiskRequest::Balance, Duration::from_secs(5)),
        Ok(RiskReply::Balance(_))
    ) {
        assert!(
            Instant::now() < deadline,
            "{}",
            stack.output("risk-manager")
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    stack.admin(
        "/admin/faults",
        r#"{"rest_10006": 0.25, "slow": 0.2, "slow_ms": 1500}"#,
    );
    let router = Requester::dial(&stack.ipc("router.rep"), &BusOptions::default()).unwrap();
    let mut outcome: BTreeMap<String, RouterReply> = BTreeMap::new();
    // Ten instruments whose minimum order fits the sizing (4 % of 1,000 at 2x = 80 USDT).
    let price_of = |s: &str| tickers.iter().find(|t| t.symbol == s).unwrap().last_price;
    let chosen: Vec<_> = instruments
        .iter()
        .filter(|i| i.lot_size_filter.min_order_qty * price_of(&i.symbol) < Decimal::from(40))
        .take(10)
        .collect();
    assert_eq!(chosen.len(), 10);
    for (k, inst) in chosen.iter().enumerate() {
        let price = price_of(&inst.symbol);
        let side = if k % 2 == 0 { Side::Buy } else { Side::Sell };
        let intent = OrderIntent::new(
            "trend_following",
            Symbol::new(&inst.symbol).unwrap(),
            Interval::M5,
            1_790_000_000_000,
            IntentAction::Enter { side },
            price,
            None,
            None,
            shardbot_protocol::now_ms(),
        );
        // As a worker does: the same intent again while the answer is an error.
        let mut last = None;
        for _ in 0..6 {
            let r = router
                .request_within::<_, RouterReply>(
                    &RouterRequest::Submit(intent.clone()),
                    Duration::from_secs(30),
                )
                .unwrap();
            let done = !matches!(r, RouterReply::Error(_));
            last = Some(r);
            if done {
                break;
            }
        }
        outcome.insert(intent.intent_id.order_link_id(), last.unwrap());
    }
    stack.admin("/admin/faults", "{}");
    let placed = outcome
        .values()
        .filter(|r| matches!(r, RouterReply::Placed { .. }))
        .count();
    assert!(
        placed >= 8,
        "most intents get through the faults: {outcome:#?}\n{}",
        stack.output("order-router")
    );

    // Each intent is at most one order on the exchange; every placed one is exactly one.
    let mut history = Vec::new();
    for inst in &chosen {
        history.extend(
            rt.block_on(sim.order_history(&inst.symbol))
                .unwrap_or_else(|e| panic!("{}'s order history: {e}", inst.symbol)),
        );
    }
    for (link, reply) in &outcome {
        let n = history.iter().filter(|o| &o.order_link_id == link).count();
        match reply {
            RouterReply::Placed { .. } => assert_eq!(n, 1, "{link}: {n} orders"),
            _ => assert!(n <= 1, "{link}: {n} orders"),
        }
    }

    // The journal has every execution of the exchange, with the exchange's numbers.
    let now = sim.raw().clock().now_ms();
    let exchange: BTreeMap<String, (Decimal, Decimal, Decimal)> = rt
        .block_on(sim.executions(None, start_ms, now + 1000))
        .unwrap()
        .into_iter()
        .filter(|e| e.order_link_id.starts_with("sb-"))
        .map(|e| (e.exec_id, (e.exec_qty, e.exec_price, e.exec_fee)))
        .collect();
    assert!(exchange.len() >= placed, "{exchange:?}");
    let journal = Journal::open(&stack.path("var/journal.sqlite")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ours: BTreeMap<String, (Decimal, Decimal, Decimal)> = journal
            .fills_since(0)
            .unwrap()
            .into_iter()
            .map(|f| (f.exec_id, (f.exec_qty, f.exec_price, f.exec_fee)))
            .collect();
        if ours == exchange {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "journal {} fills vs exchange {}:\njournal {ours:?}\nexchange {exchange:?}",
            ours.len(),
            exchange.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The faults were real: the router met both.
    let log = stack.output("order-router");
    assert!(
        log.contains("order outcome unknown"),
        "no unknown outcome met:\n{log}"
    );
    assert!(
        log.contains("10006") || log.contains("rate-limited"),
        "no 10006 met:\n{log}"
    );
    stack.assert_alive();
}

//! A stop-loss that closes a position starts the symbol's cooldown: the exchange triggers
//! it (bybit-sim at a 60× clock, the stop one tenth of a percent under the entry), the
//! router publishes the exchange's StopLoss order, the risk manager records the stop-out,
//! and the next entry on that symbol is refused with the cooldown as its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use shardbot_bus::{BusOptions, Requester};
use shardbot_e2e::Stack;
use shardbot_protocol::{
    IntentAction, Interval, OrderIntent, RefusalCode, RouterReply, RouterRequest, Side, Symbol,
};

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 77
symbols = 20
universe_file = ""
universe_price_dir = ""
clock_speed = 60.0

[risk]
state_file = "risk-state.json"
sync_interval_ms = 300
"#;

const SETTINGS: &str = r#"{"simulated_balance": 1000, "sizing": {"percent": 5}, "leverage": 2,
  "daily_loss_limit": 500, "max_open_positions": 10, "max_margin_use_pct": 90,
  "cooldown_after_stop_min": 30}"#;

fn submit(stack: &Stack, intent: &OrderIntent) -> RouterReply {
    Requester::dial(&stack.ipc("router.rep"), &BusOptions::default())
        .unwrap()
        .request_within(
            &RouterRequest::Submit(intent.clone()),
            Duration::from_secs(20),
        )
        .unwrap()
}

#[test]
fn a_stop_out_starts_the_cooldown() {
    let mut stack = Stack::new(CONFIG);
    stack.write("trading_settings.json", SETTINGS);
    let (rt, sim) = stack.start_sim();
    stack.spawn("risk-manager", "risk-manager", &[], &[]);
    stack.spawn("order-router", "order-router", &[], &[]);
    stack.wait_output("order-router", "router ready", Duration::from_secs(30));
    // The instrument whose tick is finest relative to its price.
    let instruments = rt.block_on(sim.usdt_perpetuals()).unwrap();
    let tickers = rt.block_on(sim.tickers()).unwrap();
    let (inst, price) = instruments
        .iter()
        .map(|i| {
            let p = tickers
                .iter()
                .find(|t| t.symbol == i.symbol)
                .unwrap()
                .last_price;
            (i, p)
        })
        .min_by_key(|(i, p)| i.price_filter.tick_size / *p)
        .unwrap();
    let tick = inst.price_filter.tick_size;
    let stop = ((price * Decimal::new(999, 3)) / tick).floor() * tick;
    assert!(stop < price);
    let enter = |bar: i64| {
        OrderIntent::new(
            "trend_following",
            Symbol::new(&inst.symbol).unwrap(),
            Interval::M5,
            bar,
            IntentAction::Enter { side: Side::Buy },
            price,
            Some(stop),
            None,
            0,
        )
    };
    match submit(&stack, &enter(1)) {
        RouterReply::Placed { .. } => {}
        other => panic!("{other:?}\n{}", stack.output("order-router")),
    }
    // The exchange closes it by the stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        stack.assert_alive();
        let open: Vec<_> = rt
            .block_on(sim.positions())
            .unwrap()
            .into_iter()
            .filter(|p| p.symbol == inst.symbol)
            .collect();
        if open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stop never triggered: {open:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stack
        .output("risk-manager")
        .contains("stopped out; cooldown starts")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            stack.output("risk-manager")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    match submit(&stack, &enter(2)) {
        RouterReply::Refused { refusal, .. } => {
            assert_eq!(refusal.code, RefusalCode::Cooldown, "{}", refusal.reason);
            assert!(
                refusal.reason.contains("cooldown is 30 min"),
                "{}",
                refusal.reason
            );
        }
        other => panic!("{other:?}"),
    }
}

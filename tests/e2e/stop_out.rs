//! A stop-loss that closes a position starts the symbol's cooldown: the exchange triggers
//! it (bybit-sim replaying real 5-minute candles at a 60× clock, from a moment the data
//! shows a fall that must reach the stop), the router publishes the exchange's StopLoss
//! order, the risk manager records the stop-out, and the next entry on that symbol is
//! refused with the cooldown as its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use shardbot_bus::{BusOptions, Requester};
use shardbot_e2e::Stack;
use shardbot_protocol::{
    IntentAction, Interval, OrderIntent, RefusalCode, RouterReply, RouterRequest, Side, Symbol,
};

/// Bars (5 s of real time each at 60×) in which the test enters: the stop lies under every
/// price of them, so the exchange accepts it whenever the entry lands.
const ENTRY_BARS: usize = 4;
/// Bars after those in which the price falls through the stop.
const FALL_BARS: usize = 4;

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 77
replay_dir = "{replay_dir}"
start_time_ms = {start_ms}
clock_speed = 60.0

[risk]
state_file = "risk-state.json"
sync_interval_ms = 300
"#;

const SETTINGS: &str = r#"{"simulated_balance": 1000, "sizing": {"percent": 5}, "leverage": 2,
  "daily_loss_limit": 500, "max_open_positions": 10, "max_margin_use_pct": 90,
  "cooldown_after_stop_min": 30}"#;

/// Where the recorded data falls furthest: the symbol, the open time of the first entry
/// bar, the lowest low of the entry bars and the lowest low of the bars after them. A
/// stop between the two lows is below the price whenever the entry lands, and is reached
/// later: with a random path, a stop may never be (which made this test flaky).
fn steepest_fall() -> (String, i64, f64, f64) {
    let dir = shardbot_testdata::klines("bybit_linear_5m");
    let mut best: Option<(String, i64, f64, f64)> = None;
    for s in shardbot_backtest::data::load_path(&dir).unwrap() {
        let c = &s.candles;
        // Sizing 100 USDT must buy several lots.
        if c.is_empty() || c[0].close > 500.0 {
            continue;
        }
        let low =
            |r: &[shardbot_strategy::Candle]| r.iter().map(|k| k.low).fold(f64::MAX, f64::min);
        for i in (1..c.len().saturating_sub(ENTRY_BARS + FALL_BARS)).step_by(3) {
            let entry = low(&c[i..i + ENTRY_BARS]);
            let fall = low(&c[i + ENTRY_BARS..i + ENTRY_BARS + FALL_BARS]);
            if best.as_ref().is_none_or(|b| fall / entry < b.3 / b.2) {
                best = Some((s.symbol.clone(), c[i].open_time_ms, entry, fall));
            }
        }
    }
    let best = best.unwrap();
    assert!(
        best.3 < best.2 * 0.99,
        "no fall of 1 % in the data: {best:?}"
    );
    best
}

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
    let (symbol, start_ms, entry_low, fall_low) = steepest_fall();
    let mut stack = Stack::new(
        &CONFIG
            .replace(
                "{replay_dir}",
                &shardbot_testdata::klines("bybit_linear_5m")
                    .display()
                    .to_string(),
            )
            .replace("{start_ms}", &start_ms.to_string()),
    );
    stack.write("trading_settings.json", SETTINGS);
    let (rt, sim) = stack.start_sim();
    stack.spawn("risk-manager", "risk-manager", &[], &[]);
    stack.spawn("order-router", "order-router", &[], &[]);
    stack.wait_output("order-router", "router ready", Duration::from_secs(30));
    let instruments = rt.block_on(sim.usdt_perpetuals()).unwrap();
    let inst = instruments.iter().find(|i| i.symbol == symbol).unwrap();
    let price = shardbot_e2e::last_price(&rt, &sim, &symbol);
    // Halfway down the fall, on the tick.
    let tick = inst.price_filter.tick_size;
    let stop = (Decimal::from_f64((entry_low * fall_low).sqrt()).unwrap() / tick).floor() * tick;
    assert!(stop < price, "{symbol}: stop {stop}, price {price}");
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
            shardbot_protocol::now_ms(),
        )
    };
    match submit(&stack, &enter(1)) {
        RouterReply::Placed { .. } => {}
        other => panic!("{other:?}\n{}", stack.output("order-router")),
    }
    // The exchange closes it by the stop, within the falling bars (5 s each) and a margin.
    let deadline = Instant::now() + Duration::from_secs(5 * (ENTRY_BARS + FALL_BARS) as u64 + 30);
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

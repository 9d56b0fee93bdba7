//! The kill switch ends flat: `shardbot risk flatten` against the risk manager and the
//! order router on bybit-sim closes a position twice the symbol's largest market order (in
//! as many reduce-only orders as that needs) and a short, waits until the exchange shows
//! none, and only then says FLAT; with the exchange failing every request it says, loudly
//! and with exit status 3, that the account is not known to be flat. After a flatten the
//! account is halted: an entry is refused. Each flatten's end is POSTed to the
//! configured webhook, whose token never reaches the log. `shardbot risk close SYMBOL`
//! closes that one position and nothing else, and trading goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, time::Duration};

use rust_decimal::Decimal;
use shardbot_bus::{BusOptions, Requester};
use shardbot_bybit::rest::{BybitClient, CreateOrder, DemoApplyMoney, DemoCoin};
use shardbot_e2e::{Stack, bin, webhook};
use shardbot_protocol::{
    IntentAction, Interval, OrderIntent, RefusalCode, RouterReply, RouterRequest, Side, Symbol,
};

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 5
symbols = 30
universe_file = ""
universe_price_dir = ""

[risk]
state_file = "risk-state.json"
sync_interval_ms = 300
flatten_deadline_ms = 4000
"#;

const SETTINGS: &str = r#"{"simulated_balance": 1000, "sizing": {"percent": 10}, "leverage": 2,
  "daily_loss_limit": 50, "max_open_positions": 5, "max_margin_use_pct": 90,
  "cooldown_after_stop_min": 30}"#;

fn flatten(stack: &Stack) -> (i32, String, String) {
    risk(stack, &["flatten"])
}

/// `shardbot risk ARGS... --config` against the stack: exit status, stdout, stderr.
fn risk(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("shardbot"))
        .arg("risk")
        .args(args)
        .arg("--config")
        .arg(stack.path("config.toml"))
        .current_dir(stack.path(""))
        .env_remove("SHARDBOT_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn market(rt: &tokio::runtime::Runtime, sim: &BybitClient, symbol: &str, side: Side, qty: Decimal) {
    let link = format!("hand-{}", shardbot_protocol::now_ns());
    rt.block_on(sim.place_order(&CreateOrder::market(symbol, side, qty, &link)))
        .unwrap();
}

/// A strategy's long entry on `symbol` at its last price, submitted to the stack's router.
fn submit_entry(
    stack: &Stack,
    rt: &tokio::runtime::Runtime,
    sim: &BybitClient,
    symbol: &str,
) -> RouterReply {
    let router = Requester::dial(&stack.ipc("router.rep"), &BusOptions::default()).unwrap();
    let price = shardbot_e2e::last_price(rt, sim, symbol);
    let entry = OrderIntent::new(
        "trend_following",
        Symbol::new(symbol).unwrap(),
        Interval::M5,
        1,
        IntentAction::Enter { side: Side::Buy },
        price,
        None,
        None,
        shardbot_protocol::now_ms(),
    );
    router
        .request_within::<_, RouterReply>(&RouterRequest::Submit(entry), Duration::from_secs(20))
        .unwrap()
}

#[test]
fn flatten_closes_everything_the_exchange_shows_and_says_so() {
    let mut stack = Stack::new(CONFIG);
    stack.write("trading_settings.json", SETTINGS);
    let (rt, sim) = stack.start_sim();
    let instruments = rt.block_on(sim.usdt_perpetuals()).unwrap();
    let (hook, alerts) = webhook();
    stack.spawn("risk-manager", "risk-manager", &[], &[]);
    stack.spawn(
        "order-router",
        "order-router",
        &[],
        &[("SHARDBOT__ALERTS__WEBHOOK_URL", &hook)],
    );
    stack.wait_output("order-router", "router ready", Duration::from_secs(30));
    // The router's start-up leverage pass is done before leverage is set here by hand.
    stack.wait_output(
        "order-router",
        "leverage set at start",
        Duration::from_secs(60),
    );

    // Opened by hand, as the flatten must close whatever the exchange shows: a long of
    // twice the largest market order and a bit (three orders to close it), and a short.
    let big = instruments
        .iter()
        .find(|i| i.leverage_filter.max_leverage == Decimal::from(100))
        .expect("a symbol with 100x");
    let lot = &big.lot_size_filter;
    rt.block_on(sim.raw().account_demo_apply_money(&DemoApplyMoney {
        adjust_type: 0,
        uta_demo_apply_money: vec![DemoCoin {
            coin: "USDT".into(),
            amount_str: Decimal::from(100_000),
        }],
    }))
    .unwrap();
    rt.block_on(sim.set_leverage(&big.symbol, Decimal::from(100)))
        .unwrap();
    let max = lot.max_mkt_order_qty.unwrap();
    market(&rt, &sim, &big.symbol, Side::Buy, max);
    market(&rt, &sim, &big.symbol, Side::Buy, max);
    market(&rt, &sim, &big.symbol, Side::Buy, lot.min_order_qty);
    let other = instruments.iter().find(|i| i.symbol != big.symbol).unwrap();
    let short = other.lot_size_filter.min_order_qty * Decimal::from(3);
    market(&rt, &sim, &other.symbol, Side::Sell, short);
    let open = rt.block_on(sim.positions()).unwrap();
    assert_eq!(open.len(), 2, "{open:?}");
    assert!(
        open.iter()
            .any(|p| p.size == max * Decimal::TWO + lot.min_order_qty),
        "{open:?}"
    );

    let (code, out, err) = flatten(&stack);
    assert_eq!(
        code,
        0,
        "stdout:\n{out}\nstderr:\n{err}\n{}",
        stack.output("order-router")
    );
    let last = out.lines().last().unwrap_or_default();
    assert!(last.contains("FLAT after"), "{out}");
    // Three parts for the long (max, max, min), one for the short; a round repeated
    // because a read came before the fills is allowed, fewer is not.
    let orders: u32 = last
        .split(" orders")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no order count in {last:?}"));
    assert!(orders >= 4, "{out}");
    // FLAT means the exchange shows nothing, now, not in a while.
    let left = rt.block_on(sim.positions()).unwrap();
    assert!(left.is_empty(), "FLAT was said with {left:?} open");
    let alert = alerts.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(alert["event"], "flatten_flat", "{alert}");
    assert_eq!(alert["account"], "sim", "{alert}");
    assert!(
        alert["text"].as_str().unwrap().contains("FLAT after"),
        "{alert}"
    );

    // Halted: an entry is refused.
    let first = rt.block_on(sim.tickers()).unwrap()[0].symbol.clone();
    match submit_entry(&stack, &rt, &sim, &first) {
        RouterReply::Refused { refusal, .. } => {
            assert_eq!(refusal.code, RefusalCode::Halted, "{}", refusal.reason)
        }
        other => panic!("{other:?}"),
    }

    // With every request to the exchange failing, the flatten cannot know: it says so and
    // ends with status 3 at its deadline.
    market(&rt, &sim, &other.symbol, Side::Buy, short);
    stack.admin("/admin/faults", r#"{"rest_5xx": 1.0}"#);
    let (code, out, err) = flatten(&stack);
    stack.admin("/admin/faults", "{}");
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("NOT KNOWN TO BE FLAT"), "{err}");
    assert!(out.contains("could not be read"), "{out}");
    assert!(
        err.contains("502") || err.contains("5xx") || err.contains("HTTP"),
        "{err}"
    );
    let left = rt.block_on(sim.positions()).unwrap();
    assert_eq!(left.len(), 1, "the long is still open: {left:?}");
    assert!(
        stack.output("order-router").contains("NOT FLAT"),
        "the router's log says it too"
    );
    // And the webhook, with what is left.
    let alert = alerts.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(alert["event"], "flatten_not_flat", "{alert}");
    assert_eq!(alert["details"]["flat"], false, "{alert}");
    assert!(
        alert["text"].as_str().unwrap().contains("NOT FLAT"),
        "{alert}"
    );
    let log = stack.output("order-router");
    assert!(log.contains("alert delivered"), "{log}");
    assert!(
        !log.contains("T0KEN-SECRET"),
        "the webhook's token is in the log"
    );

    // Back to normal, a flatten again closes it.
    let (code, out, err) = flatten(&stack);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(rt.block_on(sim.positions()).unwrap().is_empty());
}

#[test]
fn a_close_by_hand_closes_that_position_only_and_trading_goes_on() {
    let mut stack = Stack::new(CONFIG);
    stack.write("trading_settings.json", SETTINGS);
    let (rt, sim) = stack.start_sim();
    let instruments = rt.block_on(sim.usdt_perpetuals()).unwrap();
    stack.spawn("risk-manager", "risk-manager", &[], &[]);
    stack.spawn("order-router", "order-router", &[], &[]);
    stack.wait_output("order-router", "router ready", Duration::from_secs(30));
    let (one, two) = (&instruments[0], &instruments[1]);
    let qty = |i: &shardbot_bybit::models::market::InstrumentInfo| {
        i.lot_size_filter.min_order_qty * Decimal::from(3)
    };
    market(&rt, &sim, &one.symbol, Side::Buy, qty(one));
    market(&rt, &sim, &two.symbol, Side::Sell, qty(two));
    assert_eq!(rt.block_on(sim.positions()).unwrap().len(), 2);

    // Lower case is taken; the close waits until the exchange shows it gone.
    let (code, out, err) = risk(&stack, &["close", &one.symbol.to_lowercase()]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("close {} (c", one.symbol)) && last.contains("FLAT after"),
        "{out}"
    );
    let left = rt.block_on(sim.positions()).unwrap();
    assert_eq!(
        left.iter().map(|p| p.symbol.as_str()).collect::<Vec<_>>(),
        [two.symbol.as_str()],
        "only that position is closed"
    );
    let log = stack.output("order-router");
    assert!(
        log.contains("close by hand") && !log.contains("entries stopped"),
        "{log}"
    );
    // Trading goes on: the mode is normal and an entry is not refused as halted.
    let (code, out, _) = risk(&stack, &["show"]);
    assert_eq!(code, 0);
    assert!(out.contains("mode              Normal"), "{out}");
    match submit_entry(&stack, &rt, &sim, &one.symbol) {
        RouterReply::Refused { refusal, .. } => {
            assert_ne!(refusal.code, RefusalCode::Halted, "{}", refusal.reason)
        }
        RouterReply::Placed { .. } => {}
        other => panic!("{other:?}"),
    }

    // A symbol without a position: flat at once, nothing sent. Not a symbol: refused.
    let (code, out, err) = risk(&stack, &["close", "DOGEUSDT"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("FLAT after 1 reads and 0 orders"), "{out}");
    let (code, _, err) = risk(&stack, &["close", "BTC/USDT"]);
    assert_ne!(code, 0);
    assert!(err.contains("\"BTC/USDT\" is not a symbol"), "{err}");
}

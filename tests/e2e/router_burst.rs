//! A bar close's burst through the order router, beyond both of the exchange's order
//! budgets (`/v5/order/create` and `/v5/order/create-batch`, 10 orders a second each):
//! 24 entries at once while bybit-sim answers some batches with 10006, then 12 exits at
//! once with the router killed (SIGKILL) while a batch's answer is held back. Every intent
//! is placed exactly once (one order per orderLinkId on the exchange), some of them in
//! batches, and the exits close their positions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, time::Duration};

use rust_decimal::Decimal;
use shardbot_bus::{BusOptions, Requester};
use shardbot_bybit::{models::market::InstrumentInfo, rest::Query};
use shardbot_e2e::Stack;
use shardbot_protocol::{
    IntentAction, Interval, OrderIntent, RouterReply, RouterRequest, Side, Symbol,
};

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 44
symbols = 60
universe_file = ""
universe_price_dir = ""

[risk]
state_file = "risk-state.json"
sync_interval_ms = 500
"#;

const SETTINGS: &str = r#"{"simulated_balance": 100000, "sizing": {"fixed": 40}, "leverage": 2,
  "daily_loss_limit": 5000, "max_open_positions": 40, "max_margin_use_pct": 90,
  "cooldown_after_stop_min": 30}"#;

fn intent(symbol: &str, bar: i64, action: IntentAction, price: Decimal) -> OrderIntent {
    OrderIntent::new(
        "trend_following",
        Symbol::new(symbol).unwrap(),
        Interval::M5,
        bar,
        action,
        price,
        None,
        None,
        shardbot_protocol::now_ms(),
    )
}

/// As a worker delivers an intent: resent by the bus until answered, and sent again after
/// an error reply (the same intent id: never a second order). All deliveries share one
/// requester, as a worker's do (each request on its own nng context).
fn deliver(req: &Requester, intent: &OrderIntent) -> RouterReply {
    let mut last = None;
    for _ in 0..6 {
        match req.request_within::<_, RouterReply>(
            &RouterRequest::Submit(intent.clone()),
            Duration::from_secs(60),
        ) {
            Ok(RouterReply::Error(e)) => last = Some(e.message),
            Ok(reply) => return reply,
            Err(e) => last = Some(e.to_string()),
        }
    }
    panic!("{}: never answered: {last:?}", intent.symbol)
}

/// Orders on the exchange per orderLinkId (history of every symbol of `symbols`).
fn orders_by_link(
    rt: &tokio::runtime::Runtime,
    sim: &shardbot_bybit::rest::BybitClient,
    symbols: &[String],
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for s in symbols {
        let q = Query::new()
            .with("category", "linear")
            .with("symbol", s.as_str())
            .with("limit", 50);
        for o in rt.block_on(sim.raw().order_history(&q)).unwrap().list {
            *out.entry(o.order_link_id).or_default() += 1;
        }
    }
    out
}

#[test]
fn a_burst_beyond_both_budgets_places_every_intent_once_through_10006_and_a_kill() {
    let mut stack = Stack::new(CONFIG);
    stack.write("trading_settings.json", SETTINGS);
    let (rt, sim) = stack.start_sim();
    let instruments = rt.block_on(sim.usdt_perpetuals()).unwrap();
    let prices: HashMap<String, Decimal> = rt
        .block_on(sim.tickers())
        .unwrap()
        .into_iter()
        .map(|t| (t.symbol, t.last_price))
        .collect();
    // 24 symbols whose smallest order fits 40 USDT of margin at 2x.
    let fits = |i: &&InstrumentInfo| {
        let min_value = i.lot_size_filter.min_order_qty * prices[&i.symbol];
        min_value < Decimal::from(40)
            && i.lot_size_filter.min_notional_value.unwrap_or_default() < Decimal::from(40)
    };
    let symbols: Vec<String> = instruments
        .iter()
        .filter(fits)
        .take(24)
        .map(|i| i.symbol.clone())
        .collect();
    assert_eq!(symbols.len(), 24, "24 instruments fit the sizing");
    stack.start_order_path();
    let router = Requester::dial(&stack.ipc("router.rep"), &BusOptions::default()).unwrap();

    // --- 24 entries at once; a seventh of the batches answered 10006 -------------------
    stack.admin(
        "/admin/faults",
        r#"{"rest_10006": 0.15, "only_path": "/v5/order/create-batch"}"#,
    );
    let buy = IntentAction::Enter { side: Side::Buy };
    let entries: Vec<OrderIntent> = symbols
        .iter()
        .map(|s| intent(s, 1, buy, prices[s]))
        .collect();
    let replies: Vec<RouterReply> = std::thread::scope(|scope| {
        let hs: Vec<_> = entries
            .iter()
            .map(|i| scope.spawn(|| deliver(&router, i)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in entries.iter().zip(&replies) {
        assert!(
            matches!(r, RouterReply::Placed { .. }),
            "{}: {r:?}\n{}",
            i.symbol,
            stack.output("order-router")
        );
    }
    assert!(
        stack.output("order-router").contains("sending a batch"),
        "the burst used create-batch"
    );

    // --- 12 exits at once; the router killed while a batch's answer is held back --------
    stack.admin(
        "/admin/faults",
        r#"{"slow": 1.0, "slow_ms": 4000, "only_path": "/v5/order/create-batch"}"#,
    );
    let slow_before = stack.faults_served("slow");
    let exits: Vec<OrderIntent> = symbols[..12]
        .iter()
        .map(|s| intent(s, 2, IntentAction::Exit, prices[s]))
        .collect();
    let workers: Vec<_> = exits
        .iter()
        .cloned()
        .map(|i| {
            let router = router.clone();
            std::thread::spawn(move || deliver(&router, &i))
        })
        .collect();
    // A batch has reached the exchange (carried out, its answer held back).
    stack.wait_fault_served("slow", slow_before, Duration::from_secs(30), "order-router");
    stack.kill9("order-router");
    stack.admin("/admin/faults", "{}");
    stack.spawn("order-router-2", "order-router", &[], &[]);
    stack.wait_output("order-router-2", "router ready", Duration::from_secs(30));
    for (i, w) in exits.iter().zip(workers) {
        let r = w.join().unwrap();
        assert!(
            matches!(r, RouterReply::Placed { .. }),
            "exit {}: {r:?}\n{}",
            i.symbol,
            stack.output("order-router-2")
        );
    }

    // --- exactly once ---------------------------------------------------------------------
    let on_exchange = orders_by_link(&rt, &sim, &symbols);
    for i in entries.iter().chain(&exits) {
        assert_eq!(
            on_exchange.get(&i.intent_id.order_link_id()).copied(),
            Some(1),
            "{} {:?}: one order",
            i.symbol,
            i.action
        );
    }
    let open: Vec<String> = rt
        .block_on(sim.positions())
        .unwrap()
        .into_iter()
        .filter(|p| !p.size.is_zero())
        .map(|p| p.symbol)
        .collect();
    for s in &symbols[..12] {
        assert!(!open.contains(s), "{s} was exited: {open:?}");
    }
    for s in &symbols[12..] {
        assert!(open.contains(s), "{s} is still held: {open:?}");
    }
    stack.assert_alive();
    // Not closed: its first peer died with requests unanswered, and libnng 1.5.2's
    // nng_close can then hang for good (issue 22; seen here with one requester per intent).
    std::mem::forget(router);
}

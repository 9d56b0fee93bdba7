//! bybit-sim's order and execution ids are unique across its restarts, as Bybit's are: a
//! journal that outlives a `scripts/stack down` / `up` records the new run's fills
//! beside the old run's (bybit-sim numbered from 1 at every start, and the journal then
//! took a new fill for a repeat of an old one and dropped it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shardbot_bybit::rest::CreateOrder;
use shardbot_e2e::Stack;
use shardbot_journal::Journal;
use shardbot_protocol::Side;

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 9
symbols = 10
universe_file = ""
universe_price_dir = ""

[[sim.accounts]]
name = "demo"
api_key = "e2e-key"
api_secret = "e2e-secret"
usdt = "100000"
"#;

/// Starts the sim (as `label`), buys the first symbol's minimum, and returns that fill.
fn one_fill(stack: &mut Stack, label: &str) -> (String, shardbot_protocol::Fill) {
    stack.spawn(label, "bybit-sim", &[], &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let trader = stack.account_client("e2e-key", "e2e-secret");
    let mut instruments = Vec::new();
    for _ in 0..100 {
        if let Ok(v) = rt.block_on(trader.usdt_perpetuals()) {
            instruments = v;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!instruments.is_empty(), "{}", stack.output(label));
    rt.block_on(trader.sync_time()).unwrap();
    let i = &instruments[0];
    let price = shardbot_e2e::last_price(&rt, &trader, &i.symbol);
    // About 20 USDT: above any minimum order value.
    let qty = shardbot_e2e::qty_worth(i, price, 20);
    let placed = rt
        .block_on(trader.place_order(&CreateOrder::market(
            &i.symbol,
            Side::Buy,
            qty,
            &format!("e2e-{label}"),
        )))
        .unwrap();
    let now = trader.raw().clock().now_ms();
    let fill = rt
        .block_on(trader.executions(Some(&i.symbol), now - 60_000, now + 60_000))
        .unwrap()
        .into_iter()
        .find(|e| e.order_id == placed.order_id)
        .and_then(|e| e.to_fill())
        .expect("the order's execution");
    (placed.order_id, fill)
}

#[test]
fn ids_are_unique_across_restarts_and_the_journal_keeps_both_runs() {
    let mut stack = Stack::new(CONFIG);
    let (first_order, first) = one_fill(&mut stack, "sim-1");
    stack.kill9("sim-1");
    let (second_order, second) = one_fill(&mut stack, "sim-2");
    assert_ne!(first_order, second_order, "order ids");
    assert_ne!(first.exec_id, second.exec_id, "execution ids");
    let journal = Journal::open(&stack.path("journal.sqlite")).unwrap();
    assert!(journal.record_fill(&first).unwrap());
    assert!(
        journal.record_fill(&second).unwrap(),
        "the new run's fill is recorded"
    );
    assert_eq!(journal.fills_since(0).unwrap().len(), 2);
}

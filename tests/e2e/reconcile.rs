//! The reconciler against bybit-sim: three dozen round trips placed through the router
//! are all verified by one sweep, with the journal's numbers equal to the exchange's
//! closed-PnL records and the expected balance equal to the wallet. Then the journal is
//! damaged on purpose (a fee changed, a trade deleted, a trade and its fills deleted) and
//! a trade is placed by hand on the exchange: each is detected, reported and corrected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use rust_decimal::Decimal;
use shardbot_bus::{BusOptions, Requester};
use shardbot_bybit::rest::CreateOrder;
use shardbot_e2e::Stack;
use shardbot_journal::{Journal, TradeView};
use shardbot_protocol::{
    IntentAction, Interval, OrderIntent, RiskReply, RiskRequest, RouterReply, RouterRequest, Side,
    Symbol,
};

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 47
symbols = 40
universe_file = ""
universe_price_dir = ""

[risk]
state_file = "risk-state.json"
sync_interval_ms = 500
"#;

const SETTINGS: &str = r#"{"simulated_balance": 1000, "sizing": {"percent": 4}, "leverage": 2,
  "daily_loss_limit": 1000, "max_open_positions": 20, "max_margin_use_pct": 95,
  "cooldown_after_stop_min": 30}"#;

const ROUNDS: i64 = 3;
const SYMBOLS: usize = 12;

fn wait_for(stack: &mut Stack, what: &str, mut ok: impl FnMut(&Stack) -> bool, within: Duration) {
    let deadline = Instant::now() + within;
    while !ok(stack) {
        stack.assert_alive();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n--- reconciler:\n{}",
            stack.output("reconciler")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `shardbot <args>` that must succeed; its output.
fn cli(stack: &Stack, args: &[&str]) -> String {
    let (ok, out) = stack.cli(args);
    assert!(ok, "shardbot {args:?}: {out}");
    out
}

fn closed(j: &Journal) -> Vec<TradeView> {
    j.trades()
        .unwrap()
        .into_iter()
        .filter(|t| t.is_closed())
        .collect()
}

#[test]
fn every_closed_trade_verified_and_every_injected_discrepancy_caught() {
    let mut stack = Stack::new(CONFIG);
    stack.write("trading_settings.json", SETTINGS);
    let (rt, sim) = stack.start_sim();
    let instruments = rt.block_on(sim.usdt_perpetuals()).unwrap();
    let tickers = rt.block_on(sim.tickers()).unwrap();
    let price_of = |s: &str| tickers.iter().find(|t| t.symbol == s).unwrap().last_price;
    // Instruments whose minimum order fits the sizing (4 % of 1,000 at 2x = 80 USDT).
    let chosen: Vec<_> = instruments
        .iter()
        .filter(|i| i.lot_size_filter.min_order_qty * price_of(&i.symbol) < Decimal::from(40))
        .take(SYMBOLS + 1)
        .collect();
    assert_eq!(chosen.len(), SYMBOLS + 1);
    let (by_hand, chosen) = chosen.split_last().unwrap();

    stack.spawn("risk-manager", "risk-manager", &[], &[]);
    stack.spawn("order-router", "order-router", &[], &[]);
    stack.spawn("reconciler", "reconciler", &[], &[]);
    stack.wait_output("order-router", "router ready", Duration::from_secs(30));
    // The reconciler's start sweep.
    stack.wait_output("reconciler", "sweep done", Duration::from_secs(30));
    let journal = Journal::open(&stack.path("var/journal.sqlite")).unwrap();
    assert!(
        journal.baseline().unwrap().is_some(),
        "the first sweep takes the baseline"
    );

    // Three rounds of entries and exits on twelve symbols: 36 round trips.
    let router = Requester::dial(&stack.ipc("router.rep"), &BusOptions::default()).unwrap();
    let risk = Requester::dial(&stack.ipc("risk.rep"), &BusOptions::default()).unwrap();
    let send = |symbol: &str, bar: i64, action: IntentAction| {
        let intent = OrderIntent::new(
            "trend_following",
            Symbol::new(symbol).unwrap(),
            Interval::M5,
            bar,
            action,
            price_of(symbol),
            None,
            None,
            shardbot_protocol::now_ms(),
        );
        for _ in 0..5 {
            match router
                .request_within::<_, RouterReply>(
                    &RouterRequest::Submit(intent.clone()),
                    Duration::from_secs(20),
                )
                .unwrap()
            {
                RouterReply::Placed { .. } => return,
                RouterReply::Refused { refusal, .. } => panic!("{symbol} refused: {refusal:?}"),
                RouterReply::Error(e) => eprintln!("retrying {symbol}: {}", e.message),
                other @ (RouterReply::Flatten(_) | RouterReply::Recorded { .. }) => {
                    panic!("{symbol}: {other:?}")
                }
            }
        }
        panic!("{symbol}: no order after 5 attempts");
    };
    for round in 0..ROUNDS {
        let bar = 1_790_000_000_000 + round * 600_000;
        for (k, inst) in chosen.iter().enumerate() {
            let side = if (k as i64 + round) % 2 == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            send(&inst.symbol, bar, IntentAction::Enter { side });
        }
        // Each entry is on the exchange before its exit is sent.
        wait_for(
            &mut stack,
            "the round's positions",
            |_| {
                let open = rt.block_on(sim.positions()).unwrap();
                chosen
                    .iter()
                    .all(|i| open.iter().any(|p| p.symbol == i.symbol && p.is_open()))
            },
            Duration::from_secs(30),
        );
        for inst in chosen {
            send(&inst.symbol, bar + 300_000, IntentAction::Exit);
        }
        wait_for(
            &mut stack,
            "the round's exits",
            |_| {
                let open = rt.block_on(sim.positions()).unwrap();
                !chosen
                    .iter()
                    .any(|i| open.iter().any(|p| p.symbol == i.symbol && p.is_open()))
            },
            Duration::from_secs(30),
        );
        // The risk manager has seen them closed too (else the next entry is refused as
        // a position that exists).
        wait_for(
            &mut stack,
            "the risk manager to see the exits",
            |_| match risk
                .request_within::<_, RiskReply>(&RiskRequest::Positions, Duration::from_secs(5))
            {
                Ok(RiskReply::Positions(p)) => !p
                    .positions
                    .iter()
                    .any(|p| chosen.iter().any(|i| i.symbol == p.symbol.as_str())),
                _ => false,
            },
            Duration::from_secs(30),
        );
    }
    let expected = ROUNDS as usize * SYMBOLS;
    wait_for(
        &mut stack,
        "36 closed trades in the journal",
        |_| closed(&journal).len() == expected,
        Duration::from_secs(30),
    );

    // One sweep verifies every one of them.
    let out = cli(&stack, &["reconcile"]);
    assert!(out.contains("0 still unverified"), "{out}");
    let trades = closed(&journal);
    assert_eq!(trades.len(), expected);
    let now = sim.raw().clock().now_ms();
    let records = rt
        .block_on(sim.closed_pnl(None, now - 3_600_000, now + 60_000))
        .unwrap();
    for t in &trades {
        assert!(t.verified(), "unverified: {t:?}");
        assert_eq!(t.discrepancy, None, "{t:?}");
        assert_eq!(t.calc.source, "shardbot");
        assert_eq!(t.calc.strategy.as_deref(), Some("trend_following"));
        let ex = t.exchange.unwrap();
        // The exchange's own records, fetched here independently.
        let mine: Vec<_> = records
            .iter()
            .filter(|c| t.calc.exit_order_ids.contains(&c.order_id))
            .collect();
        assert_eq!(mine.len(), 1, "{t:?}");
        assert_eq!(ex.pnl, mine[0].closed_pnl);
        assert_eq!(ex.qty, mine[0].closed_size);
        assert_eq!(
            ex.fees,
            mine[0].open_fee.unwrap() + mine[0].close_fee.unwrap()
        );
        // Our own calculation agrees to the cent.
        assert!(
            (t.calc.pnl.unwrap() - ex.pnl).abs() < Decimal::new(1, 2),
            "{t:?}"
        );
        assert!((t.calc.fees - ex.fees).abs() < Decimal::new(1, 2), "{t:?}");
        assert!((t.calc.entry_price - ex.entry_price).abs() * ex.qty < Decimal::new(1, 2));
    }
    let wallet = |rt: &tokio::runtime::Runtime| {
        rt.block_on(sim.wallet())
            .unwrap()
            .coin("USDT")
            .unwrap()
            .wallet_balance
    };
    let baseline = journal.baseline().unwrap().unwrap().expected;
    let net: Decimal = trades.iter().map(|t| t.net().unwrap()).sum();
    assert_eq!(baseline + net, wallet(&rt), "expected balance = wallet");
    let snap = journal.snapshots(1).unwrap().pop().unwrap();
    assert_eq!(
        (snap.status.as_str(), snap.difference),
        ("ok", Decimal::ZERO),
        "{snap:?}"
    );

    // Damage: a fee changed, a trade deleted, a trade and its fills deleted.
    let damaged_at = sim.raw().clock().now_ms();
    let (fee_t, del_t, lost_t) = (&trades[0], &trades[1], &trades[2]);
    let fee_exec = journal
        .fills_since(0)
        .unwrap()
        .into_iter()
        .find(|f| f.order_id == fee_t.calc.entry_order_ids[0])
        .unwrap();
    journal
        .execute_unchecked(&format!(
            "UPDATE fills SET exec_fee = '9.99' WHERE exec_id = '{}'",
            fee_exec.exec_id
        ))
        .unwrap();
    journal
        .execute_unchecked(&format!(
            "DELETE FROM trades WHERE trade_key = '{}'",
            del_t.calc.trade_key
        ))
        .unwrap();
    let lost_orders: Vec<String> = lost_t
        .calc
        .entry_order_ids
        .iter()
        .chain(&lost_t.calc.exit_order_ids)
        .cloned()
        .collect();
    for o in &lost_orders {
        journal
            .execute_unchecked(&format!("DELETE FROM fills WHERE order_id = '{o}'"))
            .unwrap();
    }
    journal
        .execute_unchecked(&format!(
            "DELETE FROM trades WHERE trade_key = '{}'",
            lost_t.calc.trade_key
        ))
        .unwrap();

    // And a round trip placed by hand on the exchange, not through shardbot.
    let qty = by_hand.lot_size_filter.min_order_qty;
    rt.block_on(sim.place_order(&CreateOrder::market(
        &by_hand.symbol,
        Side::Buy,
        qty,
        "by-hand-open",
    )))
    .unwrap();
    let mut close = CreateOrder::market(&by_hand.symbol, Side::Sell, qty, "by-hand-close");
    close.reduce_only = Some(true);
    rt.block_on(sim.place_order(&close)).unwrap();
    wait_for(
        &mut stack,
        "the hand-placed trade to be verified",
        |_| {
            closed(&journal)
                .iter()
                .any(|t| t.calc.symbol == by_hand.symbol && t.verified())
        },
        Duration::from_secs(30),
    );

    let out = cli(&stack, &["reconcile", "--full"]);
    assert!(out.contains("0 still unverified"), "{out}");
    // The sweep after the hand-placed trade closed may have found them first: the runs
    // since the damage found each exactly once.
    let runs = journal.runs(100).unwrap();
    let since: Vec<_> = runs.iter().filter(|r| r.started_ms >= damaged_at).collect();
    assert_eq!(
        since.iter().map(|r| r.imported).sum::<u32>(),
        1,
        "{since:?}"
    );
    assert_eq!(
        since.iter().map(|r| r.restored).sum::<u32>(),
        1,
        "{since:?}"
    );
    let after = closed(&journal);
    // The changed fee: reported with both values, the record keeps the exchange's.
    let t = after
        .iter()
        .find(|t| t.calc.trade_key == fee_t.calc.trade_key)
        .unwrap();
    let d = t
        .discrepancy
        .clone()
        .expect("the changed fee is a discrepancy");
    assert!(
        d.contains(&format!(
            "fill {} fee: journal 9.99 vs exchange {}",
            fee_exec.exec_id,
            fee_exec.exec_fee.normalize()
        )),
        "{d}"
    );
    assert_eq!(
        t.fees(),
        fee_t.fees(),
        "the record keeps the exchange's fees"
    );
    assert_eq!(t.net(), fee_t.net());
    let recorded = journal.discrepancies().unwrap();
    assert!(recorded.iter().any(|x| x.trade_key == fee_t.calc.trade_key
        && x.field == "fees"
        && x.journal_value != x.exchange_value));
    // The deleted trade: rebuilt from its fills and flagged.
    let t = after
        .iter()
        .find(|t| t.calc.trade_key == del_t.calc.trade_key)
        .unwrap();
    assert!(t.flags.contains("restored") && t.verified(), "{t:?}");
    assert_eq!(t.net(), del_t.net());
    // The trade whose fills were lost: imported from the exchange's records, flagged.
    let t = after
        .iter()
        .find(|t| t.calc.trade_key == format!("x-{}", lost_t.calc.trade_key))
        .expect("imported");
    assert!(
        t.flags.contains("imported") && t.verified() && t.calc.source == "exchange",
        "{t:?}"
    );
    assert_eq!(t.net(), lost_t.net());
    assert_eq!(t.calc.exit_order_ids, lost_t.calc.exit_order_ids);
    assert!(
        recorded
            .iter()
            .any(|x| x.trade_key == t.calc.trade_key && x.field == "trade")
    );
    // The hand-placed trade: verified and flagged as not shardbot's.
    let t = after
        .iter()
        .find(|t| t.calc.symbol == by_hand.symbol)
        .unwrap();
    assert!(
        t.flags.contains("external") && t.calc.source == "external",
        "{t:?}"
    );
    assert_eq!(after.len(), expected + 1);
    let keys: HashSet<&str> = after.iter().map(|t| t.calc.trade_key.as_str()).collect();
    assert_eq!(keys.len(), after.len());

    // Still: expected balance = wallet, now including the hand-placed trade.
    let net: Decimal = after.iter().map(|t| t.net().unwrap()).sum();
    assert_eq!(baseline + net, wallet(&rt));
    let snap = journal.snapshots(1).unwrap().pop().unwrap();
    assert_eq!(
        (snap.status.as_str(), snap.difference),
        ("ok", Decimal::ZERO),
        "{snap:?}"
    );

    // The operator's view: the CSV has every trade with its verified column, and the
    // report says its figures are verified.
    cli(&stack, &["trades", "--csv", "trades.csv"]);
    let csv = std::fs::read_to_string(stack.path("trades.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), after.len());
    assert!(rows.iter().all(|r| r.contains(",verified,")), "{csv}");
    for t in &after {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("{},", t.calc.trade_key)))
            .unwrap();
        assert!(
            row.contains(&format!(",{},", t.net().unwrap().normalize())),
            "{row}"
        );
    }
    let report = cli(&stack, &["report"]);
    assert!(
        report.contains(&format!(
            "all {} trades verified against the exchange",
            after.len()
        )),
        "{report}"
    );
    assert!(
        report.contains("trend_following") && report.contains(&by_hand.symbol),
        "{report}"
    );
    // On the simulated balance (1,000), not the sim wallet's 100,000.
    assert!(
        report.contains("starting balance    1000 USDT (simulated, set "),
        "{report}"
    );
    assert!(report.contains("balance (simulated) expected"), "{report}");
}

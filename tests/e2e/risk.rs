//! The risk manager against bybit-sim: it reads the account, sets the simulated balance
//! offset (and keeps it across a kill -9), sees positions opened on the exchange, applies
//! the limits and the kill switch to intents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use shardbot_bus::{BusOptions, Requester};
use shardbot_bybit::rest::CreateOrder;
use shardbot_e2e::Stack;
use shardbot_protocol::{
    ControlCommand, IntentAction, IntentId, Interval, OrderIntent, RefusalCode, RiskDecision,
    RiskReply, RiskRequest, Side, Symbol, TradingMode,
};

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 9
symbols = 30
universe_file = ""
universe_price_dir = ""

[[sim.accounts]]
name = "demo"
api_key = "e2e-key"
api_secret = "e2e-secret"
usdt = "100000"

[risk]
state_file = "risk-state.json"
sync_interval_ms = 300
"#;

const SETTINGS: &str = r#"{"simulated_balance": 1000, "sizing": {"percent": 10}, "leverage": 2,
  "daily_loss_limit": 50, "max_open_positions": 2, "max_margin_use_pct": 90,
  "cooldown_after_stop_min": 30}"#;

/// A new requester for each question, closed after it: closing a REQ socket whose
/// request was resent while the replier was busy (a reversal's entry waits 3 s) hung in
/// Debian's libnng 1.5.2's nng_close (the test stuck in `drop(Requester)` with the answer
/// already logged).
fn ask(stack: &Stack, req: RiskRequest) -> RiskReply {
    Requester::dial(&stack.ipc("risk.rep"), &BusOptions::default())
        .unwrap()
        .request_within(&req, Duration::from_secs(5))
        .unwrap()
}

fn intent(symbol: &str, action: IntentAction, price: Decimal) -> OrderIntent {
    OrderIntent::new(
        "trend_following",
        Symbol::new(symbol).unwrap(),
        Interval::M5,
        1_790_000_000_000,
        action,
        price,
        None,
        None,
        0,
    )
}

fn decision(stack: &Stack, i: OrderIntent) -> RiskDecision {
    match ask(stack, RiskRequest::Approve(i)) {
        RiskReply::Decision(d) => d,
        other => panic!("{other:?}"),
    }
}

/// Journals an entry order of `trend_following` as the router does when it places one (the
/// risk manager reads a position's owner from it).
fn journal_entry(stack: &Stack, symbol: &str, order_id: &str, link: &str, qty: Decimal) {
    shardbot_journal::Journal::open(&stack.path("var/journal.sqlite"))
        .unwrap()
        .record_order(
            &shardbot_protocol::OrderEvent {
                order_id: order_id.to_owned(),
                order_link_id: link.to_owned(),
                intent_id: None,
                symbol: Symbol::new(symbol).unwrap(),
                side: Side::Buy,
                order_type: shardbot_protocol::OrderType::Market,
                status: shardbot_protocol::OrderStatus::New,
                qty,
                price: None,
                avg_price: None,
                cum_exec_qty: Decimal::ZERO,
                cum_exec_fee: Decimal::ZERO,
                reduce_only: false,
                take_profit: None,
                stop_loss: None,
                reject_reason: None,
                stop_order_type: None,
                updated_ms: shardbot_protocol::now_ms(),
            },
            Some("trend_following"),
        )
        .unwrap();
}

fn refused(d: &RiskDecision) -> Option<RefusalCode> {
    match d {
        RiskDecision::Refused { refusal, .. } => Some(refusal.code),
        RiskDecision::Approved { .. } => None,
    }
}

fn wait_for<T>(stack: &mut Stack, what: &str, mut f: impl FnMut(&Stack) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        stack.assert_alive();
        if let Some(t) = f(stack) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            stack.output("risk-manager")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// bybit-sim and its account's client (the keys the risk manager uses too), with
/// `settings` as trading_settings.json.
fn setup(
    settings: &str,
) -> (
    Stack,
    tokio::runtime::Runtime,
    shardbot_bybit::rest::BybitClient,
    Vec<shardbot_bybit::models::market::InstrumentInfo>,
) {
    let mut stack = Stack::new(CONFIG);
    stack.write("trading_settings.json", settings);
    stack.spawn("bybit-sim", "bybit-sim", &[], &[]);
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
    assert!(
        !instruments.is_empty(),
        "bybit-sim did not start:\n{}",
        stack.output("bybit-sim")
    );
    rt.block_on(trader.sync_time()).unwrap();
    (stack, rt, trader, instruments)
}

#[test]
fn limits_kill_switch_and_the_simulated_balance_against_bybit_sim() {
    let (mut stack, rt, trader, instruments) = setup(SETTINGS);

    stack.spawn("risk-manager", "risk-manager", &[], &[]);
    let first = wait_for(&mut stack, "the balance", |s| {
        match ask(s, RiskRequest::Balance) {
            RiskReply::Balance(b) => Some(b),
            _ => None,
        }
    });
    assert_eq!(first.simulated_balance, Decimal::from(1000));
    assert_eq!(
        first.offset,
        first.exchange_wallet_balance - Decimal::from(1000)
    );

    // A position opened on the exchange is seen, and limits the next intents.
    let a = &instruments[0];
    let price = shardbot_e2e::last_price(&rt, &trader, &a.symbol);
    let qty = ((Decimal::from(100) / price) / a.lot_size_filter.qty_step).ceil()
        * a.lot_size_filter.qty_step;
    let qty = qty.max(a.lot_size_filter.min_order_qty);
    let placed = rt
        .block_on(trader.place_order(&CreateOrder::market(
            &a.symbol,
            Side::Buy,
            qty,
            "sb-e2e-open-a",
        )))
        .unwrap();
    // ... by trend_following's entry: journalled as the router journals it, so the risk
    // manager knows the position's owner, now and after a restart.
    journal_entry(&stack, &a.symbol, &placed.order_id, "sb-e2e-open-a", qty);
    wait_for(&mut stack, "the position", |s| {
        match ask(s, RiskRequest::Positions) {
            RiskReply::Positions(p)
                if p.positions.iter().any(|p| p.symbol.as_str() == a.symbol) =>
            {
                Some(())
            }
            _ => None,
        }
    });
    // New trading settings (the dashboard's Risk settings page): a new simulated balance
    // needs a flat account; an invalid value is refused with its field; a new limit is
    // written to the file and applied.
    let with = |k: &str, v: serde_json::Value| {
        let mut j: serde_json::Value = serde_json::from_str(SETTINGS).unwrap();
        j[k] = v;
        RiskRequest::SetTradingSettings {
            json: j.to_string(),
        }
    };
    match ask(&stack, with("simulated_balance", serde_json::json!(5000))) {
        RiskReply::Error(e) => assert!(e.message.contains("flatten first"), "{}", e.message),
        other => panic!("{other:?}"),
    }
    match ask(&stack, with("max_margin_use_pct", serde_json::json!(150))) {
        RiskReply::Error(e) => assert!(e.message.contains("max_margin_use_pct"), "{}", e.message),
        other => panic!("{other:?}"),
    }
    match ask(
        &stack,
        with("cooldown_after_stop_min", serde_json::json!(45)),
    ) {
        RiskReply::TradingSettings { json } => {
            assert!(json.contains("\"cooldown_after_stop_min\":45"), "{json}")
        }
        other => panic!("{other:?}"),
    }
    let file = std::fs::read_to_string(stack.path("trading_settings.json")).unwrap();
    assert!(file.contains("\"cooldown_after_stop_min\": 45"), "{file}");
    match ask(&stack, RiskRequest::TradingSettings) {
        RiskReply::TradingSettings { json } => {
            assert!(json.contains("\"simulated_balance\":\"1000\""), "{json}")
        }
        other => panic!("{other:?}"),
    }

    let buy = IntentAction::Enter { side: Side::Buy };
    assert_eq!(
        refused(&decision(&stack, intent(&a.symbol, buy, price))),
        Some(RefusalCode::PositionExists)
    );
    // One owner per position: another strategy's exit does not close it.
    let mut other = intent(&a.symbol, IntentAction::Exit, price);
    other.strategy = "mean_reversion".into();
    other.intent_id = IntentId::derive(
        "mean_reversion",
        &other.symbol,
        other.interval,
        other.bar_open_time_ms,
        IntentAction::Exit,
    );
    assert_eq!(
        refused(&decision(&stack, other.clone())),
        Some(RefusalCode::NotOwner)
    );
    assert!(matches!(
        decision(&stack, intent(&a.symbol, IntentAction::Exit, price)),
        RiskDecision::Approved {
            reduce_only: true,
            ..
        }
    ));
    // Stop-and-reverse: an entry after the exit was approved waits for that exit's fill
    // to be booked; an exit that never fills (none is placed here) refuses it, rather
    // than sizing it on a balance without the exit's PnL.
    let sell = IntentAction::Enter { side: Side::Sell };
    let asked = Instant::now();
    let d = decision(&stack, intent(&a.symbol, sell, price));
    assert_eq!(refused(&d), Some(RefusalCode::RiskUnavailable), "{d:?}");
    assert!(
        asked.elapsed() >= Duration::from_secs(3),
        "refused only after waiting for the exit"
    );
    // Sized from the simulated balance (1,000 less the open's taker fee): 10 % of it as
    // margin, × 2 leverage, at 50.
    let sim = match ask(&stack, RiskRequest::Balance) {
        RiskReply::Balance(b) => b.simulated_balance,
        other => panic!("{other:?}"),
    };
    assert!(sim < Decimal::from(1000) && sim > Decimal::from(999));
    let b = &instruments[1].symbol;
    match decision(&stack, intent(b, buy, Decimal::from(50))) {
        RiskDecision::Approved {
            qty,
            leverage,
            reduce_only: false,
            ..
        } => {
            // The margin pays the entry's taker fee too (fee_rate 0.00055 by default).
            let margin = sim * Decimal::from(10) / Decimal::ONE_HUNDRED;
            let per_unit =
                (Decimal::ONE + Decimal::new(55, 5) * Decimal::from(2)) * Decimal::from(50);
            assert_eq!(qty, margin * Decimal::from(2) / per_unit);
            assert_eq!(leverage, Decimal::from(2));
        }
        other => panic!("{other:?}"),
    }
    // That approval counts as open until the exchange shows it: the limit of 2 holds.
    let c = &instruments[2].symbol;
    assert_eq!(
        refused(&decision(&stack, intent(c, buy, Decimal::from(50)))),
        Some(RefusalCode::MaxOpenPositions)
    );

    // The kill switch, persisted across a kill -9 with the offset.
    match ask(&stack, RiskRequest::Control(ControlCommand::Halt)) {
        RiskReply::Control(r) => assert_eq!(r.mode, TradingMode::Halted),
        other => panic!("{other:?}"),
    }
    stack.kill9("risk-manager");
    stack.spawn("risk-manager-2", "risk-manager", &[], &[]);
    let again = wait_for(&mut stack, "the balance after a restart", |s| {
        match ask(s, RiskRequest::Balance) {
            RiskReply::Balance(b) => Some(b),
            _ => None,
        }
    });
    assert_eq!(again.offset, first.offset, "the offset survives a restart");
    assert_eq!(
        again.simulated_balance,
        again.exchange_wallet_balance - first.offset
    );
    assert!(
        again.simulated_balance < Decimal::from(1000),
        "the taker fee of the open was paid"
    );
    match ask(&stack, RiskRequest::Status) {
        RiskReply::Status(s) => assert_eq!(s.mode, TradingMode::Halted),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        refused(&decision(&stack, intent(c, buy, Decimal::from(50)))),
        Some(RefusalCode::Halted)
    );
    // Reduce-only: no entry, but the open position may still be closed.
    match ask(&stack, RiskRequest::Control(ControlCommand::ReduceOnly)) {
        RiskReply::Control(r) => assert_eq!(r.mode, TradingMode::ReduceOnly),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        refused(&decision(&stack, intent(c, buy, Decimal::from(50)))),
        Some(RefusalCode::ReduceOnly)
    );
    assert!(matches!(
        decision(&stack, intent(&a.symbol, IntentAction::Exit, price)),
        RiskDecision::Approved {
            reduce_only: true,
            ..
        }
    ));
    // The owner read back from the journal after the restart.
    assert_eq!(
        refused(&decision(&stack, other)),
        Some(RefusalCode::NotOwner)
    );
    match ask(&stack, RiskRequest::Positions) {
        RiskReply::Positions(p) => {
            let held = p.positions.iter().find(|p| p.symbol.as_str() == a.symbol);
            assert_eq!(
                held.and_then(|p| p.strategy.as_deref()),
                Some("trend_following"),
                "{p:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ask(&stack, RiskRequest::Control(ControlCommand::Resume)),
        RiskReply::Control(_)
    ));
    assert_eq!(
        refused(&decision(&stack, intent(c, buy, Decimal::from(50)))),
        None
    );

    // A position opened by hand belongs to no strategy: no strategy's exit closes it.
    let d = &instruments[3];
    let d_price = shardbot_e2e::last_price(&rt, &trader, &d.symbol);
    let d_qty = (((Decimal::from(20) / d_price) / d.lot_size_filter.qty_step).ceil()
        * d.lot_size_filter.qty_step)
        .max(d.lot_size_filter.min_order_qty);
    rt.block_on(trader.place_order(&CreateOrder::market(
        &d.symbol,
        Side::Sell,
        d_qty,
        "by-hand-d",
    )))
    .unwrap();
    wait_for(&mut stack, "the hand-opened position", |s| {
        match ask(s, RiskRequest::Positions) {
            RiskReply::Positions(p)
                if p.positions.iter().any(|p| p.symbol.as_str() == d.symbol) =>
            {
                Some(())
            }
            _ => None,
        }
    });
    match decision(&stack, intent(&d.symbol, IntentAction::Exit, d_price)) {
        RiskDecision::Refused { refusal, .. } => {
            assert_eq!(refusal.code, RefusalCode::NotOwner);
            assert!(refusal.reason.contains("by hand"), "{}", refusal.reason);
        }
        other => panic!("{other:?}"),
    }

    // The operator's side: `shardbot risk`.
    let config = stack.config.clone();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(shardbot_e2e::bin("shardbot"))
            .arg("risk")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["show"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("mode              Normal") && out.contains(&a.symbol),
        "{out}"
    );
    assert!(out.contains("simulated         balance"), "{out}");
    let (ok, out, err) = cli(&["halt"]);
    assert!(ok && out.contains("Halted"), "{out}{err}");
    match ask(&stack, RiskRequest::Status) {
        RiskReply::Status(s) => assert_eq!(s.mode, TradingMode::Halted),
        other => panic!("{other:?}"),
    }
    stack.kill9("risk-manager-2");
    let (ok, _, err) = cli(&["show"]);
    assert!(
        !ok && err.contains("no answer from the risk manager at ipc://"),
        "{err}"
    );
}

/// The daily loss limit (realised PnL of today, from the exchange's closed PnL) and the
/// margin-use limit, against the sim's account.
#[test]
fn daily_loss_and_margin_limits_against_bybit_sim() {
    // 4 % margin per trade; margin use at most 5 %; a loss of 1 cent stops entries.
    let settings = r#"{"simulated_balance": 1000, "sizing": {"percent": 4}, "leverage": 2,
      "daily_loss_limit": 0.01, "max_open_positions": 10, "max_margin_use_pct": 5,
      "cooldown_after_stop_min": 30}"#;
    let (mut stack, rt, trader, instruments) = setup(settings);
    stack.spawn("risk-manager", "risk-manager", &[], &[]);
    wait_for(&mut stack, "the account", |s| {
        match ask(s, RiskRequest::Balance) {
            RiskReply::Balance(b) => Some(b),
            _ => None,
        }
    });
    let buy = IntentAction::Enter { side: Side::Buy };
    let (x, y, z) = (
        &instruments[0].symbol,
        &instruments[1].symbol,
        &instruments[2].symbol,
    );
    // Margin: the first entry takes 4 % of equity, a second would make 8 % > 5 %.
    assert_eq!(
        refused(&decision(&stack, intent(x, buy, Decimal::from(10)))),
        None
    );
    let d = decision(&stack, intent(y, buy, Decimal::from(10)));
    assert_eq!(refused(&d), Some(RefusalCode::MaxMarginUse), "{d:?}");

    // Daily loss: a round trip on the exchange loses the fees (and the spread).
    let zi = &instruments[2];
    let price = shardbot_e2e::last_price(&rt, &trader, z);
    let qty = shardbot_e2e::qty_worth(zi, price, 50);
    rt.block_on(trader.place_order(&CreateOrder::market(z, Side::Buy, qty, "e2e-rt-open")))
        .unwrap();
    let mut close = CreateOrder::market(z, Side::Sell, qty, "e2e-rt-close");
    close.reduce_only = Some(true);
    rt.block_on(trader.place_order(&close)).unwrap();
    let loss = wait_for(&mut stack, "today's loss", |s| {
        match ask(s, RiskRequest::Status) {
            RiskReply::Status(st) if st.daily_pnl < Decimal::ZERO => Some(st.daily_pnl),
            _ => None,
        }
    });
    let d = decision(&stack, intent(y, buy, Decimal::from(10)));
    match &d {
        RiskDecision::Refused { refusal, .. } => {
            assert_eq!(
                refusal.code,
                RefusalCode::DailyLossLimit,
                "{}",
                refusal.reason
            );
            assert!(
                refusal.reason.contains("daily loss limit of 0.01 USDT"),
                "{}",
                refusal.reason
            );
        }
        other => panic!("{other:?} with today's PnL {loss}"),
    }
    stack.assert_alive();
}

/// Today's PnL counts an open position's entry fee when it is paid: with a position open
/// and nothing closed, today's PnL less the positions' unrealised PnL is exactly what the
/// exchange's wallet moved by since the start (the fee, and any funding), read from the
/// wallet itself, not from the closed-PnL records the risk manager sums.
#[test]
fn todays_pnl_counts_an_open_positions_fee_as_the_wallet_paid_it() {
    let (mut stack, rt, trader, instruments) = setup(SETTINGS);
    let wallet = |rt: &tokio::runtime::Runtime| {
        let w = rt.block_on(trader.wallet()).unwrap();
        w.coin("USDT").unwrap().wallet_balance
    };
    let start = wallet(&rt);
    let i = &instruments[0];
    let price = shardbot_e2e::last_price(&rt, &trader, &i.symbol);
    let qty = shardbot_e2e::qty_worth(i, price, 200);
    rt.block_on(trader.place_order(&CreateOrder::market(
        &i.symbol,
        Side::Buy,
        qty,
        "e2e-fee-open",
    )))
    .unwrap();
    stack.spawn("risk-manager", "risk-manager", &[], &[]);
    let (daily, unrealised, paid) = wait_for(&mut stack, "one book read twice", |s| {
        // Two statuses around the positions and the wallet: the same book both times.
        // (A status's `as_of_ms` is when it was asked.)
        let RiskReply::Status(before) = ask(s, RiskRequest::Status) else {
            return None;
        };
        let RiskReply::Positions(p) = ask(s, RiskRequest::Positions) else {
            return None;
        };
        let paid = wallet(&rt) - start;
        let RiskReply::Status(after) = ask(s, RiskRequest::Status) else {
            return None;
        };
        // (A new read of the account moves the unrealised PnL, and with it today's.)
        (before.daily_pnl == after.daily_pnl && p.positions.len() == 1).then(|| {
            let unrealised: Decimal = p.positions.iter().map(|p| p.unrealised_pnl).sum();
            (after.daily_pnl, unrealised, paid)
        })
    });
    assert!(paid < Decimal::ZERO, "the entry paid its fee: {paid}");
    assert_eq!(
        daily - unrealised,
        paid,
        "today's PnL {daily} less unrealised {unrealised}"
    );
    stack.assert_alive();
}

/// A reversal's entry is sized from the balance its exit's fill left (the risk manager
/// waits for that fill to be booked), and an approved entry's provisional position ends
/// with its exit's approval instead of counting against the limits for 15 s.
#[test]
fn a_reversal_is_sized_after_its_exit_and_an_exit_ends_the_provisional_entry() {
    let settings = r#"{"simulated_balance": 1000, "sizing": {"percent": 50}, "leverage": 1,
      "daily_loss_limit": 1000, "max_open_positions": 1, "max_margin_use_pct": 100,
      "cooldown_after_stop_min": 0}"#;
    let (mut stack, rt, trader, instruments) = setup(settings);
    stack.spawn("risk-manager", "risk-manager", &[], &[]);
    wait_for(&mut stack, "the account", |s| {
        match ask(s, RiskRequest::Balance) {
            RiskReply::Balance(b) => Some(b),
            _ => None,
        }
    });
    let buy = IntentAction::Enter { side: Side::Buy };
    let sell = IntentAction::Enter { side: Side::Sell };

    // A phantom: B's entry approved, then its exit approved before any sync saw B.
    let b = &instruments[1].symbol;
    assert_eq!(
        refused(&decision(&stack, intent(b, buy, Decimal::from(10)))),
        None
    );
    assert!(matches!(
        decision(&stack, intent(b, IntentAction::Exit, Decimal::from(10))),
        RiskDecision::Approved {
            reduce_only: true,
            ..
        }
    ));
    // Within ten syncs (300 ms each) the limit of one position is free again (it stayed
    // taken for 15 s).
    let c = &instruments[2].symbol;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let d = decision(&stack, intent(c, buy, Decimal::from(10)));
        if refused(&d).is_none() {
            break;
        }
        assert_eq!(refused(&d), Some(RefusalCode::MaxOpenPositions), "{d:?}");
        assert!(
            Instant::now() < deadline,
            "the exited entry still counts as an open position: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(
        decision(&stack, intent(c, IntentAction::Exit, Decimal::from(10))),
        RiskDecision::Approved { .. }
    ));

    // Flat again (once a sync no longer shows the approvals): a new simulated balance.
    // The journal keeps both, each with its offset, for the report's figures.
    let mut j: serde_json::Value = serde_json::from_str(settings).unwrap();
    j["simulated_balance"] = serde_json::json!(800);
    let set = RiskRequest::SetTradingSettings {
        json: j.to_string(),
    };
    wait_for(&mut stack, "a new simulated balance", |s| {
        match ask(s, set.clone()) {
            RiskReply::TradingSettings { .. } => Some(()),
            RiskReply::Error(e) if e.message.contains("flatten first") => None,
            other => panic!("{other:?}"),
        }
    });
    let wallet = match ask(&stack, RiskRequest::Balance) {
        RiskReply::Balance(b) => {
            assert_eq!(b.simulated_balance, Decimal::from(800));
            b.exchange_wallet_balance
        }
        other => panic!("{other:?}"),
    };
    let journal = shardbot_journal::Journal::open(&stack.path("var/journal.sqlite")).unwrap();
    let balances = journal.simulated_balances().unwrap();
    assert_eq!(balances.len(), 2, "{balances:?}");
    assert_eq!(balances[0].simulated_balance, Decimal::from(1000));
    assert_eq!(balances[1].simulated_balance, Decimal::from(800));
    assert_eq!(balances[1].offset, wallet - Decimal::from(800));
    assert_eq!(balances[1].simulated(wallet), Decimal::from(800));
    // And the trading settings in force from each time, for a backtest of a past window:
    // the first ones before the change, the new ones after.
    let in_force = |at: i64| -> serde_json::Value {
        serde_json::from_str(&journal.trading_settings_at(at).unwrap().unwrap()).unwrap()
    };
    let now = shardbot_protocol::now_ms();
    assert_eq!(in_force(now + 60_000)["simulated_balance"], "800");
    assert_eq!(
        in_force(balances[1].set_at_ms - 1)["simulated_balance"],
        "1000"
    );

    // A position on A, opened on the exchange, then a reversal: its exit approved and
    // filled while the entry waits.
    let a = &instruments[0];
    let price = shardbot_e2e::last_price(&rt, &trader, &a.symbol);
    let qty = shardbot_e2e::qty_worth(a, price, 200);
    let placed = rt
        .block_on(trader.place_order(&CreateOrder::market(
            &a.symbol,
            Side::Buy,
            qty,
            "sb-e2e-rev-open",
        )))
        .unwrap();
    journal_entry(&stack, &a.symbol, &placed.order_id, "sb-e2e-rev-open", qty);
    wait_for(&mut stack, "the position", |s| {
        match ask(s, RiskRequest::Positions) {
            RiskReply::Positions(p)
                if p.positions.iter().any(|p| p.symbol.as_str() == a.symbol) =>
            {
                Some(())
            }
            _ => None,
        }
    });
    let before = match ask(&stack, RiskRequest::Balance) {
        RiskReply::Balance(b) => b.simulated_balance,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        decision(&stack, intent(&a.symbol, IntentAction::Exit, price)),
        RiskDecision::Approved {
            reduce_only: true,
            ..
        }
    ));
    let reversal = {
        let stack_rep = stack.ipc("risk.rep");
        let i = intent(&a.symbol, sell, price);
        std::thread::spawn(move || {
            Requester::dial(&stack_rep, &BusOptions::default())
                .unwrap()
                .request_within::<_, RiskReply>(&RiskRequest::Approve(i), Duration::from_secs(5))
                .unwrap()
        })
    };
    // The exit, placed and filled on the exchange while the entry waits.
    let mut close = CreateOrder::market(&a.symbol, Side::Sell, qty, "e2e-rev-close");
    close.reduce_only = Some(true);
    rt.block_on(trader.place_order(&close)).unwrap();
    let d = match reversal.join().unwrap() {
        RiskReply::Decision(d) => d,
        other => panic!("{other:?}"),
    };
    let after = match ask(&stack, RiskRequest::Balance) {
        RiskReply::Balance(b) => b.simulated_balance,
        other => panic!("{other:?}"),
    };
    assert!(
        after < before,
        "the round trip paid two taker fees and the spread: {before} -> {after}"
    );
    match d {
        RiskDecision::Approved { qty, .. } => {
            // 50 % of the balance after the exit, its fee reserved, at the reference price.
            let margin = after * Decimal::from(50) / Decimal::ONE_HUNDRED;
            let want = margin / ((Decimal::ONE + Decimal::new(55, 5)) * price);
            assert_eq!(qty, want, "sized from {after}, not from {before}");
        }
        other => panic!("{other:?}"),
    }
    stack.assert_alive();
}

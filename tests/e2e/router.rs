//! The order router with the risk manager against bybit-sim: an intent becomes exactly
//! one exchange order even when it is sent three times at once and when the router is
//! killed (kill -9) while the order call is under way; SL/TP land on the exchange
//! position; fills are published; an exit closes the position reduce-only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rust_decimal::Decimal;
use shardbot_bus::{BusOptions, Requester, Subscriber};
use shardbot_bybit::{models::market::InstrumentInfo, rest::BybitClient};
use shardbot_e2e::Stack;
use shardbot_protocol::{
    ControlCommand, Event, IntentAction, Interval, OrderIntent, RefusalCode, RiskReply,
    RiskRequest, RouterReply, RouterRequest, Side, Symbol, TradingMode,
};

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 21
symbols = 30
universe_file = ""
universe_price_dir = ""

[risk]
state_file = "risk-state.json"
sync_interval_ms = 300
"#;

const SETTINGS: &str = r#"{"simulated_balance": 1000, "sizing": {"percent": 10}, "leverage": 2,
  "daily_loss_limit": 50, "max_open_positions": 5, "max_margin_use_pct": 90,
  "cooldown_after_stop_min": 30}"#;

/// A stack of bybit-sim with these trading settings, and what the tests read from the
/// sim: its instruments and each symbol's last price.
fn sim_stack(
    settings: &str,
) -> (
    Stack,
    tokio::runtime::Runtime,
    BybitClient,
    Vec<InstrumentInfo>,
    HashMap<String, Decimal>,
) {
    let mut stack = Stack::new(CONFIG);
    stack.write("trading_settings.json", settings);
    let (rt, sim) = stack.start_sim();
    let (instruments, prices) = shardbot_e2e::sim_market(&rt, &sim);
    (stack, rt, sim, instruments, prices)
}

fn submit(stack: &Stack, intent: &OrderIntent, within: Duration) -> RouterReply {
    Requester::dial(&stack.ipc("router.rep"), &BusOptions::default())
        .unwrap()
        .request_within(&RouterRequest::Submit(intent.clone()), within)
        .unwrap()
}

fn intent(
    symbol: &str,
    bar: i64,
    action: IntentAction,
    price: Decimal,
    sl: Option<Decimal>,
    tp: Option<Decimal>,
) -> OrderIntent {
    OrderIntent::new(
        "trend_following",
        Symbol::new(symbol).unwrap(),
        Interval::M5,
        bar,
        action,
        price,
        sl,
        tp,
        shardbot_protocol::now_ms(),
    )
}

/// Orders on the exchange with this link id (open and history).
fn orders_with(rt: &tokio::runtime::Runtime, c: &BybitClient, symbol: &str, link: &str) -> usize {
    let hist = rt
        .block_on(c.order_history(symbol))
        .unwrap_or_else(|e| panic!("{symbol}'s order history: {e}"));
    hist.iter().filter(|o| o.order_link_id == link).count()
}

#[test]
fn one_intent_one_order_through_repeats_and_a_router_crash() {
    let (mut stack, rt, sim, instruments, prices) = sim_stack(SETTINGS);
    let price_of = |s: &str| prices[s];

    // Dialled before the router listens, redialling every 10 ms: connected well before
    // the router is ready (PUB/SUB sends nothing to a subscriber not yet connected).
    let eager = BusOptions {
        reconnect_min_ms: 10,
        reconnect_max_ms: 10,
        ..BusOptions::default()
    };
    let fills = Subscriber::dial(&[stack.ipc("router.pub")], &eager).unwrap();
    fills.subscribe("fill.").unwrap();
    let orders = Subscriber::dial(&[stack.ipc("router.pub")], &eager).unwrap();
    orders.subscribe("order.").unwrap();
    stack.start_order_path();

    // The same intent three times at once: one order.
    let a = &instruments[0].symbol;
    let pa = price_of(a);
    let sl = (pa * Decimal::new(97, 2)).round_dp(2);
    let tp = (pa * Decimal::new(105, 2)).round_dp(2);
    let enter = intent(
        a,
        1,
        IntentAction::Enter { side: Side::Buy },
        pa,
        Some(sl),
        Some(tp),
    );
    let replies: Vec<RouterReply> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| submit(&stack, &enter, Duration::from_secs(20))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut firsts = 0;
    for r in &replies {
        match r {
            RouterReply::Placed {
                duplicate,
                order_link_id,
                ..
            } => {
                assert_eq!(order_link_id, &enter.intent_id.order_link_id());
                firsts += usize::from(!duplicate);
            }
            other => panic!("{other:?}\n{}", stack.output("order-router")),
        }
    }
    assert_eq!(firsts, 1, "{replies:?}");
    // ... and a fourth time later, answered from memory.
    assert!(matches!(
        submit(&stack, &enter, Duration::from_secs(10)),
        RouterReply::Placed {
            duplicate: true,
            ..
        }
    ));
    assert_eq!(
        orders_with(&rt, &sim, a, &enter.intent_id.order_link_id()),
        1
    );
    let pos = rt.block_on(sim.positions()).unwrap();
    let p = pos.iter().find(|p| &p.symbol == a).expect("the position");
    assert_eq!(p.side, "Buy");
    assert!(
        p.stop_loss.is_some_and(|s| s > Decimal::ZERO),
        "SL on the exchange: {p:?}"
    );
    assert!(
        p.take_profit.is_some_and(|s| s > Decimal::ZERO),
        "TP on the exchange: {p:?}"
    );
    // The fill was published.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no fill published");
        if let Ok(Some(r)) = fills.recv(Some(Duration::from_millis(200)))
            && let Event::Fill(f) = r.event
            && f.order_link_id == enter.intent_id.order_link_id()
        {
            break;
        }
    }

    // kill -9 while the order call is under way (the sim answers after 3 s, having
    // carried it out), then a new router: the worker's resend gets the same order.
    let b = &instruments[1].symbol;
    let pb = price_of(b);
    let enter_b = intent(
        b,
        2,
        IntentAction::Enter { side: Side::Sell },
        pb,
        None,
        None,
    );
    stack.admin("/admin/faults", r#"{"slow": 1.0, "slow_ms": 3000}"#);
    let url = stack.ipc("router.rep");
    let sent = enter_b.clone();
    let worker = std::thread::spawn(move || {
        // A worker's request: resent by the bus until a router answers.
        Requester::dial(&url, &BusOptions::default())
            .unwrap()
            .request_within::<_, RouterReply>(&RouterRequest::Submit(sent), Duration::from_secs(60))
            .unwrap()
    });
    let link_b = enter_b.intent_id.order_link_id();
    // The router's own private stream reports the order as soon as the exchange has it;
    // its REST answer is still three seconds away.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "the order never reached the exchange"
        );
        if let Ok(Some(r)) = orders.recv(Some(Duration::from_millis(100)))
            && let Event::Order(o) = r.event
            && o.order_link_id == link_b
        {
            break;
        }
    }
    stack.kill9("order-router");
    stack.admin("/admin/faults", "{}");
    stack.spawn("order-router-2", "order-router", &[], &[]);
    stack.wait_output("order-router-2", "router ready", Duration::from_secs(30));
    match worker.join().unwrap() {
        RouterReply::Placed {
            duplicate: true, ..
        } => {}
        other => panic!("{other:?}\n{}", stack.output("order-router-2")),
    }
    assert_eq!(
        orders_with(&rt, &sim, b, &enter_b.intent_id.order_link_id()),
        1
    );

    // An exit closes the position, reduce-only.
    let exit = intent(a, 3, IntentAction::Exit, pa, None, None);
    match submit(&stack, &exit, Duration::from_secs(20)) {
        RouterReply::Placed {
            duplicate: false, ..
        } => {}
        other => panic!("{other:?}"),
    }
    let pos = rt.block_on(sim.positions()).unwrap();
    assert!(pos.iter().all(|p| &p.symbol != a), "{pos:?}");

    // The kill switch's flatten closes every position through the router and halts.
    let c = &instruments[2].symbol;
    let enter_c = intent(
        c,
        4,
        IntentAction::Enter { side: Side::Buy },
        price_of(c),
        None,
        None,
    );
    assert!(matches!(
        submit(&stack, &enter_c, Duration::from_secs(20)),
        RouterReply::Placed { .. }
    ));
    let open = rt.block_on(sim.positions()).unwrap();
    assert_eq!(open.len(), 2, "{open:?}");
    let risk = Requester::dial(&stack.ipc("risk.rep"), &BusOptions::default()).unwrap();
    // The router reads the positions from the exchange itself: no wait for the risk
    // manager's view of them.
    let mut report = match risk
        .request_within::<_, RiskReply>(
            &RiskRequest::Control(ControlCommand::FlattenAll),
            Duration::from_secs(5),
        )
        .unwrap()
    {
        RiskReply::Control(r) => {
            assert_eq!(r.mode, TradingMode::Halted);
            r.flatten.expect("a flatten report")
        }
        other => panic!("{other:?}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !report.done() {
        assert!(
            Instant::now() < deadline,
            "the flatten never ended: {report:?}\n{}",
            stack.output("order-router-2")
        );
        std::thread::sleep(Duration::from_millis(100));
        report = match risk
            .request_within::<_, RiskReply>(
                &RiskRequest::Flatten {
                    flatten_id: report.flatten_id.clone(),
                },
                Duration::from_secs(5),
            )
            .unwrap()
        {
            RiskReply::Flatten(r) => r,
            other => panic!("{other:?}"),
        };
    }
    assert!(report.flat, "{report:?}");
    assert!(report.orders_placed >= 2, "{report:?}");
    let left = rt.block_on(sim.positions()).unwrap();
    assert!(left.is_empty(), "flat was reported with {left:?} open");
    // Halted: a new entry is refused, with the reason.
    let enter_d = intent(
        c,
        5,
        IntentAction::Enter { side: Side::Buy },
        price_of(c),
        None,
        None,
    );
    match submit(&stack, &enter_d, Duration::from_secs(20)) {
        RouterReply::Refused { refusal, .. } => {
            assert_eq!(refusal.code, RefusalCode::Halted, "{}", refusal.reason)
        }
        other => panic!("{other:?}"),
    }
    // ... and the refusal, with its reason, is in the journal.
    let journal = shardbot_journal::Journal::open(&stack.path("var/journal.sqlite")).unwrap();
    let refusals = journal.refusals(10).unwrap();
    let r = refusals
        .iter()
        .find(|r| r.intent_id == enter_d.intent_id.to_string())
        .expect("the refusal is journalled");
    assert_eq!(r.code, "halted");
    assert!(r.reason.contains("kill switch"), "{}", r.reason);

    // A leverage changed in the trading settings reaches a symbol already traded (the
    // router set each symbol's leverage once, for its lifetime).
    assert!(matches!(
        risk.request_within::<_, RiskReply>(
            &RiskRequest::Control(ControlCommand::Resume),
            Duration::from_secs(5)
        )
        .unwrap(),
        RiskReply::Control(_)
    ));
    let mut j: serde_json::Value = serde_json::from_str(SETTINGS).unwrap();
    j["leverage"] = serde_json::json!(3);
    assert!(matches!(
        risk.request_within::<_, RiskReply>(
            &RiskRequest::SetTradingSettings {
                json: j.to_string()
            },
            Duration::from_secs(5)
        )
        .unwrap(),
        RiskReply::TradingSettings { .. }
    ));
    let again = intent(
        a,
        7,
        IntentAction::Enter { side: Side::Buy },
        price_of(a),
        None,
        None,
    );
    match submit(&stack, &again, Duration::from_secs(20)) {
        RouterReply::Placed { .. } => {}
        other => panic!("{other:?}"),
    }
    let pos = rt.block_on(sim.positions()).unwrap();
    let p = pos
        .iter()
        .find(|p| &p.symbol == a)
        .expect("the new position");
    assert_eq!(p.leverage, Some(Decimal::from(3)), "{p:?}");
    stack.assert_alive();
}

/// An entry the risk manager approved but the router could not place (below the
/// instrument's minimum quantity here) stops counting against the limits at once: the
/// router tells the risk manager, and the next entry is not refused for a position that
/// was never opened (it was, for the provisional entry's 15 s).
#[test]
fn an_approved_entry_the_router_refuses_stops_counting_at_once() {
    // 6 USDT of margin, no leverage, one position at most.
    let settings = r#"{"simulated_balance": 1000, "sizing": {"fixed": 6}, "leverage": 1,
      "daily_loss_limit": 50, "max_open_positions": 1, "max_margin_use_pct": 90,
      "cooldown_after_stop_min": 30}"#;
    let (mut stack, _rt, _sim, instruments, prices) = sim_stack(settings);
    let price_of = |s: &str| prices[s];
    let min_value = |i: &InstrumentInfo| i.lot_size_filter.min_order_qty * price_of(&i.symbol);
    // One whose smallest order is worth more than 6 USDT, one whose is well under it.
    let big = instruments
        .iter()
        .find(|i| min_value(i) > Decimal::from(7))
        .expect("an instrument whose minimum order is worth more than 7 USDT");
    let small = instruments
        .iter()
        .find(|i| {
            min_value(i) < Decimal::from(3)
                && i.lot_size_filter.min_notional_value.unwrap_or_default() <= Decimal::from(5)
        })
        .expect("an instrument whose minimum order is worth under 3 USDT");
    stack.start_order_path();

    let buy = IntentAction::Enter { side: Side::Buy };
    let first = intent(&big.symbol, 1, buy, price_of(&big.symbol), None, None);
    match submit(&stack, &first, Duration::from_secs(20)) {
        RouterReply::Refused { refusal, .. } => {
            assert_eq!(refusal.code, RefusalCode::BelowMinQty, "{}", refusal.reason)
        }
        other => panic!("{other:?}"),
    }
    // The router's word reaches the risk manager within a moment (far under 15 s).
    let deadline = Instant::now() + Duration::from_secs(3);
    let second = intent(&small.symbol, 1, buy, price_of(&small.symbol), None, None);
    loop {
        match submit(&stack, &second, Duration::from_secs(20)) {
            RouterReply::Placed { .. } => break,
            RouterReply::Refused { refusal, .. }
                if refusal.code == RefusalCode::MaxOpenPositions && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!(
                "the unplaced entry still counts: {other:?}\n{}",
                stack.output("risk-manager")
            ),
        }
    }
    stack.assert_alive();
}

/// An order waiting on a slow exchange holds only its own intent: while the sim holds
/// the answer to intent A's order for 5 s (carried out at once, answered late), intent B
/// is approved, placed and answered, and A's answer comes after. (The router once served
/// one intent at a time: B waited behind A, and a bar close's burst behind its slowest
/// order.)
#[test]
fn an_order_waiting_on_a_slow_exchange_holds_only_its_own_intent() {
    let (mut stack, _rt, _sim, instruments, prices) = sim_stack(SETTINGS);
    stack.start_order_path();
    let buy = IntentAction::Enter { side: Side::Buy };
    let of = |k: usize| {
        let s = instruments[k].symbol.as_str();
        intent(s, 1, buy, prices[s], None, None)
    };
    let (a, b) = (of(2), of(3));

    stack.admin(
        "/admin/faults",
        r#"{"slow": 1.0, "slow_ms": 5000, "only_path": "/v5/order/create"}"#,
    );
    let slow_before = stack.faults_served("slow");
    let url = stack.ipc("router.rep");
    let first = std::thread::spawn(move || {
        Requester::dial(&url, &BusOptions::default())
            .unwrap()
            .request_within::<_, RouterReply>(&RouterRequest::Submit(a), Duration::from_secs(20))
            .unwrap()
    });
    // A's order has reached the sim (carried out; its answer held back): then B.
    stack.wait_fault_served("slow", slow_before, Duration::from_secs(10), "order-router");
    stack.admin("/admin/faults", "{}");
    match submit(&stack, &b, Duration::from_secs(4)) {
        RouterReply::Placed { .. } => {}
        other => panic!("B: {other:?}"),
    }
    assert!(
        !first.is_finished(),
        "B was answered after A: it waited behind A's slow order"
    );
    match first.join().unwrap() {
        RouterReply::Placed { .. } => {}
        other => panic!("A: {other:?}"),
    }
    stack.assert_alive();
}

/// At start the router sets the trading settings' leverage (2x) on every listed symbol,
/// so a bar close's entries do not wait on a leverage call each (Bybit allows 10 a
/// second); a symbol holding a position (here at 5x, opened by hand) keeps its own.
#[test]
fn the_router_sets_every_symbols_leverage_at_start_except_where_a_position_is_held() {
    let (mut stack, rt, sim, instruments, _prices) = sim_stack(SETTINGS);
    let held = &instruments[4];
    rt.block_on(sim.set_leverage(&held.symbol, Decimal::from(5)))
        .unwrap();
    let by_hand = shardbot_bybit::rest::CreateOrder::market(
        &held.symbol,
        Side::Buy,
        held.lot_size_filter.min_order_qty,
        "by-hand-1",
    );
    rt.block_on(sim.place_order(&by_hand)).unwrap();
    stack.start_order_path();
    stack.wait_output(
        "order-router",
        "leverage set at start",
        Duration::from_secs(60),
    );
    let leverage_of = |symbol: &str| {
        let q = shardbot_bybit::rest::Query::new()
            .with("category", "linear")
            .with("symbol", symbol);
        rt.block_on(sim.raw().position_list(&q)).unwrap().list[0]
            .leverage
            .unwrap()
    };
    assert_eq!(leverage_of(&held.symbol), Decimal::from(5));
    for i in instruments
        .iter()
        .filter(|i| i.symbol != held.symbol && i.leverage_filter.max_leverage >= Decimal::TWO)
    {
        assert_eq!(leverage_of(&i.symbol), Decimal::TWO, "{}", i.symbol);
    }
    stack.assert_alive();
}

/// A stale entry costs the router no exchange call: while every REST call of the sim
/// takes 12 s (past the client's 10 s timeout), an entry decided a minute ago is refused as
/// stale at once, each of its repeats alike, and the journal holds one refusal. (A lookup
/// per stale copy once held the router's one REP thread for seconds each, behind a backlog
/// of the workers' resends, and the whole-stack test stopped trading in CI.)
#[test]
fn a_stale_entry_is_refused_at_once_and_journalled_once_while_the_exchange_is_slow() {
    let (mut stack, _rt, _sim, instruments, prices) = sim_stack(SETTINGS);
    stack.start_order_path();
    stack.admin("/admin/faults", r#"{"slow": 1.0, "slow_ms": 12000}"#);

    let symbol = &instruments[0].symbol;
    let buy = IntentAction::Enter { side: Side::Buy };
    let mut old = intent(symbol, 1, buy, prices[symbol.as_str()], None, None);
    old.created_ms -= 60_000;
    let router = Requester::dial(&stack.ipc("router.rep"), &BusOptions::default()).unwrap();
    for repeat in 0..5 {
        let reply = router
            .request_within::<_, RouterReply>(
                &RouterRequest::Submit(old.clone()),
                Duration::from_secs(2),
            )
            .unwrap_or_else(|e| panic!("repeat {repeat}: {e}\n{}", stack.output("order-router")));
        match reply {
            RouterReply::Refused { refusal, .. } => {
                assert_eq!(refusal.code, RefusalCode::Stale, "{}", refusal.reason)
            }
            other => panic!("repeat {repeat}: {other:?}"),
        }
    }
    stack.admin("/admin/faults", "{}");
    let journal = shardbot_journal::Journal::open(&stack.path("var/journal.sqlite")).unwrap();
    let refusals: Vec<_> = journal
        .refusals(100)
        .unwrap()
        .into_iter()
        .filter(|r| r.intent_id == old.intent_id.as_str())
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].code, "stale");
    stack.assert_alive();
}

#[test]
fn a_panic_in_an_order_attempt_ends_the_router_and_its_restart_places_the_next_intent() {
    let (mut stack, rt, sim, instruments, prices) = sim_stack(SETTINGS);
    let price_of = |s: &str| prices[s];
    let (poison, next) = (&instruments[0].symbol, &instruments[1].symbol);
    // The fault is in the configuration, so the restarted router has it too (as under a
    // supervisor): only intents for `poison` meet it.
    let fault = [("SHARDBOT__ROUTER__INJECT_PANIC_ON_SYMBOL", poison.as_str())];
    stack.spawn("risk-manager", "risk-manager", &[], &[]);
    stack.spawn("order-router", "order-router", &[], &fault);
    stack.wait_output("order-router", "router ready", Duration::from_secs(30));

    let buy = IntentAction::Enter { side: Side::Buy };
    let doomed = intent(poison, 1, buy, price_of(poison), None, None);
    // The attempt panics inside the router's actor task: before the crash-only hook the
    // task died silently and this request waited forever while heartbeats said "running".
    // The request is never resent (it would reach the restarted router).
    let once = BusOptions {
        request_resend_ms: 600_000,
        ..BusOptions::default()
    };
    let requester = Requester::dial(&stack.ipc("router.rep"), &once).unwrap();
    let answer = requester.request_within::<_, RouterReply>(
        &RouterRequest::Submit(doomed.clone()),
        Duration::from_secs(5),
    );
    // Closed with its request unanswered and its peer dead: this hung for good in Debian's
    // libnng 1.5.2's nng_close.
    drop(requester);
    assert!(answer.is_err(), "{answer:?}");
    let status = stack.wait_exit("order-router", Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(6),
        "the router ends by SIGABRT: {status}"
    );
    let log = stack.output("order-router");
    assert!(
        log.contains("panic: the process ends so that its supervisor restarts it")
            && log.contains("injected fault: router.inject_panic_on_symbol"),
        "{log}"
    );

    // Restarted (as its supervisor would), it places the next intent.
    stack.spawn("order-router-2", "order-router", &[], &fault);
    stack.wait_output("order-router-2", "router ready", Duration::from_secs(30));
    let placed = intent(next, 1, buy, price_of(next), None, None);
    match submit(&stack, &placed, Duration::from_secs(20)) {
        RouterReply::Placed {
            duplicate: false, ..
        } => {}
        other => panic!("{other:?}\n{}", stack.output("order-router-2")),
    }
    let link = placed.intent_id.order_link_id();
    assert_eq!(orders_with(&rt, &sim, next.as_str(), &link), 1);
    // The intent whose attempt panicked never reached the exchange.
    let doomed_link = doomed.intent_id.order_link_id();
    assert_eq!(orders_with(&rt, &sim, poison.as_str(), &doomed_link), 0);
    stack.assert_alive();
}

#[test]
fn the_panic_fault_injection_is_refused_outside_the_sim() {
    let mut stack = Stack::new(CONFIG);
    stack.spawn(
        "order-router",
        "order-router",
        &[],
        &[
            ("SHARDBOT__EXCHANGE__ENVIRONMENT", "demo"),
            ("SHARDBOT__ROUTER__INJECT_PANIC_ON_SYMBOL", "BTCUSDT"),
            ("SHARDBOT_API_KEY", "k"),
            ("SHARDBOT_API_SECRET", "s"),
        ],
    );
    let status = stack.wait_exit("order-router", Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{}", stack.output("order-router"));
    assert!(
        stack
            .output("order-router")
            .contains("refused outside exchange.environment = \"sim\""),
        "{}",
        stack.output("order-router")
    );
}

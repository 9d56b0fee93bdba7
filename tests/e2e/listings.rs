//! Listings and delistings reach the gateway without a restart: bybit-sim changes an
//! instrument's status while the gateway runs (`/admin/instruments/status`); the gateway
//! re-reads the instrument list, backfills and streams a new listing, and drops a
//! delisted symbol from its universe and its history replies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use shardbot_bus::{BusOptions, Requester, Subscriber};
use shardbot_e2e::Stack;
use shardbot_protocol::{Event, GatewayReply, GatewayRequest, HistoryRequest, Interval, Symbol};

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 5
symbols = 40
universe_file = ""
universe_price_dir = ""
clock_speed = 60.0

[strategy]
interval = "1"
history_bars = 120

[market_data]
store_dir = "history"
universe_refresh_s = 1
"#;

fn gateway(stack: &Stack, req: GatewayRequest) -> GatewayReply {
    Requester::dial(&stack.ipc("md.rep"), &BusOptions::default())
        .unwrap()
        .request_within(&req, Duration::from_secs(5))
        .unwrap()
}

fn universe(stack: &Stack) -> Vec<String> {
    match gateway(stack, GatewayRequest::Universe) {
        GatewayReply::Universe(u) => u.instruments.iter().map(|i| i.symbol.to_string()).collect(),
        other => panic!("{other:?}"),
    }
}

fn history(stack: &Stack, symbol: &str) -> GatewayReply {
    gateway(
        stack,
        GatewayRequest::History(HistoryRequest {
            symbol: Symbol::new(symbol).unwrap(),
            interval: Interval::M1,
            start_ms: None,
            end_ms: None,
            limit: 0,
        }),
    )
}

fn eventually(stack: &mut Stack, what: &str, mut f: impl FnMut(&Stack) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f(stack) {
        stack.assert_alive();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            stack.output("market-data")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn listings_and_delistings_are_picked_up_without_a_restart() {
    let mut stack = Stack::new(CONFIG);
    stack.spawn("bybit-sim", "bybit-sim", &[], &[]);
    let client = stack.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut all = Vec::new();
    for _ in 0..100 {
        if let Ok(v) = rt.block_on(client.usdt_perpetuals()) {
            all = v;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        all.len(),
        40,
        "bybit-sim did not start:\n{}",
        stack.output("bybit-sim")
    );
    let (new, old) = (all[0].symbol.clone(), all[1].symbol.clone());
    // `new` is announced but not trading yet.
    stack.admin(
        "/admin/instruments/status",
        &format!(r#"{{"symbol":"{new}","status":"PreLaunch"}}"#),
    );

    let tap = Subscriber::dial(&[stack.ipc("md.pub")], &BusOptions::default()).unwrap();
    tap.subscribe(format!("bar.{}.{new}.", shardbot_protocol::Slot::of(&new)))
        .unwrap();
    stack.spawn("market-data", "market-data", &[], &[]);
    let first = stack.wait_for_universe(Duration::from_secs(60));
    assert_eq!(first.len(), 39);
    assert!(!first.contains(&new) && first.contains(&old));
    assert!(matches!(history(&stack, &new), GatewayReply::Error(_)));

    // Listed: backfilled and streamed, no restart.
    stack.admin(
        "/admin/instruments/status",
        &format!(r#"{{"symbol":"{new}","status":"Trading"}}"#),
    );
    eventually(&mut stack, "the listing in the universe", |s| {
        universe(s).contains(&new)
    });
    eventually(
        &mut stack,
        "the listing's history",
        |s| matches!(history(s, &new), GatewayReply::History(h) if h.bars.len() == 120),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        assert!(Instant::now() < deadline, "no live bar of {new}");
        if let Ok(Some(r)) = tap.recv(Some(Duration::from_millis(500)))
            && let Event::Bar(b) = r.event
        {
            break b;
        }
    };
    assert_eq!(live.symbol.as_str(), new);
    assert!(live.published_ms.is_some());

    // Delisted: gone from the universe and from history replies.
    stack.admin(
        "/admin/instruments/status",
        &format!(r#"{{"symbol":"{old}","status":"Closed"}}"#),
    );
    eventually(&mut stack, "the delisting", |s| !universe(s).contains(&old));
    match history(&stack, &old) {
        GatewayReply::Error(e) => assert!(e.message.contains("not a listed"), "{}", e.message),
        other => panic!("history of a delisted symbol: {other:?}"),
    }
    let log = stack.output("market-data");
    assert!(
        log.contains("new listing") && log.contains("delisted"),
        "{log}"
    );
    stack.assert_alive();
}

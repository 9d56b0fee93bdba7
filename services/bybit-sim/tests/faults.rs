//! Fault injection through /admin/faults, observed through the project's own client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{client, creds, settings, start};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use shardbot_bybit::{
    ApiCode, BybitError,
    rest::{BybitClient, CreateOrder, OrderResolution},
    ws::{PublicEvent, WsConfig, spawn_public, ticker_topic},
};
use shardbot_protocol::Side;

async fn faults(url: &str, config: serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/admin/faults"))
        .json(&config)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn next<T>(rx: &mut tokio::sync::mpsc::Receiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no event")
        .expect("stream ended")
}

/// A sim whose clock stands still, a client synced to it, and `n` of its symbols with a
/// qty step of 0.01 or finer, each with the qty of a market order worth about 200 USDT.
async fn frozen_sim(n: usize) -> (String, BybitClient, Vec<(String, Decimal)>) {
    let url = start(bybit_sim::SimSettings {
        clock_speed: 1e-9,
        ..settings()
    });
    let c = client(&url, creds());
    c.sync_time().await.unwrap();
    let tickers = c.tickers().await.unwrap();
    let orders: Vec<(String, Decimal)> = c
        .usdt_perpetuals()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.lot_size_filter.qty_step <= dec!(0.01))
        .take(n)
        .map(|i| {
            let last = tickers
                .iter()
                .find(|t| t.symbol == i.symbol)
                .unwrap()
                .last_price;
            let step = i.lot_size_filter.qty_step;
            (i.symbol, ((dec!(200) / last) / step).ceil() * step)
        })
        .collect();
    assert_eq!(orders.len(), n);
    (url, c, orders)
}

#[tokio::test]
async fn a_slow_order_reply_is_an_unknown_outcome_and_the_order_exists_once() {
    let (url, fast, orders) = frozen_sim(1).await;
    let (symbol, q) = orders[0].clone();
    let impatient = {
        let raw = shardbot_bybit::rest::RawClient::new(
            shardbot_bybit::rest::RestConfig {
                base_url: url.clone(),
                recv_window_ms: 5000,
                timeout: Duration::from_millis(300),
            },
            creds(),
            std::sync::Arc::new(shardbot_bybit::ratelimit::RateLimiter::new(100)),
        )
        .unwrap();
        raw.clock().set_offset_ms(fast.raw().clock().offset_ms());
        shardbot_bybit::rest::BybitClient::new(raw)
    };
    faults(&url, json!({"slow": 1.0, "slow_ms": 1500})).await;
    let o = CreateOrder::market(&symbol, Side::Buy, q, "sb-slow-1");
    let e = impatient.place_order(&o).await.unwrap_err();
    assert!(matches!(e, BybitError::UnknownOutcome { .. }), "{e}");
    faults(&url, json!({})).await;
    // The sim counts what it served, for tests of whole stacks to see a fault was met.
    let served = served(&url).await;
    assert_eq!(served["slow"], 1, "{served}");
    assert_eq!(served["rest_10006"], 0, "{served}");
    // Resolved by link id: it went through, so it is not placed again.
    let OrderResolution::Placed(found) = fast.find_order(&symbol, "sb-slow-1").await.unwrap()
    else {
        panic!("lost")
    };
    assert_eq!(found.cum_exec_qty, q);
    assert_eq!(fast.positions().await.unwrap().len(), 1);
    assert_eq!(
        fast.place_order(&o).await.unwrap_err().api_code(),
        Some(ApiCode::DuplicateOrderLinkId)
    );
}

#[tokio::test]
async fn bursts_of_10006_and_5xx_reach_the_client_as_such() {
    let url = start(settings());
    let c = client(&url, creds());
    c.sync_time().await.unwrap();
    faults(&url, json!({"rest_10006": 1.0})).await;
    let e = c.wallet().await.unwrap_err();
    assert_eq!(
        e.api_code(),
        Some(ApiCode::TooManyVisits),
        "after its retries: {e}"
    );
    faults(&url, json!({"rest_5xx": 1.0})).await;
    let e = c.wallet().await.unwrap_err();
    assert!(matches!(e, BybitError::Http { status: 502, .. }), "{e}");
    faults(&url, json!({})).await;
    c.wallet().await.unwrap();
    let bad = reqwest::Client::new()
        .post(format!("{url}/admin/faults"))
        .json(&json!({"slow": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn dropped_connections_are_rebuilt_and_resubscribed() {
    let url = start(settings());
    let c = client(&url, None);
    let symbol = c.usdt_perpetuals().await.unwrap()[0].symbol.clone();
    let ws = format!("{}/v5/public/linear", url.replacen("http", "ws", 1));
    let (handle, mut rx) = spawn_public(
        &ws,
        vec![ticker_topic(&symbol)],
        WsConfig {
            backoff_min: Duration::from_millis(20),
            ..WsConfig::default()
        },
    );
    while !matches!(next(&mut rx).await, PublicEvent::Ticker { .. }) {}
    reqwest::Client::new()
        .post(format!("{url}/admin/ws/drop"))
        .send()
        .await
        .unwrap();
    while !matches!(next(&mut rx).await, PublicEvent::Disconnected { .. }) {}
    while !matches!(next(&mut rx).await, PublicEvent::Connected { .. }) {}
    // A fresh snapshot after the reconnect, on the resubscribed topic.
    match next(&mut rx).await {
        PublicEvent::Ticker { ticker, .. } => assert_eq!(ticker.symbol, symbol),
        other => panic!("{other:?}"),
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn a_paused_stream_is_declared_dead_and_recovers_when_it_resumes() {
    let url = start(settings());
    let c = client(&url, None);
    let symbol = c.usdt_perpetuals().await.unwrap()[0].symbol.clone();
    let ws = format!("{}/v5/public/linear", url.replacen("http", "ws", 1));
    let cfg = WsConfig {
        ping_interval: Duration::from_millis(100),
        dead_after: Duration::from_millis(500),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..WsConfig::default()
    };
    let (handle, mut rx) = spawn_public(&ws, vec![ticker_topic(&symbol)], cfg);
    while !matches!(next(&mut rx).await, PublicEvent::Ticker { .. }) {}
    faults(&url, json!({"pause_public": true})).await;
    loop {
        if let PublicEvent::Disconnected { reason, .. } = next(&mut rx).await {
            assert!(reason.contains("presumed dead"), "{reason}");
            break;
        }
    }
    faults(&url, json!({})).await;
    while !matches!(next(&mut rx).await, PublicEvent::Ticker { .. }) {}
    handle.shutdown().await;
}

async fn served(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/admin/faults/served"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `refuse_symbol` refuses a new order on the symbol as Bybit refuses one the account
/// cannot afford (110007), alone or as one order of a batch whose others are placed; a
/// reduce-only order on it goes through. The sim counts each refusal by the way it came,
/// so a test of a whole stack can tell that a refusal met a batch.
#[tokio::test]
async fn a_refused_symbol_is_refused_alone_and_inside_a_batch_and_counted_apart() {
    let (url, c, orders) = frozen_sim(3).await;
    let order = |k: usize, link: &str| {
        let (symbol, qty) = &orders[k];
        CreateOrder::market(symbol, Side::Buy, *qty, link)
    };
    let refused = &orders[1].0;
    faults(&url, json!({"refuse_symbol": refused})).await;

    let alone = c.place_order(&order(1, "sb-alone-1")).await.unwrap_err();
    assert_eq!(
        alone.api_code(),
        Some(ApiCode::AvailableBalanceInsufficient),
        "{alone}"
    );
    let got = served(&url).await;
    assert_eq!(
        (
            got["refused_alone"].as_u64(),
            got["refused_in_batch"].as_u64()
        ),
        (Some(1), Some(0)),
        "{got}"
    );

    let batch = [order(0, "sb-b-0"), order(1, "sb-b-1"), order(2, "sb-b-2")];
    let results = c.place_orders(&batch).await.unwrap();
    assert_eq!(results[0].as_ref().unwrap().order_link_id, "sb-b-0");
    assert_eq!(
        results[1].as_ref().unwrap_err().api_code(),
        Some(ApiCode::AvailableBalanceInsufficient)
    );
    assert_eq!(results[2].as_ref().unwrap().order_link_id, "sb-b-2");
    let got = served(&url).await;
    assert_eq!(
        (
            got["refused_alone"].as_u64(),
            got["refused_in_batch"].as_u64()
        ),
        (Some(1), Some(1)),
        "{got}"
    );
    assert!(matches!(
        c.find_order(refused, "sb-b-1").await.unwrap(),
        OrderResolution::NotFound
    ));

    // A reduce-only order is not refused (a stop or an exit must always go out). Nothing
    // is held on the refused symbol, so open one first with the fault lifted.
    faults(&url, json!({})).await;
    c.place_order(&order(1, "sb-open-1")).await.unwrap();
    faults(&url, json!({"refuse_symbol": refused})).await;
    let held = c
        .positions()
        .await
        .unwrap()
        .into_iter()
        .find(|p| &p.symbol == refused)
        .unwrap();
    let close = CreateOrder::market(refused, Side::Sell, held.size, "sb-close-1").reduce_only();
    c.place_order(&close).await.unwrap();
    // The symbol's order history (the domain client's read, all pages) holds the two
    // orders placed, not the refused ones.
    let mut links: Vec<String> = c
        .order_history(refused)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.order_link_id)
        .collect();
    links.sort();
    assert_eq!(links, ["sb-close-1", "sb-open-1"]);
    let got = served(&url).await;
    assert_eq!(
        (
            got["refused_alone"].as_u64(),
            got["refused_in_batch"].as_u64()
        ),
        (Some(1), Some(1)),
        "{got}"
    );
    faults(&url, json!({})).await;
}

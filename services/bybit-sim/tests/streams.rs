//! bybit-sim's WebSocket streams, read by the project's own WebSocket clients.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use common::{
    KEY, client, creds, fine_instrument, last_price, private_stream, qty, settings, start,
    usdt_balance,
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use shardbot_bybit::{
    Credentials,
    rest::CreateOrder,
    ws::{
        PrivateEvent, PublicEvent, WsConfig, kline_topic, spawn_private, spawn_public, ticker_topic,
    },
};
use shardbot_protocol::{Interval, Side};
use tokio::sync::mpsc::Receiver;

async fn next<T>(rx: &mut Receiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no event")
        .expect("stream ended")
}

fn ws_url(http: &str, path: &str) -> String {
    format!("{}{path}", http.replacen("http", "ws", 1))
}

#[tokio::test]
async fn every_closed_bar_is_streamed_once_in_order_and_equals_rest() {
    // 600 sim seconds per real second: a 1-minute bar closes every 100 ms.
    let url = start(bybit_sim::SimSettings {
        clock_speed: 600.0,
        ..settings()
    });
    let c = client(&url, None);
    let symbols: Vec<String> = c
        .usdt_perpetuals()
        .await
        .unwrap()
        .into_iter()
        .take(5)
        .map(|i| i.symbol)
        .collect();
    let topics: Vec<String> = symbols
        .iter()
        .map(|s| kline_topic(Interval::M1, s))
        .collect();
    let (handle, mut rx) = spawn_public(
        &ws_url(&url, "/v5/public/linear"),
        topics,
        WsConfig::default(),
    );
    let mut closed: HashMap<String, Vec<shardbot_bybit::models::ws::WsKline>> = HashMap::new();
    while closed.len() < symbols.len() || closed.values().any(|v| v.len() < 8) {
        if let PublicEvent::Kline { symbol, kline } = next(&mut rx).await
            && kline.confirm
        {
            closed.entry(symbol).or_default().push(kline);
        }
    }
    handle.shutdown().await;
    c.sync_time().await.unwrap();
    for (symbol, bars) in &closed {
        assert!(
            bars.windows(2).all(|w| w[1].start - w[0].start == 60_000),
            "{symbol}: one push per bar, none missing, in order"
        );
        let rest = c
            .klines(
                symbol,
                Interval::M1,
                bars[0].start,
                bars.last().unwrap().start,
            )
            .await
            .unwrap();
        assert_eq!(rest.len(), bars.len(), "{symbol}");
        for (r, w) in rest.iter().zip(bars) {
            assert_eq!(
                (r.start_ms, r.open, r.high, r.low, r.close, r.volume),
                (w.start, w.open, w.high, w.low, w.close, w.volume),
                "{symbol}: stream and REST agree"
            );
        }
    }
}

#[tokio::test]
async fn tickers_stream_a_snapshot_then_deltas_that_merge_to_the_price() {
    let url = start(bybit_sim::SimSettings {
        clock_speed: 60.0,
        ..settings()
    });
    let c = client(&url, None);
    let symbol = c.usdt_perpetuals().await.unwrap()[0].symbol.clone();
    let (handle, mut rx) = spawn_public(
        &ws_url(&url, "/v5/public/linear"),
        vec![ticker_topic(&symbol)],
        WsConfig::default(),
    );
    let mut tickers = Vec::new();
    while tickers.len() < 10 {
        if let PublicEvent::Ticker { ticker, .. } = next(&mut rx).await {
            tickers.push(ticker);
        }
    }
    handle.shutdown().await;
    for t in &tickers {
        assert_eq!(t.symbol, symbol);
        let (bid, ask, last) = (
            t.bid1_price.unwrap(),
            t.ask1_price.unwrap(),
            t.last_price.unwrap(),
        );
        assert!(
            bid < last && last < ask,
            "a full ticker after every delta: {t:?}"
        );
    }
    assert!(
        tickers
            .windows(2)
            .any(|w| w[0].last_price != w[1].last_price),
        "the price moves"
    );
}

#[tokio::test]
async fn the_whole_universe_fits_the_subscription_limits() {
    let url = start(settings());
    let c = client(&url, None);
    let universe = c.usdt_perpetuals().await.unwrap();
    assert!(universe.len() >= 600);
    let topics: Vec<String> = universe
        .iter()
        .flat_map(|i| {
            [
                kline_topic(Interval::M5, &i.symbol),
                ticker_topic(&i.symbol),
            ]
        })
        .collect();
    let (handle, mut rx) = spawn_public(
        &ws_url(&url, "/v5/public/linear"),
        topics,
        WsConfig::default(),
    );
    let mut seen = std::collections::HashSet::new();
    while seen.len() < universe.len() {
        match next(&mut rx).await {
            PublicEvent::Ticker { ticker, .. } => {
                seen.insert(ticker.symbol);
            }
            PublicEvent::SubscribeFailed { message, .. } => panic!("{message}"),
            _ => {}
        }
    }
    assert!(handle.connections() <= 2);
    handle.shutdown().await;
}

#[tokio::test]
async fn private_pushes_follow_an_order_in_bybits_order() {
    let url = start(bybit_sim::SimSettings {
        clock_speed: 1e-9,
        ..settings()
    });
    let c = client(&url, creds());
    c.sync_time().await.unwrap();
    let inst = fine_instrument(&c).await;
    // Pushes flow once the subscription is acknowledged (as on Bybit, earlier changes are
    // only in REST).
    let (handle, mut rx) = private_stream(&url, &c).await;
    let q = qty(&inst, last_price(&c, &inst.symbol).await, dec!(300));
    let o = CreateOrder::market(&inst.symbol, Side::Buy, q, "sb-ws-1");
    let id = c.place_order(&o).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let ev = next(&mut rx).await;
        match &ev {
            PrivateEvent::Order(o) => {
                assert_eq!(
                    (o.order_id.as_str(), o.order_status.as_str()),
                    (id.order_id.as_str(), "Filled")
                );
                kinds.push("order");
            }
            PrivateEvent::Execution(e) => {
                assert_eq!((e.order_link_id.as_str(), e.exec_qty), ("sb-ws-1", q));
                kinds.push("execution");
            }
            PrivateEvent::Position(p) => {
                assert_eq!(
                    (p.symbol.as_str(), p.side.as_str(), p.size),
                    (inst.symbol.as_str(), "Buy", q)
                );
                kinds.push("position");
            }
            PrivateEvent::Wallet(w) => {
                assert!(
                    w.coin("USDT").unwrap().wallet_balance < dec!(100000),
                    "the fee was paid"
                );
                kinds.push("wallet");
            }
            _ => {}
        }
    }
    assert_eq!(kinds, ["order", "execution", "position", "wallet"]);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_wrong_private_signature_is_refused_like_bybit() {
    let url = start(settings());
    let c = client(&url, None);
    c.sync_time().await.unwrap();
    let (handle, mut rx) = spawn_private(
        &ws_url(&url, "/v5/private"),
        Credentials::new(KEY, "wrong"),
        Arc::clone(c.raw().clock()),
        WsConfig::default(),
    );
    loop {
        match next(&mut rx).await {
            PrivateEvent::AuthFailed { message } => {
                assert_eq!(message, "Params Error");
                break;
            }
            PrivateEvent::Authenticated => panic!("authenticated with a wrong secret"),
            _ => {}
        }
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn an_exchange_side_stop_fires_on_the_path_and_the_books_still_balance() {
    // 1,800 sim seconds per real second: funding (every 4 or 8 h) comes within seconds.
    let url = start(bybit_sim::SimSettings {
        clock_speed: 1800.0,
        ..settings()
    });
    let c = client(&url, creds());
    c.sync_time().await.unwrap();
    let inst = fine_instrument(&c).await;
    let (handle, mut rx) = private_stream(&url, &c).await;
    let start_balance = usdt_balance(&c).await;
    let last = last_price(&c, &inst.symbol).await;
    let tick = inst.price_filter.tick_size;
    let q = qty(&inst, last, dec!(500));
    // A stop 2 % under and a take-profit 2 % over: one of them fires as the path wanders.
    let sl = ((last * dec!(0.98)) / tick).floor() * tick;
    let tp = ((last * dec!(1.02)) / tick).ceil() * tick;
    // Read from an hour (of the exchange's time) before: our estimate of a clock running
    // 1,800 times as fast as ours is good to a millisecond or so of ours, which is seconds
    // of its (a window from 1 s before missed the entry's execution, now and then). The
    // sim is fresh: nothing else traded the symbol.
    let opened_at = c.raw().clock().now_ms() - 3_600_000;
    c.place_order(
        &CreateOrder::market(&inst.symbol, Side::Buy, q, "sb-stop-1")
            .with_tp_sl(Some(tp), Some(sl)),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let exit = loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no stop fired within 120 s")
            .unwrap();
        if let PrivateEvent::Order(o) = ev
            && !o.stop_order_type.is_empty()
            && o.order_status == "Filled"
        {
            break o;
        }
    };
    handle.shutdown().await;
    assert!(exit.reduce_only && exit.cum_exec_qty == q, "{exit:?}");
    let fill = exit.avg_price.unwrap();
    match exit.stop_order_type.as_str() {
        "StopLoss" => assert!(
            fill <= sl,
            "a stop fills at or beyond its trigger: {fill} vs {sl}"
        ),
        "TakeProfit" => assert!(fill >= tp - tick, "{fill} vs {tp}"),
        other => panic!("{other}"),
    }
    assert!(c.positions().await.unwrap().is_empty());
    let now = c.raw().clock().now_ms();
    let pnl = c
        .closed_pnl(Some(&inst.symbol), opened_at, now)
        .await
        .unwrap();
    assert_eq!(pnl.len(), 1);
    let execs = c
        .executions(Some(&inst.symbol), opened_at, now)
        .await
        .unwrap();
    // The stop's executions name it (stopOrderType), as Bybit's do: how the trade closed.
    let stop_fills: Vec<_> = execs
        .iter()
        .filter(|e| e.order_id == exit.order_id)
        .collect();
    assert!(!stop_fills.is_empty(), "{execs:?}");
    for e in &stop_fills {
        assert_eq!(e.stop_order_type, exit.stop_order_type, "{e:?}");
        assert_eq!(
            e.to_fill().unwrap().stop_order_type.as_deref(),
            Some(exit.stop_order_type.as_str())
        );
    }
    let entry = execs
        .iter()
        .find(|e| e.order_link_id == "sb-stop-1")
        .unwrap();
    assert_eq!(
        entry.stop_order_type, "UNKNOWN",
        "a plain order's, as Bybit's"
    );
    assert_eq!(entry.to_fill().unwrap().stop_order_type, None);
    let funding: Decimal = execs
        .iter()
        .filter(|e| e.exec_type == "Funding")
        .map(|e| e.exec_fee)
        .sum();
    let end_balance = usdt_balance(&c).await;
    // Bybit's closed PnL has the fees and the funding paid while open deducted: it is
    // exactly what the wallet moved by.
    assert_eq!(
        end_balance - start_balance,
        pnl[0].closed_pnl,
        "wallet = start + closed PnL (funding {funding} included)"
    );
}

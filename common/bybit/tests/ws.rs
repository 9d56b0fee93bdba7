//! The WebSocket clients against a real local WebSocket server started by each test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{collections::BTreeSet, path::PathBuf, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use shardbot_bybit::{
    Credentials,
    rest::ServerClock,
    ws::{PRIVATE_TOPICS, PrivateEvent, PublicEvent, WsConfig, spawn_private, spawn_public},
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_tungstenite::{WebSocketStream, accept_async, tungstenite::Message};

type Ws = WebSocketStream<tokio::net::TcpStream>;

fn cfg() -> WsConfig {
    WsConfig {
        ping_interval: Duration::from_millis(200),
        dead_after: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    }
}

async fn server() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", l.local_addr().unwrap());
    (l, url)
}

async fn accept(l: &TcpListener) -> Ws {
    let (s, _) = tokio::time::timeout(Duration::from_secs(10), l.accept())
        .await
        .expect("no connection")
        .unwrap();
    accept_async(s).await.unwrap()
}

/// Next JSON frame from the client that is not a ping (pings are answered).
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("client silent")
            .unwrap()
            .unwrap();
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["op"] == "ping" {
            ws.send(Message::text(
                json!({"success":true,"ret_msg":"pong","conn_id":"c","req_id":"","op":"ping"})
                    .to_string(),
            ))
            .await
            .unwrap();
            continue;
        }
        return v;
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Reads subscribe requests (acking each) until `n` topics were requested.
async fn subscriptions(ws: &mut Ws, n: usize) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    while got.len() < n {
        let v = recv(ws).await;
        assert_eq!(v["op"], "subscribe", "{v}");
        for a in v["args"].as_array().unwrap() {
            got.insert(a.as_str().unwrap().to_owned());
        }
        send(ws, json!({"success":true,"ret_msg":"","conn_id":"c","req_id":v["req_id"],"op":"subscribe"})).await;
    }
    got
}

async fn next_event<T: std::fmt::Debug>(rx: &mut mpsc::Receiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no event")
        .expect("stream ended")
}

fn fixture(name: &str) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data/ws");
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

fn kline_frame(symbol: &str, start: i64, confirm: bool) -> Value {
    json!({"topic": format!("kline.5.{symbol}"), "type": "snapshot", "ts": start + 1,
        "data": [{"start": start, "end": start + 299_999, "interval": "5", "open": "1.5", "close": "1.25",
                  "high": "2", "low": "1", "volume": "10", "turnover": "15", "confirm": confirm, "timestamp": start + 1}]})
}

#[tokio::test]
async fn a_dropped_public_connection_reconnects_and_resubscribes_every_topic() {
    let (l, url) = server().await;
    let topics: Vec<String> = (0..450).map(|i| format!("kline.5.S{i}USDT")).collect();
    let (handle, mut rx) = spawn_public(&url, topics.clone(), cfg());
    assert_eq!(handle.connections(), 1);
    let want: BTreeSet<String> = topics.iter().cloned().collect();

    let mut ws = accept(&l).await;
    assert!(matches!(
        next_event(&mut rx).await,
        PublicEvent::Connected { conn: 0 }
    ));
    assert_eq!(
        subscriptions(&mut ws, want.len()).await,
        want,
        "first connection"
    );
    send(&mut ws, kline_frame("S7USDT", 1_700_000_100_000, true)).await;
    match next_event(&mut rx).await {
        PublicEvent::Kline { symbol, kline } => {
            assert_eq!(symbol, "S7USDT");
            assert!(kline.confirm);
            assert_eq!(kline.close, dec!(1.25));
        }
        other => panic!("{other:?}"),
    }
    drop(ws); // the exchange drops us

    assert!(matches!(
        next_event(&mut rx).await,
        PublicEvent::Disconnected { conn: 0, .. }
    ));
    let mut ws2 = accept(&l).await;
    assert!(matches!(
        next_event(&mut rx).await,
        PublicEvent::Connected { conn: 0 }
    ));
    assert_eq!(
        subscriptions(&mut ws2, want.len()).await,
        want,
        "every topic again after the reconnect"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn ticker_deltas_are_merged_onto_the_snapshot() {
    let (l, url) = server().await;
    let (handle, mut rx) = spawn_public(&url, vec!["tickers.NKNUSDT".into()], cfg());
    let mut ws = accept(&l).await;
    subscriptions(&mut ws, 1).await;
    let snapshot = fixture("ws_public_ticker_linear_snapshot_real.json");
    // A delta that arrives before any snapshot cannot be completed and is not emitted.
    send(&mut ws, fixture("ws_public_ticker_linear_delta.json")).await;
    send(&mut ws, snapshot.clone()).await;
    send(&mut ws, fixture("ws_public_ticker_linear_delta.json")).await;
    let _connected = next_event(&mut rx).await;
    let PublicEvent::Ticker { ticker: first, .. } = next_event(&mut rx).await else {
        panic!()
    };
    let PublicEvent::Ticker { ticker: merged, ts } = next_event(&mut rx).await else {
        panic!()
    };
    assert_eq!(ts, 1_709_202_840_989);
    assert_eq!(merged.ask1_price, Some(dec!(0.13942)));
    assert_eq!(merged.ask1_size, Some(dec!(3691)));
    assert_eq!(
        merged.last_price, first.last_price,
        "unchanged fields keep the snapshot's values"
    );
    assert_eq!(merged.bid1_price, first.bid1_price);
    assert_eq!(
        first.last_price.unwrap().to_string(),
        snapshot["data"]["lastPrice"].as_str().unwrap()
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_silent_connection_is_declared_dead_and_replaced() {
    let (l, url) = server().await;
    let (handle, mut rx) = spawn_public(
        &url,
        vec!["tickers.BTCUSDT".into()],
        WsConfig {
            dead_after: Duration::from_millis(400),
            ..cfg()
        },
    );
    let _ws = accept(&l).await; // accepts, then never answers anything (not even pings)
    assert!(matches!(
        next_event(&mut rx).await,
        PublicEvent::Connected { .. }
    ));
    match next_event(&mut rx).await {
        PublicEvent::Disconnected { reason, .. } => {
            assert!(reason.contains("presumed dead"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let mut ws2 = accept(&l).await;
    assert_eq!(subscriptions(&mut ws2, 1).await.len(), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn the_private_stream_authenticates_subscribes_and_does_it_again_after_a_drop() {
    let (l, url) = server().await;
    let creds = Credentials::new("test_api_key", "test_secret");
    let clock = Arc::new(ServerClock::default());
    let (handle, mut rx) = spawn_private(&url, creds.clone(), clock, cfg());
    for round in 0..2 {
        let mut ws = accept(&l).await;
        assert!(matches!(
            next_event(&mut rx).await,
            PrivateEvent::Connected { .. }
        ));
        let auth = recv(&mut ws).await;
        assert_eq!(
            auth["op"], "auth",
            "round {round}: auth comes first: {auth}"
        );
        let args = auth["args"].as_array().unwrap();
        assert_eq!(args[0], "test_api_key");
        let expires = args[1].as_i64().unwrap();
        assert!(
            expires > shardbot_protocol::now_ms(),
            "expires lies in the future"
        );
        assert_eq!(
            args[2].as_str().unwrap(),
            creds.sign_ws(expires),
            "signature as Bybit checks it"
        );
        send(
            &mut ws,
            json!({"success":true,"ret_msg":"","op":"auth","conn_id":"c"}),
        )
        .await;
        let sub = recv(&mut ws).await;
        assert_eq!(sub["op"], "subscribe");
        let topics: Vec<&str> = sub["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(topics, PRIVATE_TOPICS);
        assert!(matches!(
            next_event(&mut rx).await,
            PrivateEvent::Authenticated
        ));
        // Pushes are live once the subscription is acknowledged, and the client says so.
        send(&mut ws, fixture("ws_subscribe_ack_private.json")).await;
        assert!(matches!(
            next_event(&mut rx).await,
            PrivateEvent::Subscribed
        ));
        send(
            &mut ws,
            fixture("ws_private_order_linear_filled_nautilus.json"),
        )
        .await;
        send(&mut ws, fixture("ws_private_execution.json")).await;
        send(&mut ws, fixture("ws_private_position.json")).await;
        send(&mut ws, fixture("ws_private_wallet.json")).await;
        assert!(
            matches!(next_event(&mut rx).await, PrivateEvent::Order(o) if o.order_status == "Filled")
        );
        assert!(
            matches!(next_event(&mut rx).await, PrivateEvent::Execution(e) if e.exec_qty > dec!(0))
        );
        assert!(matches!(
            next_event(&mut rx).await,
            PrivateEvent::Position(_)
        ));
        assert!(matches!(next_event(&mut rx).await, PrivateEvent::Wallet(_)));
        drop(ws);
        assert!(matches!(
            next_event(&mut rx).await,
            PrivateEvent::Disconnected { .. }
        ));
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn a_refused_auth_is_reported_and_retried() {
    let (l, url) = server().await;
    let (handle, mut rx) = spawn_private(
        &url,
        Credentials::new("k", "wrong"),
        Arc::new(ServerClock::default()),
        cfg(),
    );
    let mut ws = accept(&l).await;
    let _ = next_event(&mut rx).await;
    assert_eq!(recv(&mut ws).await["op"], "auth");
    send(&mut ws, fixture("ws_auth_failure_params_error.json")).await;
    match next_event(&mut rx).await {
        PrivateEvent::AuthFailed { message } => assert_eq!(message, "Params Error"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(next_event(&mut rx).await, PrivateEvent::Disconnected { reason, .. } if reason.contains("auth refused"))
    );
    let mut ws2 = accept(&l).await;
    assert_eq!(
        recv(&mut ws2).await["op"],
        "auth",
        "it tries again, with backoff"
    );
    handle.shutdown().await;
}

/// A login refused again and again is retried ever more slowly (20, 40, 80, 160 ms here),
/// not at the first backoff forever (each connection was accepted, which reset it); a
/// refused subscription is an error too, retried the same way.
#[tokio::test]
async fn refusals_back_off_and_a_refused_subscription_is_an_error() {
    let (l, url) = server().await;
    let (handle, mut rx) = spawn_private(
        &url,
        Credentials::new("k", "wrong"),
        Arc::new(ServerClock::default()),
        cfg(),
    );
    let mut waits = Vec::new();
    for _ in 0..4 {
        let mut ws = accept(&l).await;
        assert_eq!(recv(&mut ws).await["op"], "auth");
        send(&mut ws, fixture("ws_auth_failure_params_error.json")).await;
        loop {
            if let PrivateEvent::Disconnected { retry_in, .. } = next_event(&mut rx).await {
                waits.push(retry_in.as_millis());
                break;
            }
        }
    }
    assert_eq!(waits, vec![20, 40, 80, 160]);
    // Accepted login, refused subscription: reported, and the connection is replaced.
    let mut ws = accept(&l).await;
    assert_eq!(recv(&mut ws).await["op"], "auth");
    send(
        &mut ws,
        json!({"success": true, "ret_msg": "", "op": "auth", "conn_id": "c1"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["op"], "subscribe");
    send(
        &mut ws,
        json!({"success": false, "ret_msg": "Request not authorized", "op": "subscribe", "conn_id": "c1", "req_id": "private"}),
    )
    .await;
    let mut failed = false;
    loop {
        match next_event(&mut rx).await {
            PrivateEvent::SubscribeFailed { message } => {
                assert_eq!(message, "Request not authorized");
                failed = true;
            }
            PrivateEvent::Disconnected {
                reason, retry_in, ..
            } => {
                assert!(
                    failed && reason.contains("subscription refused"),
                    "{reason}"
                );
                assert_eq!(retry_in.as_millis(), 200, "still backing off");
                break;
            }
            _ => {}
        }
    }
    handle.shutdown().await;
}

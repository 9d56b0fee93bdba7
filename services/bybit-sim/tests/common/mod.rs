//! Shared by bybit-sim's integration tests: a sim on a free port and the project's client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // not every test uses every helper

use std::{net::TcpListener, sync::Arc, time::Duration};

use bybit_sim::{
    Exchange, SimSettings,
    settings::{Profile, SimAccount},
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use shardbot_bybit::{
    Credentials,
    models::market::InstrumentInfo,
    ratelimit::RateLimiter,
    rest::{BybitClient, RawClient, RestConfig},
    ws::{PrivateEvent, WsConfig, WsHandle, spawn_private},
};

pub const KEY: &str = "sim-key";
pub const SECRET: &str = "sim-secret";

pub fn settings() -> SimSettings {
    SimSettings {
        listen: "127.0.0.1:0".into(),
        seed: 7,
        symbols: 650,
        universe_file: String::new(),
        universe_price_dir: String::new(),
        replay_dir: String::new(),
        replay_warmup_bars: 300,
        replay_hold_ms: 0,
        funding_rate: rust_decimal::Decimal::new(1, 4),
        clock_speed: 1.0,
        start_time_ms: 0,
        profile: Profile::Demo,
        ip_limit_per_5s: 600,
        ip_ban_secs: 600,
        spread_ticks: 1,
        uid_limit_scale: 1.0,
        accounts: vec![
            SimAccount {
                name: "t".into(),
                api_key: KEY.into(),
                api_secret: SECRET.into(),
                usdt: dec!(100000),
            },
            // A second UID, for bursts that must not share the first one's window.
            SimAccount {
                name: "burst".into(),
                api_key: "burst-key".into(),
                api_secret: "burst-secret".into(),
                usdt: dec!(1),
            },
        ],
    }
}

/// Starts bybit-sim on a free port in its own thread and runtime; returns its base URL.
pub fn start(settings: SimSettings) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let exchange = Arc::new(Exchange::new(&settings).unwrap());
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            bybit_sim::server(exchange, listener, 1)
                .unwrap()
                .await
                .unwrap();
        })
    });
    url
}

pub fn client(url: &str, creds: Option<Credentials>) -> BybitClient {
    let raw = RawClient::new(
        RestConfig {
            base_url: url.to_owned(),
            recv_window_ms: 5000,
            timeout: Duration::from_secs(10),
        },
        creds,
        Arc::new(RateLimiter::new(599)),
    )
    .unwrap();
    BybitClient::new(raw)
}

pub fn creds() -> Option<Credentials> {
    Some(Credentials::new(KEY, SECRET))
}

pub async fn last_price(c: &BybitClient, symbol: &str) -> Decimal {
    c.tickers()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.symbol == symbol)
        .unwrap()
        .last_price
}

/// A quantity worth about `usdt`, on the qty grid.
pub fn qty(i: &InstrumentInfo, price: Decimal, usdt: Decimal) -> Decimal {
    let step = i.lot_size_filter.qty_step;
    (((usdt / price) / step).ceil() * step).max(i.lot_size_filter.min_order_qty)
}

/// The first instrument whose qty step is at most 0.01 (fine-grained sizes).
pub async fn fine_instrument(c: &BybitClient) -> InstrumentInfo {
    c.usdt_perpetuals()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.lot_size_filter.qty_step <= Decimal::new(1, 2))
        .unwrap()
}

pub async fn usdt_balance(c: &BybitClient) -> Decimal {
    c.wallet()
        .await
        .unwrap()
        .coin("USDT")
        .unwrap()
        .wallet_balance
}

/// The account's private stream, returned once its subscription is acknowledged (pushes
/// flow from then on). Fails the test if the auth is refused.
pub async fn private_stream(
    url: &str,
    c: &BybitClient,
) -> (WsHandle, tokio::sync::mpsc::Receiver<PrivateEvent>) {
    let ws = format!("{}/v5/private", url.replacen("http", "ws", 1));
    let (handle, mut rx) = spawn_private(
        &ws,
        Credentials::new(KEY, SECRET),
        Arc::clone(c.raw().clock()),
        WsConfig::default(),
    );
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("no event")
            .expect("stream ended")
        {
            PrivateEvent::Subscribed => return (handle, rx),
            PrivateEvent::AuthFailed { message } => panic!("auth refused: {message}"),
            _ => {}
        }
    }
}

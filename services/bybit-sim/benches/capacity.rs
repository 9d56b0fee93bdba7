//! bybit-sim's own capacity, printed as figures:
//!   cargo bench -p bybit-sim --bench capacity
//! 1. WebSocket messages/s it sustains to one client subscribed to the whole universe
//!    (kline.1 + tickers for every symbol), read by the project's own WS client.
//! 2. Order round trips/s: concurrent signed market orders over HTTP, with p50/p99.
//!
//! The sim runs in this process with Bybit's per-UID limits lifted (uid_limit_scale) and
//! the IP limit raised, so the figures are the sim's, not Bybit's rate limits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::{
    net::TcpListener,
    sync::Arc,
    time::{Duration, Instant},
};

use bybit_sim::{
    Exchange, SimSettings,
    settings::{Profile, SimAccount},
};
use rust_decimal::Decimal;
use shardbot_bybit::{
    Credentials,
    ratelimit::RateLimiter,
    rest::{BybitClient, RawClient, RestConfig},
    ws::{PublicEvent, WsConfig, kline_topic, spawn_public, ticker_topic},
};
use shardbot_protocol::Interval;

const SYMBOLS: usize = 600;
const WS_SECONDS: u64 = 10;
const ORDER_SECONDS: u64 = 5;
const ORDER_TASKS: usize = 16;

fn start(clock_speed: f64) -> String {
    let settings = SimSettings {
        listen: "127.0.0.1:0".into(),
        seed: 1,
        symbols: SYMBOLS,
        universe_file: String::new(),
        universe_price_dir: String::new(),
        replay_dir: String::new(),
        replay_warmup_bars: 300,
        replay_hold_ms: 0,
        funding_rate: rust_decimal::Decimal::new(1, 4),
        clock_speed,
        start_time_ms: 0,
        profile: Profile::Demo,
        ip_limit_per_5s: 10_000_000,
        ip_ban_secs: 1,
        spread_ticks: 1,
        uid_limit_scale: 1_000_000.0,
        accounts: vec![SimAccount {
            name: "bench".into(),
            api_key: "bench".into(),
            api_secret: "bench-secret".into(),
            usdt: Decimal::from(1_000_000_000u64),
        }],
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let exchange = Arc::new(Exchange::new(&settings).unwrap());
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            bybit_sim::server(exchange, listener, 2)
                .unwrap()
                .await
                .unwrap()
        })
    });
    url
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Subscribes the whole universe and counts what arrives for WS_SECONDS.
async fn universe_stream(url: &str, label: &str) {
    let raw = RawClient::new(
        RestConfig {
            base_url: url.to_owned(),
            recv_window_ms: 5000,
            timeout: Duration::from_secs(10),
        },
        None,
        Arc::new(RateLimiter::new(599)),
    )
    .unwrap();
    let universe = BybitClient::new(raw).usdt_perpetuals().await.unwrap();
    // 1. The whole universe over WebSocket.
    let topics: Vec<String> = universe
        .iter()
        .flat_map(|i| {
            [
                kline_topic(Interval::M1, &i.symbol),
                ticker_topic(&i.symbol),
            ]
        })
        .collect();
    let ws = format!("{}/v5/public/linear", url.replacen("http", "ws", 1));
    let (handle, mut rx) = spawn_public(&ws, topics.clone(), WsConfig::default());
    let warm = Instant::now() + Duration::from_secs(3);
    while Instant::now() < warm {
        let _ = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
    }
    let (mut tickers, mut klines, mut closed) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(WS_SECONDS) {
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(PublicEvent::Ticker { .. })) => tickers += 1,
            Ok(Some(PublicEvent::Kline { kline, .. })) => {
                klines += 1;
                closed += u64::from(kline.confirm);
            }
            _ => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "WebSocket ({label}), {} topics on {} connection(s): {:.0} messages/s ({:.0} tickers/s, {:.0} kline updates/s, {} closed bars) for {WS_SECONDS} s",
        topics.len(),
        handle.connections(),
        (tickers + klines) as f64 / secs,
        tickers as f64 / secs,
        klines as f64 / secs,
        closed
    );
    handle.shutdown().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("bybit-sim capacity on this machine ({SYMBOLS} symbols)");
    let fast = start(60.0);
    universe_stream(&fast, "60x clock").await;
    let url = start(1.0);
    let raw = RawClient::new(
        RestConfig {
            base_url: url.clone(),
            recv_window_ms: 5000,
            timeout: Duration::from_secs(10),
        },
        Some(Credentials::new("bench", "bench-secret")),
        Arc::new(RateLimiter::new(599)),
    )
    .unwrap();
    let client = BybitClient::new(raw);
    let universe = client.usdt_perpetuals().await.unwrap();

    universe_stream(&url, "real-time clock").await;

    // 2. Order round trips.
    let prices: std::collections::HashMap<String, Decimal> = client
        .tickers()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.symbol, t.last_price))
        .collect();
    let http = reqwest::Client::new();
    let creds = Credentials::new("bench", "bench-secret");
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for t in 0..ORDER_TASKS {
        let (http, creds, url) = (http.clone(), creds.clone(), url.clone());
        let inst = universe[t * 7 % universe.len()].clone();
        let price = prices[&inst.symbol];
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            // About 50 USDT a order, on the qty grid.
            let step = inst.lot_size_filter.qty_step;
            let qty = (((Decimal::from(50) / price) / step).ceil() * step).max(inst.lot_size_filter.min_order_qty);
            while started.elapsed() < Duration::from_secs(ORDER_SECONDS) {
                let side = if n.is_multiple_of(2) { "Buy" } else { "Sell" };
                let body = format!(
                    r#"{{"category":"linear","symbol":"{}","side":"{side}","orderType":"Market","qty":"{qty}","orderLinkId":"b{t}-{n}"}}"#,
                    inst.symbol
                );
                let ts = shardbot_protocol::now_ms();
                let sign = creds.sign_rest(ts, 5000, &body);
                let t0 = Instant::now();
                let r = http
                    .post(format!("{url}/v5/order/create"))
                    .header("X-BAPI-API-KEY", "bench")
                    .header("X-BAPI-TIMESTAMP", ts.to_string())
                    .header("X-BAPI-SIGN", sign)
                    .header("X-BAPI-RECV-WINDOW", "5000")
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let v: serde_json::Value = r.json().await.unwrap();
                assert_eq!(v["retCode"], 0, "{v}");
                lat.push(t0.elapsed().as_secs_f64() * 1e6);
                n += 1;
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "Orders: {:.0} market-order round trips/s ({} in {:.1} s, {ORDER_TASKS} concurrent), latency p50 {:.0} µs, p99 {:.0} µs",
        lat.len() as f64 / secs,
        lat.len(),
        secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
}

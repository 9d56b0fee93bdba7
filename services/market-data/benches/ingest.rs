//! Gateway ingest: WebSocket messages per second parsed and republished, on one
//! connection:
//!   cargo bench -p market-data --bench ingest
//! A local WebSocket server plays Bybit's public stream for 600 symbols: per round, one
//! closed kline and one ticker delta per symbol (after a snapshot each), in Bybit's JSON.
//! The gateway's own path consumes them: the project's WS client (`spawn_public`: frame
//! parsing, ticker merging), the conversion to bus messages, and publishing every closed
//! bar on the bus (ipc://) to a subscriber. Tickers are merged but, as in the gateway,
//! only published when their coalescing interval comes round, so they are not published
//! here. Best of 3 runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use market_data::convert;
use shardbot_bus::{BusOptions, Publisher, Subscriber};
use shardbot_bybit::ws::{PublicEvent, WsConfig, kline_topic, spawn_public, ticker_topic};
use shardbot_protocol::Interval;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const SYMBOLS: usize = 600;
const ROUNDS: usize = 100;

fn frames() -> Vec<String> {
    let mut out = Vec::new();
    for s in 0..SYMBOLS {
        out.push(format!(
            r#"{{"topic":"tickers.S{s}USDT","type":"snapshot","data":{{"symbol":"S{s}USDT","tickDirection":"PlusTick","price24hPcnt":"0.0123","lastPrice":"101.25","prevPrice24h":"100.01","highPrice24h":"102.5","lowPrice24h":"99.1","prevPrice1h":"101.0","markPrice":"101.24","indexPrice":"101.2","openInterest":"12345.6","openInterestValue":"1249912.9","turnover24h":"98765432.1","volume24h":"975432.1","nextFundingTime":"1790000000000","fundingRate":"0.0001","bid1Price":"101.24","bid1Size":"12.3","ask1Price":"101.26","ask1Size":"4.5"}},"cs":1,"ts":1790000000000}}"#
        ));
    }
    for r in 0..ROUNDS {
        let start = 1_790_000_000_000i64 + r as i64 * 300_000;
        for s in 0..SYMBOLS {
            out.push(format!(
                r#"{{"topic":"kline.5.S{s}USDT","data":[{{"start":{start},"end":{},"interval":"5","open":"101.25","close":"101.75","high":"102.5","low":"100.5","volume":"1234.5","turnover":"125000.75","confirm":true,"timestamp":{}}}],"ts":{},"type":"snapshot"}}"#,
                start + 299_999,
                start + 300_000,
                start + 300_000
            ));
            out.push(format!(
                r#"{{"topic":"tickers.S{s}USDT","type":"delta","data":{{"symbol":"S{s}USDT","lastPrice":"101.{r:02}","markPrice":"101.{r:02}","bid1Price":"101.2","ask1Price":"101.3"}},"cs":{},"ts":{}}}"#,
                r + 2,
                start + 300_000
            ));
        }
    }
    out
}

async fn serve(listener: TcpListener, frames: Vec<String>) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    // Wait for the client's subscriptions, acknowledge each, then stream.
    let mut subscribed = 0;
    while subscribed < 2 * SYMBOLS {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["op"] == "subscribe" {
                    subscribed += v["args"].as_array().unwrap().len();
                    let ack = serde_json::json!({"success": true, "ret_msg": "", "conn_id": "bench", "req_id": v["req_id"], "op": "subscribe"});
                    ws.send(Message::text(ack.to_string())).await.unwrap();
                }
            }
            Some(Ok(_)) => {}
            _ => return,
        }
    }
    for f in frames {
        ws.feed(Message::text(f)).await.unwrap();
    }
    ws.flush().await.unwrap();
    // Keep the connection open until the client has read everything.
    while let Some(Ok(_)) = ws.next().await {}
}

fn run(frames: &[String], n: usize) -> (f64, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("ipc://{}/md.pub", dir.path().display());
    let mut publisher = Publisher::bind(&url, &BusOptions::default()).unwrap();
    let sub = Subscriber::dial(&[&url], &BusOptions::default()).unwrap();
    sub.subscribe("bar.").unwrap();
    std::thread::sleep(Duration::from_millis(200)); // let the subscriber connect
    let counter = std::thread::spawn(move || {
        let mut got = 0u64;
        while let Ok(Some(_)) = sub.recv(Some(Duration::from_secs(2))) {
            got += 1;
        }
        got
    });
    let frames = frames.to_vec();
    let elapsed = rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, frames));
        let topics: Vec<String> = (0..SYMBOLS)
            .flat_map(|s| {
                let sym = format!("S{s}USDT");
                [kline_topic(Interval::M5, &sym), ticker_topic(&sym)]
            })
            .collect();
        let (_handle, mut rx) = spawn_public(&format!("ws://{addr}"), topics, WsConfig::default());
        let mut seen = 0;
        let mut start = None;
        let mut tickers = std::collections::HashMap::new();
        while seen < n {
            match rx.recv().await.unwrap() {
                PublicEvent::Kline { symbol, kline } => {
                    start.get_or_insert_with(Instant::now);
                    seen += 1;
                    if let Some(bar) = convert::ws_bar(&symbol, &kline) {
                        publisher.publish(&bar).unwrap();
                    }
                }
                PublicEvent::Ticker { ts, ticker } => {
                    start.get_or_insert_with(Instant::now);
                    seen += 1;
                    if let Some(t) = convert::ticker(ts, &ticker) {
                        tickers.insert(t.symbol.clone(), t);
                    }
                }
                _ => {}
            }
        }
        start.unwrap().elapsed().as_secs_f64()
    });
    (elapsed, counter.join().unwrap())
}

fn main() {
    let frames = frames();
    let n = frames.len();
    let mut best = f64::MAX;
    let mut published = 0;
    for _ in 0..3 {
        let (t, got) = run(&frames, n);
        best = best.min(t);
        published = got;
    }
    println!(
        "gateway ingest: {n} WS messages ({SYMBOLS} symbols: klines + ticker deltas) parsed, \
         merged and converted in {best:.3} s: {:.0} messages/s on one connection; \
         {published} of {} closed bars received by a bus subscriber",
        n as f64 / best,
        SYMBOLS * ROUNDS
    );
}

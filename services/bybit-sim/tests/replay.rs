//! Replaying recorded klines (common/testdata/klines) on an accelerated clock, read through the
//! project's own client: REST history is the file, and closed bars stream in order with
//! the file's values.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::{path::PathBuf, time::Duration};

use common::{client, settings, start};
use rust_decimal::Decimal;
use shardbot_bybit::ws::{PublicEvent, WsConfig, kline_topic, spawn_public};
use shardbot_protocol::Interval;

fn data() -> PathBuf {
    shardbot_testdata::klines("bybit_linear_5m")
}

/// The file's rows as (open time, o, h, l, c, v).
fn rows(symbol: &str) -> Vec<(i64, [Decimal; 5])> {
    std::fs::read_to_string(data().join(format!("{symbol}.csv")))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                [1, 2, 3, 4, 5].map(|i| f[i].parse().unwrap()),
            )
        })
        .collect()
}

#[tokio::test]
async fn replayed_history_and_stream_are_the_recorded_klines() {
    // 5-minute bars at 3,000x: one bar every 100 ms.
    let url = start(bybit_sim::SimSettings {
        replay_dir: data().to_string_lossy().into_owned(),
        replay_warmup_bars: 500,
        clock_speed: 3000.0,
        ..settings()
    });
    let c = client(&url, None);
    let universe = c.usdt_perpetuals().await.unwrap();
    let names: Vec<&str> = universe.iter().map(|i| i.symbol.as_str()).collect();
    assert_eq!(
        names,
        [
            "AAVEUSDT", "ADAUSDT", "APEUSDT", "AVAXUSDT", "BNBUSDT", "BTCUSDT", "ETHUSDT",
            "SOLUSDT"
        ]
    );

    let recorded = rows("BTCUSDT");
    let now = c.raw().market_time().await.unwrap().ms();
    assert!(
        now >= recorded[500].0 && now < recorded[600].0,
        "the clock starts after the warm-up bars"
    );
    // The warm-up history over REST, exactly the file.
    let served = c
        .klines("BTCUSDT", Interval::M5, recorded[0].0, recorded[499].0)
        .await
        .unwrap();
    assert_eq!(served.len(), 500);
    for (k, (t, [o, h, l, cl, v])) in served.iter().zip(&recorded) {
        assert_eq!(
            (k.start_ms, k.open, k.high, k.low, k.close, k.volume),
            (*t, *o, *h, *l, *cl, *v)
        );
    }

    // The stream: closed bars, in order, equal to the file.
    let ws = format!("{}/v5/public/linear", url.replacen("http", "ws", 1));
    let (handle, mut rx) = spawn_public(
        &ws,
        vec![kline_topic(Interval::M5, "BTCUSDT")],
        WsConfig::default(),
    );
    let mut closed = Vec::new();
    while closed.len() < 10 {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if let PublicEvent::Kline { kline, .. } = ev
            && kline.confirm
        {
            closed.push(kline);
        }
    }
    handle.shutdown().await;
    let by_time: std::collections::HashMap<i64, [Decimal; 5]> = recorded.into_iter().collect();
    assert!(
        closed
            .windows(2)
            .all(|w| w[1].start - w[0].start == 300_000)
    );
    for k in &closed {
        let [o, h, l, cl, v] = by_time[&k.start];
        assert_eq!(
            (k.open, k.high, k.low, k.close, k.volume),
            (o, h, l, cl, v),
            "bar {}",
            k.start
        );
    }
}

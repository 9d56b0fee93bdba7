//! bybit-sim driven by the project's own Bybit client, over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use bybit_sim::SimSettings;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use shardbot_bybit::{
    ApiCode, BybitError, Credentials,
    rest::{DemoApplyMoney, DemoCoin, Query},
};
use shardbot_protocol::Interval;

mod common;

use common::{KEY, SECRET, client, creds, settings, start};

#[tokio::test]
async fn the_client_discovers_at_least_600_symbols_over_pages() {
    let url = start(settings());
    let c = client(&url, None);
    let all = c.usdt_perpetuals().await.unwrap();
    assert_eq!(all.len(), 650);
    // Bybit's default page is 500: walk the cursor by hand, 200 at a time.
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut seen = Vec::new();
    loop {
        let q = Query::new()
            .with("category", "linear")
            .with("limit", 200)
            .with_opt("cursor", cursor.clone());
        let p = c.raw().market_instruments_info(&q).await.unwrap();
        pages += 1;
        seen.extend(p.list.iter().map(|i| i.symbol.clone()));
        match p.next() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(
        seen,
        all.iter().map(|i| i.symbol.clone()).collect::<Vec<_>>()
    );
    for i in &all {
        assert!(
            i.price_filter.tick_size > Decimal::ZERO && i.lot_size_filter.qty_step > Decimal::ZERO
        );
        assert!(i.lot_size_filter.min_notional_value.is_some());
    }
}

/// A bar is closed when the exchange shows it closed, whatever our estimate of its clock
/// says. A 1-minute bar asked for while still open (as a fetch does when the estimate runs
/// ahead of the exchange: at an accelerated clock a millisecond of ours is 60 of its)
/// came back with the volume of its first moments and was published as closed (CI, the
/// pipeline test: a bar with volume 0 that the exchange later gave as 249964).
#[tokio::test]
async fn closed_klines_leave_out_the_bar_still_open() {
    let url = start(SimSettings {
        clock_speed: 60.0,
        ..settings()
    });
    let c = client(&url, None);
    let symbol = c.usdt_perpetuals().await.unwrap()[3].symbol.clone();
    let len = 60_000;
    // Read while one bar stays open at the exchange (its time before and after the read
    // in the same bar), as a fetch whose `end` is the open bar.
    let (open, closed, raw) = loop {
        let before = c.raw().market_time().await.unwrap().ms();
        let open = before - before % len;
        let closed = c
            .closed_klines(&symbol, Interval::M1, open - 9 * len, open)
            .await
            .unwrap();
        let raw = c
            .klines(&symbol, Interval::M1, open - 9 * len, open)
            .await
            .unwrap();
        let after = c.raw().market_time().await.unwrap().ms();
        if after - after % len == open {
            break (open, closed, raw);
        }
    };
    // The exchange lists the open bar...
    assert_eq!(raw.last().unwrap().start_ms, open);
    // ... and it is not among the closed ones, which are the nine before it.
    assert_eq!(
        closed.iter().map(|k| k.start_ms).collect::<Vec<_>>(),
        (1..=9).rev().map(|i| open - i * len).collect::<Vec<_>>()
    );
    // Closed bars do not change: read again once the open one has closed too, they are
    // the same, and the one that was open is now listed closed, with its whole volume.
    let mut later = Vec::new();
    for _ in 0..100 {
        later = c
            .closed_klines(&symbol, Interval::M1, open - 9 * len, open)
            .await
            .unwrap();
        if later.len() == 10 {
            break;
        }
        // A minute of the sim's is a second of ours.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(later.len(), 10, "the open bar never closed");
    assert_eq!(&later[..9], &closed[..]);
    assert_eq!(later[9].start_ms, open);
    assert!(later[9].volume > Decimal::ZERO);
}

#[tokio::test]
async fn klines_are_consistent_across_requests_and_chain_bar_to_bar() {
    let url = start(settings());
    let c = client(&url, None);
    let symbol = c.usdt_perpetuals().await.unwrap()[10].symbol.clone();
    let now = c.raw().market_time().await.unwrap().ms();
    let len = 60_000;
    let end = now - now % len - len; // the last closed minute
    let a = c
        .klines(&symbol, Interval::M1, end - 2499 * len, end)
        .await
        .unwrap();
    assert_eq!(a.len(), 2500, "paged back in 3 requests");
    assert!(
        a.windows(2)
            .all(|w| w[1].start_ms - w[0].start_ms == len && w[0].close == w[1].open)
    );
    assert!(
        a.iter()
            .all(|k| k.low <= k.open.min(k.close) && k.high >= k.open.max(k.close))
    );
    // The same history, asked again in other pieces, is the same history.
    let b = c
        .klines(&symbol, Interval::M1, end - 99 * len, end)
        .await
        .unwrap();
    assert_eq!(&a[2400..], &b[..]);
    // Five 1-minute bars make one 5-minute bar (an aligned one well inside the range).
    let s5 = (end - 20 * len) - (end - 20 * len).rem_euclid(5 * len);
    let five = c.klines(&symbol, Interval::M5, s5, s5).await.unwrap();
    assert_eq!(five.len(), 1);
    let first5 = &five[0];
    assert_eq!(first5.start_ms, s5);
    let ones: Vec<_> = a
        .iter()
        .filter(|k| k.start_ms >= s5 && k.start_ms < s5 + 5 * len)
        .collect();
    assert_eq!(ones.len(), 5);
    assert_eq!(first5.open, ones[0].open);
    assert_eq!(first5.close, ones[4].close);
    assert_eq!(first5.high, ones.iter().map(|k| k.high).max().unwrap());
    assert_eq!(first5.low, ones.iter().map(|k| k.low).min().unwrap());
    assert_eq!(
        first5.volume,
        ones.iter().map(|k| k.volume).sum::<Decimal>()
    );
}

#[tokio::test]
async fn auth_errors_are_bybits() {
    // The sim's clock starts a day in the past: an unsynced client is outside the window.
    let url = start(SimSettings {
        start_time_ms: shardbot_protocol::now_ms() - 86_400_000,
        ..settings()
    });
    let unknown = client(&url, Some(Credentials::new("nope", SECRET)));
    unknown.sync_time().await.unwrap();
    assert_eq!(
        unknown.wallet().await.unwrap_err().api_code(),
        Some(ApiCode::InvalidApiKey)
    );

    let bad_secret = client(&url, Some(Credentials::new(KEY, "wrong")));
    bad_secret.sync_time().await.unwrap();
    assert_eq!(
        bad_secret.wallet().await.unwrap_err().api_code(),
        Some(ApiCode::InvalidSignature)
    );

    // A request signed with this machine's clock, a day ahead of the sim's: 10002 with
    // Bybit's message. (Sent by hand: the project's client measures the clock again on a
    // 10002 and succeeds, as the next lines show.)
    let ts = shardbot_protocol::now_ms();
    let query = "accountType=UNIFIED";
    let sign = Credentials::new(KEY, SECRET).sign_rest(ts, 5000, query);
    let reply: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/v5/account/wallet-balance?{query}"))
        .header("X-BAPI-API-KEY", KEY)
        .header("X-BAPI-TIMESTAMP", ts.to_string())
        .header("X-BAPI-SIGN", sign)
        .header("X-BAPI-RECV-WINDOW", "5000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["retCode"], 10002, "{reply}");
    assert!(
        reply["retMsg"]
            .as_str()
            .unwrap()
            .contains("server_timestamp"),
        "Bybit's message: {reply}"
    );
    let unsynced = client(&url, creds());
    let w = unsynced.wallet().await.unwrap();
    assert_eq!(w.coin("USDT").unwrap().wallet_balance, dec!(100000));
}

#[tokio::test]
async fn endpoint_limits_answer_10006_with_headers_the_client_obeys() {
    let url = start(settings());
    // A client whose own budget is generous: the exchange's answer is what holds it back.
    let c = client(&url, creds());
    c.sync_time().await.unwrap();
    let started = std::time::Instant::now();
    for _ in 0..120 {
        c.wallet().await.unwrap_or_else(|e| panic!("{e}"));
    }
    // 50 per second: 120 calls need at least two full windows, and none failed: the client
    // keeps to its budget, reads X-Bapi-Limit-Status, and after a 10006 (its window and
    // the exchange's are never perfectly aligned) waits for the reset and reads again.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );

    // Without any client-side budget, a burst of 60 signed requests in one second gets
    // exactly 50 answers and 10 refusals, each carrying Bybit's limit headers.
    let http = reqwest::Client::new();
    let ts = c.raw().clock().now_ms();
    // Another account (UID) of the same exchange: its window is its own.
    let sign =
        Credentials::new("burst-key", "burst-secret").sign_rest(ts, 5000, "accountType=UNIFIED");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let req = http
            .get(format!(
                "{url}/v5/account/wallet-balance?accountType=UNIFIED"
            ))
            .header("X-BAPI-API-KEY", "burst-key")
            .header("X-BAPI-TIMESTAMP", ts.to_string())
            .header("X-BAPI-SIGN", sign.clone())
            .header("X-BAPI-RECV-WINDOW", "5000");
        set.spawn(async move {
            let r = req.send().await.unwrap();
            let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
            let (limit, status) = (h("X-Bapi-Limit"), h("X-Bapi-Limit-Status"));
            let body: serde_json::Value = r.json().await.unwrap();
            (body["retCode"].as_i64().unwrap(), limit, status)
        });
    }
    let (mut okays, mut refused) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (code, limit, status) = r.unwrap();
        assert_eq!(limit.as_deref(), Some("50"));
        match code {
            0 => okays += 1,
            10006 => {
                refused += 1;
                assert_eq!(status.as_deref(), Some("0"));
            }
            other => panic!("retCode {other}"),
        }
    }
    assert_eq!((okays, refused), (50, 10));
}

#[tokio::test]
async fn breaching_the_ip_limit_is_a_403_ban() {
    let url = start(SimSettings {
        ip_limit_per_5s: 20,
        ..settings()
    });
    let c = client(&url, None);
    let mut banned = 0;
    for _ in 0..25 {
        // A fresh client each time: the sim, not a local budget, must refuse.
        let fresh = client(&url, None);
        if let Err(BybitError::IpBanned { .. }) = fresh.raw().market_time().await {
            banned += 1;
        }
    }
    assert_eq!(banned, 5, "the 21st request and every one after it");
    assert!(matches!(
        c.raw().market_time().await,
        Err(BybitError::IpBanned { .. })
    ));
}

#[tokio::test]
async fn the_demo_profile_refuses_fee_rate_and_serves_demo_apply_money() {
    let url = start(settings());
    let c = client(&url, creds());
    c.sync_time().await.unwrap();
    let e = c
        .raw()
        .account_fee_rate(&Query::new().with("category", "linear"))
        .await
        .unwrap_err();
    assert_eq!(e.api_code(), Some(ApiCode::ParamError));
    let add = DemoApplyMoney {
        adjust_type: 0,
        uta_demo_apply_money: vec![DemoCoin {
            coin: "USDT".into(),
            amount_str: dec!(2500.5),
        }],
    };
    c.raw().account_demo_apply_money(&add).await.unwrap();
    assert_eq!(
        c.wallet()
            .await
            .unwrap()
            .coin("USDT")
            .unwrap()
            .wallet_balance,
        dec!(102500.5)
    );
    let again = c.raw().account_demo_apply_money(&add).await.unwrap_err();
    assert_eq!(
        again.api_code(),
        Some(ApiCode::TooManyVisits),
        "once per minute"
    );
}

#[tokio::test]
async fn unknown_symbols_and_intervals_are_10001() {
    let url = start(settings());
    let c = client(&url, None);
    let q = Query::new()
        .with("category", "linear")
        .with("symbol", "NOPEUSDT")
        .with("interval", "5");
    assert_eq!(
        c.raw().market_kline(&q).await.unwrap_err().api_code(),
        Some(ApiCode::ParamError)
    );
    let q = Query::new()
        .with("category", "linear")
        .with("symbol", "NOPEUSDT");
    assert_eq!(
        c.raw().market_tickers(&q).await.unwrap_err().api_code(),
        Some(ApiCode::ParamError)
    );
    let sym = c.usdt_perpetuals().await.unwrap()[0].symbol.clone();
    let q = Query::new()
        .with("category", "linear")
        .with("symbol", sym.clone())
        .with("interval", "7");
    assert_eq!(
        c.raw().market_kline(&q).await.unwrap_err().api_code(),
        Some(ApiCode::ParamError)
    );
    // A negative end (it pinned a core for minutes walking back from a wrapped time).
    let q = Query::new()
        .with("category", "linear")
        .with("symbol", sym.clone())
        .with("interval", "1")
        .with("end", i64::MIN);
    assert_eq!(
        c.raw().market_kline(&q).await.unwrap_err().api_code(),
        Some(ApiCode::ParamError)
    );
    let q = Query::new().with("category", "spot");
    assert!(c.raw().market_tickers(&q).await.is_err());
}

#[tokio::test]
async fn tickers_carry_bybits_fields_for_the_whole_universe() {
    let url = start(settings());
    // The project's client installs the TLS provider reqwest needs; then read raw JSON.
    let _ = client(&url, None);
    let raw = reqwest::get(format!("{url}/v5/market/tickers?category=linear"))
        .await
        .unwrap();
    let v: serde_json::Value = raw.json().await.unwrap();
    let list = v["result"]["list"].as_array().unwrap();
    assert_eq!(list.len(), 650);
    for t in list {
        for f in [
            "symbol",
            "lastPrice",
            "markPrice",
            "indexPrice",
            "prevPrice24h",
            "price24hPcnt",
            "highPrice24h",
            "lowPrice24h",
            "prevPrice1h",
            "openInterest",
            "turnover24h",
            "volume24h",
            "fundingRate",
            "nextFundingTime",
            "bid1Price",
            "ask1Price",
        ] {
            assert!(t[f].is_string(), "{f} missing in {t}");
        }
        let d = |f: &str| t[f].as_str().unwrap().parse::<Decimal>().unwrap();
        assert!(
            d("lowPrice24h") <= d("lastPrice") && d("lastPrice") <= d("highPrice24h"),
            "{t}"
        );
    }
}

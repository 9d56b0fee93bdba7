//! `shardbot exchange ...` run as a user runs it, against a local HTTP server speaking
//! Bybit's envelope.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::{Command, Output};

use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, ResponseTemplate, matchers::path};

fn ok(result: Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"retCode":0,"retMsg":"OK","result":result,"retExtInfo":{},"time":1}))
}

fn instrument(symbol: &str, status: &str) -> Value {
    json!({"symbol": symbol, "contractType": "LinearPerpetual", "status": status, "baseCoin": "X",
        "quoteCoin": "USDT", "settleCoin": "USDT",
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "25.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": "0.0001", "maxPrice": "1999.9998", "tickSize": "0.0001"},
        "lotSizeFilter": {"maxOrderQty": "1000", "minOrderQty": "1", "qtyStep": "1", "minNotionalValue": "5"}})
}

async fn exchange() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/v5/market/time"))
        .respond_with(|_: &Request| {
            let t = shardbot_protocol_now_ms();
            ok(json!({"timeSecond": (t / 1000).to_string(), "timeNano": (t * 1_000_000).to_string()}))
        })
        .mount(&server)
        .await;
    Mock::given(path("/v5/market/instruments-info"))
        .respond_with(ok(json!({"category":"linear","nextPageCursor":"","list":[
            instrument("AUSDT","Trading"), instrument("BUSDT","Trading"), instrument("CUSDT","PreLaunch")]})))
        .mount(&server)
        .await;
    server
}

fn shardbot_protocol_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn run(server: &MockServer, args: &[&str], keys: Option<(&str, &str)>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardbot"));
    cmd.args(["exchange", "--env", "sim", "--rest-url", &server.uri()])
        .args(args);
    cmd.env_remove("SHARDBOT_API_KEY")
        .env_remove("SHARDBOT_API_SECRET")
        .env_remove("SHARDBOT_CONFIG");
    if let Some((k, s)) = keys {
        cmd.env("SHARDBOT_API_KEY", k).env("SHARDBOT_API_SECRET", s);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_without_keys_does_the_public_checks() {
    let server = exchange().await;
    let out = run(&server, &["check"], None).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("2 trading USDT perpetuals"),
        "pre-launch excluded: {stdout}"
    );
    assert!(stdout.contains("none set"), "{stdout}");
}

#[tokio::test]
async fn check_with_keys_shows_account_wallet_positions_and_orders() {
    let server = exchange().await;
    Mock::given(path("/v5/account/info"))
        .respond_with(ok(
            json!({"unifiedMarginStatus":5,"marginMode":"REGULAR_MARGIN"}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/v5/account/wallet-balance"))
        .respond_with(ok(json!({"list":[{"accountType":"UNIFIED","totalEquity":"100012.5","coin":[{"coin":"USDT","equity":"100012.5","walletBalance":"100000.25"}]}]})))
        .mount(&server).await;
    Mock::given(path("/v5/position/list"))
        .respond_with(ok(json!({"category":"linear","nextPageCursor":"","list":[
        {"symbol":"AUSDT","side":"Buy","size":"10","avgPrice":"1.5","positionIdx":0},
        {"symbol":"BUSDT","side":"","size":"0","avgPrice":"0","positionIdx":0}]})))
        .mount(&server)
        .await;
    Mock::given(path("/v5/order/realtime"))
        .respond_with(ok(
            json!({"category":"linear","nextPageCursor":"","list":[]}),
        ))
        .mount(&server)
        .await;
    let out = run(&server, &["check"], Some(("DEMOKEY123", "topsecretvalue"))).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for needle in [
        "key DEMO… accepted",
        "REGULAR_MARGIN",
        "USDT balance 100000.25",
        "positions:   1 open",
        "orders:      0 open",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}`:\n{stdout}");
    }
    assert!(
        !stdout.contains("DEMOKEY123")
            && !stdout.contains("topsecret")
            && !stderr.contains("topsecret")
    );
}

#[tokio::test]
async fn wrong_keys_are_one_clear_line_and_a_failure() {
    let server = exchange().await;
    Mock::given(path("/v5/account/info"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"retCode":10003,"retMsg":"API key is invalid.","result":{},"time":1}),
        ))
        .mount(&server)
        .await;
    let out = run(&server, &["check"], Some(("WRONGKEY", "topsecretvalue"))).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("10003") && stderr.contains("another environment"),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecret"));
}

#[tokio::test]
async fn commands_that_need_keys_say_so() {
    let server = exchange().await;
    let out = run(&server, &["wallet"], None).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("SHARDBOT_API_KEY") && stderr.contains("SHARDBOT_API_SECRET"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unreachable_exchange_names_the_endpoint() {
    let out = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardbot"));
        cmd.args([
            "exchange",
            "--env",
            "sim",
            "--rest-url",
            "http://127.0.0.1:9",
            "time",
        ])
        .env_remove("SHARDBOT_CONFIG");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("/v5/market/time"), "{stderr}");
}

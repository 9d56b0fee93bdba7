//! Every captured Bybit message in `test_data/` (copied from the shared fixtures with
//! their provenance, `test_data/SOURCES.md`) is parsed by the model it
//! belongs to, through the client's own parsing functions. Table-driven over the folder: a
//! new fixture is tested by adding the file, and a file no rule claims fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::PathBuf;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use shardbot_bybit::{
    ApiCode, BybitError,
    models::{
        Empty, Page,
        account::{AccountInfo, FeeRate, WalletBalance},
        market::{InstrumentInfo, KlinePage, ServerTime, TickerList},
        order::{Execution, Order, OrderId},
        position::{ClosedPnl, PositionInfo},
        ws::{OpRequest, TradeOpResponse, WsFrame},
    },
    rest::{parse_envelope, parse_result},
};

fn fixtures() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data");
    assert!(dir.is_dir(), "fixtures not found at {}", dir.display());
    dir
}

fn files(sub: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(fixtures().join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_str().unwrap().to_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Parses a REST fixture as `T`, as an envelope or a bare result depending on its name.
fn rest<T: serde::de::DeserializeOwned>(name: &str, body: &str) -> T {
    let r = if name.contains("_result") {
        parse_result(name, body)
    } else {
        parse_envelope(name, body)
    };
    r.unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_rest_fixture_parses_into_its_model() {
    let all = files("rest");
    assert!(
        all.len() >= 30,
        "expected the whole folder, found {}",
        all.len()
    );
    for (name, body) in &all {
        let n = name.as_str();
        if let Some(rest_of_name) = n.strip_prefix("v5_error_") {
            let code: i64 = rest_of_name.split('_').next().unwrap().parse().unwrap();
            let err = parse_envelope::<Empty>(n, body).unwrap_err();
            let BybitError::Api {
                ret_code,
                code: mapped,
                message,
                ..
            } = &err
            else {
                panic!("{n}: {err}")
            };
            assert_eq!(*ret_code, code, "{n}");
            assert_eq!(*mapped, ApiCode::from_ret_code(code));
            assert!(
                !matches!(mapped, ApiCode::Other(_)),
                "{n}: documented code unmapped"
            );
            assert!(
                !message.is_empty() && err.to_string().contains(&code.to_string()),
                "{n}: {err}"
            );
        } else if n.starts_with("v5_market_time") {
            let t: ServerTime = rest(n, body);
            assert_eq!(t.ms() / 1000, t.time_second);
        } else if n.starts_with("v5_market_instruments_info") {
            let p: Page<InstrumentInfo> = rest(n, body);
            assert!(!p.list.is_empty(), "{n}");
            assert!(
                p.list
                    .iter()
                    .all(|i| i.price_filter.tick_size > dec!(0)
                        && i.lot_size_filter.qty_step > dec!(0)),
                "{n}"
            );
        } else if n.starts_with("v5_market_kline") {
            let k: KlinePage = rest(n, body);
            assert!(!k.list.is_empty(), "{n}");
            assert!(
                k.list.windows(2).all(|w| w[0].start_ms > w[1].start_ms),
                "{n}: Bybit sends newest first"
            );
        } else if n.starts_with("v5_market_tickers") {
            let t: TickerList = rest(n, body);
            assert!(!t.list.is_empty(), "{n}");
        } else if ["v5_order_create", "v5_order_amend", "v5_order_cancel"]
            .iter()
            .any(|p| n.starts_with(p))
        {
            let o: OrderId = rest(n, body);
            assert!(!o.order_id.is_empty(), "{n}");
        } else if n.starts_with("v5_order_realtime") || n.starts_with("v5_order_history") {
            let p: Page<Order> = rest(n, body);
            assert!(!p.list.is_empty(), "{n}");
        } else if n.starts_with("v5_execution_list") {
            let p: Page<Execution> = rest(n, body);
            assert!(p.list.iter().all(|e| e.exec_qty > dec!(0)), "{n}");
            // The captured executions are of plain orders: stopOrderType UNKNOWN, which is
            // no stop type on the bus.
            for e in &p.list {
                assert_eq!(e.stop_order_type, "UNKNOWN", "{n}");
                assert_eq!(e.to_fill().unwrap().stop_order_type, None, "{n}");
            }
        } else if n.starts_with("v5_position_list") {
            let p: Page<PositionInfo> = rest(n, body);
            // Each open position's liquidation price on the bus is the text the exchange
            // wrote, exactly ("" or "0": none).
            let raw: serde_json::Value = serde_json::from_str(body).unwrap();
            // (A fixture is a whole answer or its `result` alone.)
            let list = raw
                .pointer("/result/list")
                .or_else(|| raw.get("list"))
                .and_then(|l| l.as_array())
                .unwrap();
            for (info, r) in p.list.iter().zip(list) {
                let Some(pos) = info.to_position(0) else {
                    continue;
                };
                let text = r["liqPrice"].as_str().unwrap_or_default();
                let want = match text {
                    "" | "0" => None,
                    t => Some(Decimal::from_str_exact(t).unwrap()),
                };
                assert_eq!(pos.liq_price, want, "{n}: {}", info.symbol);
                assert_eq!(
                    pos.liq_price.map(|d| d.to_string()),
                    want.map(|_| text.to_owned()),
                    "{n}: written as sent"
                );
            }
        } else if [
            "v5_position_set_leverage",
            "v5_position_switch_mode",
            "v5_position_trading_stop",
        ]
        .iter()
        .any(|p| n.starts_with(p))
        {
            let _: Empty = rest(n, body);
        } else if n.starts_with("v5_position_closed_pnl") {
            let p: Page<ClosedPnl> = rest(n, body);
            assert!(!p.list.is_empty(), "{n}");
        } else if n.starts_with("v5_account_wallet_balance") {
            let w: WalletBalance = rest(n, body);
            assert!(
                w.list[0]
                    .coin
                    .iter()
                    .any(|c| c.coin == "USDT" || c.coin == "BTC"),
                "{n}"
            );
        } else if n.starts_with("v5_account_info") {
            let _: AccountInfo = rest(n, body);
        } else if n.starts_with("v5_account_fee_rate") {
            let p: Page<FeeRate> = rest(n, body);
            assert!(!p.list.is_empty(), "{n}");
        } else {
            panic!("no parser claims rest/{n}.json: add a rule for it");
        }
    }
}

#[test]
fn every_ws_fixture_parses_into_its_model() {
    let all = files("ws");
    assert!(
        all.len() >= 25,
        "expected the whole folder, found {}",
        all.len()
    );
    for (name, body) in &all {
        let n = name.as_str();
        if n.starts_with("ws_op_") {
            let r: OpRequest = serde_json::from_str(body).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert!(["auth", "subscribe"].contains(&r.op.as_str()), "{n}");
        } else if n.starts_with("ws_trade_") {
            let r: TradeOpResponse =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(r.ret_code, 0, "{n}");
        } else {
            let frame = WsFrame::parse(body).unwrap_or_else(|e| panic!("{n}: {e}"));
            let ok = match (&frame, n) {
                (WsFrame::Op(op), _) if n.starts_with("ws_pong") => op.is_pong(),
                (WsFrame::Op(op), _) if n.contains("failure") => op.failed(),
                (WsFrame::Op(op), _) => op.success == Some(true),
                (WsFrame::Kline(m), _) => !m.data.is_empty(),
                (WsFrame::Ticker(m), _) => !m.data.symbol.is_empty(),
                (WsFrame::Trade(m), _) => !m.data.is_empty(),
                (WsFrame::Order(m), _) => n.starts_with("ws_private_order") && !m.data.is_empty(),
                (WsFrame::Execution(m), _) => {
                    n.starts_with("ws_private_execution") && !m.data.is_empty()
                }
                (WsFrame::Position(m), _) => {
                    // the push's `entryPrice` is the REST `avgPrice`
                    n.starts_with("ws_private_position")
                        && !m.data.is_empty()
                        && m.data.iter().all(|p| p.avg_price.is_some())
                }
                (WsFrame::Wallet(m), _) => n.starts_with("ws_private_wallet") && !m.data.is_empty(),
                (WsFrame::Other { .. }, _) => false,
            };
            assert!(ok, "{n} parsed as {frame:?}");
        }
    }
}

#[test]
fn the_full_linear_universe_fixture_has_193_trading_usdt_perpetuals() {
    let body = std::fs::read_to_string(
        fixtures().join("rest/v5_market_instruments_info_linear_full_testnet_2023_result.json"),
    )
    .unwrap();
    let p: Page<InstrumentInfo> = parse_result("instruments", &body).unwrap();
    assert_eq!(p.list.len(), 214);
    assert_eq!(
        p.list
            .iter()
            .filter(|i| i.is_trading_usdt_perpetual())
            .count(),
        193
    );
    assert_eq!(p.next(), None);
}

#[test]
fn a_real_ticker_delta_merges_onto_its_snapshot() {
    let read = |f: &str| std::fs::read_to_string(fixtures().join("ws").join(f)).unwrap();
    let WsFrame::Ticker(snap) =
        WsFrame::parse(&read("ws_public_ticker_linear_snapshot_real.json")).unwrap()
    else {
        panic!()
    };
    let WsFrame::Ticker(delta) =
        WsFrame::parse(&read("ws_public_ticker_linear_delta.json")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (snap.kind.as_str(), delta.kind.as_str()),
        ("snapshot", "delta")
    );
    let mut full = snap.data.clone();
    full.merge(&delta.data);
    assert_eq!(full.ask1_price, Some(dec!(0.13942)));
    assert_eq!(full.ask1_size, Some(dec!(3691)));
    // everything the delta did not carry is the snapshot's
    assert_eq!(full.last_price, snap.data.last_price);
    assert_eq!(full.bid1_price, snap.data.bid1_price);
    assert!(full.last_price.is_some());
}

#[test]
fn a_missing_required_field_names_it() {
    let body = r#"{"retCode":0,"retMsg":"OK","result":{"list":[{"symbol":"BTCUSDT","side":"Buy","execId":"1","orderId":"2","execType":"Trade","execPrice":"1","execQty":"1","execValue":"1","isMaker":false,"execTime":"1"}],"nextPageCursor":""},"time":1}"#;
    let err = parse_envelope::<Page<Execution>>("/v5/execution/list", body).unwrap_err();
    assert!(
        err.to_string().contains("execFee") && err.to_string().contains("/v5/execution/list"),
        "{err}"
    );
}

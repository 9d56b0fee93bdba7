//! The signed trading endpoints (orders, executions, positions, closed PnL, wallet) in
//! Bybit's JSON, over the engine.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::{
    engine::{AccountBook, ClosedPnl, Execution, NewOrder, Order, Position, Reject, Side},
    state::{Account, Exchange},
};

/// What a trading handler answers: a result, or Bybit's retCode and message.
pub type Answer = Result<Value, Reject>;

fn bad(msg: impl Into<String>) -> Reject {
    Reject {
        code: 10001,
        msg: format!("params error: {}", msg.into()),
    }
}

fn s(d: Decimal) -> String {
    d.normalize().to_string()
}

fn opt(d: Option<Decimal>) -> String {
    d.map(s).unwrap_or_else(|| "0".into())
}

/// A decimal field of a JSON body: Bybit takes strings ("0.001"); numbers are accepted.
fn dec_field(body: &Value, key: &str) -> Result<Option<Decimal>, Reject> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(x)) if x.is_empty() => Ok(None),
        Some(Value::String(x)) => x
            .parse::<Decimal>()
            .map(Some)
            .map_err(|_| bad(format!("{key} `{x}` is not a number"))),
        Some(Value::Number(n)) => n
            .to_string()
            .parse::<Decimal>()
            .map(Some)
            .map_err(|_| bad(key.to_owned())),
        Some(other) => Err(bad(format!("{key} must be a string, got {other}"))),
    }
}

fn str_field<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|x| !x.is_empty())
}

fn bool_field(body: &Value, key: &str) -> bool {
    body.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn linear(category: Option<&str>) -> Result<(), Reject> {
    match category {
        Some("linear") => Ok(()),
        None => Err(bad("category is required")),
        Some(c) => Err(bad(format!(
            "category {c} is not served by bybit-sim (linear only)"
        ))),
    }
}

/// Cursor pagination over a newest-first list.
fn page(
    items: Vec<Value>,
    q: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<(Vec<Value>, String), Reject> {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => default,
        Some(Ok(l)) if (1..=max).contains(&l) => l,
        Some(_) => return Err(bad(format!("limit must be 1..{max}"))),
    };
    let offset = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => c
            .strip_prefix("next-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad("invalid cursor"))?,
    };
    let next = if offset + limit < items.len() {
        format!("next-{}", offset + limit)
    } else {
        String::new()
    };
    Ok((items.into_iter().skip(offset).take(limit).collect(), next))
}

/// Executions and closed PnL are read at most 7 days at a time (Bybit's limit on
/// `endTime - startTime`).
fn seven_days_at_most(q: &HashMap<String, String>) -> Result<(), Reject> {
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<i64>().ok());
    if let (Some(s), Some(e)) = (num("startTime"), num("endTime")) {
        if e < s {
            return Err(bad("endTime must not be before startTime"));
        }
        if e - s > 7 * 86_400_000 {
            return Err(bad(
                "The time range between startTime and endTime cannot exceed 7 days",
            ));
        }
    }
    Ok(())
}

fn time_filter(q: &HashMap<String, String>, t: i64) -> bool {
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<i64>().ok());
    num("startTime").is_none_or(|s| t >= s) && num("endTime").is_none_or(|e| t <= e)
}

pub fn order_json(o: &Order) -> Value {
    json!({
        "orderId": o.order_id, "orderLinkId": o.order_link_id, "blockTradeId": "", "symbol": o.symbol,
        "price": opt(o.price), "qty": s(o.qty), "side": o.side.as_str(), "isLeverage": "",
        "positionIdx": 0, "orderStatus": o.status, "createType": o.create_type, "cancelType": o.cancel_type,
        "rejectReason": o.reject_reason, "avgPrice": o.avg_price().map(|p| s(p.round_dp(8))).unwrap_or_default(),
        "leavesQty": s(o.leaves_qty()), "leavesValue": s(o.leaves_qty() * o.price.unwrap_or_default()),
        "cumExecQty": s(o.cum_exec_qty), "cumExecValue": s(o.cum_exec_value), "cumExecFee": s(o.cum_exec_fee),
        "cumFeeDetail": {"USDT": s(o.cum_exec_fee)},
        "timeInForce": o.time_in_force, "orderType": if o.market { "Market" } else { "Limit" },
        "stopOrderType": o.stop_order_type, "orderIv": "", "triggerPrice": "0",
        "takeProfit": opt(o.take_profit), "stopLoss": opt(o.stop_loss),
        "tpTriggerBy": if o.take_profit.is_some() { "LastPrice" } else { "" },
        "slTriggerBy": if o.stop_loss.is_some() { "LastPrice" } else { "" },
        "triggerDirection": 0, "triggerBy": "", "lastPriceOnCreated": "", "reduceOnly": o.reduce_only,
        "closeOnTrigger": o.close_on_trigger, "smpType": "None", "smpGroup": 0, "smpOrderId": "",
        "tpslMode": if o.take_profit.is_some() || o.stop_loss.is_some() { "Full" } else { "" },
        "tpLimitPrice": "", "slLimitPrice": "", "placeType": "",
        "createdTime": o.created_ms.to_string(), "updatedTime": o.updated_ms.to_string()
    })
}

pub fn execution_json(e: &Execution) -> Value {
    json!({
        "symbol": e.symbol, "orderId": e.order_id, "orderLinkId": e.order_link_id, "side": e.side.as_str(),
        "orderPrice": s(e.order_price), "orderQty": s(e.order_qty), "leavesQty": s(e.leaves_qty),
        "createType": e.create_type, "orderType": e.order_type, "stopOrderType": e.stop_order_type, "execFee": s(e.fee),
        "execId": e.exec_id, "execPrice": s(e.price), "execQty": s(e.qty), "execType": e.exec_type,
        "execValue": s(e.value), "execTime": e.time_ms.to_string(), "feeCurrency": "USDT", "isMaker": e.is_maker,
        "feeRate": s(e.fee_rate), "tradeIv": "", "markIv": "", "markPrice": s(e.price), "indexPrice": "",
        "underlyingPrice": "", "blockTradeId": "", "closedSize": s(e.closed_size), "seq": e.seq, "extraFees": ""
    })
}

pub fn position_json(
    ex: &Exchange,
    book: &AccountBook,
    symbol: &str,
    p: Option<&Position>,
    now: i64,
) -> Value {
    let leverage = book.leverage(symbol);
    let mark = ex
        .market
        .get(symbol)
        .map(|i| i.price_at(now))
        .unwrap_or_default();
    let (side, size, avg) = p.map_or(("", Decimal::ZERO, Decimal::ZERO), |p| {
        (p.side.as_str(), p.size, p.avg_price)
    });
    let upnl = p.map_or(Decimal::ZERO, |p| match p.side {
        Side::Buy => (mark - p.avg_price) * p.size,
        Side::Sell => (p.avg_price - mark) * p.size,
    });
    let im = size * avg / leverage;
    json!({
        "positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000", "symbol": symbol, "side": side,
        "size": s(size), "avgPrice": s(avg), "positionValue": s(size * avg), "tradeMode": 0,
        "positionStatus": "Normal", "autoAddMargin": 0, "adlRankIndicator": if size.is_zero() { 0 } else { 2 },
        "leverage": s(leverage), "positionBalance": s(im), "markPrice": s(mark), "liqPrice": "", "bustPrice": "",
        "positionMM": s((im * Decimal::new(1, 1)).round_dp(8)), "positionIM": s(im.round_dp(8)), "tpslMode": "Full",
        "takeProfit": opt(p.and_then(|p| p.take_profit)), "stopLoss": opt(p.and_then(|p| p.stop_loss)),
        "trailingStop": "0", "unrealisedPnl": s(upnl.round_dp(8)),
        "curRealisedPnl": s(p.map_or(Decimal::ZERO, |p| p.cur_realised)), "cumRealisedPnl": "0",
        "sessionAvgPrice": "", "seq": 0, "isReduceOnly": false, "mmrSysUpdatedTime": "", "leverageSysUpdatedTime": "",
        "createdTime": p.map_or(now, |p| p.created_ms).to_string(), "updatedTime": p.map_or(now, |p| p.updated_ms).to_string()
    })
}

fn closed_json(c: &ClosedPnl) -> Value {
    json!({
        "symbol": c.symbol, "orderId": c.order_id, "side": c.side.as_str(), "qty": s(c.qty),
        "orderPrice": s(c.order_price), "orderType": c.order_type, "execType": c.exec_type,
        "closedSize": s(c.closed_size), "cumEntryValue": s(c.cum_entry_value), "avgEntryPrice": s(c.avg_entry_price),
        "cumExitValue": s(c.cum_exit_value), "avgExitPrice": s(c.avg_exit_price), "closedPnl": s(c.closed_pnl),
        "openFee": s(c.open_fee), "closeFee": s(c.close_fee), "fillCount": c.fill_count.to_string(),
        "leverage": s(c.leverage), "createdTime": c.created_ms.to_string(), "updatedTime": c.updated_ms.to_string()
    })
}

pub fn wallet_json(ex: &Exchange, book: &AccountBook, now: i64) -> Value {
    let upnl = book.unrealised(&ex.market, now).round_dp(8);
    let wallet = book.usdt_wallet;
    let equity = wallet + upnl;
    let im = book.initial_margin().round_dp(8);
    let available = book.available(&ex.market, now).round_dp(8);
    json!({"list": [{
        "accountType": "UNIFIED", "accountIMRate": if equity.is_zero() { "0".into() } else { s((im / equity).round_dp(4)) },
        "accountMMRate": "0", "accountLTV": "0",
        "totalEquity": s(equity), "totalWalletBalance": s(wallet), "totalMarginBalance": s(equity),
        "totalAvailableBalance": s(available), "totalPerpUPL": s(upnl), "totalInitialMargin": s(im),
        "totalMaintenanceMargin": s((im * Decimal::new(1, 1)).round_dp(8)),
        "coin": [{
            "coin": "USDT", "equity": s(equity), "usdValue": s(equity), "walletBalance": s(wallet), "locked": "0",
            "borrowAmount": "0", "accruedInterest": "0", "totalOrderIM": "0", "totalPositionIM": s(im),
            "totalPositionMM": "0", "unrealisedPnl": s(upnl), "cumRealisedPnl": "0", "bonus": "0",
            "marginCollateral": true, "collateralSwitch": true, "availableToWithdraw": s(available), "spotHedgingQty": "0"
        }]
    }]})
}

/// Runs one signed trading request against the account's book.
pub fn handle(
    ex: &Exchange,
    account: &Account,
    path: &str,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Answer {
    let now = ex.clock.now_ms();
    let mut book = account.book();
    book.advance(&ex.market, now, ex.spread_ticks);
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|_| bad("body is not JSON"))?
    };
    let answer = match path {
        "/v5/order/create" => create(ex, &mut book, &body, now, false),
        "/v5/order/amend" => {
            linear(str_field(&body, "category"))?;
            let o = book.amend(
                &ex.market,
                str_field(&body, "orderId"),
                str_field(&body, "orderLinkId"),
                dec_field(&body, "qty")?,
                dec_field(&body, "price")?,
                now,
            )?;
            Ok(json!({"orderId": o.order_id, "orderLinkId": o.order_link_id}))
        }
        "/v5/order/cancel" => {
            linear(str_field(&body, "category"))?;
            let o = book.cancel(
                str_field(&body, "orderId"),
                str_field(&body, "orderLinkId"),
                now,
            )?;
            Ok(json!({"orderId": o.order_id, "orderLinkId": o.order_link_id}))
        }
        "/v5/order/cancel-all" => {
            linear(str_field(&body, "category"))?;
            let cancelled = book.cancel_all(str_field(&body, "symbol"), now);
            Ok(
                json!({"list": cancelled.iter().map(|o| json!({"orderId": o.order_id, "orderLinkId": o.order_link_id})).collect::<Vec<_>>(), "success": "1"}),
            )
        }
        "/v5/order/realtime" | "/v5/order/history" => {
            orders(&book, q, path == "/v5/order/realtime")
        }
        "/v5/execution/list" => {
            linear(q.get("category").map(String::as_str))?;
            seven_days_at_most(q)?;
            let items: Vec<Value> = book
                .executions
                .iter()
                .rev()
                .filter(|e| q.get("symbol").is_none_or(|x| &e.symbol == x))
                .filter(|e| q.get("orderId").is_none_or(|x| &e.order_id == x))
                .filter(|e| q.get("orderLinkId").is_none_or(|x| &e.order_link_id == x))
                .filter(|e| q.get("execType").is_none_or(|x| e.exec_type == x))
                .filter(|e| time_filter(q, e.time_ms))
                .map(execution_json)
                .collect();
            let (list, next) = page(items, q, 50, 100)?;
            Ok(json!({"category": "linear", "list": list, "nextPageCursor": next}))
        }
        "/v5/position/list" => {
            linear(q.get("category").map(String::as_str))?;
            let items: Vec<Value> = match (q.get("symbol"), q.get("settleCoin")) {
                (Some(sym), _) => {
                    if ex.market.get(sym).is_none() {
                        return Err(bad("symbol invalid"));
                    }
                    vec![position_json(ex, &book, sym, book.positions.get(sym), now)]
                }
                (None, Some(coin)) if coin == "USDT" => {
                    let mut ps: Vec<&Position> = book.positions.values().collect();
                    ps.sort_by(|a, b| a.symbol.cmp(&b.symbol));
                    ps.into_iter()
                        .map(|p| position_json(ex, &book, &p.symbol, Some(p), now))
                        .collect()
                }
                (None, Some(_)) => Vec::new(),
                (None, None) => return Err(bad("symbol or settleCoin is required")),
            };
            let (list, next) = page(items, q, 20, 200)?;
            Ok(json!({"category": "linear", "list": list, "nextPageCursor": next}))
        }
        "/v5/position/set-leverage" => {
            linear(str_field(&body, "category"))?;
            let sym = str_field(&body, "symbol").ok_or_else(|| bad("symbol"))?;
            let inst = ex.market.get(sym).ok_or_else(|| bad("symbol invalid"))?;
            let (buy, sell) = (
                dec_field(&body, "buyLeverage")?,
                dec_field(&body, "sellLeverage")?,
            );
            let (Some(buy), Some(sell)) = (buy, sell) else {
                return Err(bad("buyLeverage and sellLeverage are required"));
            };
            if buy != sell {
                return Err(bad("buyLeverage must equal sellLeverage in one-way mode"));
            }
            book.set_leverage(inst, buy)?;
            Ok(json!({}))
        }
        "/v5/position/switch-mode" => {
            linear(str_field(&body, "category"))?;
            match body.get("mode").and_then(Value::as_i64) {
                Some(0) => Err(Reject {
                    code: 110025,
                    msg: "Position mode is not modified".into(),
                }),
                Some(3) => Err(bad("bybit-sim trades one-way mode only")),
                _ => Err(bad("mode must be 0 or 3")),
            }
        }
        "/v5/position/trading-stop" => {
            linear(str_field(&body, "category"))?;
            let sym = str_field(&body, "symbol").ok_or_else(|| bad("symbol"))?;
            book.trading_stop(
                sym,
                dec_field(&body, "takeProfit")?,
                dec_field(&body, "stopLoss")?,
                now,
            )?;
            Ok(json!({}))
        }
        "/v5/position/closed-pnl" => {
            linear(q.get("category").map(String::as_str))?;
            seven_days_at_most(q)?;
            let items: Vec<Value> = book
                .closed
                .iter()
                .rev()
                .filter(|c| q.get("symbol").is_none_or(|x| &c.symbol == x))
                .filter(|c| time_filter(q, c.created_ms))
                .map(closed_json)
                .collect();
            let (list, next) = page(items, q, 50, 100)?;
            Ok(json!({"category": "linear", "list": list, "nextPageCursor": next}))
        }
        "/v5/account/wallet-balance" => {
            if q.get("accountType").map(String::as_str) != Some("UNIFIED") {
                return Err(bad("accountType only support UNIFIED"));
            }
            Ok(wallet_json(ex, &book, now))
        }
        _ => Err(Reject {
            code: 10017,
            msg: "route not found".into(),
        }),
    };
    account.publish(&mut book);
    answer
}

/// `/v5/order/create`, or one order of a batch (`in_batch`).
fn create(ex: &Exchange, book: &mut AccountBook, body: &Value, now: i64, in_batch: bool) -> Answer {
    linear(str_field(body, "category"))?;
    let symbol = str_field(body, "symbol").ok_or_else(|| bad("symbol is required"))?;
    let side = str_field(body, "side")
        .and_then(Side::parse)
        .ok_or_else(|| bad("side must be Buy or Sell"))?;
    let market = match str_field(body, "orderType") {
        Some("Market") => true,
        Some("Limit") => false,
        _ => return Err(bad("orderType must be Market or Limit")),
    };
    let qty = dec_field(body, "qty")?.ok_or_else(|| bad("qty is required"))?;
    if body.get("positionIdx").and_then(Value::as_i64).unwrap_or(0) != 0 {
        return Err(bad("position idx not match position mode"));
    }
    let tif = match str_field(body, "timeInForce") {
        None => None,
        Some("GTC") => Some("GTC"),
        Some("IOC") => Some("IOC"),
        Some("FOK") => Some("FOK"),
        Some("PostOnly") => Some("PostOnly"),
        Some(other) => return Err(bad(format!("timeInForce {other}"))),
    };
    let req = NewOrder {
        symbol: symbol.to_owned(),
        side,
        market,
        qty,
        price: dec_field(body, "price")?,
        time_in_force: tif,
        order_link_id: str_field(body, "orderLinkId")
            .unwrap_or_default()
            .to_owned(),
        reduce_only: bool_field(body, "reduceOnly"),
        close_on_trigger: bool_field(body, "closeOnTrigger"),
        take_profit: dec_field(body, "takeProfit")?.filter(|d| !d.is_zero()),
        stop_loss: dec_field(body, "stopLoss")?.filter(|d| !d.is_zero()),
    };
    if ex.faults.refuses(&req.symbol, req.reduce_only, in_batch) {
        return Err(Reject {
            code: 110007,
            msg: "Insufficient available balance".into(),
        });
    }
    let o = book.place(&ex.market, req, now, ex.spread_ticks)?;
    Ok(json!({"orderId": o.order_id, "orderLinkId": o.order_link_id}))
}

/// The most orders a linear batch may carry (reference §4: 1-10 per request).
pub const MAX_BATCH_ORDERS: usize = 10;

/// How many orders a create-batch body carries (for its budget), if it can be read.
pub fn batch_len(body: &[u8]) -> Option<u32> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let n = v.get("request")?.as_array()?.len();
    u32::try_from(n.clamp(1, MAX_BATCH_ORDERS)).ok()
}

/// `/v5/order/create-batch`: each order of `request` as `/v5/order/create` would place
/// it, in order, one failing without the others; the reply's `result.list` and
/// `retExtInfo.list`, index for index (a refused order: empty ids, its own code).
pub fn create_batch(
    ex: &Exchange,
    account: &Account,
    body: &[u8],
) -> Result<(Vec<Value>, Vec<Value>), Reject> {
    let body: Value = serde_json::from_slice(body).map_err(|_| bad("body is not JSON"))?;
    linear(str_field(&body, "category"))?;
    let request = body
        .get("request")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("request is required"))?;
    if request.is_empty() || request.len() > MAX_BATCH_ORDERS {
        return Err(bad(format!(
            "request holds {} orders; a linear batch holds 1 to {MAX_BATCH_ORDERS}",
            request.len()
        )));
    }
    let now = ex.clock.now_ms();
    let mut book = account.book();
    book.advance(&ex.market, now, ex.spread_ticks);
    let (mut list, mut codes) = (Vec::new(), Vec::new());
    for item in request {
        let mut order = item.clone();
        if let Some(o) = order.as_object_mut() {
            o.insert("category".into(), json!("linear"));
        }
        let symbol = str_field(item, "symbol").unwrap_or_default().to_owned();
        match create(ex, &mut book, &order, now, true) {
            Ok(placed) => {
                list.push(json!({
                    "category": "linear",
                    "symbol": symbol,
                    "orderId": placed["orderId"],
                    "orderLinkId": placed["orderLinkId"],
                    "createAt": now.to_string()
                }));
                codes.push(json!({"code": 0, "msg": "OK"}));
            }
            Err(r) => {
                list.push(json!({
                    "category": "linear",
                    "symbol": symbol,
                    "orderId": "",
                    "orderLinkId": "",
                    "createAt": ""
                }));
                codes.push(json!({"code": r.code, "msg": r.msg}));
            }
        }
    }
    account.publish(&mut book);
    Ok((list, codes))
}

fn orders(book: &AccountBook, q: &HashMap<String, String>, realtime: bool) -> Answer {
    linear(q.get("category").map(String::as_str))?;
    let by_id = q.contains_key("orderId") || q.contains_key("orderLinkId");
    if realtime
        && !by_id
        && !q.contains_key("symbol")
        && !q.contains_key("settleCoin")
        && !q.contains_key("baseCoin")
    {
        return Err(bad("symbol, baseCoin or settleCoin is required"));
    }
    let open_only = q.get("openOnly").map(String::as_str).unwrap_or("0") == "0";
    let items: Vec<Value> = book
        .orders
        .iter()
        .rev()
        .filter(|o| q.get("symbol").is_none_or(|x| &o.symbol == x))
        .filter(|o| q.get("orderId").is_none_or(|x| &o.order_id == x))
        .filter(|o| q.get("orderLinkId").is_none_or(|x| &o.order_link_id == x))
        .filter(|o| q.get("orderStatus").is_none_or(|x| o.status == x))
        .filter(|o| {
            if realtime {
                by_id || !open_only || o.is_open()
            } else {
                time_filter(q, o.created_ms)
            }
        })
        .map(order_json)
        .collect();
    let (list, next) = page(items, q, 20, 50)?;
    Ok(json!({"category": "linear", "list": list, "nextPageCursor": next}))
}

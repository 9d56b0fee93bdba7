//! The REST API under `/v5`, with Bybit's envelope, string decimals, auth and limits.

use std::{collections::HashMap, sync::Arc};

use actix_web::{
    HttpRequest, HttpResponse,
    http::{Method, StatusCode},
    web,
};
use hmac::{Hmac, KeyInit, Mac};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{
    limits::Verdict,
    market::{bar_start, interval_ms},
    settings::Profile,
    state::{Account, Exchange},
};

pub type State = web::Data<Arc<Exchange>>;

/// Bybit's envelope.
fn envelope(ex: &Exchange, code: i64, msg: &str, result: Value) -> Value {
    json!({"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": ex.clock.now_ms()})
}

fn ok(ex: &Exchange, result: Value) -> HttpResponse {
    HttpResponse::Ok().json(envelope(ex, 0, "OK", result))
}

fn fail(ex: &Exchange, code: i64, msg: &str) -> HttpResponse {
    HttpResponse::Ok().json(envelope(ex, code, msg, json!({})))
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

fn forbidden() -> HttpResponse {
    HttpResponse::build(StatusCode::FORBIDDEN)
        .content_type("text/plain")
        .body("access too frequent")
}

/// Every `/v5` request: the IP limit, then routing.
pub async fn v5(req: HttpRequest, body: web::Bytes, state: State) -> HttpResponse {
    let ex: &Exchange = &state;
    if !ex.limits().ip_allows() {
        return forbidden();
    }
    let path = req.path().to_owned();
    let get = req.method() == Method::GET;
    let slow = match ex.faults.roll(&path) {
        crate::faults::Verdict::Normal => None,
        crate::faults::Verdict::TooManyVisits => return fail(ex, 10006, "Too many visits!"),
        crate::faults::Verdict::ServerError => {
            return HttpResponse::build(StatusCode::BAD_GATEWAY)
                .content_type("text/plain")
                .body("502 Bad Gateway");
        }
        crate::faults::Verdict::Slow(ms) => Some(ms),
    };
    let resp = route(ex, &req, &body, &path, get);
    if let Some(ms) = slow {
        // Carried out already; only the answer is late.
        actix_web::rt::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    resp
}

fn route(ex: &Exchange, req: &HttpRequest, body: &[u8], path: &str, get: bool) -> HttpResponse {
    match (get, path) {
        (true, "/v5/market/time") => market_time(ex),
        (true, "/v5/market/instruments-info") => instruments_info(ex, &query(req)),
        (true, "/v5/market/kline") => kline(ex, &query(req)),
        (true, "/v5/market/tickers") => tickers(ex, &query(req)),
        (true, "/v5/account/wallet-balance")
        | (true, "/v5/account/info")
        | (true, "/v5/account/fee-rate")
        | (true, "/v5/order/realtime")
        | (true, "/v5/order/history")
        | (true, "/v5/execution/list")
        | (true, "/v5/position/list")
        | (true, "/v5/position/closed-pnl")
        | (false, "/v5/order/create")
        | (false, "/v5/order/create-batch")
        | (false, "/v5/order/amend")
        | (false, "/v5/order/cancel")
        | (false, "/v5/order/cancel-all")
        | (false, "/v5/position/set-leverage")
        | (false, "/v5/position/switch-mode")
        | (false, "/v5/position/trading-stop")
        | (false, "/v5/account/demo-apply-money") => signed(ex, req, body, path),
        _ => HttpResponse::NotFound()
            .content_type("text/plain")
            .body("404 page not found"),
    }
}

// --- public market data --------------------------------------------------------------

fn market_time(ex: &Exchange) -> HttpResponse {
    let ns = ex.clock.now_ns();
    ok(
        ex,
        json!({
            "timeSecond": (ns / 1_000_000_000).to_string(),
            "timeNano": ns.to_string(),
            // Not in Bybit's reply: the sim clock's speed, so a client can follow an
            // accelerated clock. Clients ignore fields they do not know.
            "simClockSpeed": ex.clock.speed().to_string()
        }),
    )
}

fn linear_only(ex: &Exchange, q: &HashMap<String, String>) -> Option<HttpResponse> {
    match q.get("category").map(String::as_str) {
        Some("linear") => None,
        None => Some(fail(ex, 10001, "params error: category is required")),
        Some(other) => Some(fail(
            ex,
            10001,
            &format!("category {other} is not served by bybit-sim (linear only)"),
        )),
    }
}

fn instruments_info(ex: &Exchange, q: &HashMap<String, String>) -> HttpResponse {
    if let Some(r) = linear_only(ex, q) {
        return r;
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 500,
        Some(Ok(l)) if (1..=1000).contains(&l) => l,
        Some(_) => return fail(ex, 10001, "params error: limit must be 1..1000"),
    };
    let all = &ex.market.instruments;
    let selected: Vec<&crate::market::Instrument> = match q.get("symbol") {
        Some(s) => all.iter().filter(|i| &i.symbol == s).collect(),
        None => all.iter().collect(),
    };
    let offset = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match c
            .strip_prefix("next-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return fail(ex, 10001, "params error: invalid cursor"),
        },
    };
    let page: Vec<Value> = selected
        .iter()
        .skip(offset)
        .take(limit)
        .map(|i| instrument_json(i, &ex.status_of(&i.symbol)))
        .collect();
    let next = if offset + limit < selected.len() {
        format!("next-{}", offset + limit)
    } else {
        String::new()
    };
    ok(
        ex,
        json!({"category": "linear", "list": page, "nextPageCursor": next}),
    )
}

fn instrument_json(i: &crate::market::Instrument, status: &str) -> Value {
    json!({
        "symbol": i.symbol,
        "contractType": "LinearPerpetual",
        "status": status,
        "baseCoin": i.symbol.trim_end_matches("USDT"),
        "quoteCoin": "USDT",
        "settleCoin": "USDT",
        "launchTime": "1577836800000",
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": i.tick.scale().to_string(),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": i.max_leverage.to_string(), "leverageStep": "0.01"},
        "priceFilter": {"minPrice": i.tick.to_string(), "maxPrice": (i.tick * Decimal::from(1_000_000_000u64)).to_string(), "tickSize": i.tick.to_string()},
        "lotSizeFilter": {
            "maxOrderQty": i.max_qty.to_string(),
            "maxMktOrderQty": i.max_mkt_qty.to_string(),
            "minOrderQty": i.min_qty.to_string(),
            "qtyStep": i.qty_step.to_string(),
            "postOnlyMaxOrderQty": i.max_qty.to_string(),
            "minNotionalValue": i.min_notional.to_string()
        },
        "unifiedMarginTrade": true,
        "fundingInterval": i.funding_interval_min,
        "copyTrading": "both",
        "upperFundingRate": "0.02",
        "lowerFundingRate": "-0.02",
        "isPreListing": false,
        "preListingInfo": null
    })
}

fn kline(ex: &Exchange, q: &HashMap<String, String>) -> HttpResponse {
    // Bybit's kline category is optional and defaults to linear.
    if q.get("category").is_some_and(|c| c != "linear") {
        return fail(
            ex,
            10001,
            "category is not served by bybit-sim (linear only)",
        );
    }
    let Some(inst) = q.get("symbol").and_then(|s| ex.market.get(s)) else {
        return fail(ex, 10001, "Not supported symbols");
    };
    let Some((len, offset)) = q.get("interval").and_then(|i| interval_ms(i)) else {
        return fail(
            ex,
            10001,
            "Invalid period! (bybit-sim serves 1,3,5,15,30,60,120,240,360,720,D,W)",
        );
    };
    let num = |k: &str| q.get(k).map(|v| v.parse::<i64>());
    let limit = match num("limit") {
        None => 200,
        Some(Ok(l)) if (1..=1000).contains(&l) => l,
        Some(_) => return fail(ex, 10001, "params error: limit must be 1..1000"),
    };
    let (start, end) = match (num("start"), num("end")) {
        (Some(Err(_)), _) | (_, Some(Err(_))) => {
            return fail(ex, 10001, "params error: start/end must be ms timestamps");
        }
        (s, e) => (s.and_then(Result::ok), e.and_then(Result::ok)),
    };
    // A negative time (i64::MIN, say) is no timestamp: the walk back from it would wrap
    // around and run for minutes.
    if start.is_some_and(|s| s < 0) || end.is_some_and(|e| e < 0) {
        return fail(ex, 10001, "params error: start/end must be ms timestamps");
    }
    let now = ex.clock.now_ms();
    let end = end.unwrap_or(now).min(now);
    let mut rows = Vec::new();
    let mut t = bar_start(end, len, offset);
    while rows.len() < limit as usize && start.is_none_or(|s| t >= s) && t >= crate::path::ORIGIN_MS
    {
        let b = inst.bar(t, len, now);
        rows.push(json!([
            b.start_ms.to_string(),
            b.open.to_string(),
            b.high.to_string(),
            b.low.to_string(),
            b.close.to_string(),
            b.volume.to_string(),
            b.turnover.to_string()
        ]));
        t -= len;
    }
    ok(
        ex,
        json!({"category": "linear", "symbol": inst.symbol, "list": rows}),
    )
}

fn tickers(ex: &Exchange, q: &HashMap<String, String>) -> HttpResponse {
    if let Some(r) = linear_only(ex, q) {
        return r;
    }
    let now = ex.clock.now_ms();
    let list: Vec<Value> = ex
        .market
        .instruments
        .iter()
        .filter(|i| q.get("symbol").is_none_or(|s| &i.symbol == s))
        .map(|i| {
            let last = i.price_at(now);
            let prev = i.price_at(now - 86_400_000);
            let (high, low, volume, turnover) = i.day_stats(now);
            let pct = if prev.is_zero() {
                Decimal::ZERO
            } else {
                ((last - prev) / prev).round_dp(6)
            };
            let funding_ms = i64::from(i.funding_interval_min) * 60_000;
            json!({
                "symbol": i.symbol,
                "lastPrice": last.to_string(),
                "indexPrice": last.to_string(),
                "markPrice": last.to_string(),
                "prevPrice24h": prev.to_string(),
                "price24hPcnt": pct.to_string(),
                "prevPrice1h": i.price_at(now - 3_600_000).to_string(),
                "highPrice24h": high.to_string(),
                "lowPrice24h": low.to_string(),
                "volume24h": volume.to_string(),
                "turnover24h": turnover.to_string(),
                "openInterest": (volume / Decimal::from(4)).round_dp(3).to_string(),
                "openInterestValue": (turnover / Decimal::from(4)).round_dp(2).to_string(),
                "bid1Price": (last - i.tick).max(i.tick).to_string(),
                "bid1Size": (i.qty_step * Decimal::from(1000)).to_string(),
                "ask1Price": (last + i.tick).to_string(),
                "ask1Size": (i.qty_step * Decimal::from(1000)).to_string(),
                "fundingRate": ex.market.funding_rate.to_string(),
                "nextFundingTime": (bar_start(now, funding_ms, 0) + funding_ms).to_string(),
                "fundingIntervalHour": (i.funding_interval_min / 60).to_string(),
                "deliveryTime": "0",
                "deliveryFeeRate": "",
                "predictedDeliveryPrice": "",
                "basisRate": "",
            })
        })
        .collect();
    if list.is_empty() && q.contains_key("symbol") {
        return fail(ex, 10001, "Not supported symbols");
    }
    ok(ex, json!({"category": "linear", "list": list}))
}

// --- signed endpoints ----------------------------------------------------------------

/// Checks a signed request exactly as Bybit does (reference §2.1).
fn authenticate<'a>(
    ex: &'a Exchange,
    req: &HttpRequest,
    body: &[u8],
) -> Result<&'a Account, (i64, String)> {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let key = h("X-BAPI-API-KEY").unwrap_or_default();
    let Some(account) = ex.accounts.get(key) else {
        return Err((10003, "API key is invalid.".into()));
    };
    let ts: i64 = h("X-BAPI-TIMESTAMP")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let recv_window: i64 = h("X-BAPI-RECV-WINDOW")
        .and_then(|t| t.parse().ok())
        .unwrap_or(5000);
    let now = ex.clock.now_ms();
    // Bybit's rule, with both bounds measured in real time when the clock runs fast: at an
    // accelerated clock a 5,000 ms recv window is still five real seconds of travel. (A
    // slowed clock keeps Bybit's windows, which are then wider in real time.)
    let speed = ex.clock.speed().max(1.0);
    let (window, ahead) = ((recv_window as f64 * speed) as i64, (1000.0 * speed) as i64);
    if !(now - window <= ts && ts < now + ahead) {
        return Err((
            10002,
            format!(
                "invalid request, please check your server timestamp or recv_window param. req_timestamp[{ts}],server_timestamp[{now}],recv_window[{recv_window}]"
            ),
        ));
    }
    let payload = if req.method() == Method::GET {
        req.query_string().as_bytes()
    } else {
        body
    };
    let mut origin = format!("{ts}{key}{recv_window}").into_bytes();
    origin.extend_from_slice(payload);
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(account.api_secret.as_bytes())
    else {
        return Err((10004, "error sign!".into()));
    };
    mac.update(&origin);
    let expected = hex::encode(mac.finalize().into_bytes());
    if h("X-BAPI-SIGN") != Some(expected.as_str()) {
        return Err((
            10004,
            format!(
                "error sign! origin_string[{}]",
                String::from_utf8_lossy(&origin)
            ),
        ));
    }
    Ok(account)
}

fn with_limit_headers(mut resp: HttpResponse, ex: &Exchange, v: Option<Verdict>) -> HttpResponse {
    if let Some(v) = v {
        let reset = ex.clock.now_ms() + (v.reset_in.as_millis() as f64 * ex.clock.speed()) as i64;
        let h = resp.headers_mut();
        for (name, value) in [
            ("X-Bapi-Limit", v.limit.to_string()),
            ("X-Bapi-Limit-Status", v.remaining.to_string()),
            ("X-Bapi-Limit-Reset-Timestamp", reset.to_string()),
        ] {
            if let Ok(val) = actix_web::http::header::HeaderValue::from_str(&value) {
                h.insert(
                    actix_web::http::header::HeaderName::from_static(match name {
                        "X-Bapi-Limit" => "x-bapi-limit",
                        "X-Bapi-Limit-Status" => "x-bapi-limit-status",
                        _ => "x-bapi-limit-reset-timestamp",
                    }),
                    val,
                );
            }
        }
    }
    resp
}

fn signed(ex: &Exchange, req: &HttpRequest, body: &[u8], path: &str) -> HttpResponse {
    let account = match authenticate(ex, req, body) {
        Ok(a) => a,
        Err((code, msg)) => return fail(ex, code, &msg),
    };
    // A batch consumes its endpoint's budget per order.
    let cost = if path == "/v5/order/create-batch" {
        crate::trade::batch_len(body).unwrap_or(1)
    } else {
        1
    };
    let verdict = ex.limits().uid_request_n(account.uid, path, cost);
    if verdict.is_some_and(|v| !v.allowed) {
        return with_limit_headers(fail(ex, 10006, "Too many visits!"), ex, verdict);
    }
    let resp = match path {
        "/v5/order/create-batch" => match crate::trade::create_batch(ex, account, body) {
            // The two lists, index for index: each order's ids, and its own code.
            Ok((list, codes)) => HttpResponse::Ok().json(json!({
                "retCode": 0,
                "retMsg": "OK",
                "result": {"list": list},
                "retExtInfo": {"list": codes},
                "time": ex.clock.now_ms()
            })),
            Err(r) => fail(ex, r.code, &r.msg),
        },
        "/v5/account/info" => ok(
            ex,
            json!({"unifiedMarginStatus": 5, "marginMode": "REGULAR_MARGIN", "isMasterTrader": false, "spotHedgingStatus": "OFF", "updatedTime": ex.clock.now_ms().to_string()}),
        ),
        "/v5/account/fee-rate" => match ex.profile {
            // Bybit demo does not serve fee-rate for linear (reference §1.1).
            Profile::Demo => fail(ex, 10001, "Not supported on demo trading"),
            Profile::Live => ok(
                ex,
                json!({"list": [{"symbol": "", "takerFeeRate": "0.00055", "makerFeeRate": "0.0002"}]}),
            ),
        },
        "/v5/account/demo-apply-money" => demo_apply_money(ex, account, body),
        _ => match crate::trade::handle(ex, account, path, &query(req), body) {
            Ok(result) => ok(ex, result),
            Err(r) => fail(ex, r.code, &r.msg),
        },
    };
    with_limit_headers(resp, ex, verdict)
}

fn demo_apply_money(ex: &Exchange, account: &Account, body: &[u8]) -> HttpResponse {
    if ex.profile != Profile::Demo {
        return HttpResponse::NotFound().finish();
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return fail(ex, 10001, "params error: body is not JSON");
    };
    let reduce = v.get("adjustType").and_then(Value::as_i64).unwrap_or(0) == 1;
    let Some(coins) = v.get("utaDemoApplyMoney").and_then(Value::as_array) else {
        return fail(ex, 10001, "params error: utaDemoApplyMoney is required");
    };
    let mut usdt = Decimal::ZERO;
    for c in coins {
        let coin = c.get("coin").and_then(Value::as_str).unwrap_or_default();
        let Some(amount) = c
            .get("amountStr")
            .and_then(Value::as_str)
            .and_then(|a| a.parse::<Decimal>().ok())
        else {
            return fail(ex, 10001, "params error: amountStr");
        };
        match coin {
            "USDT" if amount <= Decimal::from(100_000) && amount > Decimal::ZERO => usdt += amount,
            "USDT" => {
                return fail(
                    ex,
                    10001,
                    "params error: USDT amount must be in (0, 100000]",
                );
            }
            "BTC" | "ETH" | "USDC" => return fail(ex, 10001, "bybit-sim keeps USDT only"),
            _ => return fail(ex, 10001, "params error: coin"),
        }
    }
    if !ex.limits().apply_money_allowed(account.uid) {
        return fail(ex, 10006, "Too many visits!");
    }
    let mut book = account.book();
    book.usdt_wallet = if reduce {
        (book.usdt_wallet - usdt).max(Decimal::ZERO)
    } else {
        book.usdt_wallet + usdt
    };
    book.changes.push(crate::engine::Change::Wallet);
    account.publish(&mut book);
    ok(ex, json!({}))
}

// --- fault injection (admin, never under /v5) ------------------------------------------

/// `GET /admin/faults`: the faults in force.
pub async fn get_faults(state: State) -> HttpResponse {
    HttpResponse::Ok().json(state.faults.config())
}

/// `GET /admin/faults/served`: how many REST requests met each fault so far.
pub async fn get_served(state: State) -> HttpResponse {
    HttpResponse::Ok().json(state.faults.served())
}

/// `POST /admin/faults` with a JSON `FaultConfig`: replaces the faults in force.
pub async fn set_faults(state: State, body: web::Json<crate::faults::FaultConfig>) -> HttpResponse {
    if let Err(e) = body.validate() {
        return HttpResponse::BadRequest().body(e);
    }
    tracing::warn!(faults = ?body.0, "fault injection changed");
    state.faults.set(body.into_inner());
    HttpResponse::Ok().json(state.faults.config())
}

/// Body of `POST /admin/instruments/status`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub symbol: String,
    pub status: String,
}

/// `POST /admin/instruments/status` with `{"symbol": ..., "status": ...}`: what
/// instruments-info reports for the symbol from now on (Bybit's statuses: `PreLaunch`,
/// `Trading`, `Delivering`, `Closed`). Lists and delists symbols while clients run.
pub async fn set_status(state: State, body: web::Json<StatusChange>) -> HttpResponse {
    const STATUSES: [&str; 4] = ["PreLaunch", "Trading", "Delivering", "Closed"];
    if state.market.get(&body.symbol).is_none() {
        return HttpResponse::BadRequest().body(format!("unknown symbol {}", body.symbol));
    }
    if !STATUSES.contains(&body.status.as_str()) {
        return HttpResponse::BadRequest()
            .body(format!("status must be one of {}", STATUSES.join(", ")));
    }
    tracing::warn!(
        symbol = body.symbol,
        status = body.status,
        "instrument status changed"
    );
    let mut statuses = state.statuses.lock().unwrap_or_else(|p| p.into_inner());
    if body.status == "Trading" {
        statuses.remove(&body.symbol);
    } else {
        statuses.insert(body.symbol.clone(), body.status.clone());
    }
    HttpResponse::Ok().json(serde_json::json!({"symbol": body.symbol, "status": body.status}))
}

/// `POST /admin/ws/drop`: closes every WebSocket connection open now.
pub async fn drop_ws(state: State) -> HttpResponse {
    let generation = state.faults.drop_all_ws();
    tracing::warn!(generation, "dropping every WebSocket connection");
    HttpResponse::Ok().json(serde_json::json!({"dropped_generation": generation}))
}

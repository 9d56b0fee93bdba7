//! The WebSocket streams: `/v5/public/linear` (kline, tickers, publicTrade) and
//! `/v5/private` (auth, then order, execution, position and wallet pushes), with Bybit's
//! op replies and ping/pong.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{Message, Session};
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    api::State,
    engine::Change,
    market::{bar_start, interval_ms},
    state::{Account, Exchange},
    trade::{execution_json, order_json, position_json, wallet_json},
};

/// How often public data is pushed (Bybit: tickers every 100 ms for derivatives).
pub const PUBLIC_TICK: Duration = Duration::from_millis(100);

static CONN: AtomicU64 = AtomicU64::new(1);

fn conn_id() -> String {
    format!("sim-{:08x}", CONN.fetch_add(1, Ordering::Relaxed))
}

fn op_reply(conn: &str, req_id: &Value, op: &str, success: bool, msg: &str) -> String {
    json!({"success": success, "ret_msg": msg, "conn_id": conn, "req_id": req_id.as_str().unwrap_or(""), "op": op}).to_string()
}

/// One public subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Topic {
    Kline { interval: String, symbol: String },
    Ticker { symbol: String },
    Trade { symbol: String },
}

fn parse_topic(ex: &Exchange, t: &str) -> Option<Topic> {
    let parts: Vec<&str> = t.split('.').collect();
    let known = |s: &str| ex.market.get(s).is_some();
    match parts.as_slice() {
        ["kline", i, s] if interval_ms(i).is_some() && known(s) => Some(Topic::Kline {
            interval: (*i).into(),
            symbol: (*s).into(),
        }),
        ["tickers", s] if known(s) => Some(Topic::Ticker {
            symbol: (*s).into(),
        }),
        ["publicTrade", s] if known(s) => Some(Topic::Trade {
            symbol: (*s).into(),
        }),
        _ => None,
    }
}

/// Per-subscription memory: what was last sent.
#[derive(Debug, Default)]
struct Sent {
    /// Tickers: the last full field set sent (for deltas).
    ticker: BTreeMap<&'static str, String>,
    /// Klines: start of the bar being streamed.
    bar_start: Option<i64>,
    last_close: Option<Decimal>,
    /// Trades: last price.
    last_trade: Option<Decimal>,
}

fn ticker_fields(ex: &Exchange, symbol: &str, now: i64) -> BTreeMap<&'static str, String> {
    let Some(i) = ex.market.get(symbol) else {
        return BTreeMap::new();
    };
    let last = i.price_at(now);
    let spread = i.tick * Decimal::from(ex.spread_ticks);
    let funding_ms = i64::from(i.funding_interval_min) * 60_000;
    let mut m = BTreeMap::new();
    m.insert("lastPrice", last.to_string());
    m.insert("markPrice", last.to_string());
    m.insert("indexPrice", last.to_string());
    m.insert("bid1Price", (last - spread).max(i.tick).to_string());
    m.insert("ask1Price", (last + spread).to_string());
    m.insert("bid1Size", (i.qty_step * Decimal::from(1000)).to_string());
    m.insert("ask1Size", (i.qty_step * Decimal::from(1000)).to_string());
    m.insert("prevPrice24h", i.price_at(now - 86_400_000).to_string());
    m.insert("fundingRate", ex.market.funding_rate.to_string());
    m.insert(
        "nextFundingTime",
        (bar_start(now, funding_ms, 0) + funding_ms).to_string(),
    );
    m
}

fn kline_frame(
    ex: &Exchange,
    interval: &str,
    symbol: &str,
    start: i64,
    now: i64,
    confirm: bool,
) -> Option<String> {
    let i = ex.market.get(symbol)?;
    let (len, _) = interval_ms(interval)?;
    let b = i.bar(start, len, now);
    Some(
        json!({"topic": format!("kline.{interval}.{symbol}"), "type": "snapshot", "ts": now, "data": [{
            "start": b.start_ms, "end": b.start_ms + len - 1, "interval": interval,
            "open": b.open.to_string(), "close": b.close.to_string(), "high": b.high.to_string(), "low": b.low.to_string(),
            "volume": b.volume.to_string(), "turnover": b.turnover.to_string(), "confirm": confirm, "timestamp": now
        }]})
        .to_string(),
    )
}

/// What one public tick sends for one subscription.
fn public_frames(ex: &Exchange, topic: &Topic, sent: &mut Sent, now: i64, cs: u64) -> Vec<String> {
    let mut out = Vec::new();
    match topic {
        Topic::Ticker { symbol } => {
            let fields = ticker_fields(ex, symbol, now);
            let (kind, data): (&str, BTreeMap<&str, String>) = if sent.ticker.is_empty() {
                ("snapshot", fields.clone())
            } else {
                (
                    "delta",
                    fields
                        .iter()
                        .filter(|(k, v)| sent.ticker.get(*k) != Some(*v))
                        .map(|(k, v)| (*k, v.clone()))
                        .collect(),
                )
            };
            if kind == "snapshot" || !data.is_empty() {
                let mut d: serde_json::Map<String, Value> = data
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), Value::String(v)))
                    .collect();
                d.insert("symbol".into(), Value::String(symbol.clone()));
                out.push(json!({"topic": format!("tickers.{symbol}"), "type": kind, "data": d, "cs": cs, "ts": now}).to_string());
                sent.ticker = fields;
            }
        }
        Topic::Kline { interval, symbol } => {
            let Some((len, off)) = interval_ms(interval) else {
                return out;
            };
            let current = bar_start(now, len, off);
            let mut start = sent.bar_start.unwrap_or(current);
            // Every bar that closed since the last tick is pushed once with confirm=true,
            // in order, even when an accelerated clock jumped several bars.
            while start < current {
                out.extend(kline_frame(ex, interval, symbol, start, start + len, true));
                start += len;
            }
            let close = ex.market.get(symbol).map(|i| i.price_at(now));
            if sent.bar_start != Some(current) || sent.last_close != close {
                out.extend(kline_frame(ex, interval, symbol, current, now, false));
            }
            sent.bar_start = Some(current);
            sent.last_close = close;
        }
        Topic::Trade { symbol } => {
            let Some(i) = ex.market.get(symbol) else {
                return out;
            };
            let price = i.price_at(now);
            if let Some(prev) = sent.last_trade.filter(|p| *p != price) {
                let side = if price > prev { "Buy" } else { "Sell" };
                out.push(
                    json!({"topic": format!("publicTrade.{symbol}"), "type": "snapshot", "ts": now, "data": [{
                        "T": now, "s": symbol, "S": side, "v": i.qty_step.to_string(), "p": price.to_string(),
                        "L": if side == "Buy" { "PlusTick" } else { "MinusTick" }, "i": format!("{cs:x}-{now:x}"), "BT": false, "seq": cs
                    }]})
                    .to_string(),
                );
            }
            sent.last_trade = Some(price);
        }
    }
    out
}

async fn send_all(session: &mut Session, frames: Vec<String>) -> bool {
    for f in frames {
        if session.text(f).await.is_err() {
            return false;
        }
    }
    true
}

/// `GET /v5/public/linear`.
pub async fn public(
    req: HttpRequest,
    body: web::Payload,
    state: State,
) -> actix_web::Result<HttpResponse> {
    let (resp, mut session, mut stream) = actix_ws::handle(&req, body)?;
    let ex: Arc<Exchange> = state.get_ref().clone();
    actix_web::rt::spawn(async move {
        let conn = conn_id();
        let generation = ex.faults.ws_generation();
        let mut subs: HashMap<Topic, Sent> = HashMap::new();
        let mut tick = tokio::time::interval(PUBLIC_TICK);
        let mut cs: u64 = 0;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(Ok(msg)) = msg else { break };
                    if ex.faults.public_paused() {
                        continue; // a paused stream answers nothing, not even pings
                    }
                    let reply = match msg {
                        Message::Text(t) => handle_public_op(&ex, &conn, &t, &mut subs),
                        Message::Ping(p) => { let _ = session.pong(&p).await; continue }
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if !send_all(&mut session, reply).await { break }
                }
                _ = tick.tick() => {
                    if ex.faults.ws_generation() != generation {
                        break; // dropped by fault injection
                    }
                    if ex.faults.public_paused() {
                        continue;
                    }
                    let now = ex.clock.now_ms();
                    let mut frames = Vec::new();
                    let mut topics: Vec<Topic> = subs.keys().cloned().collect();
                    topics.sort();
                    for t in topics {
                        cs += 1;
                        if let Some(sent) = subs.get_mut(&t) {
                            frames.extend(public_frames(&ex, &t, sent, now, cs));
                        }
                    }
                    if !send_all(&mut session, frames).await { break }
                }
            }
        }
        let _ = session.close(None).await;
    });
    Ok(resp)
}

fn handle_public_op(
    ex: &Exchange,
    conn: &str,
    text: &str,
    subs: &mut HashMap<Topic, Sent>,
) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return vec![op_reply(
            conn,
            &Value::Null,
            "",
            false,
            "error:unparsable request",
        )];
    };
    let req_id = v.get("req_id").cloned().unwrap_or(Value::Null);
    let op = v.get("op").and_then(Value::as_str).unwrap_or_default();
    let args: Vec<&str> = v
        .get("args")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match op {
        "ping" => vec![op_reply(conn, &req_id, "ping", true, "pong")],
        "subscribe" | "unsubscribe" => {
            let mut bad = Vec::new();
            for a in &args {
                match parse_topic(ex, a) {
                    Some(t) if op == "subscribe" => {
                        subs.entry(t).or_default();
                    }
                    Some(t) => {
                        subs.remove(&t);
                    }
                    None => bad.push(*a),
                }
            }
            if bad.is_empty() {
                vec![op_reply(conn, &req_id, op, true, "")]
            } else {
                vec![op_reply(
                    conn,
                    &req_id,
                    op,
                    false,
                    &format!("error:handler not found,topic:{}", bad.join(",")),
                )]
            }
        }
        other => vec![op_reply(conn, &req_id, other, false, "error:unknown op")],
    }
}

/// Checks `{"op":"auth","args":[key, expires, signature]}` as Bybit does.
fn authenticate<'a>(ex: &'a Exchange, args: &[Value]) -> Option<&'a Account> {
    let key = args.first()?.as_str()?;
    let expires = args.get(1)?.as_i64()?;
    let sign = args.get(2)?.as_str()?;
    let account = ex.accounts.get(key)?;
    if expires <= ex.clock.now_ms() {
        return None;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(account.api_secret.as_bytes()).ok()?;
    mac.update(format!("GET/realtime{expires}").as_bytes());
    (hex::encode(mac.finalize().into_bytes()) == sign).then_some(account)
}

fn private_frame(
    ex: &Exchange,
    account: &Account,
    change: &Change,
) -> Option<(&'static str, String)> {
    let now = ex.clock.now_ms();
    let (topic, data) = match change {
        Change::Order(o) => {
            let mut v = order_json(o);
            v["category"] = json!("linear");
            ("order", v)
        }
        Change::Execution(e) => {
            let mut v = execution_json(e);
            v["category"] = json!("linear");
            ("execution", v)
        }
        Change::Position { symbol } => {
            let book = account.book();
            let mut v = position_json(ex, &book, symbol, book.positions.get(symbol), now);
            // The position topic calls the average price `entryPrice`.
            if let Some(map) = v.as_object_mut() {
                if let Some(avg) = map.remove("avgPrice") {
                    map.insert("entryPrice".into(), avg);
                }
                map.insert("category".into(), json!("linear"));
            }
            ("position", v)
        }
        Change::Wallet => {
            let book = account.book();
            let w = wallet_json(ex, &book, now);
            ("wallet", w["list"][0].clone())
        }
    };
    Some((topic, json!({"id": format!("{topic}-{now}"), "topic": topic, "creationTime": now, "data": [data]}).to_string()))
}

/// `GET /v5/private`.
pub async fn private(
    req: HttpRequest,
    body: web::Payload,
    state: State,
) -> actix_web::Result<HttpResponse> {
    let (resp, mut session, mut stream) = actix_ws::handle(&req, body)?;
    let ex: Arc<Exchange> = state.get_ref().clone();
    actix_web::rt::spawn(async move {
        let conn = conn_id();
        let generation = ex.faults.ws_generation();
        let mut drop_check = tokio::time::interval(PUBLIC_TICK);
        let mut account: Option<&Account> = None;
        let mut feed = None;
        let mut topics: HashSet<&'static str> = HashSet::new();
        loop {
            let change = async {
                match feed.as_mut() {
                    Some(rx) => Some(tokio::sync::broadcast::Receiver::<Change>::recv(rx).await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = drop_check.tick() => {
                    if ex.faults.ws_generation() != generation {
                        break; // dropped by fault injection
                    }
                }
                msg = stream.next() => {
                    let Some(Ok(msg)) = msg else { break };
                    let text = match msg {
                        Message::Text(t) => t,
                        Message::Ping(p) => { let _ = session.pong(&p).await; continue }
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                    let req_id = v.get("req_id").cloned().unwrap_or(Value::Null);
                    let args: Vec<Value> = v.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
                    let reply = match v.get("op").and_then(Value::as_str).unwrap_or_default() {
                        "auth" => match authenticate(&ex, &args) {
                            Some(a) => {
                                account = Some(a);
                                feed = Some(a.feed.subscribe());
                                json!({"success": true, "ret_msg": "", "op": "auth", "conn_id": conn}).to_string()
                            }
                            None => json!({"success": false, "ret_msg": "Params Error", "op": "auth", "conn_id": conn}).to_string(),
                        },
                        "subscribe" if account.is_none() => op_reply(&conn, &req_id, "subscribe", false, "Request not authorized"),
                        "subscribe" => {
                            let mut bad = Vec::new();
                            for a in args.iter().filter_map(Value::as_str) {
                                match a {
                                    "order" => { topics.insert("order"); }
                                    "execution" => { topics.insert("execution"); }
                                    "position" => { topics.insert("position"); }
                                    "wallet" => { topics.insert("wallet"); }
                                    other => bad.push(other.to_owned()),
                                }
                            }
                            if bad.is_empty() {
                                json!({"success": true, "ret_msg": "", "op": "subscribe", "conn_id": conn}).to_string()
                            } else {
                                op_reply(&conn, &req_id, "subscribe", false, &format!("error:handler not found,topic:{}", bad.join(",")))
                            }
                        }
                        "ping" => json!({"req_id": req_id.as_str().unwrap_or(""), "op": "pong", "args": [ex.clock.now_ms().to_string()], "conn_id": conn}).to_string(),
                        other => op_reply(&conn, &req_id, other, false, "error:unknown op"),
                    };
                    if session.text(reply).await.is_err() { break }
                }
                c = change => {
                    let Some(a) = account else { continue };
                    match c {
                        Some(Ok(change)) => {
                            if let Some((topic, frame)) = private_frame(&ex, a, &change)
                                && topics.contains(topic)
                                && session.text(frame).await.is_err()
                            {
                                break;
                            }
                        }
                        // Too slow to keep up: close, so the client resyncs over REST.
                        Some(Err(RecvError::Lagged(_))) | Some(Err(RecvError::Closed)) | None => break,
                    }
                }
            }
        }
        let _ = session.close(None).await;
    });
    Ok(resp)
}

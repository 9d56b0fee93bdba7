//! Exchange shapes (`common/bybit` models) → bus messages (`common/protocol`).

use shardbot_bybit::models::ws::{TickerFields, WsKline};
use shardbot_protocol::{Bar, Interval, Symbol, Ticker};

/// A closed kline from the WebSocket; `None` while the candle is still open or if the
/// message names an interval or symbol shardbot cannot carry.
pub fn ws_bar(symbol: &str, k: &WsKline) -> Option<Bar> {
    if !k.confirm {
        return None;
    }
    Some(Bar {
        symbol: Symbol::new(symbol).ok()?,
        interval: k.interval.parse::<Interval>().ok()?,
        open_time_ms: k.start,
        open: k.open,
        high: k.high,
        low: k.low,
        close: k.close,
        volume: k.volume,
        turnover: k.turnover,
        published_ms: None,
    })
}

/// A merged ticker; `None` until it has a last price.
pub fn ticker(ts: i64, t: &TickerFields) -> Option<Ticker> {
    Some(Ticker {
        symbol: Symbol::new(&t.symbol).ok()?,
        last_price: t.last_price?,
        mark_price: t.mark_price,
        index_price: t.index_price,
        bid1_price: t.bid1_price,
        ask1_price: t.ask1_price,
        funding_rate: t.funding_rate,
        next_funding_time_ms: t.next_funding_time,
        volume_24h: t.volume24h,
        turnover_24h: t.turnover24h,
        ts_ms: ts,
    })
}

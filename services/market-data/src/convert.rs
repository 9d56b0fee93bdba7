//! Exchange shapes (`common/bybit` models) → bus messages (`common/protocol`).

use shardbot_bybit::models::ws::{TickerFields, WsKline};
use shardbot_protocol::{Bar, BarStamps, Interval, Symbol, Ticker};

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
        stamps: BarStamps {
            exchange_ms: Some(k.timestamp),
            ..BarStamps::default()
        },
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rust_decimal_macros::dec;

    use super::*;

    fn kline(confirm: bool) -> WsKline {
        WsKline {
            start: 1_672_324_800_000,
            end: 1_672_325_099_999,
            interval: "5".into(),
            open: dec!(16649.5),
            close: dec!(16677),
            high: dec!(16677),
            low: dec!(16608),
            volume: dec!(2.081),
            turnover: dec!(34666.4005),
            confirm,
            timestamp: 1_672_325_100_012,
        }
    }

    /// A closed kline is a bar carrying the exchange's stamp (the first stage of its
    /// intents); the gateway adds its own; an open one is no bar.
    #[test]
    fn a_closed_kline_carries_the_exchanges_stamp() {
        let bar = ws_bar("BTCUSDT", &kline(true)).unwrap();
        assert_eq!(bar.stamps.exchange_ms, Some(1_672_325_100_012));
        assert_eq!(bar.stamps.received_ms, None, "stamped by the gateway");
        assert_eq!(bar.open_time_ms, 1_672_324_800_000);
        assert_eq!(ws_bar("BTCUSDT", &kline(false)), None);
    }
}

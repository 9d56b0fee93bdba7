//! Market data: server time, instruments, klines, tickers.

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::de;

/// `GET /v5/market/time`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTime {
    #[serde(deserialize_with = "de::int")]
    pub time_second: i64,
    #[serde(deserialize_with = "de::int")]
    pub time_nano: i64,
    /// bybit-sim only: how many times faster than real time its clock runs.
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub sim_clock_speed: Option<Decimal>,
}

impl ServerTime {
    pub fn ms(&self) -> i64 {
        self.time_nano / 1_000_000
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeverageFilter {
    #[serde(deserialize_with = "de::decimal")]
    pub min_leverage: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub max_leverage: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub leverage_step: Decimal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceFilter {
    #[serde(deserialize_with = "de::decimal")]
    pub min_price: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub max_price: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub tick_size: Decimal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LotSizeFilter {
    #[serde(deserialize_with = "de::decimal")]
    pub min_order_qty: Decimal,
    /// Max qty of limit orders.
    #[serde(deserialize_with = "de::decimal")]
    pub max_order_qty: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub qty_step: Decimal,
    /// Max qty of market orders (absent before 2024).
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub max_mkt_order_qty: Option<Decimal>,
    /// Min notional in quote coin (absent before 2024-04-11).
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub min_notional_value: Option<Decimal>,
}

/// One entry of `GET /v5/market/instruments-info`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstrumentInfo {
    pub symbol: String,
    pub contract_type: String,
    pub status: String,
    pub base_coin: String,
    pub quote_coin: String,
    pub settle_coin: String,
    #[serde(default, deserialize_with = "de::opt_int")]
    pub launch_time: Option<i64>,
    pub leverage_filter: LeverageFilter,
    pub price_filter: PriceFilter,
    pub lot_size_filter: LotSizeFilter,
    /// Minutes between funding settlements.
    #[serde(default)]
    pub funding_interval: Option<u32>,
    #[serde(default)]
    pub is_pre_listing: Option<bool>,
}

impl InstrumentInfo {
    /// A trading USDT-settled linear perpetual: what shardbot trades.
    pub fn is_trading_usdt_perpetual(&self) -> bool {
        self.contract_type == "LinearPerpetual"
            && self.status == "Trading"
            && self.settle_coin == "USDT"
            && self.is_pre_listing != Some(true)
    }
}

/// One kline row: `[startTime, open, high, low, close, volume, turnover]`, all strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kline {
    pub start_ms: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
    pub turnover: Decimal,
}

impl<'de> Deserialize<'de> for Kline {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kline, D::Error> {
        use serde::de::Error;
        let row: [String; 7] = Deserialize::deserialize(d)?;
        let dec = |i: usize, name: &str| {
            row[i]
                .parse::<Decimal>()
                .map_err(|e| D::Error::custom(format!("kline {name} `{}`: {e}", row[i])))
        };
        Ok(Kline {
            start_ms: row[0]
                .parse()
                .map_err(|e| D::Error::custom(format!("kline startTime `{}`: {e}", row[0])))?,
            open: dec(1, "open")?,
            high: dec(2, "high")?,
            low: dec(3, "low")?,
            close: dec(4, "close")?,
            volume: dec(5, "volume")?,
            turnover: dec(6, "turnover")?,
        })
    }
}

/// Of `klines` (oldest first, read to one bar past `end_ms`), those starting at or before
/// `end_ms` that the exchange has shown closed by listing a later bar. The newest bar of a
/// read is never proven: it may be the one still open.
pub fn proven_closed(mut klines: Vec<Kline>, end_ms: i64) -> Vec<Kline> {
    let newest = klines.iter().map(|k| k.start_ms).max().unwrap_or(i64::MIN);
    klines.retain(|k| k.start_ms <= end_ms && k.start_ms < newest);
    klines
}

/// `GET /v5/market/kline` result: rows newest first, as Bybit sends them.
#[derive(Debug, Clone, Deserialize)]
pub struct KlinePage {
    #[serde(default)]
    pub category: Option<String>,
    pub symbol: String,
    pub list: Vec<Kline>,
}

/// One entry of `GET /v5/market/tickers` (category=linear).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticker {
    pub symbol: String,
    #[serde(deserialize_with = "de::decimal")]
    pub last_price: Decimal,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub mark_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub index_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub bid1_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub ask1_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub funding_rate: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_int")]
    pub next_funding_time: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub volume24h: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub turnover24h: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub open_interest: Option<Decimal>,
}

/// `GET /v5/market/tickers` result.
#[derive(Debug, Clone, Deserialize)]
pub struct TickerList {
    #[serde(default)]
    pub category: Option<String>,
    pub list: Vec<Ticker>,
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use rust_decimal::Decimal;

    use super::*;

    fn at(start_ms: i64) -> Kline {
        Kline {
            start_ms,
            open: Decimal::ONE,
            high: Decimal::ONE,
            low: Decimal::ONE,
            close: Decimal::ONE,
            volume: Decimal::ONE,
            turnover: Decimal::ONE,
        }
    }

    #[rstest]
    // The exchange has begun the bar after `end`: every bar up to `end` is closed.
    #[case(&[1, 2, 3, 4], 3, &[1, 2, 3])]
    // It has not (its clock is behind our estimate): `end` may be open, left out.
    #[case(&[1, 2, 3], 3, &[1, 2])]
    // Later bars than asked are never returned, even when closed.
    #[case(&[1, 2, 3, 4, 5], 3, &[1, 2, 3])]
    // A lone bar proves nothing; nothing proves nothing.
    #[case(&[3], 3, &[])]
    #[case(&[], 3, &[])]
    fn a_bar_is_closed_when_a_later_one_is_listed(
        #[case] listed: &[i64],
        #[case] end: i64,
        #[case] closed: &[i64],
    ) {
        let got = proven_closed(listed.iter().map(|&t| at(t)).collect(), end);
        assert_eq!(got.iter().map(|k| k.start_ms).collect::<Vec<_>>(), closed);
    }
}

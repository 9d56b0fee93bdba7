//! WebSocket messages: public kline / tickers / publicTrade, private order / execution /
//! position / wallet, and the `op` requests and replies (auth, subscribe, ping).

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    account::WalletAccount,
    order::{Execution, Order, OrderId},
    position::PositionInfo,
};
use crate::de;

/// One candle of a `kline.<interval>.<symbol>` push. `confirm` is true once it closed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsKline {
    pub start: i64,
    pub end: i64,
    pub interval: String,
    #[serde(deserialize_with = "de::decimal")]
    pub open: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub close: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub high: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub low: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub volume: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub turnover: Decimal,
    pub confirm: bool,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KlineMessage {
    pub topic: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub ts: i64,
    pub data: Vec<WsKline>,
}

/// Ticker fields. In a `delta` only the changed ones are present; [`TickerFields::merge`]
/// applies a delta onto the last full ticker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TickerFields {
    pub symbol: String,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub last_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub mark_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub index_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub bid1_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub bid1_size: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub ask1_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub ask1_size: Option<Decimal>,
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
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub high_price24h: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub low_price24h: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub price24h_pcnt: Option<Decimal>,
}

impl TickerFields {
    /// Applies a delta: every field present in it replaces ours; absent ones are unchanged.
    pub fn merge(&mut self, delta: &TickerFields) {
        macro_rules! take {
            ($($f:ident),*) => { $( if delta.$f.is_some() { self.$f = delta.$f; } )* };
        }
        take!(
            last_price,
            mark_price,
            index_price,
            bid1_price,
            bid1_size,
            ask1_price,
            ask1_size,
            funding_rate,
            next_funding_time,
            volume24h,
            turnover24h,
            open_interest,
            high_price24h,
            low_price24h,
            price24h_pcnt
        );
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TickerMessage {
    pub topic: String,
    /// `snapshot` or `delta`.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: TickerFields,
    #[serde(default)]
    pub cs: Option<i64>,
    pub ts: i64,
}

/// One trade of a `publicTrade.<symbol>` push.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WsTrade {
    #[serde(rename = "T")]
    pub time: i64,
    #[serde(rename = "s")]
    pub symbol: String,
    /// Taker side.
    #[serde(rename = "S")]
    pub side: String,
    #[serde(rename = "v", deserialize_with = "de::decimal")]
    pub qty: Decimal,
    #[serde(rename = "p", deserialize_with = "de::decimal")]
    pub price: Decimal,
    #[serde(rename = "i")]
    pub trade_id: String,
    #[serde(default)]
    pub seq: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TradeMessage {
    pub topic: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub ts: i64,
    pub data: Vec<WsTrade>,
}

/// A private push: `{id, topic, creationTime, data: [...]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivateMessage<T> {
    #[serde(default)]
    pub id: Option<String>,
    pub topic: String,
    pub creation_time: i64,
    pub data: Vec<T>,
}

/// An `op` request: `{"req_id": ..., "op": "subscribe" | "auth" | "ping", "args": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_id: Option<String>,
    pub op: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<serde_json::Value>,
}

/// The reply to an `op` (auth, subscribe, ping/pong) on the public and private streams.
#[derive(Debug, Clone, Deserialize)]
pub struct OpResponse {
    /// Absent on the private pong.
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default)]
    pub ret_msg: String,
    pub op: String,
    #[serde(default)]
    pub conn_id: Option<String>,
    #[serde(default)]
    pub req_id: Option<String>,
    #[serde(default)]
    pub args: Vec<serde_json::Value>,
}

impl OpResponse {
    pub fn is_pong(&self) -> bool {
        self.op == "pong" || (self.op == "ping" && self.ret_msg == "pong")
    }

    /// A failed auth or subscribe (`success: false`).
    pub fn failed(&self) -> bool {
        self.success == Some(false)
    }
}

/// A reply of the WS Trade API (`/v5/trade`, live and testnet only; not on demo).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TradeOpResponse {
    #[serde(default)]
    pub req_id: Option<String>,
    pub ret_code: i64,
    pub ret_msg: String,
    pub op: String,
    #[serde(default)]
    pub data: Option<OrderId>,
    #[serde(default)]
    pub header: HashMap<String, String>,
    #[serde(default)]
    pub conn_id: Option<String>,
}

/// Any frame the public or private stream can send, classified by its `op` or `topic`.
#[derive(Debug, Clone)]
pub enum WsFrame {
    Op(OpResponse),
    Kline(KlineMessage),
    Ticker(Box<TickerMessage>),
    Trade(TradeMessage),
    Order(PrivateMessage<Order>),
    Execution(PrivateMessage<Execution>),
    Position(PrivateMessage<PositionInfo>),
    Wallet(PrivateMessage<WalletAccount>),
    /// A topic this client does not model; kept raw.
    Other {
        topic: String,
    },
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    topic: Option<&'a str>,
    #[serde(default, borrow)]
    op: Option<&'a str>,
}

impl WsFrame {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<WsFrame, serde_json::Error> {
        let head: Head<'_> = serde_json::from_str(text)?;
        if let Some(topic) = head.topic {
            let kind = topic.split('.').next().unwrap_or_default();
            return Ok(match kind {
                "kline" => WsFrame::Kline(serde_json::from_str(text)?),
                "tickers" => WsFrame::Ticker(Box::new(serde_json::from_str(text)?)),
                "publicTrade" => WsFrame::Trade(serde_json::from_str(text)?),
                "order" => WsFrame::Order(serde_json::from_str(text)?),
                "execution" => WsFrame::Execution(serde_json::from_str(text)?),
                "position" => WsFrame::Position(serde_json::from_str(text)?),
                "wallet" => WsFrame::Wallet(serde_json::from_str(text)?),
                _ => WsFrame::Other {
                    topic: topic.to_owned(),
                },
            });
        }
        if head.op.is_some() {
            return Ok(WsFrame::Op(serde_json::from_str(text)?));
        }
        Err(serde::de::Error::custom(
            "frame has neither `topic` nor `op`",
        ))
    }
}

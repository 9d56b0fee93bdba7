//! Orders and executions.

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::de;

/// `result` of order create / amend / cancel: `{orderId, orderLinkId}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderId {
    pub order_id: String,
    #[serde(default)]
    pub order_link_id: String,
}

/// One order of a `/v5/order/create-batch` reply's `result.list`, in the request's
/// order. An order the exchange refused has empty ids here; its code is in
/// [`BatchItemCode`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchCreated {
    #[serde(default)]
    pub symbol: String,
    #[serde(default)]
    pub order_id: String,
    #[serde(default)]
    pub order_link_id: String,
}

/// One entry of a batch reply's `retExtInfo.list`: that order's own retCode and message
/// (0 and "OK" when it was placed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchItemCode {
    pub code: i64,
    #[serde(default)]
    pub msg: String,
}

/// A batch reply: `result.list` and `retExtInfo.list`, index for index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReply {
    pub created: Vec<BatchCreated>,
    pub codes: Vec<BatchItemCode>,
}

/// One order of `/v5/order/realtime` or `/v5/order/history` (and the WS `order` topic).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: String,
    #[serde(default, deserialize_with = "de::string_or_null")]
    pub order_link_id: String,
    pub symbol: String,
    pub side: String,
    pub order_type: String,
    pub order_status: String,
    #[serde(deserialize_with = "de::decimal")]
    pub qty: Decimal,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub avg_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub leaves_qty: Option<Decimal>,
    #[serde(deserialize_with = "de::decimal")]
    pub cum_exec_qty: Decimal,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub cum_exec_value: Option<Decimal>,
    /// Deprecated for linear in favour of `cumFeeDetail`, still sent.
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub cum_exec_fee: Option<Decimal>,
    #[serde(default)]
    pub time_in_force: String,
    #[serde(default)]
    pub reduce_only: bool,
    #[serde(default)]
    pub close_on_trigger: bool,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub take_profit: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub stop_loss: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub trigger_price: Option<Decimal>,
    #[serde(default)]
    pub stop_order_type: String,
    #[serde(default, deserialize_with = "de::string_or_null")]
    pub reject_reason: String,
    #[serde(default, deserialize_with = "de::string_or_null")]
    pub cancel_type: String,
    #[serde(default)]
    pub position_idx: i64,
    #[serde(deserialize_with = "de::int")]
    pub created_time: i64,
    #[serde(deserialize_with = "de::int")]
    pub updated_time: i64,
}

/// One fill of `/v5/execution/list`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    pub exec_id: String,
    pub order_id: String,
    #[serde(default, deserialize_with = "de::string_or_null")]
    pub order_link_id: String,
    pub symbol: String,
    pub side: String,
    #[serde(default)]
    pub order_type: String,
    /// Trade, Funding, AdlTrade, BustTrade, ...
    pub exec_type: String,
    /// `StopLoss`, `TakeProfit`, `TrailingStop`, ... for the fill of an order the exchange
    /// made from a position's stop; `UNKNOWN` (or absent) for a plain order.
    #[serde(default, deserialize_with = "de::string_or_null")]
    pub stop_order_type: String,
    #[serde(deserialize_with = "de::decimal")]
    pub exec_price: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub exec_qty: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub exec_value: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub exec_fee: Decimal,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub fee_rate: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub closed_size: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub leaves_qty: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub mark_price: Option<Decimal>,
    pub is_maker: bool,
    #[serde(deserialize_with = "de::int")]
    pub exec_time: i64,
}

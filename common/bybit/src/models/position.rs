//! Positions and closed PnL.

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::de;

/// One row of `/v5/position/list`, or one `position` WebSocket push. `side` is `""` when
/// flat.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionInfo {
    pub symbol: String,
    #[serde(default)]
    pub side: String,
    #[serde(deserialize_with = "de::decimal")]
    pub size: Decimal,
    /// `avgPrice` over REST; the `position` WebSocket topic calls it `entryPrice`.
    #[serde(default, alias = "entryPrice", deserialize_with = "de::opt_decimal")]
    pub avg_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub position_value: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub leverage: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub mark_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub liq_price: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub position_im: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub position_mm: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub take_profit: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub stop_loss: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub unrealised_pnl: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub cur_realised_pnl: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub cum_realised_pnl: Option<Decimal>,
    #[serde(default)]
    pub position_idx: i64,
    #[serde(default)]
    pub position_status: String,
    #[serde(default, deserialize_with = "de::opt_int")]
    pub created_time: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_int")]
    pub updated_time: Option<i64>,
}

impl PositionInfo {
    pub fn is_open(&self) -> bool {
        !self.size.is_zero()
    }
}

/// One record of `/v5/position/closed-pnl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosedPnl {
    pub symbol: String,
    pub order_id: String,
    pub side: String,
    #[serde(deserialize_with = "de::decimal")]
    pub qty: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub closed_size: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub avg_entry_price: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub avg_exit_price: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub cum_entry_value: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub cum_exit_value: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub closed_pnl: Decimal,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub open_fee: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub close_fee: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub leverage: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_int")]
    pub fill_count: Option<i64>,
    #[serde(default)]
    pub order_type: String,
    #[serde(default)]
    pub exec_type: String,
    #[serde(deserialize_with = "de::int")]
    pub created_time: i64,
    #[serde(deserialize_with = "de::int")]
    pub updated_time: i64,
}

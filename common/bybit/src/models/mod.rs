//! Typed Bybit v5 responses. Every price, quantity, fee, balance and PnL is a
//! `rust_decimal::Decimal` parsed from Bybit's string; unknown fields are ignored (Bybit adds
//! fields often); a missing or malformed required field is an error that names it.

pub mod account;
pub mod market;
pub mod order;
pub mod position;
pub mod ws;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The REST envelope `{retCode, retMsg, result, retExtInfo, time}`. `result` is kept raw
/// until `retCode` says it is a success, because error replies carry `{}` there.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<'a> {
    pub ret_code: i64,
    #[serde(default)]
    pub ret_msg: String,
    #[serde(borrow, default)]
    pub result: Option<&'a RawValue>,
    /// Per-item codes of batch endpoints (`{"list": [{code, msg}, ...]}`), else `{}`.
    #[serde(borrow, default)]
    pub ret_ext_info: Option<&'a RawValue>,
    #[serde(default)]
    pub time: Option<i64>,
}

/// A page of a cursor-paginated list. `next_page_cursor` is `""` on the last page.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default)]
    pub category: Option<String>,
    pub list: Vec<T>,
    #[serde(default)]
    pub next_page_cursor: String,
}

impl<T> Page<T> {
    /// The cursor of the next page, if there is one.
    pub fn next(&self) -> Option<&str> {
        (!self.next_page_cursor.is_empty()).then_some(self.next_page_cursor.as_str())
    }
}

/// `result: {}` of set-leverage, switch-mode, trading-stop, demo-apply-money.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Empty {}

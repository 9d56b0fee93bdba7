//! Request bodies and query parameters, serialised exactly as Bybit expects: camelCase,
//! decimals as strings, absent optionals omitted.

use rust_decimal::Decimal;
use serde::Serialize;

/// `POST /v5/order/create` (category=linear, one-way mode).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateOrder {
    /// `linear`; empty (and not sent) inside a batch, whose request names it once.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub category: &'static str,
    pub symbol: String,
    /// `Buy` or `Sell`.
    pub side: &'static str,
    /// `Market` or `Limit`.
    pub order_type: &'static str,
    pub qty: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_in_force: Option<&'static str>,
    pub order_link_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reduce_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_on_trigger: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub take_profit: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_loss: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tp_trigger_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sl_trigger_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpsl_mode: Option<&'static str>,
    pub position_idx: u8,
}

impl CreateOrder {
    /// A market order (IOC by Bybit's rules) in one-way mode.
    pub fn market(
        symbol: &str,
        side: shardbot_protocol::Side,
        qty: Decimal,
        order_link_id: &str,
    ) -> CreateOrder {
        CreateOrder {
            category: "linear",
            symbol: symbol.to_owned(),
            side: side.as_str(),
            order_type: "Market",
            qty,
            price: None,
            time_in_force: None,
            order_link_id: order_link_id.to_owned(),
            reduce_only: None,
            close_on_trigger: None,
            take_profit: None,
            stop_loss: None,
            tp_trigger_by: None,
            sl_trigger_by: None,
            tpsl_mode: None,
            position_idx: 0,
        }
    }

    /// Exchange-side take-profit / stop-loss on the whole position, triggered by last price.
    pub fn with_tp_sl(
        mut self,
        take_profit: Option<Decimal>,
        stop_loss: Option<Decimal>,
    ) -> CreateOrder {
        self.take_profit = take_profit;
        self.stop_loss = stop_loss;
        if take_profit.is_some() || stop_loss.is_some() {
            self.tpsl_mode = Some("Full");
        }
        if take_profit.is_some() {
            self.tp_trigger_by = Some("LastPrice");
        }
        if stop_loss.is_some() {
            self.sl_trigger_by = Some("LastPrice");
        }
        self
    }

    /// Reduce-only (exits).
    pub fn reduce_only(mut self) -> CreateOrder {
        self.reduce_only = Some(true);
        self
    }
}

/// The most orders one `/v5/order/create-batch` request may carry for linear (reference
/// §4: 1-10 orders per request).
pub const MAX_BATCH_ORDERS: usize = 10;

/// `POST /v5/order/create-batch` (category=linear): each order as `/v5/order/create`
/// takes it, without its own `category`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateBatch {
    pub category: &'static str,
    pub request: Vec<CreateOrder>,
}

impl CreateBatch {
    pub fn new(orders: &[CreateOrder]) -> CreateBatch {
        CreateBatch {
            category: "linear",
            request: orders
                .iter()
                .map(|o| CreateOrder {
                    category: "",
                    ..o.clone()
                })
                .collect(),
        }
    }
}

/// `POST /v5/order/amend`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmendOrder {
    pub category: &'static str,
    pub symbol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_link_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qty: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub take_profit: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_loss: Option<Decimal>,
}

/// `POST /v5/order/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelOrder {
    pub category: &'static str,
    pub symbol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_link_id: Option<String>,
}

/// `POST /v5/order/cancel-all`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelAll {
    pub category: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_coin: Option<String>,
}

/// `POST /v5/position/set-leverage` (buy and sell equal in one-way mode).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetLeverage {
    pub category: &'static str,
    pub symbol: String,
    pub buy_leverage: Decimal,
    pub sell_leverage: Decimal,
}

/// `POST /v5/position/switch-mode`: mode 0 one-way, 3 hedge.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchMode {
    pub category: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coin: Option<String>,
    pub mode: u8,
}

/// `POST /v5/position/trading-stop` (Full mode, one-way).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TradingStop {
    pub category: &'static str,
    pub symbol: String,
    pub tpsl_mode: &'static str,
    pub position_idx: u8,
    /// `0` cancels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub take_profit: Option<Decimal>,
    /// `0` cancels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_loss: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tp_trigger_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sl_trigger_by: Option<&'static str>,
}

/// One coin of `POST /v5/account/demo-apply-money`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoCoin {
    pub coin: String,
    pub amount_str: Decimal,
}

/// `POST /v5/account/demo-apply-money`: adjust_type 0 adds, 1 reduces.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoApplyMoney {
    pub adjust_type: u8,
    pub uta_demo_apply_money: Vec<DemoCoin>,
}

/// Query parameters, kept in the order given: the string signed is the string sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(&'static str, String)>);

impl Query {
    pub fn new() -> Query {
        Query::default()
    }

    pub fn with(mut self, key: &'static str, value: impl ToString) -> Query {
        self.0.push((key, value.to_string()));
        self
    }

    pub fn with_opt(self, key: &'static str, value: Option<impl ToString>) -> Query {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    /// `k=v&k2=v2`, form-encoded.
    pub fn encode(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use shardbot_protocol::Side;

    #[test]
    fn a_market_order_serialises_as_bybit_expects() {
        let o = CreateOrder::market("BTCUSDT", Side::Buy, dec!(0.001), "abc-123")
            .with_tp_sl(Some(dec!(70000.5)), Some(dec!(60000)));
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"category":"linear","symbol":"BTCUSDT","side":"Buy","orderType":"Market","qty":"0.001","orderLinkId":"abc-123","takeProfit":"70000.5","stopLoss":"60000","tpTriggerBy":"LastPrice","slTriggerBy":"LastPrice","tpslMode":"Full","positionIdx":0}"#
        );
        let exit = CreateOrder::market("BTCUSDT", Side::Sell, dec!(0.001), "x").reduce_only();
        assert!(
            serde_json::to_string(&exit)
                .unwrap()
                .contains(r#""reduceOnly":true"#)
        );
    }

    /// A batch names its category once; its orders are create's bodies without it.
    #[test]
    fn a_batch_serialises_as_bybit_expects() {
        let a = CreateOrder::market("BTCUSDT", Side::Buy, dec!(0.001), "sb-a");
        let b = CreateOrder::market("ETHUSDT", Side::Sell, dec!(0.01), "sb-b").reduce_only();
        assert_eq!(
            serde_json::to_string(&CreateBatch::new(&[a, b])).unwrap(),
            r#"{"category":"linear","request":[{"symbol":"BTCUSDT","side":"Buy","orderType":"Market","qty":"0.001","orderLinkId":"sb-a","positionIdx":0},{"symbol":"ETHUSDT","side":"Sell","orderType":"Market","qty":"0.01","orderLinkId":"sb-b","reduceOnly":true,"positionIdx":0}]}"#
        );
    }

    #[test]
    fn query_keeps_order_and_encodes() {
        let q = Query::new()
            .with("category", "linear")
            .with("symbol", "BTCUSDT")
            .with_opt("cursor", Some("a=b&c"));
        assert_eq!(
            q.encode(),
            "category=linear&symbol=BTCUSDT&cursor=a%3Db%26c"
        );
        assert_eq!(Query::new().encode(), "");
    }
}

//! Every translation of Bybit's data into shardbot's types, in one place: sides, order
//! statuses and types as Bybit spells them, and each model's protocol counterpart
//! (instruments, bars, fills, order events, positions). A service never reads Bybit's
//! strings itself.

use rust_decimal::Decimal;
use shardbot_protocol::{
    Bar, Fill, Instrument, Interval, OpenPosition, OrderEvent, OrderStatus, OrderType, Position,
    Side, Symbol, TimestampMs,
};

use crate::models::{
    market::{InstrumentInfo, Kline},
    order::{Execution, Order},
    position::{ClosedPnl, PositionInfo},
};

/// Bybit's `side` ("Buy", "Sell"); `None` for anything else (an empty position's "").
pub fn side(s: &str) -> Option<Side> {
    match s {
        "Buy" => Some(Side::Buy),
        "Sell" => Some(Side::Sell),
        _ => None,
    }
}

/// Bybit's `orderStatus`; `None` for a status this version does not know.
pub fn order_status(s: &str) -> Option<OrderStatus> {
    Some(match s {
        "New" => OrderStatus::New,
        "PartiallyFilled" => OrderStatus::PartiallyFilled,
        "Untriggered" => OrderStatus::Untriggered,
        "Rejected" => OrderStatus::Rejected,
        "PartiallyFilledCanceled" => OrderStatus::PartiallyFilledCanceled,
        "Filled" => OrderStatus::Filled,
        "Cancelled" => OrderStatus::Cancelled,
        "Triggered" => OrderStatus::Triggered,
        "Deactivated" => OrderStatus::Deactivated,
        _ => return None,
    })
}

/// Bybit's `orderType` ("Limit", else market).
pub fn order_type(s: &str) -> OrderType {
    if s == "Limit" {
        OrderType::Limit
    } else {
        OrderType::Market
    }
}

impl InstrumentInfo {
    /// The trading rules as the bus carries them; `None` for a symbol shardbot cannot
    /// carry (see `Symbol`).
    pub fn to_instrument(&self) -> Option<Instrument> {
        Some(Instrument {
            symbol: Symbol::new(&self.symbol).ok()?,
            tick_size: self.price_filter.tick_size,
            qty_step: self.lot_size_filter.qty_step,
            min_order_qty: self.lot_size_filter.min_order_qty,
            max_market_order_qty: self
                .lot_size_filter
                .max_mkt_order_qty
                .unwrap_or(self.lot_size_filter.max_order_qty),
            min_notional: self.lot_size_filter.min_notional_value.unwrap_or_default(),
            max_leverage: self.leverage_filter.max_leverage,
            funding_interval_min: self.funding_interval.unwrap_or(480),
        })
    }
}

impl Kline {
    /// The bus's bar of this REST kline row (history: never published live).
    pub fn to_bar(&self, symbol: &Symbol, interval: Interval) -> Bar {
        Bar {
            symbol: symbol.clone(),
            interval,
            open_time_ms: self.start_ms,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume: self.volume,
            turnover: self.turnover,
            published_ms: None,
            stamps: Default::default(),
        }
    }
}

impl Execution {
    /// The bus's fill of this execution; `None` for a symbol shardbot cannot carry (see
    /// `Symbol`).
    pub fn to_fill(&self) -> Option<Fill> {
        Some(Fill {
            exec_id: self.exec_id.clone(),
            order_id: self.order_id.clone(),
            order_link_id: self.order_link_id.clone(),
            symbol: Symbol::new(&self.symbol).ok()?,
            side: side(&self.side)?,
            exec_qty: self.exec_qty,
            exec_price: self.exec_price,
            exec_value: self.exec_value,
            exec_fee: self.exec_fee,
            fee_rate: self.fee_rate,
            is_maker: self.is_maker,
            closed_size: self.closed_size.unwrap_or_default(),
            exec_time_ms: self.exec_time,
            exec_type: self.exec_type.clone(),
            stop_order_type: match self.stop_order_type.as_str() {
                "" | "UNKNOWN" => None,
                t => Some(t.to_owned()),
            },
        })
    }
}

impl Order {
    /// The bus's order event of this exchange order; `None` for a symbol shardbot cannot
    /// carry or a status it does not know.
    pub fn to_order_event(&self) -> Option<OrderEvent> {
        Some(OrderEvent {
            order_id: self.order_id.clone(),
            order_link_id: self.order_link_id.clone(),
            intent_id: None,
            symbol: Symbol::new(&self.symbol).ok()?,
            side: side(&self.side)?,
            order_type: order_type(&self.order_type),
            status: order_status(&self.order_status)?,
            qty: self.qty,
            price: self.price.filter(|p| !p.is_zero()),
            avg_price: self.avg_price.filter(|p| !p.is_zero()),
            cum_exec_qty: self.cum_exec_qty,
            cum_exec_fee: self.cum_exec_fee.unwrap_or_default(),
            reduce_only: self.reduce_only,
            take_profit: self.take_profit.filter(|p| !p.is_zero()),
            stop_loss: self.stop_loss.filter(|p| !p.is_zero()),
            reject_reason: Some(self.reject_reason.clone())
                .filter(|r| !r.is_empty() && r != "EC_NoError"),
            stop_order_type: Some(self.stop_order_type.clone())
                .filter(|t| !t.is_empty() && t != "UNKNOWN"),
            updated_ms: self.created_time,
        })
    }
}

impl PositionInfo {
    /// The side of an open position; `None` for an empty one.
    pub fn position_side(&self) -> Option<Side> {
        side(&self.side).filter(|_| self.size > Decimal::ZERO)
    }

    /// The bus's position, read at `now_ms`, without an owner (the risk manager stamps
    /// it); `None` when empty or for a symbol shardbot cannot carry.
    pub fn to_position(&self, now_ms: TimestampMs) -> Option<Position> {
        Some(Position {
            symbol: Symbol::new(&self.symbol).ok()?,
            side: self.position_side()?,
            size: self.size,
            avg_price: self.avg_price.unwrap_or_default(),
            mark_price: self.mark_price,
            leverage: self.leverage.unwrap_or(Decimal::ONE),
            unrealised_pnl: self.unrealised_pnl.unwrap_or_default(),
            // "" (outside the price limits) or "0": none.
            liq_price: self.liq_price.filter(|d| !d.is_zero()),
            stop_loss: self.stop_loss.filter(|d| !d.is_zero()),
            take_profit: self.take_profit.filter(|d| !d.is_zero()),
            updated_ms: now_ms,
            strategy: None,
        })
    }

    /// What a flatten must close of this position; `None` when empty.
    pub fn to_open_position(&self) -> Option<OpenPosition> {
        Some(OpenPosition {
            symbol: Symbol::new(&self.symbol).ok()?,
            side: self.position_side()?,
            size: self.size,
        })
    }
}

impl ClosedPnl {
    /// The side of the position this record closed (the record's `side` is the closing
    /// order's).
    pub fn position_side(&self) -> Option<Side> {
        side(&self.side).map(Side::opposite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("Buy", Some(Side::Buy))]
    #[case("Sell", Some(Side::Sell))]
    #[case("", None)]
    #[case("None", None)]
    fn sides(#[case] s: &str, #[case] want: Option<Side>) {
        assert_eq!(side(s), want);
    }

    #[rstest]
    #[case("New", Some(OrderStatus::New))]
    #[case("PartiallyFilled", Some(OrderStatus::PartiallyFilled))]
    #[case("Filled", Some(OrderStatus::Filled))]
    #[case("Cancelled", Some(OrderStatus::Cancelled))]
    #[case("PartiallyFilledCanceled", Some(OrderStatus::PartiallyFilledCanceled))]
    #[case("Rejected", Some(OrderStatus::Rejected))]
    #[case("Untriggered", Some(OrderStatus::Untriggered))]
    #[case("Triggered", Some(OrderStatus::Triggered))]
    #[case("Deactivated", Some(OrderStatus::Deactivated))]
    #[case("Canceled", None)]
    fn order_statuses(#[case] s: &str, #[case] want: Option<OrderStatus>) {
        assert_eq!(order_status(s), want);
    }

    /// A flat position row (`/v5/position/list?symbol=` returns one) is no position.
    #[rstest]
    #[case("Buy", "0.5", Some(Side::Buy))]
    #[case("Sell", "2", Some(Side::Sell))]
    #[case("", "0", None)]
    fn positions(#[case] s: &str, #[case] size: &str, #[case] want: Option<Side>) {
        let p: PositionInfo = serde_json::from_value(serde_json::json!({
            "symbol": "BTCUSDT", "side": s, "size": size, "positionIdx": 0
        }))
        .unwrap();
        assert_eq!(p.position_side(), want);
        assert_eq!(
            p.to_position(7).map(|p| (p.side, p.updated_ms)),
            want.map(|s| (s, 7))
        );
        assert_eq!(p.to_open_position().map(|p| p.side), want);
    }
}

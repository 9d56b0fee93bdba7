//! Bus topics.
//!
//! A topic is short ASCII placed before the MessagePack body of every frame, because nng's
//! SUB filters on a raw byte prefix. Grammar (`.` separates fields, no field contains `.`):
//!
//! | topic | published by | message |
//! |---|---|---|
//! | `bar.<slot>.<SYMBOL>.<interval>` | market-data | [`Bar`](crate::Bar) |
//! | `tick.<slot>.<SYMBOL>` | market-data | [`Ticker`](crate::Ticker) |
//! | `order.<SYMBOL>` | order-router | [`OrderEvent`](crate::OrderEvent) |
//! | `fill.<SYMBOL>` | order-router | [`Fill`](crate::Fill) |
//! | `pos` | risk-manager | [`PositionSnapshot`](crate::PositionSnapshot) |
//! | `bal` | risk-manager | [`BalanceSnapshot`](crate::BalanceSnapshot) |
//! | `risk` | risk-manager | [`RiskStatus`](crate::RiskStatus) |
//! | `hb.<service>.<instance>` | every service | [`Heartbeat`](crate::Heartbeat) |
//!
//! The slot is decimal without padding and is always followed by `.`, so the prefix
//! `bar.7.` never matches `bar.70.…`. A full topic is terminated by [`TOPIC_END`] in the
//! frame, so an exact subscription (`Topic::exact_prefix`) never matches a longer symbol.

use std::fmt;

use crate::{
    slot::Slot,
    types::{Interval, Symbol},
};

/// Byte that ends the topic inside a frame. Cannot occur in a topic.
pub const TOPIC_END: u8 = b'|';

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Bar { symbol: Symbol, interval: Interval },
    Ticker { symbol: Symbol },
    Order { symbol: Symbol },
    Fill { symbol: Symbol },
    Positions,
    Balance,
    Risk,
    Heartbeat { service: String, instance: String },
}

/// Which kind of message a topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Bar,
    Ticker,
    Order,
    Fill,
    Positions,
    Balance,
    Risk,
    Heartbeat,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    #[error("unknown topic `{0}`")]
    Unknown(String),
    #[error("malformed topic `{0}`: {1}")]
    Malformed(String, &'static str),
    #[error("topic `{topic}` names slot {got} but {symbol} lives in slot {expected}")]
    WrongSlot {
        topic: String,
        symbol: String,
        got: String,
        expected: Slot,
    },
    #[error("invalid name `{0}` in a topic: expected 1 to 40 ASCII letters, digits, '-' or '_'")]
    InvalidName(String),
}

/// Checks a service or instance name for use inside a topic.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Topic {
    pub fn kind(&self) -> TopicKind {
        match self {
            Topic::Bar { .. } => TopicKind::Bar,
            Topic::Ticker { .. } => TopicKind::Ticker,
            Topic::Order { .. } => TopicKind::Order,
            Topic::Fill { .. } => TopicKind::Fill,
            Topic::Positions => TopicKind::Positions,
            Topic::Balance => TopicKind::Balance,
            Topic::Risk => TopicKind::Risk,
            Topic::Heartbeat { .. } => TopicKind::Heartbeat,
        }
    }

    /// Prefix that subscribes to exactly this topic (topic followed by [`TOPIC_END`]).
    pub fn exact_prefix(&self) -> Vec<u8> {
        let mut v = self.to_string().into_bytes();
        v.push(TOPIC_END);
        v
    }

    /// Prefix of every bar in `slot`, any symbol and interval.
    pub fn bar_slot_prefix(slot: Slot) -> String {
        format!("bar.{slot}.")
    }

    /// Prefix of every ticker in `slot`.
    pub fn ticker_slot_prefix(slot: Slot) -> String {
        format!("tick.{slot}.")
    }

    /// Prefix of every heartbeat.
    pub const HEARTBEAT_PREFIX: &'static str = "hb.";

    /// Parses a topic as it appears in a frame (without [`TOPIC_END`]).
    pub fn parse(s: &str) -> Result<Topic, TopicError> {
        let parts: Vec<&str> = s.split('.').collect();
        let malformed = |why| TopicError::Malformed(s.to_owned(), why);
        let symbol = |p: &str| Symbol::new(p).map_err(|e| TopicError::InvalidName(e.0));
        let slotted = |slot: &str, sym: &str| -> Result<Symbol, TopicError> {
            let symbol = symbol(sym)?;
            let expected = Slot::of(symbol.as_str());
            if slot != expected.to_string() {
                return Err(TopicError::WrongSlot {
                    topic: s.to_owned(),
                    symbol: symbol.to_string(),
                    got: slot.to_owned(),
                    expected,
                });
            }
            Ok(symbol)
        };
        match parts.as_slice() {
            ["bar", slot, sym, interval] => Ok(Topic::Bar {
                symbol: slotted(slot, sym)?,
                interval: interval.parse().map_err(|_| malformed("bad interval"))?,
            }),
            ["bar", ..] => Err(malformed("expected bar.<slot>.<SYMBOL>.<interval>")),
            ["tick", slot, sym] => Ok(Topic::Ticker {
                symbol: slotted(slot, sym)?,
            }),
            ["tick", ..] => Err(malformed("expected tick.<slot>.<SYMBOL>")),
            ["order", sym] => Ok(Topic::Order {
                symbol: symbol(sym)?,
            }),
            ["fill", sym] => Ok(Topic::Fill {
                symbol: symbol(sym)?,
            }),
            ["pos"] => Ok(Topic::Positions),
            ["bal"] => Ok(Topic::Balance),
            ["risk"] => Ok(Topic::Risk),
            ["hb", service, instance] => {
                for n in [service, instance] {
                    if !valid_name(n) {
                        return Err(TopicError::InvalidName((*n).to_owned()));
                    }
                }
                Ok(Topic::Heartbeat {
                    service: (*service).to_owned(),
                    instance: (*instance).to_owned(),
                })
            }
            ["hb", ..] => Err(malformed("expected hb.<service>.<instance>")),
            _ => Err(TopicError::Unknown(s.to_owned())),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Bar { symbol, interval } => {
                write!(f, "bar.{}.{symbol}.{interval}", Slot::of(symbol.as_str()))
            }
            Topic::Ticker { symbol } => write!(f, "tick.{}.{symbol}", Slot::of(symbol.as_str())),
            Topic::Order { symbol } => write!(f, "order.{symbol}"),
            Topic::Fill { symbol } => write!(f, "fill.{symbol}"),
            Topic::Positions => f.write_str("pos"),
            Topic::Balance => f.write_str("bal"),
            Topic::Risk => f.write_str("risk"),
            Topic::Heartbeat { service, instance } => write!(f, "hb.{service}.{instance}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    #[rstest]
    #[case(Topic::Bar { symbol: sym("BTCUSDT"), interval: Interval::M5 }, "bar.44.BTCUSDT.5")]
    #[case(Topic::Ticker { symbol: sym("ETHUSDT") }, "tick.240.ETHUSDT")]
    #[case(Topic::Order { symbol: sym("SOLUSDT") }, "order.SOLUSDT")]
    #[case(Topic::Fill { symbol: sym("SOLUSDT") }, "fill.SOLUSDT")]
    #[case(Topic::Positions, "pos")]
    #[case(Topic::Balance, "bal")]
    #[case(Topic::Risk, "risk")]
    #[case(Topic::Heartbeat { service: "strategy-worker".into(), instance: "0-4".into() }, "hb.strategy-worker.0-4")]
    fn renders_and_parses(#[case] topic: Topic, #[case] text: &str) {
        assert_eq!(topic.to_string(), text);
        assert_eq!(Topic::parse(text).unwrap(), topic);
    }

    #[rstest]
    #[case("bar.45.BTCUSDT.5")] // wrong slot
    #[case("bar.44.BTCUSDT")] // no interval
    #[case("bar.44.BTCUSDT.7")] // bad interval
    #[case("tick.44")]
    #[case("hb.only-service")]
    #[case("hb.a b.c")]
    #[case("nope")]
    #[case("")]
    fn refuses_malformed(#[case] text: &str) {
        assert!(Topic::parse(text).is_err(), "{text}");
    }

    #[test]
    fn slot_prefix_does_not_match_a_longer_slot() {
        let bar7 = Topic::bar_slot_prefix(Slot::new(7).unwrap());
        assert_eq!(bar7, "bar.7.");
        assert!(!"bar.70.X.5".starts_with(&bar7));
    }

    #[test]
    fn exact_prefix_does_not_match_a_longer_symbol() {
        let btc = Topic::Order { symbol: sym("BTC") }.exact_prefix();
        let frame_of_btcusdt = Topic::Order {
            symbol: sym("BTCUSDT"),
        }
        .exact_prefix();
        assert!(!frame_of_btcusdt.starts_with(&btc));
    }
}

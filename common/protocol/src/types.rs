//! Small value types shared by every message: symbols, kline intervals, sides.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC (Bybit's unit for every timestamp).
pub type TimestampMs = i64;

/// A Bybit symbol such as `BTCUSDT` or `1000PEPEUSDT`.
///
/// Validated on construction and on deserialisation because symbols become part of bus
/// topics: only ASCII letters, digits, `-` and `_`, 1 to 40 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Symbol(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid symbol `{0}`: expected 1 to 40 ASCII letters, digits, '-' or '_'")]
pub struct SymbolError(pub String);

impl Symbol {
    pub const MAX_LEN: usize = 40;

    pub fn new(s: impl Into<String>) -> Result<Symbol, SymbolError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Symbol(s))
        } else {
            Err(SymbolError(s))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Symbol {
    type Error = SymbolError;
    fn try_from(s: String) -> Result<Symbol, SymbolError> {
        Symbol::new(s)
    }
}

impl From<Symbol> for String {
    fn from(s: Symbol) -> String {
        s.0
    }
}

impl FromStr for Symbol {
    type Err = SymbolError;
    fn from_str(s: &str) -> Result<Symbol, SymbolError> {
        Symbol::new(s)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A map keyed by symbols is looked up by a `&str` (derived `Hash`/`Eq`/`Ord` are the
/// inner string's).
impl std::borrow::Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Kline interval, spelled as Bybit spells it (`1,3,5,15,30,60,120,240,360,720,D,W,M`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Interval {
    #[serde(rename = "1")]
    M1,
    #[serde(rename = "3")]
    M3,
    #[serde(rename = "5")]
    M5,
    #[serde(rename = "15")]
    M15,
    #[serde(rename = "30")]
    M30,
    #[serde(rename = "60")]
    H1,
    #[serde(rename = "120")]
    H2,
    #[serde(rename = "240")]
    H4,
    #[serde(rename = "360")]
    H6,
    #[serde(rename = "720")]
    H12,
    #[serde(rename = "D")]
    D1,
    #[serde(rename = "W")]
    W1,
    #[serde(rename = "M")]
    Month,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid kline interval `{0}`: expected one of 1,3,5,15,30,60,120,240,360,720,D,W,M")]
pub struct IntervalError(pub String);

impl Interval {
    pub const ALL: [Interval; 13] = [
        Interval::M1,
        Interval::M3,
        Interval::M5,
        Interval::M15,
        Interval::M30,
        Interval::H1,
        Interval::H2,
        Interval::H4,
        Interval::H6,
        Interval::H12,
        Interval::D1,
        Interval::W1,
        Interval::Month,
    ];

    /// Bybit's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::M1 => "1",
            Interval::M3 => "3",
            Interval::M5 => "5",
            Interval::M15 => "15",
            Interval::M30 => "30",
            Interval::H1 => "60",
            Interval::H2 => "120",
            Interval::H4 => "240",
            Interval::H6 => "360",
            Interval::H12 => "720",
            Interval::D1 => "D",
            Interval::W1 => "W",
            Interval::Month => "M",
        }
    }

    /// Fixed length of one bar in milliseconds; `None` for months, whose length varies.
    pub fn duration_ms(self) -> Option<i64> {
        const MIN: i64 = 60_000;
        Some(match self {
            Interval::M1 => MIN,
            Interval::M3 => 3 * MIN,
            Interval::M5 => 5 * MIN,
            Interval::M15 => 15 * MIN,
            Interval::M30 => 30 * MIN,
            Interval::H1 => 60 * MIN,
            Interval::H2 => 120 * MIN,
            Interval::H4 => 240 * MIN,
            Interval::H6 => 360 * MIN,
            Interval::H12 => 720 * MIN,
            Interval::D1 => 1440 * MIN,
            Interval::W1 => 7 * 1440 * MIN,
            Interval::Month => return None,
        })
    }
}

impl FromStr for Interval {
    type Err = IntervalError;
    fn from_str(s: &str) -> Result<Interval, IntervalError> {
        Interval::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| IntervalError(s.to_owned()))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Order or position side, as Bybit spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "Buy",
            Side::Sell => "Sell",
        }
    }
}

/// The spelling of [`Side::as_str`] ("Buy", "Sell"; Bybit's too), for stores that keep it.
impl std::str::FromStr for Side {
    type Err = String;

    fn from_str(s: &str) -> Result<Side, String> {
        match s {
            "Buy" => Ok(Side::Buy),
            "Sell" => Ok(Side::Sell),
            _ => Err(format!("{s:?} is not a side (Buy or Sell)")),
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A live bar's way to the workers, for the stage breakdown of the intents it produces.
/// `exchange_ms` is the exchange's own stamp on the push that closed the bar (the
/// exchange's clock); the others are the gateway's local clock, like every later stage
/// (worker decision, router receipt, approval, sent, acknowledged, filled), so the stages
/// after the exchange compare without any clock estimate (one host, or hosts kept in step
/// by NTP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarStamps {
    /// The exchange's stamp on the kline push with `confirm = true`.
    pub exchange_ms: Option<TimestampMs>,
    /// The gateway's receipt of that push.
    pub received_ms: Option<TimestampMs>,
    /// The gateway's publication of the bar on the bus.
    pub published_ms: Option<TimestampMs>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("BTCUSDT", true)]
    #[case("1000PEPEUSDT", true)]
    #[case("BTC-26DEC25", true)]
    #[case("", false)]
    #[case("BTC.USDT", false)]
    #[case("BTC|USDT", false)]
    #[case("BTC USDT", false)]
    #[case("ÄBC", false)]
    fn symbol_validation(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(Symbol::new(s).is_ok(), ok, "{s}");
    }

    #[test]
    fn symbol_too_long_is_refused() {
        assert!(Symbol::new("A".repeat(40)).is_ok());
        assert!(Symbol::new("A".repeat(41)).is_err());
    }

    #[test]
    fn intervals_round_trip_through_bybit_spelling() {
        for i in Interval::ALL {
            assert_eq!(i.as_str().parse::<Interval>(), Ok(i));
            let json = serde_json_like(i);
            assert_eq!(json, i.as_str());
        }
        assert!("2".parse::<Interval>().is_err());
        assert_eq!(Interval::M5.duration_ms(), Some(300_000));
        assert_eq!(Interval::D1.duration_ms(), Some(86_400_000));
        assert_eq!(Interval::Month.duration_ms(), None);
    }

    fn serde_json_like(i: Interval) -> String {
        // MessagePack of a unit variant is its name as a string: check the renamed spelling.
        let bytes = rmp_serde::to_vec(&i).unwrap();
        rmp_serde::from_slice::<String>(&bytes).unwrap()
    }

    #[rstest]
    #[case("Buy", Some(Side::Buy))]
    #[case("Sell", Some(Side::Sell))]
    #[case("sell", None)]
    #[case("", None)]
    fn a_side_reads_back_its_own_spelling(#[case] s: &str, #[case] want: Option<Side>) {
        assert_eq!(s.parse::<Side>().ok(), want);
        if let Some(side) = want {
            assert_eq!(side.as_str(), s);
        }
    }
}

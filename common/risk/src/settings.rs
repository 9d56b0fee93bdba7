//! `trading_settings.json`: how much to trade and the limits that hold.
//!
//! ```json
//! {
//!   "simulated_balance": 1000,
//!   "sizing": { "percent": 10 },
//!   "leverage": 2,
//!   "daily_loss_limit": 50,
//!   "max_open_positions": 10,
//!   "max_margin_use_pct": 50,
//!   "cooldown_after_stop_min": 30
//! }
//! ```
//!
//! Amounts are USDT of the simulated balance; numbers may be written as JSON numbers or
//! strings (strings keep every digit). Sizing is what one entry costs: `{"percent": p}` of
//! the simulated balance or `{"fixed": usdt}`, the position's margin plus its taker fee
//! (`fee_rate`, optional, default 0.00055: Bybit's base taker rate). The notional is
//! therefore `sizing × leverage / (1 + fee_rate × leverage)`: an all-in entry (100 %, no
//! leverage) leaves exactly its fee in the wallet, as Bybit's order cost requires and as
//! other backtesters (backtesting.py) size.

use std::{path::Path, str::FromStr};

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

/// Margin per trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Sizing {
    /// Percent of the simulated balance.
    #[serde(deserialize_with = "decimal")]
    Percent(Decimal),
    /// USDT.
    #[serde(deserialize_with = "decimal")]
    Fixed(Decimal),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradingSettings {
    /// The balance the account trades as if it had (the exchange's is offset to it).
    #[serde(deserialize_with = "decimal")]
    pub simulated_balance: Decimal,
    pub sizing: Sizing,
    #[serde(deserialize_with = "decimal")]
    pub leverage: Decimal,
    /// Stop opening positions when today's realised + unrealised loss reaches this (USDT).
    #[serde(deserialize_with = "decimal")]
    pub daily_loss_limit: Decimal,
    pub max_open_positions: u32,
    /// Margin of the open positions, in percent of simulated equity.
    #[serde(deserialize_with = "decimal")]
    pub max_margin_use_pct: Decimal,
    /// No new entry on a symbol this long after its stop-loss closed a position.
    pub cooldown_after_stop_min: u32,
    /// The taker fee rate an entry's sizing reserves for its own fee (0.00055 = 0.055 %).
    #[serde(default = "default_fee_rate", deserialize_with = "decimal")]
    pub fee_rate: Decimal,
}

/// Bybit's base taker fee for USDT perpetuals (reference/bybit-v5.md), 0.055 %.
pub fn default_fee_rate() -> Decimal {
    Decimal::new(55, 5)
}

fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    let text = match &v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(D::Error::custom(format!("expected a number, got {other}"))),
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|e| D::Error::custom(format!("`{text}` is not a decimal number: {e}")))
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid trading settings: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {field} = {value}: {why}")]
    Invalid {
        path: String,
        field: &'static str,
        value: String,
        why: &'static str,
    },
}

impl TradingSettings {
    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<TradingSettings, SettingsError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: p.clone(),
            source,
        })?;
        let s: TradingSettings =
            serde_json::from_str(&text).map_err(|source| SettingsError::Parse {
                path: p.clone(),
                source,
            })?;
        s.validate(&p)?;
        Ok(s)
    }

    /// Checks every field's range; `path` names the source in the error.
    pub fn validate(&self, path: &str) -> Result<(), SettingsError> {
        let bad = |field: &'static str, value: String, why: &'static str| {
            Err(SettingsError::Invalid {
                path: path.to_owned(),
                field,
                value,
                why,
            })
        };
        let hundred = Decimal::ONE_HUNDRED;
        if self.simulated_balance <= Decimal::ZERO {
            return bad(
                "simulated_balance",
                self.simulated_balance.to_string(),
                "must be greater than 0",
            );
        }
        match self.sizing {
            Sizing::Percent(p) if p <= Decimal::ZERO || p > hundred => {
                return bad("sizing.percent", p.to_string(), "must be in (0, 100]");
            }
            Sizing::Fixed(f) if f <= Decimal::ZERO => {
                return bad("sizing.fixed", f.to_string(), "must be greater than 0 USDT");
            }
            _ => {}
        }
        if self.leverage < Decimal::ONE || self.leverage > hundred {
            return bad("leverage", self.leverage.to_string(), "must be in [1, 100]");
        }
        if self.daily_loss_limit <= Decimal::ZERO {
            return bad(
                "daily_loss_limit",
                self.daily_loss_limit.to_string(),
                "must be greater than 0 USDT",
            );
        }
        if self.max_open_positions == 0 {
            return bad("max_open_positions", "0".into(), "must be at least 1");
        }
        if self.fee_rate < Decimal::ZERO || self.fee_rate >= Decimal::new(1, 1) {
            return bad(
                "fee_rate",
                self.fee_rate.to_string(),
                "must be in [0, 0.1) (0.00055 is 0.055 %)",
            );
        }
        if self.max_margin_use_pct <= Decimal::ZERO || self.max_margin_use_pct > hundred {
            return bad(
                "max_margin_use_pct",
                self.max_margin_use_pct.to_string(),
                "must be in (0, 100]",
            );
        }
        Ok(())
    }

    /// Margin for one new position, in USDT.
    /// The margin one entry puts up; None when the product leaves `Decimal`'s range.
    pub fn margin_per_trade(&self, simulated_balance: Decimal) -> Option<Decimal> {
        match self.sizing {
            Sizing::Percent(p) => simulated_balance.checked_mul(p).map(hundredth),
            Sizing::Fixed(f) => Some(f),
        }
    }
}

/// `x / 100`, the very `Decimal` (value and scale) the division gives, without its long
/// division (a third of a backtest entry's judgement). A quotient by 100 is exact two
/// decimals further; rust_decimal's division then gives `x`'s own decimals when the
/// mantissa is a multiple of 100 and those two more otherwise (10 / 100 is 0.10), as the
/// property test below holds. From 20 decimals on the division drops a trailing zero of
/// its own (10·10^-20 / 100 is 10^-21), and mantissas near 96 bits can come out at another
/// scale: those, mantissas beyond 64 bits and zero take the division itself.
pub(crate) fn hundredth(x: Decimal) -> Decimal {
    let scale = x.scale();
    if scale <= 19
        && let Ok(m) = i64::try_from(x.mantissa())
        && m != 0
    {
        return if m % 100 == 0 {
            Decimal::new(m / 100, scale)
        } else {
            Decimal::new(m, scale + 2)
        };
    }
    x / Decimal::ONE_HUNDRED
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    proptest::proptest! {
        /// The same decimal as the division, scale included, for every mantissa and scale
        /// (zeros, trailing zeros, negatives, the widest scales, mantissas beyond 64 bits).
        #[test]
        fn hundredth_is_the_division(
            m in proptest::prop_oneof![
                -1_000_000i128..1_000_000,
                proptest::strategy::Strategy::prop_map(-100_000i128..100_000, |m| m * 100),
                proptest::strategy::Strategy::prop_map(-100_000i128..100_000, |m| m * 10),
                -(1i128 << 96) + 1..(1i128 << 96),
            ],
            scale in 0u32..=28,
        ) {
            let x = Decimal::from_i128_with_scale(m, scale);
            let (got, want) = (hundredth(x), x / Decimal::ONE_HUNDRED);
            proptest::prop_assert_eq!((got, got.scale()), (want, want.scale()));
        }
    }
    use rstest::rstest;
    use rust_decimal_macros::dec;

    const GOOD: &str = r#"{"simulated_balance": 1000, "sizing": {"percent": 10}, "leverage": "2",
        "daily_loss_limit": 50.5, "max_open_positions": 10, "max_margin_use_pct": 50,
        "cooldown_after_stop_min": 30}"#;

    fn load(text: &str) -> Result<TradingSettings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("trading_settings.json");
        std::fs::write(&p, text).unwrap();
        TradingSettings::load(&p)
    }

    #[test]
    fn reads_numbers_and_strings_exactly() {
        let s = load(GOOD).unwrap();
        assert_eq!(s.simulated_balance, dec!(1000));
        assert_eq!(s.daily_loss_limit, dec!(50.5));
        assert_eq!(s.sizing, Sizing::Percent(dec!(10)));
        assert_eq!(s.margin_per_trade(dec!(1234)), Some(dec!(123.4)));
    }

    #[rstest]
    #[case(
        "\"simulated_balance\": 1000",
        "\"simulated_balance\": 0",
        "simulated_balance = 0"
    )]
    #[case("{\"percent\": 10}", "{\"percent\": 150}", "sizing.percent = 150")]
    #[case("{\"percent\": 10}", "{\"fixed\": -5}", "sizing.fixed = -5")]
    #[case("\"leverage\": \"2\"", "\"leverage\": \"0.5\"", "leverage = 0.5")]
    #[case(
        "\"max_open_positions\": 10",
        "\"max_open_positions\": 0",
        "max_open_positions = 0"
    )]
    #[case(
        "\"max_margin_use_pct\": 50",
        "\"max_margin_use_pct\": 101",
        "max_margin_use_pct = 101"
    )]
    #[case(
        "\"daily_loss_limit\": 50.5",
        "\"daily_loss_limit\": \"abc\"",
        "`abc` is not a decimal"
    )]
    #[case(
        "\"cooldown_after_stop_min\": 30",
        "\"cooldown_after_stop_min\": 30, \"extra\": 1",
        "unknown field `extra`"
    )]
    fn bad_values_are_refused_naming_the_field(
        #[case] from: &str,
        #[case] to: &str,
        #[case] says: &str,
    ) {
        assert!(GOOD.contains(from), "{from}");
        let e = load(&GOOD.replace(from, to)).unwrap_err().to_string();
        assert!(e.contains("trading_settings.json"), "{e}");
        assert!(e.contains(says), "{e}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let e = TradingSettings::load(Path::new("/nonexistent/trading_settings.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/trading_settings.json"), "{e}");
    }
}

//! Deserialisers for Bybit's number encodings.
//!
//! Bybit sends decimals and most integers as strings (`"0.001"`, `"1672364262444"`), uses
//! `""` for "no value" (e.g. `liqPrice`, `avgPrice` of an unfilled order), and a few
//! client fixtures carry `null` or bare numbers. Decimals are parsed from the string itself,
//! never through `f64`, so nothing is lost.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, de::Error};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw<'a> {
    Str(std::borrow::Cow<'a, str>),
    Int(i64),
    UInt(u64),
    Float(f64),
}

fn parse_decimal<E: Error>(raw: Raw<'_>) -> Result<Option<Decimal>, E> {
    match raw {
        Raw::Str(s) if s.is_empty() => Ok(None),
        Raw::Str(s) => Decimal::from_str(&s)
            .or_else(|_| Decimal::from_scientific(&s))
            .map(Some)
            .map_err(|e| E::custom(format!("invalid decimal `{s}`: {e}"))),
        Raw::Int(i) => Ok(Some(Decimal::from(i))),
        Raw::UInt(u) => Ok(Some(Decimal::from(u))),
        // Only hand-made fixtures send bare floats; take their shortest decimal spelling.
        Raw::Float(f) => Decimal::from_str(&f.to_string())
            .map(Some)
            .map_err(|e| E::custom(format!("invalid decimal {f}: {e}"))),
    }
}

/// A required decimal: a non-empty string or a number.
pub fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    parse_decimal(Raw::deserialize(d)?)?.ok_or_else(|| D::Error::custom("empty decimal"))
}

/// An optional decimal: missing, `null` and `""` are `None`.
pub fn opt_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(raw) => parse_decimal(raw),
    }
}

fn parse_int<E: Error>(raw: Raw<'_>) -> Result<Option<i64>, E> {
    match raw {
        Raw::Str(s) if s.is_empty() => Ok(None),
        Raw::Str(s) => s
            .parse()
            .map(Some)
            .map_err(|e| E::custom(format!("invalid integer `{s}`: {e}"))),
        Raw::Int(i) => Ok(Some(i)),
        Raw::UInt(u) => i64::try_from(u)
            .map(Some)
            .map_err(|_| E::custom("integer too large")),
        Raw::Float(f) => Err(E::custom(format!("expected an integer, got {f}"))),
    }
}

/// A required integer (timestamps in ms, counts), string or number.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    parse_int(Raw::deserialize(d)?)?.ok_or_else(|| D::Error::custom("empty integer"))
}

/// An optional integer: missing, `null` and `""` are `None`.
pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(raw) => parse_int(raw),
    }
}

/// A string that may be `null` (hand-edited fixtures): `null` becomes `""`.
pub fn string_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct T {
        #[serde(deserialize_with = "decimal")]
        a: Decimal,
        #[serde(default, deserialize_with = "opt_decimal")]
        b: Option<Decimal>,
        #[serde(deserialize_with = "int")]
        t: i64,
    }

    #[test]
    fn decimals_keep_every_digit() {
        let v: T = serde_json::from_str(
            r#"{"a":"0.00000001","b":"123456789.123456789","t":"1672364262444"}"#,
        )
        .unwrap();
        assert_eq!(v.a, dec!(0.00000001));
        assert_eq!(v.b.unwrap().to_string(), "123456789.123456789");
        assert_eq!(v.t, 1_672_364_262_444);
    }

    #[test]
    fn empty_null_and_missing_are_none_for_optionals() {
        for json in [
            r#"{"a":"1","b":"","t":1}"#,
            r#"{"a":"1","b":null,"t":1}"#,
            r#"{"a":"1","t":1}"#,
        ] {
            let v: T = serde_json::from_str(json).unwrap();
            assert_eq!(v.b, None, "{json}");
        }
    }

    #[test]
    fn a_required_value_that_is_empty_or_garbage_is_an_error() {
        for json in [
            r#"{"a":"","t":1}"#,
            r#"{"a":"x1","t":1}"#,
            r#"{"a":"1","t":"soon"}"#,
            r#"{"t":1}"#,
        ] {
            assert!(serde_json::from_str::<T>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn numbers_are_accepted_too() {
        let v: T = serde_json::from_str(r#"{"a":5,"b":0.25,"t":1672364262444}"#).unwrap();
        assert_eq!(
            (v.a, v.b, v.t),
            (dec!(5), Some(dec!(0.25)), 1_672_364_262_444)
        );
    }
}

//! Parameter schemas and values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A parameter value as stored in `optimized_parameters.json` and passed by `--param k=v`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// What a parameter may be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Kind {
    Int { min: i64, max: i64, default: i64 },
    Float { min: f64, max: f64, default: f64 },
    Bool { default: bool },
}

/// One parameter of a strategy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamError {
    #[error("{strategy} has no parameter `{name}` (it has: {known})")]
    Unknown {
        strategy: &'static str,
        name: String,
        known: String,
    },
    #[error("{strategy}.{name} = {value}: {why}")]
    Invalid {
        strategy: &'static str,
        name: &'static str,
        value: String,
        why: String,
    },
}

/// Named values, validated against a schema; missing ones take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    pub fn new() -> Params {
        Params::default()
    }

    pub fn with(mut self, name: &str, v: Value) -> Params {
        self.0.insert(name.to_owned(), v);
        self
    }

    /// Checks every value against `schema`: names, types, ranges.
    pub fn validate(&self, strategy: &'static str, schema: &[Spec]) -> Result<(), ParamError> {
        for (name, v) in &self.0 {
            let Some(spec) = schema.iter().find(|s| s.name == name) else {
                return Err(ParamError::Unknown {
                    strategy,
                    name: name.clone(),
                    known: schema.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
                });
            };
            let invalid = |why: String| ParamError::Invalid {
                strategy,
                name: spec.name,
                value: format!("{v:?}"),
                why,
            };
            match (spec.kind, v) {
                (Kind::Int { min, max, .. }, Value::Int(i)) if *i < min || *i > max => {
                    return Err(invalid(format!("must be between {min} and {max}")));
                }
                (Kind::Float { min, max, .. }, Value::Float(f)) if !(min..=max).contains(f) => {
                    return Err(invalid(format!("must be between {min} and {max}")));
                }
                (Kind::Float { min, max, .. }, Value::Int(i))
                    if !(min..=max).contains(&(*i as f64)) =>
                {
                    return Err(invalid(format!("must be between {min} and {max}")));
                }
                (Kind::Int { .. }, Value::Int(_))
                | (Kind::Float { .. }, Value::Float(_) | Value::Int(_))
                | (Kind::Bool { .. }, Value::Bool(_)) => {}
                (Kind::Int { .. }, _) => return Err(invalid("must be a whole number".into())),
                (Kind::Float { .. }, _) => return Err(invalid("must be a number".into())),
                (Kind::Bool { .. }, _) => return Err(invalid("must be true or false".into())),
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Value> {
        self.0.get(name).copied()
    }

    /// An integer parameter, or its default.
    pub fn int(&self, schema: &[Spec], name: &str) -> i64 {
        match (
            self.get(name),
            schema.iter().find(|s| s.name == name).map(|s| s.kind),
        ) {
            (Some(Value::Int(i)), _) => i,
            (_, Some(Kind::Int { default, .. })) => default,
            _ => 0,
        }
    }

    /// A real parameter, or its default.
    pub fn float(&self, schema: &[Spec], name: &str) -> f64 {
        match (
            self.get(name),
            schema.iter().find(|s| s.name == name).map(|s| s.kind),
        ) {
            (Some(Value::Float(f)), _) => f,
            (Some(Value::Int(i)), _) => i as f64,
            (_, Some(Kind::Float { default, .. })) => default,
            _ => 0.0,
        }
    }

    /// A boolean parameter, or its default.
    pub fn bool(&self, schema: &[Spec], name: &str) -> bool {
        match (
            self.get(name),
            schema.iter().find(|s| s.name == name).map(|s| s.kind),
        ) {
            (Some(Value::Bool(b)), _) => b,
            (_, Some(Kind::Bool { default })) => default,
            _ => false,
        }
    }

    /// Parses `name=value` as given on a command line, typed by the schema.
    pub fn parse_assignment(
        strategy: &'static str,
        schema: &[Spec],
        text: &str,
    ) -> Result<(String, Value), ParamError> {
        let (name, raw) = text.split_once('=').unwrap_or((text, ""));
        let Some(spec) = schema.iter().find(|s| s.name == name.trim()) else {
            return Err(ParamError::Unknown {
                strategy,
                name: name.trim().to_owned(),
                known: schema.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
            });
        };
        let raw = raw.trim();
        let invalid = |why: &str| ParamError::Invalid {
            strategy,
            name: spec.name,
            value: raw.to_owned(),
            why: why.to_owned(),
        };
        let v = match spec.kind {
            Kind::Int { .. } => {
                Value::Int(raw.parse().map_err(|_| invalid("must be a whole number"))?)
            }
            Kind::Float { .. } => {
                Value::Float(raw.parse().map_err(|_| invalid("must be a number"))?)
            }
            Kind::Bool { .. } => {
                Value::Bool(raw.parse().map_err(|_| invalid("must be true or false"))?)
            }
        };
        Ok((spec.name.to_owned(), v))
    }
}

//! `optimized_parameters.json`: the parameters every mode loads the same way.
//!
//! ```json
//! { "trend_following": {
//!     "optimized_at": "2026-11-20T12:00:00Z", "objective": "sharpe",
//!     "data_range": { "interval": "5", "from_ms": 1758672000000, "to_ms": 1784652900000 },
//!     "metrics": { "sharpe": 1.4, "trades": 212 },
//!     "params": { "fast": 8, "slow": 34 },
//!     "symbols": { "BTCUSDT": { "fast": 12, "slow": 40 } } } }
//! ```
//!
//! A strategy or symbol that is not in the file runs on its defaults, and says so.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::{ParamError, Params, schema};

/// One strategy's optimization record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizedStrategy {
    pub optimized_at: String,
    pub objective: String,
    #[serde(default)]
    pub data_range: serde_json::Value,
    #[serde(default)]
    pub metrics: serde_json::Value,
    pub params: Params,
    /// Per-symbol parameters, overriding `params` for that symbol.
    #[serde(default)]
    pub symbols: BTreeMap<String, Params>,
    /// The walk-forward these parameters passed, when they came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk_forward: Option<WalkForwardRecord>,
}

/// The record of a walk-forward (`shardbot optimize --walk-forward`): how the data was
/// cut, each window's winner and out-of-sample figures, the stitched out-of-sample
/// figures, how stable the winners were, and the thresholds passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalkForwardRecord {
    /// `rolling` or `anchored`.
    pub mode: String,
    /// Lengths as given (`500 bars`, `90 days`).
    pub train: String,
    pub test: String,
    pub step: String,
    /// Per window: its dates, winner, train score and out-of-sample figures.
    pub windows: Vec<serde_json::Value>,
    /// The test parts stitched into one curve: `trades`, `total_return_pct`, `sharpe`,
    /// `max_drawdown_pct`, ...
    pub out_of_sample: serde_json::Value,
    /// Per parameter: each window's winner, their mean, deviation and spread.
    #[serde(default)]
    pub stability: serde_json::Value,
    /// The thresholds the out-of-sample figures passed (`sharpe >= 0.5`); empty when none
    /// was set.
    #[serde(default)]
    pub passed: Vec<String>,
}

impl WalkForwardRecord {
    /// One line: the windows and the out-of-sample return and Sharpe.
    pub fn summary(&self) -> String {
        let oos = &self.out_of_sample;
        let ret = oos["total_return_pct"]
            .as_f64()
            .map_or("-".into(), |r| format!("{r:+.2} %"));
        let sharpe = oos["sharpe"]
            .as_f64()
            .map_or("-".into(), |s| format!("{s:.2}"));
        format!(
            "walk-forward {} ({} windows), out of sample {ret}, Sharpe {sharpe}",
            self.mode,
            self.windows.len()
        )
    }
}

/// Whether a strategy runs on optimized parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamStatus {
    Optimized {
        at: String,
        objective: String,
        per_symbol: bool,
        /// [`WalkForwardRecord::summary`], when the parameters passed one.
        walk_forward: Option<String>,
    },
    Defaults,
}

impl std::fmt::Display for ParamStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamStatus::Optimized {
                at,
                objective,
                per_symbol,
                walk_forward,
            } => {
                write!(
                    f,
                    "optimized ✓ {at} ({objective}{}{})",
                    if *per_symbol { ", per symbol" } else { "" },
                    walk_forward
                        .as_ref()
                        .map_or(String::new(), |w| format!("; {w}"))
                )
            }
            ParamStatus::Defaults => f.write_str("defaults (not optimized)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid parameters file: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: unknown strategy `{name}` (built in: trend_following, mean_reversion)")]
    UnknownStrategy { path: String, name: String },
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        #[source]
        source: ParamError,
    },
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OptimizedFile(pub BTreeMap<String, OptimizedStrategy>);

impl OptimizedFile {
    /// Reads and validates the file; a missing file means every strategy runs on defaults.
    pub fn load(path: &Path) -> Result<OptimizedFile, ParamsError> {
        let p = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(OptimizedFile::default());
            }
            Err(source) => return Err(ParamsError::Read { path: p, source }),
        };
        OptimizedFile::parse(&text, &p)
    }

    /// Parses and validates the file's text; `origin` names where it came from in errors.
    fn parse(text: &str, origin: &str) -> Result<OptimizedFile, ParamsError> {
        let file: OptimizedFile =
            serde_json::from_str(text).map_err(|source| ParamsError::Parse {
                path: origin.to_owned(),
                source,
            })?;
        file.validate(origin)?;
        Ok(file)
    }

    /// Every strategy is a built-in one and every parameter set fits its schema; `origin`
    /// names where the file came from in errors (a path, "the journal's parameters").
    pub fn validate(&self, origin: &str) -> Result<(), ParamsError> {
        let p = origin.to_owned();
        for (name, entry) in &self.0 {
            let (Some(schema), Some(static_name)) =
                (schema(name), crate::BUILT_IN.iter().find(|n| *n == name))
            else {
                return Err(ParamsError::UnknownStrategy {
                    path: p,
                    name: name.clone(),
                });
            };
            for params in std::iter::once(&entry.params).chain(entry.symbols.values()) {
                params
                    .validate(static_name, schema)
                    .map_err(|source| ParamsError::Invalid {
                        path: p.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Writes the file (pretty JSON) through a temporary file renamed over it: a reader
    /// sees the old file or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), ParamsError> {
        let p = path.display().to_string();
        let text = serde_json::to_string_pretty(self).map_err(|source| ParamsError::Parse {
            path: p.clone(),
            source,
        })? + "\n";
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| ParamsError::Write { path: p, source })
    }

    /// The parameters `strategy` runs with on `symbol`, and where they come from.
    pub fn params_for(&self, strategy: &str, symbol: &str) -> (Params, ParamStatus) {
        match self.0.get(strategy) {
            None => (Params::new(), ParamStatus::Defaults),
            Some(e) => {
                let per_symbol = e.symbols.get(symbol);
                let mut params = e.params.clone();
                if let Some(over) = per_symbol {
                    params.0.extend(over.0.iter().map(|(k, v)| (k.clone(), *v)));
                }
                let status = ParamStatus::Optimized {
                    at: e.optimized_at.clone(),
                    objective: e.objective.clone(),
                    per_symbol: per_symbol.is_some(),
                    walk_forward: e.walk_forward.as_ref().map(WalkForwardRecord::summary),
                };
                (params, status)
            }
        }
    }
}

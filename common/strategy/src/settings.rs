//! The `[strategy]` configuration section: what the workers run, read by the gateway too
//! (it backfills the history the strategies need).

use std::path::PathBuf;

use serde::Deserialize;

use crate::{BuildError, OptimizedFile, ParamStatus, ParamsError, Strategy, build};

/// `[strategy]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySettings {
    /// Strategies every worker runs on every symbol of its shard.
    pub enabled: Vec<String>,
    /// Kline interval they trade, Bybit's spelling ("1", "5", "60", "D", ...).
    pub interval: String,
    /// `optimized_parameters.json`; a missing file means defaults ("not optimized").
    pub parameters_file: PathBuf,
    /// Closed bars a worker warms each symbol on, and the gateway backfills and keeps.
    /// More than the strategies' own warm-up so that recursive indicators (EMA, RSI) have
    /// forgotten their seed: a restarted worker then computes exactly what a running one
    /// does.
    pub history_bars: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StrategySettingsError {
    #[error("strategy.enabled is empty: name at least one of trend_following, mean_reversion")]
    NoneEnabled,
    #[error("strategy.enabled: {0}")]
    Build(#[from] BuildError),
    #[error(
        "strategy.history_bars = {have} is less than {strategy} needs to warm up ({need} bars)"
    )]
    TooFewBars {
        have: usize,
        need: usize,
        strategy: String,
    },
    #[error(transparent)]
    Params(#[from] ParamsError),
}

impl StrategySettings {
    /// Loads the parameters file and checks that every enabled strategy builds with the
    /// default and every optimized parameter set, and warms up within `history_bars`.
    pub fn load(&self) -> Result<Roster, StrategySettingsError> {
        if self.enabled.is_empty() {
            return Err(StrategySettingsError::NoneEnabled);
        }
        let file = OptimizedFile::load(&self.parameters_file)?;
        let roster = Roster {
            names: self.enabled.clone(),
            file,
        };
        let mut symbols: Vec<&str> = vec![""];
        for e in roster.file.0.values() {
            symbols.extend(e.symbols.keys().map(String::as_str));
        }
        for name in &self.enabled {
            for sym in &symbols {
                let (params, _) = roster.file.params_for(name, sym);
                let s = build(name, &params)?;
                if s.warmup_bars() > self.history_bars {
                    return Err(StrategySettingsError::TooFewBars {
                        have: self.history_bars,
                        need: s.warmup_bars(),
                        strategy: name.clone(),
                    });
                }
            }
        }
        Ok(roster)
    }
}

/// One strategy built for one symbol, and where its parameters come from.
pub type Instance = (Box<dyn Strategy>, ParamStatus);

/// The enabled strategies with their parameters, ready to instantiate per symbol.
#[derive(Debug, Clone)]
pub struct Roster {
    names: Vec<String>,
    file: OptimizedFile,
}

impl Roster {
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Fresh instances of every enabled strategy for `symbol`, with where their
    /// parameters come from. Checked by [`StrategySettings::load`], so this cannot fail
    /// for a name that loaded.
    pub fn instantiate(&self, symbol: &str) -> Result<Vec<Instance>, BuildError> {
        self.names
            .iter()
            .map(|name| {
                let (params, status) = self.file.params_for(name, symbol);
                Ok((build(name, &params)?, status))
            })
            .collect()
    }

    /// How each strategy's parameters are set (for symbols without their own).
    pub fn status(&self) -> Vec<(String, ParamStatus)> {
        self.names
            .iter()
            .map(|n| (n.clone(), self.file.params_for(n, "").1))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(enabled: &[&str], history_bars: usize, file: PathBuf) -> StrategySettings {
        StrategySettings {
            enabled: enabled.iter().map(|s| s.to_string()).collect(),
            interval: "5".into(),
            parameters_file: file,
            history_bars,
        }
    }

    #[test]
    fn loads_defaults_without_a_file_and_reports_bad_choices() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("optimized_parameters.json");
        let r = settings(&["trend_following", "mean_reversion"], 500, missing.clone())
            .load()
            .unwrap();
        assert_eq!(r.instantiate("BTCUSDT").unwrap().len(), 2);
        assert!(r.status().iter().all(|(_, s)| *s == ParamStatus::Defaults));

        let e = settings(&[], 500, missing.clone()).load().unwrap_err();
        assert!(e.to_string().contains("strategy.enabled is empty"), "{e}");
        let e = settings(&["nope"], 500, missing.clone())
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("unknown strategy `nope`"), "{e}");
        let e = settings(&["trend_following"], 5, missing)
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("history_bars = 5"), "{e}");
    }

    #[test]
    fn per_symbol_parameters_are_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimized_parameters.json");
        std::fs::write(
            &path,
            r#"{"trend_following":{"optimized_at":"2026-11-20","objective":"sharpe",
                "params":{"fast":5,"slow":20},"symbols":{"BTCUSDT":{"slow":300}}}}"#,
        )
        .unwrap();
        let e = settings(&["trend_following"], 100, path.clone())
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("needs to warm up (301 bars)"), "{e}");
        let r = settings(&["trend_following"], 400, path).load().unwrap();
        let btc = r.instantiate("BTCUSDT").unwrap();
        assert_eq!(btc[0].0.warmup_bars(), 301);
        assert!(matches!(
            btc[0].1,
            ParamStatus::Optimized {
                per_symbol: true,
                ..
            }
        ));
    }
}

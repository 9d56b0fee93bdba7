//! The `[strategy]` configuration section: what the workers run, read by the gateway too
//! (it backfills the history the strategies need).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

    /// The strategies and parameters this roster trades with, as a worker announces them
    /// (the journal keeps them, for `shardbot drift`).
    pub fn in_force(&self) -> ParametersInForce {
        ParametersInForce {
            strategies: self.names.clone(),
            parameters: self.file.clone(),
        }
    }

    /// How each strategy's parameters are set (for symbols without their own).
    pub fn status(&self) -> Vec<(String, ParamStatus)> {
        self.names
            .iter()
            .map(|n| (n.clone(), self.file.params_for(n, "").1))
            .collect()
    }
}

/// What a worker trades with: the enabled strategies and the parameters file it loaded at
/// its start. Workers announce it to the router, which journals it with the time from
/// which it is in force; `shardbot drift` backtests a past window with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParametersInForce {
    pub strategies: Vec<String>,
    pub parameters: OptimizedFile,
}

impl ParametersInForce {
    /// Its JSON: the same set always gives the same text (the file's maps are ordered), so
    /// the journal recognises a set it holds already.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Strings, numbers and maps with string keys only: serialising cannot fail.
            unreachable!("parameters in force do not serialise: {e}")
        })
    }

    /// Parses and validates a set (as [`OptimizedFile::load`] validates the file); `origin`
    /// names where it came from in errors.
    pub fn parse(json: &str, origin: &str) -> Result<ParametersInForce, ParamsError> {
        let set: ParametersInForce =
            serde_json::from_str(json).map_err(|source| ParamsError::Parse {
                path: origin.to_owned(),
                source,
            })?;
        set.parameters.validate(origin)?;
        Ok(set)
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

    #[test]
    fn the_parameters_in_force_come_back_from_their_json_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimized_parameters.json");
        std::fs::write(
            &path,
            r#"{"trend_following":{"optimized_at":"2026-11-20","objective":"sharpe",
                "params":{"fast":5,"slow":20},"symbols":{"BTCUSDT":{"slow":30}}}}"#,
        )
        .unwrap();
        let r = settings(&["trend_following", "mean_reversion"], 400, path)
            .load()
            .unwrap();
        let set = r.in_force();
        assert_eq!(set.strategies, ["trend_following", "mean_reversion"]);
        let json = set.to_json();
        // The same set gives the same text (the journal recognises it by its text).
        assert_eq!(r.in_force().to_json(), json);
        let back = ParametersInForce::parse(&json, "the journal").unwrap();
        assert_eq!(back, set);
        assert_eq!(
            back.parameters.params_for("trend_following", "BTCUSDT"),
            set.parameters.params_for("trend_following", "BTCUSDT")
        );

        let unknown = json.replacen("trend_following", "trend_fallowing", 2);
        let e = ParametersInForce::parse(&unknown, "the journal").unwrap_err();
        assert!(
            e.to_string()
                .contains("the journal: unknown strategy `trend_fallowing`"),
            "{e}"
        );
        let e = ParametersInForce::parse(r#"{"strategies":[]}"#, "the journal").unwrap_err();
        assert!(
            e.to_string()
                .contains("the journal is not a valid parameters file"),
            "{e}"
        );
    }
}

//! Bayesian optimization of a strategy's parameters over backtests.
//!
//! **Method: TPE** (Tree-structured Parzen Estimator, Bergstra et al. 2011) from the `tpe`
//! crate: one univariate estimator per parameter, driven by ask/tell. Chosen over a
//! Gaussian-process crate because strategy parameters are a mix of integers, floats and
//! booleans with invalid combinations (slow ≤ fast), which TPE takes in its stride (an
//! invalid trial is simply told the worst score), it needs no kernel tuning, and ask/tell
//! lets this crate run the trials itself: in batches of one trial per core, on market
//! data loaded once and shared by reference.
//!
//! **Objective** (maximised), on the *train* part of the data ([`Objective`] documents
//! each): Sharpe, Sortino, Calmar, total return, profit factor, or the smallest maximum
//! drawdown; whatever the objective, a trial with fewer than `min_trades` trades scores
//! nothing (a parameter set that hardly trades has no figures worth ranking). Every trial
//! is also run on the *test* part (the data after the split), and both are reported side
//! by side: a winner whose test figures collapse is over-fitted.
//!
//! **Walk-forward** ([`walk_forward()`]): the optimization repeated over rolling or
//! anchored windows, each winner traded on the data after its window, the out-of-sample
//! parts stitched into one curve.

mod walk_forward;

use rand::SeedableRng as _;
use serde::Serialize;
use shardbot_backtest::{BacktestConfig, BacktestError, Market, Series, Summary, run_with};
use shardbot_strategy::{Kind, Params, Spec, Value, build};

pub use walk_forward::{
    Anchor, Span, Stability, WalkForward, WalkOutcome, WalkProgress, Window, WindowError,
    WindowResult, timeline, walk_forward, windows,
};

/// What a trial is judged by (the higher the better; each on the part it is scored on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Mean over standard deviation of the daily returns of the marked-to-market equity,
    /// annualised by √365; undefined without dispersion.
    Sharpe,
    /// As Sharpe, but dividing by the downside deviation (losing days only): volatility
    /// upwards is not penalised; undefined without a losing day.
    Sortino,
    /// Annualised return (%) over the maximum drawdown (%); undefined without a drawdown.
    Calmar,
    /// Total return, %: net PnL over the starting balance.
    TotalReturn,
    /// Gross profit over gross loss of the trades; undefined without a losing trade.
    ProfitFactor,
    /// The smallest maximum drawdown (% of the peak, marked to market), scored as its
    /// negative. Alone it favours trading little: use it with `min_trades`.
    MaxDrawdown,
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Sharpe => "sharpe",
            Objective::Sortino => "sortino",
            Objective::Calmar => "calmar",
            Objective::TotalReturn => "total_return",
            Objective::ProfitFactor => "profit_factor",
            Objective::MaxDrawdown => "max_drawdown",
        }
    }

    /// The score of a backtest, `None` when undefined (no dispersion, no losing trade...).
    pub fn score(self, s: &Summary) -> Option<f64> {
        match self {
            Objective::Sharpe => s.sharpe,
            Objective::Sortino => s.sortino,
            Objective::TotalReturn => Some(s.total_return),
            Objective::Calmar => {
                let days = (s.last_bar_ms - s.first_bar_ms) as f64 / 86_400_000.0;
                (days > 0.0 && s.max_drawdown > 0.0)
                    .then(|| s.total_return * 365.0 / days / s.max_drawdown)
            }
            Objective::ProfitFactor => s.profit_factor,
            Objective::MaxDrawdown => Some(-s.max_drawdown),
        }
    }
}

/// How to optimize.
#[derive(Debug, Clone)]
pub struct OptimizeConfig {
    /// The backtest every trial runs (its strategy and settings; its params are ignored).
    pub backtest: BacktestConfig,
    pub objective: Objective,
    pub trials: usize,
    pub min_trades: usize,
    /// Share of the time range trained on; the rest tests.
    pub train_fraction: f64,
    pub seed: u64,
    /// Trials run at once (one per core).
    pub threads: usize,
}

/// One trial: its parameters, the score, and the figures on both parts.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub number: usize,
    pub params: Params,
    /// The objective on the train part (`None`: invalid parameters, too few trades or
    /// undefined).
    pub score: Option<f64>,
    pub train: Option<Summary>,
    pub test: Option<Summary>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub trials: Vec<Trial>,
    /// Index into `trials` of the best score.
    pub best: Option<usize>,
    pub split_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error("unknown strategy `{0}`")]
    Unknown(String),
    #[error("the train part has no bars (train_fraction {0})")]
    NoTrainData(f64),
    #[error("a parameter range is empty: {0}")]
    Range(String),
    #[error("walk-forward: {0}")]
    Window(#[from] WindowError),
    #[error("backtest: {0}")]
    Backtest(#[source] BacktestError),
}

/// The markets cut at `split_ms`: bars before it (train) and from it on (test).
pub fn split(markets: &[Market], split_ms: i64) -> (Vec<Market>, Vec<Market>) {
    (
        cut(markets, i64::MIN, split_ms),
        cut(markets, split_ms, i64::MAX),
    )
}

/// The markets' bars opening in `[from, to)`; markets without one left out.
pub fn cut(markets: &[Market], from: i64, to: i64) -> Vec<Market> {
    markets
        .iter()
        .map(|m| Market {
            series: Series {
                symbol: m.series.symbol.clone(),
                candles: m
                    .series
                    .candles
                    .iter()
                    .filter(|c| c.open_time_ms >= from && c.open_time_ms < to)
                    .copied()
                    .collect(),
                price_decimals: m.series.price_decimals,
            },
            instrument: m.instrument.clone(),
        })
        .filter(|m| !m.series.candles.is_empty())
        .collect()
}

enum Sampler {
    Num(tpe::TpeOptimizer),
    Cat(tpe::TpeOptimizer),
}

/// Runs the optimization; `progress(done, total, best_score)` after every batch.
pub fn optimize(
    markets: &[Market],
    cfg: &OptimizeConfig,
    mut progress: impl FnMut(usize, usize, Option<f64>),
) -> Result<Outcome, OptimizeError> {
    let strategy = cfg.backtest.strategy.clone();
    let schema: &[Spec] = shardbot_strategy::schema(&strategy)
        .ok_or_else(|| OptimizeError::Unknown(strategy.clone()))?;
    let (first, last) = shardbot_backtest::bar_span(markets);
    let split_ms = first + ((last - first) as f64 * cfg.train_fraction.clamp(0.0, 1.0)) as i64;
    let (train, test) = split(markets, split_ms);
    if train.is_empty() {
        return Err(OptimizeError::NoTrainData(cfg.train_fraction));
    }
    let mut samplers: Vec<Sampler> = schema
        .iter()
        .map(|s| {
            let bad = |e: &dyn std::fmt::Display| OptimizeError::Range(format!("{}: {e}", s.name));
            Ok(match s.kind {
                Kind::Int { min, max, .. } => Sampler::Num(tpe::TpeOptimizer::new(
                    tpe::parzen_estimator(),
                    tpe::range(min as f64, max as f64 + 1.0).map_err(|e| bad(&e))?,
                )),
                Kind::Float { min, max, .. } => Sampler::Num(tpe::TpeOptimizer::new(
                    tpe::parzen_estimator(),
                    tpe::range(min, max).map_err(|e| bad(&e))?,
                )),
                Kind::Bool { .. } => Sampler::Cat(tpe::TpeOptimizer::new(
                    tpe::histogram_estimator(),
                    tpe::categorical_range(2).map_err(|e| bad(&e))?,
                )),
            })
        })
        .collect::<Result<_, OptimizeError>>()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let mut trials: Vec<Trial> = Vec::with_capacity(cfg.trials);
    let threads = cfg.threads.max(1);
    while trials.len() < cfg.trials {
        let batch = threads.min(cfg.trials - trials.len());
        // Ask: the raw draws (told back later) and the parameters they mean.
        let mut asked: Vec<(Vec<f64>, Params)> = Vec::with_capacity(batch);
        for _ in 0..batch {
            let mut raw = Vec::with_capacity(schema.len());
            let mut params = Params::new();
            for (spec, sampler) in schema.iter().zip(samplers.iter_mut()) {
                let (x, v) = match sampler {
                    Sampler::Num(o) => {
                        let x = o.ask(&mut rng).unwrap_or(0.0);
                        let v = match spec.kind {
                            Kind::Int { min, max, .. } => {
                                Value::Int((x.floor() as i64).clamp(min, max))
                            }
                            _ => Value::Float((x * 1e4).round() / 1e4),
                        };
                        (x, v)
                    }
                    Sampler::Cat(o) => {
                        let x = o.ask(&mut rng).unwrap_or(0.0);
                        (x, Value::Bool(x >= 1.0))
                    }
                };
                raw.push(x);
                params.0.insert(spec.name.to_owned(), v);
            }
            asked.push((raw, params));
        }
        // Evaluate the batch in parallel, on the shared data.
        let results: Vec<(Option<Summary>, Option<Summary>)> = std::thread::scope(|s| {
            let hs: Vec<_> = asked
                .iter()
                .map(|(_, params)| {
                    let (train, test, cfg) = (&train, &test, &cfg.backtest);
                    s.spawn(move || evaluate(train, test, cfg, params))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or((None, None)))
                .collect()
        });
        for ((raw, params), (tr, te)) in asked.into_iter().zip(results) {
            let score = tr
                .as_ref()
                .filter(|s| s.trades >= cfg.min_trades)
                .and_then(|s| cfg.objective.score(s))
                .filter(|x| x.is_finite());
            // TPE minimises: the best score is the lowest value; no score is the worst.
            let told = score.map_or(f64::MAX / 4.0, |x| -x);
            for (x, sampler) in raw.iter().zip(samplers.iter_mut()) {
                let _ = match sampler {
                    Sampler::Num(o) | Sampler::Cat(o) => o.tell(*x, told),
                };
            }
            trials.push(Trial {
                number: trials.len() + 1,
                params,
                score,
                train: tr,
                test: te,
            });
        }
        progress(trials.len(), cfg.trials, best_score(&trials));
    }
    let best = trials
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.score.map(|s| (i, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i);
    Ok(Outcome {
        trials,
        best,
        split_ms,
    })
}

fn best_score(trials: &[Trial]) -> Option<f64> {
    trials.iter().filter_map(|t| t.score).max_by(f64::total_cmp)
}

fn evaluate(
    train: &[Market],
    test: &[Market],
    cfg: &BacktestConfig,
    params: &Params,
) -> (Option<Summary>, Option<Summary>) {
    let run = |markets: &[Market]| -> Option<Summary> {
        if markets.is_empty() {
            return None;
        }
        let strategies = markets
            .iter()
            .map(|_| build(&cfg.strategy, params))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        run_with(markets, cfg, strategies).ok().map(|r| r.summary)
    };
    let tr = run(train);
    let te = tr.as_ref().and_then(|_| run(test));
    (tr, te)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal::Decimal;
    use shardbot_strategy::Candle;

    /// A price that trends up in long waves: a trend follower with the right periods
    /// makes money, a wrong one less; the optimizer must find a positive Sharpe.
    pub(crate) fn market() -> Market {
        let candles = (0..3000)
            .map(|i| {
                let x = i as f64;
                let p = 100.0 + x * 0.02 + 8.0 * (x / 60.0).sin();
                Candle {
                    open_time_ms: i * 3_600_000,
                    open: p,
                    high: p + 0.3,
                    low: p - 0.3,
                    close: p + 0.05,
                    volume: 1.0,
                }
            })
            .collect();
        Market::unrestricted(Series {
            symbol: "WAVEUSDT".into(),
            candles,
            price_decimals: 2,
        })
        .unwrap()
    }

    #[test]
    fn finds_better_than_defaults_and_reports_both_parts() {
        let m = [market()];
        let mut bt =
            BacktestConfig::all_in("trend_following", Params::new(), Decimal::from(10_000));
        bt.fee_rate = Decimal::ZERO;
        bt.settings.fee_rate = Decimal::ZERO;
        let cfg = OptimizeConfig {
            backtest: bt.clone(),
            objective: Objective::TotalReturn,
            trials: 40,
            min_trades: 3,
            train_fraction: 0.7,
            seed: 7,
            threads: 2,
        };
        let mut calls = 0;
        let out = optimize(&m, &cfg, |done, total, _| {
            calls += 1;
            assert!(done <= total);
        })
        .unwrap();
        assert_eq!(out.trials.len(), 40);
        assert_eq!(calls, 20, "one progress report per batch of 2");
        let best = &out.trials[out.best.unwrap()];
        let (train, _) = split(&m, out.split_ms);
        let defaults = evaluate(&train, &[], &bt, &Params::new()).0.unwrap();
        assert!(
            best.score.unwrap() >= defaults.total_return,
            "{best:?} vs defaults {}",
            defaults.total_return
        );
        assert!(best.test.is_some(), "the test part is reported too");
        assert!(best.train.as_ref().unwrap().last_bar_ms < out.split_ms);
        assert!(best.test.as_ref().unwrap().first_bar_ms >= out.split_ms);
        // Invalid combinations (slow ≤ fast) score nothing rather than failing the run.
        let int = |t: &Trial, k: &str| match t.params.0[k] {
            Value::Int(i) => i,
            _ => panic!("{k} is an integer"),
        };
        let invalid: Vec<&Trial> = out
            .trials
            .iter()
            .filter(|t| int(t, "slow") <= int(t, "fast"))
            .collect();
        assert!(
            invalid
                .iter()
                .all(|t| t.score.is_none() && t.train.is_none()),
            "{invalid:?}"
        );
        // Same seed, same trials.
        let again = optimize(&m, &cfg, |_, _, _| {}).unwrap();
        assert_eq!(
            again.trials.iter().map(|t| &t.params).collect::<Vec<_>>(),
            out.trials.iter().map(|t| &t.params).collect::<Vec<_>>()
        );
    }
}

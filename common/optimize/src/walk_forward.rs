//! Walk-forward optimization: the data cut into windows of a train part followed by a test
//! part, an optimization on each train part, its winner traded on the test part that
//! follows (data it never saw), and the test parts stitched into one out-of-sample equity
//! curve: what the optimized parameters would have earned had they been re-optimized on
//! that schedule. How much the winners move from window to window says how much the
//! optimum is a property of the strategy and how much one of the data.
//!
//! - **Windows**: `rolling` (every train part as long as the first, sliding by `step`) or
//!   `anchored` (every train part starts at the data's start and grows by `step`); lengths in
//!   bars (of the data's timeline: every open time of any market) or days. The step is at
//!   least the test part (test parts do not overlap, so they stitch into one curve; a larger
//!   step leaves gaps, in which nothing trades). Only complete windows are run.
//! - **Out of sample**: each test part is backtested from its train part's start with
//!   trading allowed only from the test part on (the train bars warm the indicators up, as
//!   a worker warms up on history), on the balance the previous test part ended with;
//!   positions still open at a test part's end are closed at its last close, as a backtest
//!   closes them at the end of its data. A window whose optimization found no trial with
//!   enough trades does not trade (its part of the curve is flat).
//! - **The parameters to trade**: one more optimization on the newest train part (rolling:
//!   the last `train` of the data; anchored: all of it), which has no test part yet.

use std::{fmt, str::FromStr};

use serde::Serialize;
use shardbot_backtest::{Market, Summary, SummaryOf, Trade, run};
use shardbot_strategy::{Kind, Params, Value};

use crate::{OptimizeConfig, OptimizeError, Outcome, cut, optimize};

const DAY_MS: i64 = 86_400_000;

/// A length of the data: bars of its timeline, or days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Span {
    Bars(usize),
    Days(u32),
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Span::Bars(n) => write!(f, "{n} bars"),
            Span::Days(n) => write!(f, "{n} days"),
        }
    }
}

impl FromStr for Span {
    type Err = String;

    /// `500` (bars) or `90d` (days); above zero.
    fn from_str(s: &str) -> Result<Span, String> {
        let t = s.trim();
        let (digits, days) = match t.strip_suffix('d') {
            Some(d) => (d, true),
            None => (t, false),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a length: write bars (`500`) or days (`90d`)"))?;
        if n == 0 {
            return Err(format!("`{s}`: a length must be above zero"));
        }
        Ok(if days {
            Span::Days(u32::try_from(n).map_err(|_| format!("`{s}`: too many days"))?)
        } else {
            Span::Bars(usize::try_from(n).map_err(|_| format!("`{s}`: too many bars"))?)
        })
    }
}

/// Rolling or anchored train parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// Every train part as long as the first, sliding by the step.
    Rolling,
    /// Every train part starts at the data's start.
    Anchored,
}

/// How the data is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WalkForward {
    pub anchor: Anchor,
    pub train: Span,
    pub test: Span,
    /// How far each window moves on: at least `test`.
    pub step: Span,
}

/// One window, in bar open times: train `[train_from, test_from)`, test `[test_from,
/// test_to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub train_from_ms: i64,
    pub test_from_ms: i64,
    pub test_to_ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    #[error("train, test and step must all be in bars or all in days (got {0}, {1}, {2})")]
    MixedUnits(Span, Span, Span),
    #[error(
        "the step ({step}) is shorter than the test part ({test}): test parts would overlap and could not be stitched into one curve"
    )]
    StepBelowTest { step: Span, test: Span },
    #[error("the data ({have}) is too short for one window of {train} train + {test} test")]
    TooShort {
        have: String,
        train: Span,
        test: Span,
    },
}

/// The data's timeline: every bar open time of any market, in order, once.
pub fn timeline(markets: &[Market]) -> Vec<i64> {
    let mut t: Vec<i64> = markets
        .iter()
        .flat_map(|m| m.series.candles.iter().map(|c| c.open_time_ms))
        .collect();
    t.sort_unstable();
    t.dedup();
    t
}

/// The windows of `wf` over `timeline`, and the newest train part `[from, to)` (the one
/// the parameters to trade are optimized on).
pub fn windows(
    timeline: &[i64],
    wf: &WalkForward,
) -> Result<(Vec<Window>, (i64, i64)), WindowError> {
    let too_short = |have: String| WindowError::TooShort {
        have,
        train: wf.train,
        test: wf.test,
    };
    let (Some(&first), Some(&last)) = (timeline.first(), timeline.last()) else {
        return Err(too_short("no bars".into()));
    };
    let mut out = Vec::new();
    let newest = match (wf.train, wf.test, wf.step) {
        (Span::Bars(train), Span::Bars(test), Span::Bars(step)) => {
            if step < test {
                return Err(WindowError::StepBelowTest {
                    step: wf.step,
                    test: wf.test,
                });
            }
            let n = timeline.len();
            // An index's open time; one past the last bar is just after it.
            let at = |i: usize| timeline.get(i).copied().unwrap_or(last + 1);
            for k in 0.. {
                let test_from = train + k * step;
                if test_from + test > n {
                    break;
                }
                out.push(Window {
                    train_from_ms: at(if wf.anchor == Anchor::Rolling {
                        k * step
                    } else {
                        0
                    }),
                    test_from_ms: at(test_from),
                    test_to_ms: at(test_from + test),
                });
            }
            if out.is_empty() {
                return Err(too_short(format!("{n} bars")));
            }
            let from = match wf.anchor {
                Anchor::Rolling => at(n - train),
                Anchor::Anchored => first,
            };
            (from, last + 1)
        }
        (Span::Days(train), Span::Days(test), Span::Days(step)) => {
            if step < test {
                return Err(WindowError::StepBelowTest {
                    step: wf.step,
                    test: wf.test,
                });
            }
            let (train, test, step) = (
                i64::from(train) * DAY_MS,
                i64::from(test) * DAY_MS,
                i64::from(step) * DAY_MS,
            );
            // The data ends one bar after the last open (the bar: the timeline's smallest
            // gap; one millisecond for a single bar).
            let bar = timeline
                .windows(2)
                .map(|w| w[1] - w[0])
                .min()
                .unwrap_or(1)
                .max(1);
            let end = last + bar;
            for k in 0.. {
                let test_from = first + train + k * step;
                if test_from + test > end {
                    break;
                }
                out.push(Window {
                    train_from_ms: if wf.anchor == Anchor::Rolling {
                        first + k * step
                    } else {
                        first
                    },
                    test_from_ms: test_from,
                    test_to_ms: test_from + test,
                });
            }
            if out.is_empty() {
                return Err(too_short(format!(
                    "{:.1} days",
                    (end - first) as f64 / DAY_MS as f64
                )));
            }
            let from = match wf.anchor {
                Anchor::Rolling => end - train,
                Anchor::Anchored => first,
            };
            (from, last + 1)
        }
        _ => return Err(WindowError::MixedUnits(wf.train, wf.test, wf.step)),
    };
    Ok((out, newest))
}

/// One window's result.
#[derive(Debug, Clone, Serialize)]
pub struct WindowResult {
    pub window: Window,
    /// The train part's winner; `None` when no trial had enough trades (the window does
    /// not trade).
    pub params: Option<Params>,
    /// The objective of the winner on the train part.
    pub train_score: Option<f64>,
    pub train: Option<Summary>,
    /// The winner traded on the test part, from the balance the previous one left.
    pub test: Summary,
}

/// How one parameter's winners spread over the windows.
#[derive(Debug, Clone, Serialize)]
pub struct Stability {
    pub name: &'static str,
    /// Each window's winner (windows without one left out); booleans as 0 and 1.
    pub values: Vec<f64>,
    pub mean: f64,
    /// Standard deviation (population).
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// `(max − min)` as a share of the parameter's range in the schema (0: the same value in
    /// every window, 1: from one end of the range to the other); for a boolean, 0 when
    /// every window chose the same and 1 otherwise.
    pub spread: f64,
}

/// A walk-forward's result.
#[derive(Debug, Clone)]
pub struct WalkOutcome {
    pub windows: Vec<WindowResult>,
    /// The test parts stitched: every trade, and the equity curve from the first test
    /// part's start.
    pub trades: Vec<Trade>,
    pub equity: Vec<(i64, f64)>,
    /// The figures of the stitched curve, from the starting balance.
    pub out_of_sample: Summary,
    pub stability: Vec<Stability>,
    /// The optimization on the newest train part: the parameters to trade.
    pub newest: Outcome,
    pub newest_span: (i64, i64),
}

/// Progress: `(window, windows, trials done, trials)`; the last "window" is the newest
/// train part.
pub type WalkProgress<'a> = dyn FnMut(usize, usize, usize, usize) + 'a;

/// Runs a walk-forward with `cfg`'s objective, trials and backtest (its train fraction
/// is not used: every window's train part is optimized whole).
pub fn walk_forward(
    markets: &[Market],
    cfg: &OptimizeConfig,
    wf: &WalkForward,
    progress: &mut WalkProgress<'_>,
) -> Result<WalkOutcome, OptimizeError> {
    let strategy = cfg.backtest.strategy.clone();
    let schema = shardbot_strategy::schema(&strategy)
        .ok_or_else(|| OptimizeError::Unknown(strategy.clone()))?;
    let (windows, newest_span) = windows(&timeline(markets), wf)?;
    let whole = OptimizeConfig {
        train_fraction: 1.0,
        ..cfg.clone()
    };
    let total = windows.len() + 1;
    let mut balance = cfg.backtest.settings.simulated_balance;
    let (mut trades, mut equity, mut results) = (Vec::new(), Vec::new(), Vec::new());
    let mut refused = std::collections::BTreeMap::<String, u64>::new();
    let mut test_bars = 0u64;
    for (k, w) in windows.iter().enumerate() {
        let train = cut(markets, w.train_from_ms, w.test_from_ms);
        let out = if train.is_empty() {
            None
        } else {
            Some(optimize(&train, &whole, |done, all, _| {
                progress(k, total, done, all)
            })?)
        };
        let best = out
            .as_ref()
            .and_then(|o| o.best.map(|i| o.trials[i].clone()));
        // The test part: from the train part's start (warm-up), trading from test_from.
        let span_markets = cut(markets, w.train_from_ms, w.test_to_ms);
        let in_test = |t: i64| t >= w.test_from_ms && t < w.test_to_ms;
        let bars: u64 = span_markets
            .iter()
            .map(|m| {
                m.series
                    .candles
                    .iter()
                    .filter(|c| in_test(c.open_time_ms))
                    .count() as u64
            })
            .sum();
        let last_test_bar = span_markets
            .iter()
            .filter_map(|m| m.series.candles.last().map(|c| c.open_time_ms))
            .filter(|t| in_test(*t))
            .max()
            .unwrap_or(w.test_from_ms);
        let start = balance;
        let (part_trades, part_equity, part_refused) = match &best {
            Some(trial) => {
                let mut bt = cfg.backtest.clone();
                bt.params = trial.params.clone();
                bt.settings.simulated_balance = start;
                bt.trade_from_ms = Some(w.test_from_ms);
                let r = run(&span_markets, &bt).map_err(OptimizeError::Backtest)?;
                balance = r.summary.final_balance;
                let eq: Vec<(i64, f64)> =
                    r.equity.into_iter().filter(|(t, _)| in_test(*t)).collect();
                (r.trades, eq, r.summary.refused)
            }
            None => (Vec::new(), Vec::new(), Default::default()),
        };
        for (code, n) in &part_refused {
            *refused.entry(code.clone()).or_default() += n;
        }
        test_bars += bars;
        let test = Summary::of(SummaryOf {
            strategy: &strategy,
            symbols: span_markets.len(),
            bars,
            span: (w.test_from_ms, last_test_bar),
            starting_balance: start,
            final_balance: balance,
            trades: &part_trades,
            equity: &part_equity,
            refused: part_refused,
        });
        trades.extend(part_trades);
        equity.extend(part_equity);
        results.push(WindowResult {
            window: *w,
            params: best.as_ref().map(|t| t.params.clone()),
            train_score: best.as_ref().and_then(|t| t.score),
            train: best.and_then(|t| t.train),
            test,
        });
    }
    let last_bar = results
        .last()
        .map_or(newest_span.1, |r: &WindowResult| r.test.last_bar_ms);
    let out_of_sample = Summary::of(SummaryOf {
        strategy: &strategy,
        symbols: markets.len(),
        bars: test_bars,
        span: (windows[0].test_from_ms, last_bar),
        starting_balance: cfg.backtest.settings.simulated_balance,
        final_balance: balance,
        trades: &trades,
        equity: &equity,
        refused,
    });
    let newest_markets = cut(markets, newest_span.0, newest_span.1);
    let newest = optimize(&newest_markets, &whole, |done, all, _| {
        progress(total - 1, total, done, all)
    })?;
    let stability = schema
        .iter()
        .map(|spec| stability(spec.name, spec.kind, &results))
        .collect();
    Ok(WalkOutcome {
        windows: results,
        trades,
        equity,
        out_of_sample,
        stability,
        newest,
        newest_span,
    })
}

fn stability(name: &'static str, kind: Kind, windows: &[WindowResult]) -> Stability {
    let values: Vec<f64> = windows
        .iter()
        .filter_map(|w| w.params.as_ref()?.0.get(name))
        .map(|v| match v {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            Value::Bool(b) => f64::from(u8::from(*b)),
        })
        .collect();
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = match kind {
        Kind::Int { min, max, .. } => (max - min) as f64,
        Kind::Float { min, max, .. } => max - min,
        Kind::Bool { .. } => 1.0,
    };
    let spread = if values.is_empty() || range <= 0.0 {
        0.0
    } else {
        (max - min) / range
    };
    Stability {
        name,
        mean,
        std,
        min: if values.is_empty() { f64::NAN } else { min },
        max: if values.is_empty() { f64::NAN } else { max },
        spread,
        values,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Objective, tests::market};
    use rstest::rstest;
    use rust_decimal::Decimal;
    use shardbot_backtest::BacktestConfig;

    fn wf(anchor: Anchor, train: &str, test: &str, step: &str) -> WalkForward {
        WalkForward {
            anchor,
            train: train.parse().unwrap(),
            test: test.parse().unwrap(),
            step: step.parse().unwrap(),
        }
    }

    /// `(train_from, test_from, test_to)` in units of the timeline's step.
    fn w(train_from: i64, test_from: i64, test_to: i64) -> Window {
        Window {
            train_from_ms: train_from,
            test_from_ms: test_from,
            test_to_ms: test_to,
        }
    }

    #[rstest]
    // Ten bars at 0, 10, ..., 90: train 4 bars, test 2.
    #[case::rolling_bars(Anchor::Rolling, "4", "2", "2",
        vec![w(0, 40, 60), w(20, 60, 80), w(40, 80, 91)], (60, 91))]
    #[case::anchored_bars(Anchor::Anchored, "4", "2", "2",
        vec![w(0, 40, 60), w(0, 60, 80), w(0, 80, 91)], (0, 91))]
    #[case::a_step_beyond_the_test_leaves_gaps(Anchor::Rolling, "4", "2", "3",
        vec![w(0, 40, 60), w(30, 70, 90)], (60, 91))]
    #[case::one_window_exactly(Anchor::Rolling, "8", "2", "2", vec![w(0, 80, 91)], (20, 91))]
    fn windows_over_ten_bars(
        #[case] anchor: Anchor,
        #[case] train: &str,
        #[case] test: &str,
        #[case] step: &str,
        #[case] want: Vec<Window>,
        #[case] newest: (i64, i64),
    ) {
        let timeline: Vec<i64> = (0..10).map(|i| i * 10).collect();
        let (got, n) = windows(&timeline, &wf(anchor, train, test, step)).unwrap();
        assert_eq!(got, want);
        assert_eq!(n, newest);
    }

    #[rstest]
    #[case::rolling(Anchor::Rolling, vec![(0, 4, 6), (2, 6, 8), (4, 8, 10)], (6, 10))]
    #[case::anchored(Anchor::Anchored, vec![(0, 4, 6), (0, 6, 8), (0, 8, 10)], (0, 10))]
    fn windows_over_ten_days(
        #[case] anchor: Anchor,
        #[case] want: Vec<(i64, i64, i64)>,
        #[case] newest: (i64, i64),
    ) {
        let timeline: Vec<i64> = (0..10).map(|i| i * DAY_MS).collect();
        let (got, n) = windows(&timeline, &wf(anchor, "4d", "2d", "2d")).unwrap();
        let want: Vec<Window> = want
            .into_iter()
            .map(|(a, b, c)| w(a * DAY_MS, b * DAY_MS, c * DAY_MS))
            .collect();
        assert_eq!(got, want);
        assert_eq!(n, (newest.0 * DAY_MS, 9 * DAY_MS + 1));
    }

    #[rstest]
    #[case::step_below_test(
        "4",
        "3",
        "2",
        "the step (2 bars) is shorter than the test part (3 bars)"
    )]
    #[case::mixed_units("4", "2d", "2", "must all be in bars or all in days")]
    #[case::too_short(
        "9",
        "2",
        "2",
        "the data (10 bars) is too short for one window of 9 bars train + 2 bars test"
    )]
    #[case::too_short_in_days("9d", "2d", "2d", "the data (10.0 days) is too short")]
    fn windows_refused(
        #[case] train: &str,
        #[case] test: &str,
        #[case] step: &str,
        #[case] message: &str,
    ) {
        let unit = if train.ends_with('d') { DAY_MS } else { 10 };
        let timeline: Vec<i64> = (0..10).map(|i| i * unit).collect();
        let e = windows(&timeline, &wf(Anchor::Rolling, train, test, step)).unwrap_err();
        assert!(e.to_string().contains(message), "{e}");
    }

    #[rstest]
    #[case("500", Ok(Span::Bars(500)))]
    #[case(" 90d", Ok(Span::Days(90)))]
    #[case("0", Err("above zero"))]
    #[case("0d", Err("above zero"))]
    #[case("3w", Err("write bars (`500`) or days (`90d`)"))]
    #[case("-5", Err("not a length"))]
    fn spans(#[case] text: &str, #[case] want: Result<Span, &str>) {
        match (text.parse::<Span>(), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(e), Err(part)) => assert!(e.contains(part), "{e}"),
            (got, want) => panic!("{text}: {got:?}, wanted {want:?}"),
        }
    }

    fn config() -> OptimizeConfig {
        let mut bt =
            BacktestConfig::all_in("trend_following", Params::new(), Decimal::from(10_000));
        bt.fee_rate = Decimal::from_str_exact("0.00055").unwrap();
        bt.settings.fee_rate = bt.fee_rate;
        OptimizeConfig {
            backtest: bt,
            objective: Objective::TotalReturn,
            trials: 16,
            min_trades: 2,
            train_fraction: 0.7,
            seed: 3,
            threads: 2,
        }
    }

    /// 3,000 hourly bars, rolling 1,000 train / 500 test: four windows. Each window's
    /// winner is the optimization of its own train part alone, its trades lie inside its
    /// test part, each test part starts from the balance the previous one left, and the
    /// stitched figures add up from the trades.
    #[test]
    fn a_rolling_walk_forward_trades_each_winner_on_the_data_after_its_window() {
        let m = [market()];
        let cfg = config();
        let plan = wf(Anchor::Rolling, "1000", "500", "500");
        let mut reports = 0;
        let out = walk_forward(&m, &cfg, &plan, &mut |k, total, done, all| {
            assert!(k < total && done <= all);
            reports += 1;
        })
        .unwrap();
        assert_eq!(out.windows.len(), 4);
        assert_eq!(
            reports,
            5 * 8,
            "a report per batch of 2 trials, 4 windows + the newest"
        );
        let whole = OptimizeConfig {
            train_fraction: 1.0,
            ..cfg.clone()
        };
        let mut balance = cfg.backtest.settings.simulated_balance;
        for r in &out.windows {
            let w = r.window;
            let alone = optimize(
                &crate::cut(&m, w.train_from_ms, w.test_from_ms),
                &whole,
                |_, _, _| {},
            )
            .unwrap();
            let best = alone.best.map(|i| &alone.trials[i]);
            assert_eq!(r.params.as_ref(), best.map(|t| &t.params));
            assert_eq!(r.test.starting_balance, balance, "chained");
            balance = r.test.final_balance;
            assert!(r.test.first_bar_ms == w.test_from_ms && r.test.last_bar_ms < w.test_to_ms);
        }
        for t in &out.trades {
            let r = out
                .windows
                .iter()
                .find(|r| {
                    t.entry_time_ms >= r.window.test_from_ms
                        && t.entry_time_ms < r.window.test_to_ms
                })
                .unwrap_or_else(|| panic!("{t:?} outside every test part"));
            assert!(t.exit_time_ms < r.window.test_to_ms, "{t:?}");
        }
        assert!(!out.trades.is_empty());
        let s = &out.out_of_sample;
        assert_eq!(s.final_balance, balance);
        assert_eq!(s.trades, out.trades.len());
        let pnl: Decimal = out.trades.iter().map(|t| t.pnl).sum();
        assert_eq!(s.total_pnl, pnl);
        assert_eq!(
            s.final_balance - s.starting_balance,
            pnl,
            "no money outside the trades"
        );
        assert_eq!(s.first_bar_ms, out.windows[0].window.test_from_ms);
        assert!(out.equity.windows(2).all(|p| p[0].0 < p[1].0));
        assert_eq!(out.equity.len() as u64, s.bars, "one point per test bar");
        // The parameters to trade: the newest 1,000 bars' optimization.
        assert_eq!(out.newest_span.0, 2000 * 3_600_000);
        assert!(out.newest.best.is_some());
        for st in &out.stability {
            assert_eq!(
                st.values.len(),
                out.windows.iter().filter(|r| r.params.is_some()).count()
            );
            assert!((0.0..=1.0).contains(&st.spread), "{st:?}");
        }
    }

    /// No look-ahead: changing every bar after the first window's train part leaves its
    /// winner as it was.
    #[test]
    fn a_windows_winner_does_not_see_the_data_after_its_train_part() {
        let cfg = config();
        let plan = wf(Anchor::Anchored, "1000", "500", "500");
        let m = [market()];
        let mut changed = market();
        for c in changed.series.candles.iter_mut().skip(1000) {
            let p = 300.0 - c.open * 0.5;
            (c.open, c.high, c.low, c.close) = (p, p + 0.3, p - 0.3, p - 0.05);
        }
        let a = walk_forward(&m, &cfg, &plan, &mut |_, _, _, _| {}).unwrap();
        let b = walk_forward(&[changed], &cfg, &plan, &mut |_, _, _, _| {}).unwrap();
        assert_eq!(a.windows[0].params, b.windows[0].params);
        assert_ne!(
            a.windows[0].test.total_pnl, b.windows[0].test.total_pnl,
            "the test part did change"
        );
    }
}

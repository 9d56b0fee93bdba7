//! `shardbot optimize`: TPE over a strategy's parameter schema (common/optimize), the
//! winner written to optimized_parameters.json with its date, data range, objective and
//! metrics, after printing what changes. With `--walk-forward`, the optimization runs over
//! rolling or anchored windows, the winners are traded out of sample and stitched into one
//! curve, and the parameters written are the newest window's, with the walk-forward's
//! record; out-of-sample thresholds refuse to write parameters that fail them.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;
use shardbot_backtest::{BacktestConfig, Summary};
use shardbot_optimize::{
    Anchor, Objective, OptimizeConfig, Span, Trial, WalkForward, WalkOutcome, optimize,
    walk_forward,
};
use shardbot_strategy::{OptimizedFile, OptimizedStrategy, Value, WalkForwardRecord, schema};

#[derive(Args, Debug)]
pub struct OptimizeArgs {
    #[command(flatten)]
    input: crate::backtest::DataArgs,
    /// What to maximise on the train part.
    #[arg(long, value_enum, default_value = "sharpe")]
    objective: ObjectiveArg,
    /// Number of trials.
    #[arg(long, default_value = "200")]
    trials: usize,
    /// Trials with fewer trades (train part) score nothing.
    #[arg(long, default_value = "20")]
    min_trades: usize,
    /// Share of the time range to train on; the rest is the test part.
    #[arg(long, default_value = "0.7")]
    train_fraction: f64,
    /// Random seed (the same seed and data give the same trials).
    #[arg(long, default_value = "1")]
    seed: u64,
    /// Trials run at once (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Sizing and limits from this trading_settings.json (default: all in, no leverage).
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Taker fee rate per fill.
    #[arg(long, default_value = "0.00055", value_name = "RATE")]
    fee: Decimal,
    /// The parameters file to update.
    #[arg(long, default_value = "optimized_parameters.json", value_name = "FILE")]
    params_file: PathBuf,
    /// Show the result and what would change, but write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Walk-forward: optimize on each window's train part, trade its winner on the test
    /// part after it, stitch the test parts into one out-of-sample curve; the parameters
    /// written are those of the newest train part. `rolling`: train parts of a fixed
    /// length sliding by --step; `anchored`: train parts all starting at the data's start.
    #[arg(long, value_enum, requires_all = ["train", "test"])]
    walk_forward: Option<AnchorArg>,
    /// Walk-forward train length: bars (`2000`) or days (`180d`).
    #[arg(long, value_name = "LEN", requires = "walk_forward")]
    train: Option<Span>,
    /// Walk-forward test length: bars or days, in the unit of --train.
    #[arg(long, value_name = "LEN", requires = "walk_forward")]
    test: Option<Span>,
    /// How far each window moves on (default: --test; longer leaves gaps that do not trade).
    #[arg(long, value_name = "LEN", requires = "walk_forward")]
    step: Option<Span>,
    /// Write nothing unless the out-of-sample Sharpe (walk-forward: the stitched curve's;
    /// otherwise the test part's) reaches this.
    #[arg(long, value_name = "SHARPE")]
    min_oos_sharpe: Option<f64>,
    /// Write nothing unless the out-of-sample total return, in %, reaches this.
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    min_oos_return: Option<f64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ObjectiveArg {
    /// Daily returns' mean over their deviation, annualised (√365).
    Sharpe,
    /// As Sharpe, over the downside deviation only (losing days).
    Sortino,
    /// Annualised return over the maximum drawdown.
    Calmar,
    /// Net PnL over the starting balance, %.
    TotalReturn,
    /// Gross profit over gross loss.
    ProfitFactor,
    /// The smallest maximum drawdown (use with --min-trades: trading little scores well).
    MaxDrawdown,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AnchorArg {
    Rolling,
    Anchored,
}

fn ms_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.3}"))
}

fn metrics(s: &Summary) -> serde_json::Value {
    serde_json::json!({
        "trades": s.trades,
        "win_rate": s.win_rate,
        "total_return_pct": s.total_return,
        "max_drawdown_pct": s.max_drawdown,
        "sharpe": s.sharpe,
        "sortino": s.sortino,
        "profit_factor": s.profit_factor,
        "from": ms_date(s.first_bar_ms),
        "to": ms_date(s.last_bar_ms),
    })
}

pub fn run(args: OptimizeArgs) -> anyhow::Result<()> {
    if schema(&args.input.strategy).is_none() {
        bail!(
            "unknown strategy `{}` (built in: {})",
            args.input.strategy,
            shardbot_strategy::BUILT_IN.join(", ")
        );
    }
    if !(0.1..=1.0).contains(&args.train_fraction) {
        bail!(
            "--train-fraction {} must be between 0.1 and 1",
            args.train_fraction
        );
    }
    let markets = args.input.markets()?;
    let bars: usize = markets.iter().map(|m| m.series.candles.len()).sum();
    let mut backtest = BacktestConfig::all_in(
        &args.input.strategy,
        shardbot_strategy::Params::new(),
        Decimal::from(10_000),
    );
    if let Some(p) = &args.settings {
        backtest.settings = shardbot_risk::TradingSettings::load(p)?;
    }
    backtest.fee_rate = args.fee;
    backtest.settings.fee_rate = args.fee;
    let objective = match args.objective {
        ObjectiveArg::Sharpe => Objective::Sharpe,
        ObjectiveArg::Sortino => Objective::Sortino,
        ObjectiveArg::Calmar => Objective::Calmar,
        ObjectiveArg::TotalReturn => Objective::TotalReturn,
        ObjectiveArg::ProfitFactor => Objective::ProfitFactor,
        ObjectiveArg::MaxDrawdown => Objective::MaxDrawdown,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cfg = OptimizeConfig {
        backtest,
        objective,
        trials: args.trials,
        min_trades: args.min_trades,
        train_fraction: args.train_fraction,
        seed: args.seed,
        threads,
    };
    eprintln!(
        "optimizing {} ({}) on {} symbol(s), {bars} bars, {} trials on {threads} thread(s)",
        args.input.strategy,
        objective.name(),
        markets.len(),
        args.trials
    );
    let plan = match (args.walk_forward, args.train, args.test) {
        (Some(anchor), Some(train), Some(test)) => Some(WalkForward {
            anchor: match anchor {
                AnchorArg::Rolling => Anchor::Rolling,
                AnchorArg::Anchored => Anchor::Anchored,
            },
            train,
            test,
            step: args.step.unwrap_or(test),
        }),
        _ => None,
    };
    let found = match &plan {
        None => plain(&args, &markets, &cfg)?,
        Some(plan) => walk(&args, &markets, &cfg, plan)?,
    };
    let Found {
        best,
        out_of_sample,
        data_range,
        metrics,
        walk_forward,
    } = found;
    let mut passed = Vec::new();
    let figure = |name: &str, got: Option<f64>, min: f64| -> anyhow::Result<String> {
        match got {
            Some(x) if x >= min => Ok(format!("{name} {x:.3} >= {min}")),
            _ => bail!(
                "not written: the out-of-sample {name} ({}) is below the threshold {min}",
                opt(got)
            ),
        }
    };
    if let Some(min) = args.min_oos_sharpe {
        passed.push(figure(
            "sharpe",
            out_of_sample.as_ref().and_then(|s| s.sharpe),
            min,
        )?);
    }
    if let Some(min) = args.min_oos_return {
        passed.push(figure(
            "total return %",
            out_of_sample.as_ref().map(|s| s.total_return),
            min,
        )?);
    }
    if !passed.is_empty() {
        println!("\nout-of-sample thresholds passed: {}", passed.join(", "));
    }
    let mut file = OptimizedFile::load(&args.params_file)?;
    let old = file.0.get(&args.input.strategy).cloned();
    let entry = OptimizedStrategy {
        optimized_at: format!("{} UTC", ms_date(shardbot_protocol::now_ms())),
        objective: format!("{} (min {} trades)", objective.name(), args.min_trades),
        data_range,
        metrics,
        params: best.params.clone(),
        symbols: old.as_ref().map(|o| o.symbols.clone()).unwrap_or_default(),
        walk_forward: walk_forward.map(|w| WalkForwardRecord { passed, ..w }),
    };
    println!("\nwinner (trial {}):", best.number);
    let spec = schema(&args.input.strategy).unwrap_or(&[]);
    for s in spec {
        let new = best.params.0.get(s.name).copied();
        let before = old.as_ref().and_then(|o| o.params.0.get(s.name).copied());
        let was = match &old {
            Some(_) => before.map_or("default".into(), |v| show(&v)),
            None => "default".into(),
        };
        let now = new.map_or("default".into(), |v| show(&v));
        let mark = if was == now { "" } else { "  (changed)" };
        println!("  {:<18} {was:>10} -> {now}{mark}", s.name);
    }
    match &old {
        Some(o) => println!(
            "replaces the entry optimized {} ({}){}",
            o.optimized_at,
            o.objective,
            if o.symbols.is_empty() {
                ""
            } else {
                "; its per-symbol values are kept"
            }
        ),
        None => println!("{} had no entry: it ran on defaults", args.input.strategy),
    }
    if args.dry_run {
        println!("--dry-run: {} not written", args.params_file.display());
        return Ok(());
    }
    file.0.insert(args.input.strategy.clone(), entry);
    file.save(&args.params_file)
        .with_context(|| format!("writing {}", args.params_file.display()))?;
    println!("written: {}", args.params_file.display());
    Ok(())
}

/// What an optimization found: the winner to write, the figures its thresholds are
/// checked on, and the record's parts.
struct Found {
    best: Trial,
    /// The test part's figures, or the walk-forward's stitched ones.
    out_of_sample: Option<Summary>,
    data_range: serde_json::Value,
    metrics: serde_json::Value,
    walk_forward: Option<WalkForwardRecord>,
}

fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}) {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn no_winner(args: &OptimizeArgs, objective: Objective) -> anyhow::Error {
    anyhow::anyhow!(
        "no trial reached {} trades with a defined {}: nothing written (try more data, more trials or --min-trades)",
        args.min_trades,
        objective.name()
    )
}

/// One optimization, trained on the first `--train-fraction` of the data.
fn plain(
    args: &OptimizeArgs,
    markets: &[shardbot_backtest::Market],
    cfg: &OptimizeConfig,
) -> anyhow::Result<Found> {
    let objective = cfg.objective;
    let bar = progress_bar(args.trials as u64, "trials");
    let started = std::time::Instant::now();
    let out = optimize(markets, cfg, |done, _, best| {
        bar.set_position(done as u64);
        bar.set_message(format!("best {}", opt(best)));
    })?;
    bar.finish();
    let took = started.elapsed().as_secs_f64();
    println!(
        "{} trials in {took:.1} s: {:.1} trials/s; train until {}, test from then on",
        out.trials.len(),
        out.trials.len() as f64 / took.max(1e-9),
        ms_date(out.split_ms)
    );
    let mut ranked: Vec<_> = out.trials.iter().filter(|t| t.score.is_some()).collect();
    ranked.sort_by(|a, b| {
        b.score
            .unwrap_or(f64::MIN)
            .total_cmp(&a.score.unwrap_or(f64::MIN))
    });
    println!(
        "\n{:>5}  {:>10}  {:>7} {:>9} {:>8}   {:>7} {:>9} {:>8}  params",
        "trial",
        objective.name(),
        "trades",
        "return%",
        "maxDD%",
        "trades",
        "return%",
        "maxDD%"
    );
    println!(
        "{:>5}  {:>10}  {:^26}   {:^26}",
        "", "(train)", "train", "test"
    );
    for t in ranked.iter().take(10) {
        println!(
            "{:>5}  {:>10}  {}   {}  {}",
            t.number,
            opt(t.score),
            cols(t.train.as_ref()),
            cols(t.test.as_ref()),
            params_text(&t.params)
        );
    }
    let Some(best) = out.best.map(|i| out.trials[i].clone()) else {
        return Err(no_winner(args, objective));
    };
    let (Some(train), test) = (best.train.as_ref(), best.test.as_ref()) else {
        bail!("the best trial has no train figures");
    };
    if let Some(te) = test
        && objective.score(te).unwrap_or(f64::MIN) < best.score.unwrap_or(0.0) / 2.0
    {
        println!(
            "\nwarning: the winner's test {} ({}) is less than half its train figure ({}): likely over-fitted",
            objective.name(),
            opt(objective.score(te)),
            opt(best.score)
        );
    }
    Ok(Found {
        data_range: serde_json::json!({
            "data": args.input.data.display().to_string(),
            "symbols": markets.iter().map(|m| m.series.symbol.clone()).collect::<Vec<_>>(),
            "from": ms_date(train.first_bar_ms),
            "to": ms_date(test.map_or(train.last_bar_ms, |t| t.last_bar_ms)),
            "train_until": ms_date(out.split_ms),
        }),
        metrics: serde_json::json!({
            "train": metrics(train),
            "test": test.map(metrics),
            "trials": out.trials.len(),
            "seed": args.seed,
        }),
        out_of_sample: best.test.clone(),
        best,
        walk_forward: None,
    })
}

/// A walk-forward: the windows' table, the stitched out-of-sample figures, the winners'
/// stability, and the newest train part's winner.
fn walk(
    args: &OptimizeArgs,
    markets: &[shardbot_backtest::Market],
    cfg: &OptimizeConfig,
    plan: &WalkForward,
) -> anyhow::Result<Found> {
    let objective = cfg.objective;
    let (windows, _) = shardbot_optimize::windows(&shardbot_optimize::timeline(markets), plan)
        .context("--walk-forward")?;
    let total = (windows.len() + 1) as u64;
    let mode = match plan.anchor {
        Anchor::Rolling => "rolling",
        Anchor::Anchored => "anchored",
    };
    println!(
        "walk-forward {mode}: {} windows of {} train + {} test, step {}, and the newest train part",
        windows.len(),
        plan.train,
        plan.test,
        plan.step
    );
    let bar = progress_bar(total * args.trials as u64, "trials");
    let started = std::time::Instant::now();
    let trials = args.trials as u64;
    let out: WalkOutcome = walk_forward(markets, cfg, plan, &mut |k, _, done, _| {
        bar.set_position(k as u64 * trials + done as u64);
        bar.set_message(if k + 1 < total as usize {
            format!("window {}/{}", k + 1, total - 1)
        } else {
            "newest train part".into()
        });
    })?;
    bar.finish();
    let took = started.elapsed().as_secs_f64();
    println!(
        "{} optimizations of {} trials in {took:.1} s",
        total, args.trials
    );
    println!(
        "\n{:>3}  {:<16} {:<16} {:<16} {:>10}  {:>7} {:>9} {:>8} {:>7}  params",
        "#",
        "train from",
        "test from",
        "test to",
        objective.name(),
        "trades",
        "return%",
        "maxDD%",
        "sharpe"
    );
    println!(
        "{:>3}  {:<16} {:<16} {:<16} {:>10}  {:^34}",
        "", "", "", "", "(train)", "out of sample"
    );
    for (i, r) in out.windows.iter().enumerate() {
        let w = r.window;
        println!(
            "{:>3}  {:<16} {:<16} {:<16} {:>10}  {} {:>7}  {}",
            i + 1,
            ms_date(w.train_from_ms),
            ms_date(w.test_from_ms),
            ms_date(w.test_to_ms),
            opt(r.train_score),
            cols(Some(&r.test)),
            opt(r.test.sharpe),
            r.params.as_ref().map_or(
                "(no trial reached --min-trades: not traded)".into(),
                params_text
            )
        );
    }
    let oos = &out.out_of_sample;
    println!(
        "\nout of sample, stitched ({} → {}): {} trades, return {:.2} %, max drawdown {:.2} %, Sharpe {}, Sortino {}, profit factor {}, final balance {}",
        ms_date(oos.first_bar_ms),
        ms_date(oos.last_bar_ms),
        oos.trades,
        oos.total_return,
        oos.max_drawdown,
        opt(oos.sharpe),
        opt(oos.sortino),
        opt(oos.profit_factor),
        oos.final_balance.round_dp(2)
    );
    if oos.total_return < 0.0 {
        println!(
            "warning: out of sample, the winners of the windows lost money: the optimum does not carry over to unseen data"
        );
    }
    println!("\nstability of the winners across windows (spread: share of the parameter's range)");
    for st in &out.stability {
        println!(
            "  {:<18} mean {:>10.4}  std {:>9.4}  min {:>9} max {:>9}  spread {:>5.2}",
            st.name, st.mean, st.std, st.min, st.max, st.spread
        );
    }
    let Some(best) = out.newest.best.map(|i| out.newest.trials[i].clone()) else {
        return Err(no_winner(args, objective));
    };
    let Some(train) = best.train.as_ref() else {
        bail!("the best trial has no train figures");
    };
    let windows_json: Vec<serde_json::Value> = out
        .windows
        .iter()
        .map(|r| {
            serde_json::json!({
                "train_from": ms_date(r.window.train_from_ms),
                "test_from": ms_date(r.window.test_from_ms),
                "test_to": ms_date(r.window.test_to_ms),
                "params": r.params,
                "train_score": r.train_score,
                "out_of_sample": metrics(&r.test),
            })
        })
        .collect();
    let record = WalkForwardRecord {
        mode: mode.into(),
        train: plan.train.to_string(),
        test: plan.test.to_string(),
        step: plan.step.to_string(),
        windows: windows_json,
        out_of_sample: metrics(oos),
        stability: serde_json::to_value(&out.stability).unwrap_or_default(),
        passed: Vec::new(),
    };
    let (first, last) = shardbot_backtest::bar_span(markets);
    Ok(Found {
        data_range: serde_json::json!({
            "data": args.input.data.display().to_string(),
            "symbols": markets.iter().map(|m| m.series.symbol.clone()).collect::<Vec<_>>(),
            "from": ms_date(first),
            "to": ms_date(last),
            "train_from": ms_date(out.newest_span.0),
        }),
        metrics: serde_json::json!({
            "train": metrics(train),
            "test": null,
            "trials": args.trials,
            "seed": args.seed,
        }),
        out_of_sample: Some(out.out_of_sample.clone()),
        best,
        walk_forward: Some(record),
    })
}

fn cols(s: Option<&Summary>) -> String {
    s.map_or(format!("{:>26}", "-"), |s| {
        format!(
            "{:>7} {:>9.2} {:>8.2}",
            s.trades, s.total_return, s.max_drawdown
        )
    })
}

fn params_text(p: &shardbot_strategy::Params) -> String {
    p.0.iter()
        .map(|(k, v)| format!("{k}={}", show(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn show(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
    }
}

//! `shardbot optimize`: TPE over a strategy's parameter schema (common/optimize), the
//! winner written to optimized_parameters.json with its date, data range, objective and
//! metrics, after printing what changes.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;
use shardbot_backtest::{BacktestConfig, Summary};
use shardbot_optimize::{Objective, OptimizeConfig, optimize};
use shardbot_strategy::{OptimizedFile, OptimizedStrategy, Value, schema};

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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ObjectiveArg {
    Sharpe,
    TotalReturn,
    Calmar,
    ProfitFactor,
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
        ObjectiveArg::TotalReturn => Objective::TotalReturn,
        ObjectiveArg::Calmar => Objective::Calmar,
        ObjectiveArg::ProfitFactor => Objective::ProfitFactor,
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
    let bar = ProgressBar::new(args.trials as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} trials ({per_sec}) best {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let out = optimize(&markets, &cfg, |done, _, best| {
        bar.set_position(done as u64);
        bar.set_message(opt(best));
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
        let (tr, te) = (t.train.as_ref(), t.test.as_ref());
        let cols = |s: Option<&Summary>| {
            s.map_or(format!("{:>26}", "-"), |s| {
                format!(
                    "{:>7} {:>9.2} {:>8.2}",
                    s.trades, s.total_return, s.max_drawdown
                )
            })
        };
        let params: Vec<String> = t
            .params
            .0
            .iter()
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect();
        println!(
            "{:>5}  {:>10}  {}   {}  {}",
            t.number,
            opt(t.score),
            cols(tr),
            cols(te),
            params.join(" ")
        );
    }
    let Some(best) = out.best.map(|i| &out.trials[i]) else {
        bail!(
            "no trial reached {} trades with a defined {}: nothing written (try more data, more trials or --min-trades)",
            args.min_trades,
            objective.name()
        );
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
    let mut file = OptimizedFile::load(&args.params_file)?;
    let old = file.0.get(&args.input.strategy).cloned();
    let entry = OptimizedStrategy {
        optimized_at: format!("{} UTC", ms_date(shardbot_protocol::now_ms())),
        objective: format!("{} (min {} trades)", objective.name(), args.min_trades),
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
        params: best.params.clone(),
        symbols: old.as_ref().map(|o| o.symbols.clone()).unwrap_or_default(),
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

fn show(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
    }
}

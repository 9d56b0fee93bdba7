//! `shardbot backtest`: one strategy, or several sharing each symbol's position as the
//! workers run them, over kline CSV files, through `common/backtest` (the workers'
//! strategies, the risk manager's rules, bybit-sim's fill model).

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rust_decimal::Decimal;
use shardbot_backtest::{
    BacktestConfig, BacktestResult, Intrabar, Market, Slippage, data::load_path, run_roster,
};
use shardbot_risk::TradingSettings;
use shardbot_strategy::{OptimizedFile, Params, schema};

#[derive(Args, Debug)]
pub struct BacktestArgs {
    #[command(flatten)]
    input: DataArgs,
    /// A parameter, `name=value`; repeat for several. Overrides the parameters file.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// The parameters file the workers use (a missing file means defaults).
    #[arg(long, default_value = "optimized_parameters.json", value_name = "FILE")]
    params_file: PathBuf,
    /// Sizing and limits from this trading_settings.json (as the risk manager uses it).
    /// Without it: all in, no leverage, one position (the comparison run of other
    /// backtesters).
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Starting balance in USDT (overrides the settings' simulated_balance).
    #[arg(long, value_name = "USDT")]
    balance: Option<Decimal>,
    /// Taker fee rate per fill; an entry's sizing reserves it for the entry's own fee (the
    /// margin plus the fee is the sizing), as the risk manager does with `fee_rate`.
    #[arg(long, default_value = "0.00055", value_name = "RATE")]
    fee: Decimal,
    /// Market orders and triggered stops fill this many basis points worse.
    #[arg(long, default_value = "0", value_name = "BPS")]
    slippage_bps: Decimal,
    /// Market orders and triggered stops fill this many ticks worse instead (bybit-sim's
    /// `spread_ticks`, to compare with a paper run on the sim).
    #[arg(long, value_name = "TICKS", conflicts_with = "slippage_bps")]
    slippage_ticks: Option<u32>,
    /// Bars opening before this time (Unix ms) only warm the strategy up, as a worker
    /// warms up on history before it trades.
    #[arg(long, value_name = "UNIX_MS")]
    trade_from: Option<i64>,
    /// Which of stop-loss and take-profit fills when both lie inside one bar.
    #[arg(long, value_enum, default_value = "stop-first")]
    intrabar: IntrabarArg,
    /// Charge this funding rate every 8 hours (longs pay when positive); none by default.
    #[arg(long, value_name = "RATE")]
    funding_rate: Option<Decimal>,
    /// Write trades.csv, equity.csv and summary.json here.
    #[arg(long, default_value = "backtest-out", value_name = "DIR")]
    out: PathBuf,
}

/// What to run on: the strategy and the market data (shared by `backtest` and `optimize`).
#[derive(Args, Debug)]
pub struct DataArgs {
    /// The strategy (built in: trend_following, mean_reversion). `backtest` takes several,
    /// comma-separated (`trend_following,mean_reversion`): they share each symbol's one
    /// position as the workers run them (its opener owns it; on a flat symbol the first
    /// listed to enter takes it), and trades.csv names each trade's strategy.
    #[arg(long)]
    pub strategy: String,
    /// A kline CSV file (open_time_ms,open,high,low,close,volume; the symbol is the file
    /// name), a folder of them (every .csv, one account), or the history store:
    /// `store:<interval>` (every symbol stored) or `store:<interval>:SYM,SYM`.
    #[arg(long, value_name = "CSV|DIR|store:INTERVAL[:SYMBOLS]")]
    pub data: PathBuf,
    /// Local configuration file (for the history store folder; SHARDBOT_CONFIG works too).
    #[arg(long, env = "SHARDBOT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl DataArgs {
    /// The markets of `--data`.
    pub fn markets(&self) -> anyhow::Result<Vec<Market>> {
        load_markets(&self.data, self.config.as_deref())
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum IntrabarArg {
    /// The stop is assumed to come first (conservative).
    StopFirst,
    /// bybit-sim's replay path: open → low → high → close on a rising bar, open → high →
    /// low → close on a falling one.
    Path,
}

impl IntrabarArg {
    pub(crate) fn rule(self) -> Intrabar {
        match self {
            IntrabarArg::StopFirst => Intrabar::StopFirst,
            IntrabarArg::Path => Intrabar::Path,
        }
    }
}

pub fn run(args: BacktestArgs) -> anyhow::Result<()> {
    // Several strategies (`a,b`) share each symbol's one position as the workers run them:
    // its owner's signals act, on a flat symbol the first (in this order) to enter.
    let names: Vec<&str> = args.input.strategy.split(',').map(str::trim).collect();
    let mut specs = Vec::new();
    for n in &names {
        let Some(spec) = schema(n) else {
            bail!(
                "unknown strategy `{n}` (built in: {})",
                shardbot_strategy::BUILT_IN.join(", ")
            );
        };
        specs.push(spec);
    }
    if names.len() > 1 && !args.params.is_empty() {
        bail!(
            "--param sets one strategy's parameter: with several strategies ({}), put them in \
             --params-file",
            names.join(", ")
        );
    }
    let mut overrides = Params::new();
    for p in &args.params {
        let name = shardbot_strategy::BUILT_IN
            .into_iter()
            .find(|n| *n == names[0])
            .unwrap_or("strategy");
        let (k, v) = Params::parse_assignment(name, specs[0], p)?;
        overrides.0.insert(k, v);
    }
    let file = OptimizedFile::load(&args.params_file)?;
    let markets = args.input.markets()?;
    let mut status = String::new();
    let mut rosters = Vec::new();
    for m in &markets {
        let mut roster = Vec::new();
        for n in &names {
            let (mut params, st) = file.params_for(n, &m.series.symbol);
            params
                .0
                .extend(overrides.0.iter().map(|(k, v)| (k.clone(), *v)));
            if status.is_empty() {
                status = st.to_string();
            }
            roster.push(
                shardbot_strategy::build(n, &params)
                    .with_context(|| format!("{n}'s parameters for {}", m.series.symbol))?,
            );
        }
        rosters.push(roster);
    }
    let balance = args.balance.unwrap_or(Decimal::from(10_000));
    let mut cfg = BacktestConfig::all_in(&args.input.strategy, overrides.clone(), balance);
    if let Some(path) = &args.settings {
        cfg.settings = TradingSettings::load(path)?;
        if let Some(b) = args.balance {
            cfg.settings.simulated_balance = b;
        }
    }
    cfg.fee_rate = args.fee;
    cfg.settings.fee_rate = args.fee;
    cfg.slippage = match args.slippage_ticks {
        Some(n) => Slippage::Ticks(n),
        None => Slippage::Bps(args.slippage_bps),
    };
    cfg.trade_from_ms = args.trade_from;
    cfg.intrabar = args.intrabar.rule();
    cfg.funding_rate = args.funding_rate;
    let bars: usize = markets.iter().map(|m| m.series.candles.len()).sum();
    eprintln!(
        "backtesting {} on {} symbol(s), {bars} bars (parameters: {status}{})",
        args.input.strategy,
        markets.len(),
        if args.params.is_empty() {
            ""
        } else {
            ", with --param overrides"
        }
    );
    let started = std::time::Instant::now();
    let r = run_roster(&markets, &cfg, rosters)?;
    let took = started.elapsed();
    write_out(&args.out, &r)?;
    print_summary(&r, took);
    println!(
        "written: {}/trades.csv, equity.csv, summary.json",
        args.out.display()
    );
    Ok(())
}

/// The markets of a `--data` argument: a CSV, a folder of them, or `store:...`.
pub fn load_markets(
    data: &std::path::Path,
    config: Option<&std::path::Path>,
) -> anyhow::Result<Vec<Market>> {
    let series = match data.to_str().and_then(|d| d.strip_prefix("store:")) {
        Some(query) => crate::data::store_series(config, query)?,
        None => load_path(data)?,
    };
    Ok(series
        .into_iter()
        .map(Market::unrestricted)
        .collect::<Result<_, _>>()?)
}

fn write_out(dir: &std::path::Path, r: &BacktestResult) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("trades.csv");
    let mut w = csv::Writer::from_path(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.write_record([
        "symbol",
        "side",
        "qty",
        "entry_time_ms",
        "exit_time_ms",
        "entry_price",
        "exit_price",
        "fees",
        "funding",
        "pnl",
        "exit_reason",
        "strategy",
    ])?;
    for t in &r.trades {
        w.write_record([
            t.symbol.to_string(),
            if t.side == shardbot_protocol::Side::Buy {
                "long"
            } else {
                "short"
            }
            .into(),
            t.qty.normalize().to_string(),
            t.entry_time_ms.to_string(),
            t.exit_time_ms.to_string(),
            t.entry_price.normalize().to_string(),
            t.exit_price.normalize().to_string(),
            t.fees.normalize().to_string(),
            t.funding.normalize().to_string(),
            t.pnl.normalize().to_string(),
            format!("{:?}", t.exit_reason),
            t.strategy.to_owned(),
        ])?;
    }
    w.flush()?;
    let path = dir.join("equity.csv");
    let mut text = String::from("open_time_ms,equity\n");
    for (t, e) in &r.equity {
        let _ = writeln!(text, "{t},{e:.8}");
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&r.summary)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.3}"))
}

fn print_summary(r: &BacktestResult, took: std::time::Duration) {
    let s = &r.summary;
    let rows = [
        ("strategy", s.strategy.clone()),
        ("symbols / bars", format!("{} / {}", s.symbols, s.bars)),
        ("starting balance", format!("{} USDT", s.starting_balance)),
        (
            "final balance",
            format!("{} USDT", s.final_balance.round_dp(4)),
        ),
        ("trades", s.trades.to_string()),
        ("win rate", format!("{:.2} %", s.win_rate * 100.0)),
        ("total return", format!("{:.2} %", s.total_return)),
        (
            "max drawdown",
            format!("{:.2} % ({} USDT)", s.max_drawdown, s.max_drawdown_usdt),
        ),
        ("Sharpe (daily, √365)", opt(s.sharpe)),
        ("Sortino (daily, √365)", opt(s.sortino)),
        ("profit factor", opt(s.profit_factor)),
        ("fees", format!("{} USDT", s.fees.round_dp(4))),
        (
            "refused by the risk rules",
            if s.refused.is_empty() {
                "none".into()
            } else {
                s.refused
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        (
            "time",
            format!(
                "{:.0} ms ({:.1} million bar-steps/s)",
                took.as_secs_f64() * 1e3,
                s.bars as f64 / took.as_secs_f64().max(1e-9) / 1e6
            ),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<26} {v}");
    }
}

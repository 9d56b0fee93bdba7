//! `shardbot drift`: an account stack's closed trades (the journal's, the exchange's numbers
//! once verified) against the backtest of the same bars with the same strategies,
//! parameters and trading settings, trade for trade (common/drift): matched, only in paper,
//! only in the backtest, and what explains each PnL gap.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rust_decimal::Decimal;
use serde::Deserialize;
use shardbot_drift::{
    Cause, Drift,
    sources::{Setup, report},
};
use shardbot_protocol::Interval;
use shardbot_risk::TradingSettings;
use shardbot_service::Settings;
use shardbot_strategy::{OptimizedFile, ParametersInForce, StrategySettings};

#[derive(Args, Debug)]
#[command(after_help = "\
The backtest uses the strategies, parameters and trading settings the journal records in \
force at --from (workers announce theirs to the router at their start, and the first \
recorded inside the window stands for one that started after --from; the risk manager \
records its settings at its start and at every change), else the files the stack reads now. \
Trades still open at --to are left out on both sides.

Example: shardbot drift --account sim --from 2026-12-01 --slippage-ticks 1 --csv drift.csv")]
pub struct DriftArgs {
    #[command(flatten)]
    journal: crate::journal::JournalArgs,
    /// The strategies the stack ran, comma-separated (default: those the journal records in
    /// force at --from, else the stack's strategy.enabled).
    #[arg(long)]
    strategy: Option<String>,
    /// The bars to backtest (default: the history store's, `store:<strategy.interval>`,
    /// the bars the gateway stored): a kline CSV, a folder of them, or
    /// `store:<interval>[:SYMBOLS]`.
    #[arg(long, value_name = "CSV|DIR|store:INTERVAL[:SYMBOLS]")]
    data: Option<PathBuf>,
    /// The window's start: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` (UTC) or Unix ms. Bars before
    /// it only warm the strategies up.
    #[arg(long)]
    from: String,
    /// The window's end (default: now); trades that exit after it are left out.
    #[arg(long)]
    to: Option<String>,
    /// The trading settings (default: those the journal records in force at --from or first in the window, else
    /// the stack's risk.trading_settings_file).
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// The parameters file (default: the parameters the journal records in force at
    /// --from, else the stack's strategy.parameters_file).
    #[arg(long, value_name = "FILE")]
    params_file: Option<PathBuf>,
    /// Taker fee rate the backtest pays per fill.
    #[arg(long, default_value = "0.00055", value_name = "RATE")]
    fee: Decimal,
    /// The backtest's fills this many ticks through the price (bybit-sim's spread_ticks).
    #[arg(long, default_value_t = 0, value_name = "TICKS")]
    slippage_ticks: u32,
    /// Which of stop-loss and take-profit fills when both lie inside one bar.
    #[arg(long, value_enum, default_value = "path")]
    intrabar: crate::backtest::IntrabarArg,
    /// A paper entry this many bars after the backtest's still matches it.
    #[arg(long, default_value_t = 1, value_name = "BARS")]
    max_delay_bars: i64,
    /// Where the instruments' filters (tick, quantity step, minimums) come from: the
    /// exchange the stack trades on (as the router reads them), or the data (ticks from
    /// the prices' decimals, fractional quantities: sizes will differ).
    #[arg(long, value_enum, default_value = "exchange")]
    instruments: InstrumentsArg,
    /// Write every trade of the comparison to this CSV file.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InstrumentsArg {
    Exchange,
    Data,
}

#[derive(Debug, Deserialize)]
struct RiskFiles {
    trading_settings_file: PathBuf,
}

fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M").to_string(),
    )
}

pub fn run(args: DriftArgs) -> anyhow::Result<()> {
    let from = crate::data::parse_time(&args.from).context("--from")?;
    let to = match &args.to {
        Some(t) => crate::data::parse_time(t).context("--to")?,
        None => shardbot_protocol::now_ms(),
    };
    if to <= from {
        bail!("--to ({}) is not after --from ({})", utc(to), utc(from));
    }
    let config = args.journal.config();
    let settings = Settings::load(config)?;
    let strategy: StrategySettings = settings.section("strategy")?;
    let interval: Interval = strategy
        .interval
        .parse()
        .with_context(|| format!("strategy.interval `{}`", strategy.interval))?;
    let bar_ms = interval
        .duration_ms()
        .with_context(|| format!("strategy.interval `{interval}` has no fixed length"))?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("store:{}", strategy.interval)));
    let journal = args.journal.open()?;
    let (trading, settings_from) = match &args.settings {
        Some(p) => (TradingSettings::load(p)?, p.display().to_string()),
        None => match journal.trading_settings_for(from, to)? {
            Some((at, json)) => {
                let t: TradingSettings = serde_json::from_str(&json)
                    .context("the trading settings the journal records")?;
                t.validate("the trading settings the journal records")?;
                (t, format!("the journal's, in force from {} UTC", utc(at)))
            }
            None => {
                let file = settings.section::<RiskFiles>("risk")?.trading_settings_file;
                (
                    TradingSettings::load(&file)?,
                    format!("{} (the journal records none by then)", file.display()),
                )
            }
        },
    };
    eprintln!("trading settings: {settings_from}");
    let recorded = match journal.parameters_for(from, to)? {
        Some((at, json)) => Some((
            at,
            ParametersInForce::parse(&json, "the parameters the journal records")?,
        )),
        None => None,
    };
    let names: Vec<String> = match (&args.strategy, &recorded) {
        (Some(s), _) => s.split(',').map(|n| n.trim().to_owned()).collect(),
        (None, Some((_, r))) => r.strategies.clone(),
        (None, None) => strategy.enabled.clone(),
    };
    let since = recorded.as_ref().map_or(from, |(at, _)| from.max(*at));
    let (params, params_from) = match (&args.params_file, recorded) {
        (Some(p), _) => (OptimizedFile::load(p)?, p.display().to_string()),
        (None, Some((at, r))) => (
            r.parameters,
            format!("the journal's, in force from {} UTC", utc(at)),
        ),
        (None, None) => (
            OptimizedFile::load(&strategy.parameters_file)?,
            format!(
                "{} (the journal records none by then)",
                strategy.parameters_file.display()
            ),
        ),
    };
    eprintln!(
        "strategies: {}; parameters: {params_from}",
        names.join(", ")
    );
    let changes = journal.parameter_changes(since, to)?;
    if changes > 0 && args.params_file.is_none() {
        eprintln!(
            "warning: workers started with other parameters {changes} time(s) inside the \
             window; the backtest uses those in force at its start (narrow --from/--to to \
             compare each part with its own)"
        );
    }
    let mut markets = crate::backtest::load_markets(&data, config)?;
    if let InstrumentsArg::Exchange = args.instruments {
        let ex: shardbot_bybit::ExchangeSettings = settings.section("exchange")?;
        let filters = ex.read_instrument_filters().with_context(|| {
            format!(
                "reading the instruments from the exchange ({}); pass --instruments data to use \
                 the data's ticks",
                ex.environment
            )
        })?;
        let mut missing = Vec::new();
        for m in &mut markets {
            match filters.get(m.series.symbol.as_str()) {
                Some(i) => m.instrument = i.clone(),
                None => missing.push(m.series.symbol.clone()),
            }
        }
        if !missing.is_empty() {
            bail!(
                "the exchange lists no trading instrument for {} (pass --instruments data to \
                 use the data's ticks)",
                missing.join(", ")
            );
        }
    }
    let setup = Setup {
        strategies: names,
        params,
        trading,
        fee: args.fee,
        slippage_ticks: args.slippage_ticks,
        intrabar: args.intrabar.rule(),
        bar_ms,
        max_delay_bars: args.max_delay_bars,
    };
    let r = report(markets, &journal, &setup, from, to)?;
    print(&r.drift, from, to, r.unverified);
    if let Some(path) = &args.csv {
        write_csv(path, &r.drift)?;
        println!("written: {}", path.display());
    }
    Ok(())
}

fn print(d: &Drift, from: i64, to: i64, unverified: usize) {
    println!(
        "drift {} → {} UTC: {} matched, {} only in paper, {} only in the backtest",
        utc(from),
        utc(to),
        d.matched.len(),
        d.only_paper.len(),
        d.only_backtest.len()
    );
    if unverified > 0 {
        println!(
            "note: {unverified} paper trade(s) not yet verified against the exchange: the journal's own numbers are used"
        );
    }
    println!(
        "PnL USDT: paper {}, backtest {}, gap {} (matched {}, unmatched {})",
        d.paper_pnl.round_dp(4),
        d.backtest_pnl.round_dp(4),
        d.gap().round_dp(4),
        (d.gap() - d.unmatched_gap()).round_dp(4),
        d.unmatched_gap().round_dp(4)
    );
    println!("\nthe matched trades' gap by cause (USDT):");
    for (c, v) in Cause::ALL.iter().zip(d.gap_by_cause) {
        println!("  {:<16} {:>14}", c.name(), v.round_dp(4));
    }
    if !d.matched.is_empty() {
        println!(
            "\n{:<14} {:<5} {:<16} {:>9} {:>9} {:>11} {:>11} {:>11}  cause",
            "symbol",
            "side",
            "entry (paper)",
            "delay ms",
            "exit ms",
            "slip ticks",
            "gap USDT",
            "pnl paper"
        );
        for m in &d.matched {
            let t = |x: Option<Decimal>| x.map_or("-".into(), |x| x.normalize().to_string());
            println!(
                "{:<14} {:<5} {:<16} {:>9} {:>9} {:>11} {:>11} {:>11}  {}",
                m.paper.symbol,
                side(m.paper.side),
                utc(m.paper.entry_time_ms),
                m.entry_delay_ms,
                m.exit_delay_ms,
                format!("{}/{}", t(m.slippage_ticks[0]), t(m.slippage_ticks[1])),
                m.gap.round_dp(4),
                m.paper.pnl.round_dp(4),
                m.cause.map_or("-", Cause::name)
            );
        }
    }
    for (title, list) in [
        ("only in paper", &d.only_paper),
        ("only in the backtest", &d.only_backtest),
    ] {
        if list.is_empty() {
            continue;
        }
        println!("\n{title}:");
        for (t, why) in list {
            println!(
                "  {:<14} {:<5} {} pnl {:>11}  {}",
                t.symbol,
                side(t.side),
                utc(t.entry_time_ms),
                t.pnl.round_dp(4),
                why.describe()
            );
        }
    }
}

fn side(s: shardbot_protocol::Side) -> &'static str {
    match s {
        shardbot_protocol::Side::Buy => "long",
        shardbot_protocol::Side::Sell => "short",
    }
}

/// One row per trade: `kind` matched / only_paper / only_backtest, both sides' numbers
/// where they exist, the gap's parts, the cause or the reason.
fn write_csv(path: &std::path::Path, d: &Drift) -> anyhow::Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut header = vec![
        "kind",
        "symbol",
        "side",
        "paper_entry_time",
        "paper_entry_ms",
        "backtest_entry_ms",
        "entry_delay_ms",
        "exit_delay_ms",
        "paper_qty",
        "backtest_qty",
        "paper_entry_price",
        "backtest_entry_price",
        "paper_exit_price",
        "backtest_exit_price",
        "paper_entry_slip_ticks",
        "backtest_entry_slip_ticks",
        "paper_exit_slip_ticks",
        "backtest_exit_slip_ticks",
        "paper_pnl",
        "backtest_pnl",
        "gap",
    ];
    let causes: Vec<String> = Cause::ALL
        .iter()
        .map(|c| c.name().replace(' ', "_"))
        .collect();
    header.extend(causes.iter().map(String::as_str));
    header.push("cause_or_reason");
    w.write_record(&header)?;
    let s = |x: Decimal| x.normalize().to_string();
    let o = |x: Option<Decimal>| x.map_or(String::new(), |x| x.normalize().to_string());
    for m in &d.matched {
        let mut row = vec![
            "matched".to_owned(),
            m.paper.symbol.clone(),
            side(m.paper.side).into(),
            utc(m.paper.entry_time_ms),
            m.paper.entry_time_ms.to_string(),
            m.backtest.entry_time_ms.to_string(),
            m.entry_delay_ms.to_string(),
            m.exit_delay_ms.to_string(),
            s(m.paper.qty),
            s(m.backtest.qty),
            s(m.paper.entry_price),
            s(m.backtest.entry_price),
            s(m.paper.exit_price),
            s(m.backtest.exit_price),
            o(m.slippage_ticks[0]),
            o(m.slippage_ticks[1]),
            o(m.slippage_ticks[2]),
            o(m.slippage_ticks[3]),
            s(m.paper.pnl),
            s(m.backtest.pnl),
            s(m.gap),
        ];
        row.extend(m.parts.iter().map(|p| s(*p)));
        row.push(m.cause.map_or("", |c| c.name()).to_owned());
        w.write_record(&row)?;
    }
    for (kind, list, paper) in [
        ("only_paper", &d.only_paper, true),
        ("only_backtest", &d.only_backtest, false),
    ] {
        for (t, why) in list {
            let (pe, be) = if paper {
                (t.entry_time_ms.to_string(), String::new())
            } else {
                (String::new(), t.entry_time_ms.to_string())
            };
            let (pq, bq, pp, bp, px, bx, ppnl, bpnl) = if paper {
                (
                    s(t.qty),
                    String::new(),
                    s(t.entry_price),
                    String::new(),
                    s(t.exit_price),
                    String::new(),
                    s(t.pnl),
                    String::new(),
                )
            } else {
                (
                    String::new(),
                    s(t.qty),
                    String::new(),
                    s(t.entry_price),
                    String::new(),
                    s(t.exit_price),
                    String::new(),
                    s(t.pnl),
                )
            };
            let mut row = vec![
                kind.to_owned(),
                t.symbol.clone(),
                side(t.side).into(),
                utc(t.entry_time_ms),
                pe,
                be,
                String::new(),
                String::new(),
                pq,
                bq,
                pp,
                bp,
                px,
                bx,
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                ppnl,
                bpnl,
                s(if paper { t.pnl } else { -t.pnl }),
            ];
            row.extend(Cause::ALL.iter().map(|_| String::new()));
            row.push(why.describe());
            w.write_record(&row)?;
        }
    }
    w.flush()?;
    Ok(())
}

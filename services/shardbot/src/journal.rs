//! `shardbot report`, `shardbot trades --csv`, `shardbot stages` (read the journal) and
//! `shardbot reconcile` (asks the running reconciler for a sweep).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use rust_decimal::Decimal;
use shardbot_analytics::{Stats, TradeResult};
use shardbot_bus::Requester;
use shardbot_journal::{Journal, JournalSettings, TradeView};
use shardbot_protocol::{ReconcileReply, ReconcileRequest};
use shardbot_service::Settings;

#[derive(Args, Debug)]
pub struct JournalArgs {
    /// Local configuration file (as the services use it; SHARDBOT_CONFIG works too); the
    /// journal is its `journal.file`.
    #[arg(long, env = "SHARDBOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read this journal file.
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,
    #[command(flatten)]
    account: crate::stacks::AccountArg,
}

impl JournalArgs {
    /// The configuration file given, if any.
    pub(crate) fn config(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    pub(crate) fn open(&self) -> anyhow::Result<Journal> {
        let path = match &self.journal {
            Some(p) => p.clone(),
            None => {
                let settings = Settings::load(self.config.as_deref())?;
                let js: JournalSettings = settings.section("journal")?;
                let configured =
                    self.config.is_some() || std::env::var_os("SHARDBOT__JOURNAL__FILE").is_some();
                let run = crate::stacks::run_dir();
                crate::stacks::choose_journal(
                    self.account.account.as_deref(),
                    configured,
                    &run,
                    &crate::stacks::running(&crate::stacks::ipc_dir()),
                    &crate::stacks::journals_in(&run),
                    &js.file,
                )?
            }
        };
        if !path.exists() {
            bail!(
                "no journal at {} (start the stack first with `scripts/stack up`, name its \
                 account with --account NAME, or pass --journal FILE)",
                path.display()
            );
        }
        Journal::open(&path).with_context(|| format!("cannot open the journal {}", path.display()))
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    journal: JournalArgs,
    /// Measure every trade in the journal from this balance instead. By default the report
    /// covers the simulated balance in force now (the journal records each one the risk
    /// manager set): its trades, measured from it; earlier balances get a line each.
    #[arg(long, value_name = "USDT")]
    starting_balance: Option<Decimal>,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct TradesArgs {
    #[command(flatten)]
    journal: JournalArgs,
    /// Write the trades to this CSV file (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    csv: PathBuf,
    /// Include trades still open (no exit yet).
    #[arg(long)]
    open: bool,
}

#[derive(Args, Debug)]
pub struct StagesArgs {
    #[command(flatten)]
    journal: JournalArgs,
    /// The newest this many bar closes that placed an order.
    #[arg(long, default_value_t = 30)]
    closes: u32,
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// Local configuration file (SHARDBOT_CONFIG works too).
    #[arg(long, env = "SHARDBOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Re-check every trade within the exchange's 7-day retention, verified or not.
    #[arg(long)]
    full: bool,
    #[command(flatten)]
    account: crate::stacks::AccountArg,
}

/// A time as `YYYY-MM-DD HH:MM UTC`.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

fn pf(p: Option<f64>) -> String {
    p.map_or("∞".into(), |p| format!("{p:.2}"))
}

fn opt(p: Option<f64>) -> String {
    p.map_or("-".into(), |p| format!("{p:.2}"))
}

fn stats_row(name: &str, s: &Stats) {
    println!(
        "{:<22} {:>6} {:>8.1}% {:>14} {:>12} {:>8} {:>9}",
        name,
        s.trades,
        s.win_rate * 100.0,
        s.total_pnl.round_dp(4),
        s.avg_pnl.round_dp(4),
        pf(s.profit_factor),
        format!("{}/{}", s.verified, s.trades),
    )
}

fn stats_header(first: &str) {
    println!(
        "{:<22} {:>6} {:>9} {:>14} {:>12} {:>8} {:>9}",
        first, "trades", "win rate", "PnL USDT", "avg USDT", "PF", "verified"
    );
}

pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    let journal = args.journal.open()?;
    let views = journal.trades()?;
    let all: Vec<TradeResult> = views.iter().filter_map(TradeView::result).collect();
    let balances = journal.simulated_balances()?;
    let periods = shardbot_journal::periods(&balances, &all);
    let (start, trades, since) = match (args.starting_balance, periods.last()) {
        (Some(b), _) => (b, all.clone(), None),
        (None, Some(p)) => (
            p.balance.simulated_balance,
            p.trades.clone(),
            Some(p.balance.set_at_ms),
        ),
        (None, None) => bail!(
            "the journal records no simulated balance yet (the risk manager records it when it \
             first reads the account); pass --starting-balance USDT"
        ),
    };
    let r = shardbot_analytics::report(&trades, start);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let o = &r.overall;
    println!("figures: {}", o.basis.describe(o.verified, o.trades));
    match since {
        Some(t) => println!(
            "starting balance    {} USDT (simulated, set {})",
            start.round_dp(2),
            utc(t)
        ),
        None => println!("starting balance    {} USDT (given)", start.round_dp(2)),
    }
    println!(
        "closed trades       {} ({} open)",
        o.trades,
        views.iter().filter(|t| !t.is_closed()).count()
    );
    println!("win rate            {:.1}%", o.win_rate * 100.0);
    println!(
        "total PnL           {} USDT ({:.2}%)",
        o.total_pnl.round_dp(4),
        r.total_return_pct
    );
    println!("fees                {} USDT", o.fees.round_dp(4));
    println!(
        "per trade           {} USDT (best {}, worst {})",
        o.avg_pnl.round_dp(4),
        o.best.round_dp(4),
        o.worst.round_dp(4)
    );
    println!("profit factor       {}", pf(o.profit_factor));
    println!(
        "max drawdown        {} USDT ({:.2}%)",
        r.max_drawdown.round_dp(4),
        r.max_drawdown_pct
    );
    println!(
        "Sharpe / Sortino    {} / {} (daily returns, annualised √365)",
        opt(r.sharpe),
        opt(r.sortino)
    );
    println!("exposure            {:.1}% of the time", r.exposure_pct);
    if let Some(s) = journal.snapshots(1)?.last() {
        // The reconciler checks the exchange's wallet: shown as the simulated balance.
        match shardbot_journal::period_at(&balances, s.at_ms) {
            Some(b) => println!(
                "balance (simulated) expected {} USDT, wallet {} USDT: {} {}",
                b.simulated(s.expected).round_dp(4),
                b.simulated(s.actual).round_dp(4),
                s.status,
                s.note
            ),
            None => println!(
                "balance (exchange)  expected {} USDT, wallet {} USDT: {} {}",
                s.expected.round_dp(4),
                s.actual.round_dp(4),
                s.status,
                s.note
            ),
        }
    }
    if args.starting_balance.is_none() && periods.len() > 1 {
        println!();
        println!(
            "{:<22} {:<22} {:>14} {:>6} {:>14} {:>9}",
            "simulated balance set", "until", "balance USDT", "trades", "PnL USDT", "return"
        );
        for p in &periods {
            let pnl: Decimal = p.trades.iter().map(|t| t.net).sum();
            let pct = if p.balance.simulated_balance > Decimal::ZERO {
                pnl / p.balance.simulated_balance * Decimal::ONE_HUNDRED
            } else {
                Decimal::ZERO
            };
            println!(
                "{:<22} {:<22} {:>14} {:>6} {:>14} {:>8.2}%",
                utc(p.balance.set_at_ms),
                p.until_ms.map_or_else(|| "now".to_string(), utc),
                p.balance.simulated_balance.round_dp(2),
                p.trades.len(),
                pnl.round_dp(4),
                pct
            );
        }
    }
    let flagged = views.iter().filter(|t| t.discrepancy.is_some()).count();
    if flagged > 0 {
        println!(
            "discrepancies       {flagged} trade(s) differed from the exchange (its numbers are used); see `shardbot trades --csv`"
        );
    }
    println!();
    stats_header("strategy");
    for (k, s) in &r.by_strategy {
        stats_row(k, s);
    }
    println!();
    stats_header("symbol");
    for (k, s) in &r.by_symbol {
        stats_row(k, s);
    }
    Ok(())
}

/// Where the time of the order path goes, from the journal's stages of every placed
/// intent: each span's p50 and p99 over the newest `--closes` bar closes.
pub fn stages(args: StagesArgs) -> anyhow::Result<()> {
    use shardbot_journal::{SpanSummary, StageSummary};
    if args.closes == 0 {
        bail!("--closes must be at least 1");
    }
    let journal = args.journal.open()?;
    let stages = journal.stages_of_last_closes(args.closes)?;
    if stages.is_empty() {
        println!("no placed intent in the journal yet (the router records each one's stages)");
        return Ok(());
    }
    let mut per_close: std::collections::BTreeMap<i64, usize> = Default::default();
    for s in &stages {
        *per_close.entry(s.bar_close_ms).or_default() += 1;
    }
    let (first, last) = (
        per_close.keys().next().copied().unwrap_or_default(),
        per_close.keys().last().copied().unwrap_or_default(),
    );
    println!(
        "{} intents placed at {} bar closes ({} .. {}), {} at most in one close",
        stages.len(),
        per_close.len(),
        utc(first),
        utc(last),
        per_close.values().max().copied().unwrap_or_default()
    );
    println!(
        "(bar close = the exchange's time; the other stages are this machine's clock: across hosts \
         they assume synchronised clocks)"
    );
    let ms = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let table = |title: Option<&str>, counted: &str, spans: &[SpanSummary]| {
        println!();
        if let Some(t) = title {
            println!("{t}");
        }
        println!(
            "{:<26} {:>8} {:>10} {:>10}",
            "span", counted, "p50 ms", "p99 ms"
        );
        for s in spans {
            let (name, count) = (s.name, s.count);
            println!("{name:<26} {count:>8} {:>10} {:>10}", ms(s.p50), ms(s.p99));
        }
    };
    table(None, "intents", &StageSummary::of(&stages).spans);
    // The first order of a close is where a close's latency is judged: from the bar's
    // close reaching the gateway to the exchange's acknowledgement.
    let firsts = shardbot_journal::first_acknowledged_per_close(&stages);
    let mut spans = StageSummary::of(&firsts).spans;
    spans.push(SpanSummary::of(
        "gateway → acknowledged",
        firsts
            .iter()
            .filter_map(|s| Some(s.acked_ms - s.received_ms?)),
    ));
    table(
        Some("the first order acknowledged at each close:"),
        "closes",
        &spans,
    );
    Ok(())
}

pub fn trades(args: TradesArgs) -> anyhow::Result<()> {
    let journal = args.journal.open()?;
    let views: Vec<TradeView> = journal
        .trades()?
        .into_iter()
        .filter(|t| args.open || t.is_closed())
        .collect();
    let out: Box<dyn std::io::Write> = if args.csv.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::File::create(&args.csv)
                .with_context(|| format!("cannot write {}", args.csv.display()))?,
        )
    };
    let balances = journal.simulated_balances()?;
    shardbot_journal::write_trades_csv(&views, &balances, out)
        .with_context(|| format!("cannot write {}", args.csv.display()))?;
    if args.csv.as_os_str() != "-" {
        eprintln!("{} trades written to {}", views.len(), args.csv.display());
    }
    Ok(())
}

pub fn reconcile(args: ReconcileArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref())?;
    let common = settings.common()?;
    let endpoints =
        crate::stacks::resolve(&args.account, args.config.as_deref(), &common.endpoints)?;
    let req = Requester::dial(&endpoints.reconciler_rep, &common.bus)?;
    let reply: ReconcileReply = req
        .request_within(
            &ReconcileRequest::Sweep { full: args.full },
            Duration::from_secs(300),
        )
        .with_context(|| format!("no answer from the reconciler at {}", req.url()))?;
    match reply {
        ReconcileReply::Swept(s) => {
            println!(
                "{} sweep: {} checked, {} newly verified, {} new discrepancies, {} imported, {} restored, {} still unverified",
                s.kind,
                s.checked,
                s.verified,
                s.discrepancies,
                s.imported,
                s.restored,
                s.unverified
            );
            if let Some(d) = s.balance_difference {
                println!("expected − wallet balance: {} USDT", d.normalize());
            }
            Ok(())
        }
        ReconcileReply::Error(e) => bail!("the reconciler says: {}", e.message),
    }
}

//! The Performance page's "paper against the backtest" section: the journal's closed trades
//! of the last `dashboard.drift_days` days compared trade for trade with a backtest of the
//! history store's bars (common/drift, as `shardbot drift` does), worked out again every
//! `dashboard.drift_every_s` on the collector's thread.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use rust_decimal::Decimal;
use serde::Serialize;
use shardbot_backtest::Intrabar;
use shardbot_bybit::ExchangeSettings;
use shardbot_drift::{
    Cause, RoundTrip, Unmatched,
    sources::{Report, Setup, report, store_markets},
};
use shardbot_history::HistoryStore;
use shardbot_journal::Journal;
use shardbot_protocol::{Interval, TimestampMs};
use shardbot_risk::TradingSettings;
use shardbot_strategy::{OptimizedFile, ParametersInForce, StrategySettings};

/// Rows of the section's table at most (the newest trades).
const ROWS: usize = 200;

#[derive(Debug, Clone)]
pub struct DriftConfig {
    pub days: u32,
    pub every: Duration,
    pub slippage_ticks: u32,
    /// The history store the gateway writes.
    pub store_dir: PathBuf,
    /// Where the instruments' filters are read.
    pub exchange: ExchangeSettings,
}

/// A cause's share of the matched trades' gap.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CauseView {
    pub cause: &'static str,
    pub usdt: Decimal,
}

/// One trade of the comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DriftRow {
    /// `matched`, `only_paper` or `only_backtest`.
    pub kind: &'static str,
    pub symbol: String,
    pub side: &'static str,
    pub entry_time_ms: i64,
    /// Paper PnL − backtest PnL (matched), or the one side's PnL.
    pub usdt: Decimal,
    /// Paper's and the backtest's entry slippage in ticks (matched).
    pub entry_ticks: Option<(Option<Decimal>, Option<Decimal>)>,
    pub entry_delay_ms: Option<i64>,
    /// The matched pair's cause, or why the trade is on one side only.
    pub why: String,
}

/// The section's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DriftView {
    pub from_ms: TimestampMs,
    pub to_ms: TimestampMs,
    pub matched: usize,
    pub only_paper: usize,
    pub only_backtest: usize,
    pub unverified: usize,
    pub paper_pnl: Decimal,
    pub backtest_pnl: Decimal,
    pub gap: Decimal,
    pub unmatched_gap: Decimal,
    pub causes: Vec<CauseView>,
    /// The newest trades first.
    pub rows: Vec<DriftRow>,
    /// What the backtest ran with, e.g. "the strategies and parameters the journal records
    /// in force then; the trading settings the journal records in force then".
    pub basis: String,
}

fn side(s: shardbot_protocol::Side) -> &'static str {
    match s {
        shardbot_protocol::Side::Buy => "long",
        shardbot_protocol::Side::Sell => "short",
    }
}

/// A trade on one side only: its PnL and why.
fn one_side(kind: &'static str, (t, why): &(RoundTrip, Unmatched)) -> DriftRow {
    DriftRow {
        kind,
        symbol: t.symbol.clone(),
        side: side(t.side),
        entry_time_ms: t.entry_time_ms,
        usdt: t.pnl,
        entry_ticks: None,
        entry_delay_ms: None,
        why: why.describe(),
    }
}

impl DriftView {
    pub fn of(r: &Report) -> DriftView {
        let d = &r.drift;
        let mut rows: Vec<DriftRow> = d
            .matched
            .iter()
            .map(|m| DriftRow {
                kind: "matched",
                symbol: m.paper.symbol.clone(),
                side: side(m.paper.side),
                entry_time_ms: m.paper.entry_time_ms,
                usdt: m.gap,
                entry_ticks: Some((m.slippage_ticks[0], m.slippage_ticks[1])),
                entry_delay_ms: Some(m.entry_delay_ms),
                why: m.cause.map_or("", Cause::name).to_owned(),
            })
            .chain(d.only_paper.iter().map(|u| one_side("only_paper", u)))
            .chain(d.only_backtest.iter().map(|u| one_side("only_backtest", u)))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.entry_time_ms));
        rows.truncate(ROWS);
        DriftView {
            from_ms: r.from_ms,
            to_ms: r.to_ms,
            matched: d.matched.len(),
            only_paper: d.only_paper.len(),
            only_backtest: d.only_backtest.len(),
            unverified: r.unverified,
            paper_pnl: d.paper_pnl,
            backtest_pnl: d.backtest_pnl,
            gap: d.gap(),
            unmatched_gap: d.unmatched_gap(),
            causes: Cause::ALL
                .iter()
                .zip(d.gap_by_cause)
                .map(|(c, usdt)| CauseView {
                    cause: c.name(),
                    usdt,
                })
                .collect(),
            rows,
            basis: String::new(),
        }
    }
}

/// The comparison of the last `days` up to the newest stored bar (`now` when the store is
/// empty), from the first order the stack placed in that time, with the history store's
/// bars and the exchange's instrument filters. The strategies, parameters and trading
/// settings are those the journal records in force at the window's start (or first in
/// it), else the configuration's and the risk manager's now (`settings`).
pub fn work_out(
    cfg: &DriftConfig,
    strategy: &StrategySettings,
    settings: Option<&serde_json::Value>,
    journal: &Journal,
    instruments: &HashMap<shardbot_protocol::Symbol, shardbot_protocol::Instrument>,
    now: TimestampMs,
) -> Result<DriftView, String> {
    let interval: Interval = strategy
        .interval
        .parse()
        .map_err(|e| format!("strategy.interval: {e}"))?;
    let bar_ms = interval
        .duration_ms()
        .ok_or_else(|| format!("strategy.interval {interval} has no fixed length"))?;
    let store = HistoryStore::open(&cfg.store_dir).map_err(|e| e.to_string())?;
    // The window ends at the newest stored bar's close: the exchange's clock, which in a
    // replay is not this machine's.
    let mut end = None;
    for symbol in store.symbols(interval).map_err(|e| e.to_string())? {
        let last = store
            .last_open(&symbol, interval)
            .map_err(|e| e.to_string())?;
        end = end.max(last.map(|t| t + bar_ms));
    }
    let to = end.unwrap_or(now);
    // From the window's start, or from the first order the stack placed in it when it
    // began trading later (started halted, or new): before, the backtest would trade alone.
    let window = to - i64::from(cfg.days) * 86_400_000;
    let first_placed = journal
        .stages_since(window)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|s| s.bar_close_ms)
        .min();
    let from = first_placed.map_or(window, |t| t.max(window));
    let warm_up = i64::try_from(strategy.history_bars).unwrap_or(0) * bar_ms;
    let markets = store_markets(&store, interval, from - warm_up, to, instruments)
        .map_err(|e| e.to_string())?;
    let (strategies, params, params_from) = match journal
        .parameters_for(from, to)
        .map_err(|e| e.to_string())?
    {
        Some((_, json)) => {
            let set = ParametersInForce::parse(&json, "the parameters the journal records")
                .map_err(|e| e.to_string())?;
            (
                set.strategies,
                set.parameters,
                "the strategies and parameters the journal records in force then",
            )
        }
        None => (
            strategy.enabled.clone(),
            OptimizedFile::load(&strategy.parameters_file).map_err(|e| e.to_string())?,
            "the configuration's strategies and parameters file (the journal records none by then)",
        ),
    };
    let (trading, settings_from) = match journal
        .trading_settings_for(from, to)
        .map_err(|e| e.to_string())?
    {
        Some((_, json)) => (
            serde_json::from_str::<TradingSettings>(&json)
                .map_err(|e| format!("the trading settings the journal records: {e}"))?,
            "the trading settings the journal records in force then",
        ),
        None => {
            let settings = settings.ok_or(
                "the trading settings are not known (the journal records none, the risk \
                     manager does not answer)",
            )?;
            (
                serde_json::from_value::<TradingSettings>(settings.clone())
                    .map_err(|e| format!("the risk manager's trading settings: {e}"))?,
                "the risk manager's trading settings (the journal records none by then)",
            )
        }
    };
    let setup = Setup {
        strategies,
        params,
        fee: trading.fee_rate,
        trading,
        slippage_ticks: cfg.slippage_ticks,
        intrabar: Intrabar::Path,
        bar_ms,
        max_delay_bars: 1,
    };
    let r = report(markets, journal, &setup, from, to).map_err(|e| e.to_string())?;
    let mut view = DriftView::of(&r);
    view.basis = format!("{params_from}; {settings_from}");
    Ok(view)
}

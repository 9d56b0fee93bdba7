//! Where the two sides come from: the backtest of the window's bars (the caller loads them,
//! with the instruments' filters) with the strategies, parameters and settings, and the
//! journal's closed trades, refusals and placed intents. The command line and the
//! dashboard both build their report here.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use shardbot_backtest::{
    BacktestConfig, ExitReason, Intrabar, Market, Series, Slippage, run_roster,
};
use shardbot_history::HistoryStore;
use shardbot_journal::Journal;
use shardbot_protocol::{Instrument, Interval, Symbol};
use shardbot_risk::TradingSettings;
use shardbot_strategy::OptimizedFile;

use crate::{Drift, Evidence, Refused, RoundTrip, compare};

/// How the backtest side is run and the trades matched.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The strategies the stack runs, in its order.
    pub strategies: Vec<String>,
    pub params: OptimizedFile,
    pub trading: TradingSettings,
    /// Taker fee rate per fill.
    pub fee: Decimal,
    /// Fills this many ticks through the price.
    pub slippage_ticks: u32,
    pub intrabar: Intrabar,
    pub bar_ms: i64,
    /// See [`Evidence::max_delay_bars`].
    pub max_delay_bars: i64,
}

/// A drift report of a window.
#[derive(Debug, Clone)]
pub struct Report {
    pub from_ms: i64,
    pub to_ms: i64,
    pub drift: Drift,
    /// Paper trades not yet verified against the exchange (the journal's own numbers are
    /// used for them).
    pub unverified: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("{strategy}'s parameters for {symbol}: {source}")]
    Strategy {
        strategy: String,
        symbol: String,
        #[source]
        source: Box<shardbot_strategy::BuildError>,
    },
    #[error("backtest: {0}")]
    Backtest(#[from] shardbot_backtest::BacktestError),
    #[error("journal: {0}")]
    Journal(#[from] shardbot_journal::JournalError),
    #[error("history store: {0}")]
    History(#[from] shardbot_history::HistoryError),
}

/// The history store's `interval` bars opening in `[from_ms, to_ms)` of every symbol
/// `instruments` lists, each with its filters (the gateway's stored bars, as the workers
/// traded them).
pub fn store_markets(
    store: &HistoryStore,
    interval: Interval,
    from_ms: i64,
    to_ms: i64,
    instruments: &HashMap<Symbol, Instrument>,
) -> Result<Vec<Market>, DriftError> {
    let mut markets = Vec::new();
    for symbol in store.symbols(interval)? {
        let Some(instrument) = instruments.get(symbol.as_str()) else {
            continue;
        };
        let bars = store.read(&symbol, interval, Some(from_ms), Some(to_ms - 1), None)?;
        if bars.is_empty() {
            continue;
        }
        markets.push(Market {
            series: Series::from_bars(symbol.as_str(), &bars),
            instrument: instrument.clone(),
        });
    }
    Ok(markets)
}

/// The window `[from_ms, to_ms)`: `markets` hold the bars to backtest (those before
/// `from_ms` only warm up; later ones than `to_ms` are dropped here), `journal` the paper
/// side.
pub fn report(
    mut markets: Vec<Market>,
    journal: &Journal,
    setup: &Setup,
    from_ms: i64,
    to_ms: i64,
) -> Result<Report, DriftError> {
    for m in &mut markets {
        m.series.candles.retain(|c| c.open_time_ms < to_ms);
    }
    markets.retain(|m| !m.series.candles.is_empty());
    let backtest = backtest_side(&markets, setup, from_ms, to_ms)?;
    let symbols: HashSet<&str> = markets.iter().map(|m| m.series.symbol.as_str()).collect();
    let (paper, unverified, open_at_end) = paper_side(journal, setup, &symbols, from_ms, to_ms)?;
    let bar_ms = setup.bar_ms;
    let evidence = Evidence {
        bar_ms,
        max_delay_bars: setup.max_delay_bars,
        opens: markets
            .iter()
            .flat_map(|m| {
                m.series
                    .candles
                    .iter()
                    .filter(|c| c.open_time_ms >= from_ms)
                    .map(|c| {
                        (
                            (m.series.symbol.clone(), c.open_time_ms),
                            shardbot_backtest::data::decimal_price(c.open),
                        )
                    })
            })
            .collect(),
        ticks: markets
            .iter()
            .map(|m| (m.series.symbol.clone(), m.instrument.tick_size))
            .collect(),
        refused: journal
            .refusals_since(from_ms - bar_ms)?
            .into_iter()
            .filter(|r| r.action.starts_with("enter"))
            .map(|r| Refused {
                symbol: r.symbol,
                signal_bar_ms: r.bar_open_ms,
                code: r.code,
                reason: r.reason,
            })
            .collect(),
        placed: journal
            .stages_since(from_ms - bar_ms)?
            .into_iter()
            .filter(|s| s.action.starts_with("enter"))
            .map(|s| (s.symbol, s.bar_close_ms))
            .collect(),
        open_at_end,
    };
    Ok(Report {
        from_ms,
        to_ms,
        drift: compare(&paper, &backtest, &evidence),
        unverified,
    })
}

/// The backtest's closed trades of the window (those the data's end closed left out).
fn backtest_side(
    markets: &[Market],
    setup: &Setup,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<RoundTrip>, DriftError> {
    let mut rosters = Vec::with_capacity(markets.len());
    for m in markets {
        let mut roster = Vec::with_capacity(setup.strategies.len());
        for n in &setup.strategies {
            let (p, _) = setup.params.params_for(n, &m.series.symbol);
            roster.push(shardbot_strategy::build(n, &p).map_err(|source| {
                DriftError::Strategy {
                    strategy: n.clone(),
                    symbol: m.series.symbol.clone(),
                    source: Box::new(source),
                }
            })?);
        }
        rosters.push(roster);
    }
    let mut cfg = BacktestConfig::all_in(
        &setup.strategies.join(","),
        shardbot_strategy::Params::new(),
        setup.trading.simulated_balance,
    );
    cfg.settings = setup.trading.clone();
    cfg.fee_rate = setup.fee;
    cfg.settings.fee_rate = setup.fee;
    cfg.slippage = Slippage::Ticks(setup.slippage_ticks);
    cfg.intrabar = setup.intrabar;
    cfg.funding_rate = None;
    cfg.trade_from_ms = Some(from_ms);
    Ok(run_roster(markets, &cfg, rosters)?
        .trades
        .iter()
        .filter(|t| t.exit_reason != ExitReason::EndOfData && t.exit_time_ms < to_ms)
        .map(|t| RoundTrip {
            symbol: t.symbol.to_string(),
            side: t.side,
            qty: t.qty,
            entry_time_ms: t.entry_time_ms,
            exit_time_ms: t.exit_time_ms,
            entry_price: t.entry_price,
            exit_price: t.exit_price,
            fees: t.fees,
            funding: t.funding,
            pnl: t.pnl,
        })
        .collect())
}

/// The paper trades, how many are unverified, and the `(symbol, entry bar)` of those still
/// open at the window's end.
type PaperSide = (Vec<RoundTrip>, usize, HashSet<(String, i64)>);

/// The journal's trades placed by the stack, of the strategies and symbols compared,
/// opened and closed in the window; how many of them are not yet verified; and the
/// `(symbol, entry bar)` of those opened in it and not closed in it.
fn paper_side(
    journal: &Journal,
    setup: &Setup,
    symbols: &HashSet<&str>,
    from_ms: i64,
    to_ms: i64,
) -> Result<PaperSide, DriftError> {
    let mut unverified = 0;
    let mut open_at_end = HashSet::new();
    let trips = journal
        .trades_since(from_ms)?
        .into_iter()
        .filter(|t| {
            t.calc.source == "shardbot"
                && t.calc.entry_time_ms >= from_ms
                && t.calc.entry_time_ms < to_ms
                && t.calc
                    .strategy
                    .as_deref()
                    .is_none_or(|s| setup.strategies.iter().any(|n| n == s))
                && symbols.contains(t.calc.symbol.as_str())
        })
        .filter_map(|t| {
            let Some(exit) = t.calc.exit_time_ms.filter(|x| *x < to_ms) else {
                let bar =
                    t.calc.entry_time_ms.div_euclid(setup.bar_ms.max(1)) * setup.bar_ms.max(1);
                open_at_end.insert((t.calc.symbol.clone(), bar));
                return None;
            };
            let trip = RoundTrip {
                symbol: t.calc.symbol.clone(),
                side: t.calc.side,
                qty: t.qty(),
                entry_time_ms: t.calc.entry_time_ms,
                exit_time_ms: exit,
                entry_price: t.entry_price(),
                exit_price: t.exit_price()?,
                fees: t.fees(),
                funding: t.funding(),
                pnl: t.pnl()?,
            };
            if !t.verified() {
                unverified += 1;
            }
            Some(trip)
        })
        .collect();
    Ok((trips, unverified, open_at_end))
}

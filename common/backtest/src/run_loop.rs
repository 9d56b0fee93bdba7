//! The run: markets stepped in time order (in one account, or each alone), day
//! boundaries for the daily loss limit, and the results at the end.

use rust_decimal::prelude::ToPrimitive;
use shardbot_protocol::Side;
use shardbot_strategy::{Candle, Strategy};

use crate::{
    BacktestConfig, BacktestError, BacktestResult, ExitReason, Market,
    account::{Account, Pending, SymbolState},
    fills::{Rules, step},
    fixed::dec,
    results::summarise,
};

/// The open times of the first and the last bar of `markets` ((0, 0) without bars).
pub fn bar_span(markets: &[Market]) -> (i64, i64) {
    let times = || {
        markets
            .iter()
            .filter_map(|m| Some((m.series.candles.first()?, m.series.candles.last()?)))
    };
    (
        times().map(|(f, _)| f.open_time_ms).min().unwrap_or(0),
        times().map(|(_, l)| l.open_time_ms).max().unwrap_or(0),
    )
}

/// Runs `cfg` over `markets`. Bars of all symbols are processed in time order (symbols in
/// the given order within one timestamp).
pub fn run(markets: &[Market], cfg: &BacktestConfig) -> Result<BacktestResult, BacktestError> {
    let strategies = markets
        .iter()
        .map(|_| shardbot_strategy::build(&cfg.strategy, &cfg.params))
        .collect::<Result<Vec<_>, _>>()?;
    run_with(markets, cfg, strategies)
}

/// [`run`] with the strategy instances given (one per market, in order): for strategies
/// that are not built in, and for tests.
pub fn run_with(
    markets: &[Market],
    cfg: &BacktestConfig,
    strategies: Vec<Box<dyn Strategy>>,
) -> Result<BacktestResult, BacktestError> {
    run_roster(
        markets,
        cfg,
        strategies.into_iter().map(|s| vec![s]).collect(),
    )
}

/// [`run`] with several strategies on each market (`rosters[i]` on `markets[i]`, in the
/// roster's order), sharing the market's one position as the workers do: its owner's
/// signals act, the others' are dropped ([`shardbot_strategy::acting`]). Each trade names
/// its strategy.
pub fn run_roster(
    markets: &[Market],
    cfg: &BacktestConfig,
    rosters: Vec<Vec<Box<dyn Strategy>>>,
) -> Result<BacktestResult, BacktestError> {
    let total: usize = markets.iter().map(|m| m.series.candles.len()).sum();
    if total == 0 || rosters.len() != markets.len() || rosters.iter().any(Vec::is_empty) {
        return Err(BacktestError::NoData);
    }
    let mut states: Vec<SymbolState> = rosters
        .into_iter()
        .map(|strategies| SymbolState {
            signals: Vec::with_capacity(strategies.len()),
            strategies,
            open: None,
            has_pending: false,
            prev_open: None,
            pending: Pending::default(),
            last_close: 0.0,
            stopped_at: None,
        })
        .collect();
    let rules: Vec<Rules<'_>> = markets
        .iter()
        .map(|m| Rules::new(m, cfg.slippage))
        .collect();
    let mut eng = Account::new(cfg);
    let longest = markets
        .iter()
        .map(|m| m.series.candles.len())
        .max()
        .unwrap_or(0);
    let mut equity: Vec<(i64, f64)> = Vec::with_capacity(longest + 1);
    // One market (the comparison run, every trial of a single-symbol optimization): its
    // bars in order, without looking for the next timestamp among markets.
    if let ([m], [st], [r]) = (markets, states.as_mut_slice(), rules.as_slice()) {
        for c in &m.series.candles {
            let t = c.open_time_ms;
            eng.begin(t);
            step(&mut eng, r, st, c);
            eng.record(t, &mut equity);
        }
    } else {
        run_markets(markets, &mut eng, &rules, &mut states, &mut equity);
    }
    Ok(finish(
        markets,
        cfg,
        eng,
        &rules,
        &mut states,
        equity,
        total,
    ))
}

/// [`run_with`]'s steps over several markets, in time order (markets in the given order
/// within one timestamp).
pub(crate) fn run_markets(
    markets: &[Market],
    eng: &mut Account<'_>,
    rules: &[Rules<'_>],
    states: &mut [SymbolState],
    equity: &mut Vec<(i64, f64)>,
) {
    // Each market's next bar and its open time (i64::MAX once the data ends), side by
    // side for all markets: the markets under way are scanned at every step without
    // touching their candles. Each step takes the earliest next open and runs every market
    // whose next bar opens then, finding the following step's time as it goes.
    let mut next = vec![0usize; markets.len()];
    let mut next_t: Vec<i64> = markets
        .iter()
        .map(|m| {
            m.series
                .candles
                .first()
                .map_or(i64::MAX, |c| c.open_time_ms)
        })
        .collect();
    // Many markets run on staged copies of their bars (see `STAGE`): market `s`'s are
    // `staged[s * STAGE..]`, of its bars from `stage_at[s]` to `stage_end[s]`.
    let staging = markets.len() > STAGE_ABOVE_MARKETS;
    let staged_len = if staging { markets.len() * STAGE } else { 0 };
    let mut staged: Vec<Candle> = vec![
        Candle {
            open_time_ms: 0,
            open: 0.0,
            high: 0.0,
            low: 0.0,
            close: 0.0,
            volume: 0.0,
        };
        staged_len
    ];
    let mut stage_at = vec![0usize; markets.len()];
    let mut stage_end = vec![0usize; markets.len()];
    // The markets due at a step, in the given order, with where their bar's copy is.
    let mut due: Vec<(usize, usize)> = Vec::with_capacity(markets.len());
    // Markets whose data has not started yet, the earliest last: they join `active` (in
    // its order) at their first bar, so a step scans only the markets under way.
    let mut waiting: Vec<usize> = (0..markets.len())
        .filter(|&s| next_t[s] != i64::MAX)
        .collect();
    waiting.sort_by_key(|&s| std::cmp::Reverse((next_t[s], s)));
    let mut active: Vec<usize> = Vec::with_capacity(markets.len());
    // The earliest next open among the markets under way.
    let mut soonest = i64::MAX;
    while !active.is_empty() || !waiting.is_empty() {
        let mut t = soonest;
        while let Some(&w) = waiting.last()
            && next_t[w] <= t
        {
            t = next_t[w];
            waiting.pop();
            let at = active.partition_point(|&s| s < w);
            active.insert(at, w);
        }
        eng.begin(t);
        let mut ended = false;
        soonest = i64::MAX;
        if staging {
            // First the markets due at `t` are found (their bars staged when the copies
            // run out, the open times of the bars after them read), then they run.
            due.clear();
            for &s in &active {
                if next_t[s] == t {
                    // The market's own data is read only when its copies run out.
                    let i = next[s];
                    if i >= stage_end[s] {
                        let candles = &markets[s].series.candles;
                        let run = &candles[i..candles.len().min(i + STAGE)];
                        staged[s * STAGE..s * STAGE + run.len()].copy_from_slice(run);
                        stage_at[s] = i;
                        stage_end[s] = i + run.len();
                    }
                    let at = s * STAGE + (i - stage_at[s]);
                    next[s] = i + 1;
                    next_t[s] = if i + 1 < stage_end[s] {
                        staged[at + 1].open_time_ms
                    } else if let Some(c) = markets[s].series.candles.get(i + 1) {
                        c.open_time_ms
                    } else {
                        ended = true;
                        i64::MAX
                    };
                    due.push((s, at));
                }
                soonest = soonest.min(next_t[s]);
            }
            for &(s, at) in &due {
                step(eng, &rules[s], &mut states[s], &staged[at]);
            }
        } else {
            for &s in &active {
                if next_t[s] == t {
                    let candles = &markets[s].series.candles;
                    let i = next[s];
                    step(eng, &rules[s], &mut states[s], &candles[i]);
                    next[s] = i + 1;
                    next_t[s] = candles.get(i + 1).map_or(i64::MAX, |c| c.open_time_ms);
                    ended |= i + 1 == candles.len();
                }
                soonest = soonest.min(next_t[s]);
            }
        }
        if ended {
            active.retain(|&s| next[s] < markets[s].series.candles.len());
        }
        eng.record(t, equity);
    }
}

/// How many bars of a market a run over many markets copies at a time. The markets then
/// run on copies of their next bars, all in one block: with hundreds of markets in one
/// account, reading one bar of each in turn from its own part of memory left the
/// strategies waiting for it (a third of the time, and every bar another page), where a
/// run of `STAGE` bars is one short sequential read. 32 measured best over the 329 daily
/// files (8, 16 and 64 slower).
pub(crate) const STAGE: usize = 32;

/// From how many markets on a run stages their bars ([`STAGE`]). With few markets the
/// processor follows each one's bars by itself and the copying only costs: one account
/// over the first 80 daily files ran faster reading bars in place (21 against 19 million
/// bar-steps/s, mean_reversion), and so did the eight 5-minute files (33 against 28);
/// from 96 files on staging was ahead (20 against 15-20), and far ahead at 329 (19-21
/// against 13-16). The crossing lies between and depends on the machine's caches.
pub(crate) const STAGE_ABOVE_MARKETS: usize = 88;

/// The first millisecond of the UTC day after the one `t` is in.
pub(crate) fn next_day(t: i64) -> i64 {
    (t.div_euclid(86_400_000) + 1).saturating_mul(86_400_000)
}

/// Closes what is still open at its last close and sums the run up.
pub(crate) fn finish(
    markets: &[Market],
    cfg: &BacktestConfig,
    mut eng: Account<'_>,
    rules: &[Rules<'_>],
    states: &mut [SymbolState],
    mut equity: Vec<(i64, f64)>,
    total: usize,
) -> BacktestResult {
    let (first, _) = bar_span(markets);
    // Whatever is open at the end closes at its last close.
    let end = equity.last().map_or(0, |x| x.0);
    for (s, st) in states.iter_mut().enumerate() {
        if st.open.is_some() {
            let m = &markets[s];
            let side = st.open.as_ref().map_or(Side::Buy, |o| o.side.opposite());
            let last = m.series.candles.last().map_or(0, |c| c.open_time_ms);
            let px = rules[s].slip(dec(st.last_close), side);
            eng.close(&rules[s], st, px, last, ExitReason::EndOfData);
        }
    }
    if let Some(last) = equity.last_mut() {
        *last = (end, eng.balance.to_f64().unwrap_or(last.1));
    }
    let summary = summarise(markets, cfg, &eng, &equity, total as u64, (first, end));
    BacktestResult {
        trades: eng.trades,
        equity,
        summary,
    }
}

//! Drift: the trades a stack made (paper or live, the exchange's verified numbers) against
//! the backtest of the same bars with the same parameters and settings, trade for trade.
//! [`compare`] is pure (both sides and the evidence handed over) and table-tested;
//! [`sources::report`] builds both sides, from the bars and the journal, and compares them.
//!
//! **Matching.** A backtest trade and a paper trade match when they are of the same symbol
//! and side, and the paper entry fills in the backtest's entry bar or up to
//! [`Evidence::max_delay_bars`] bars later (an order that missed its bar). Each symbol's
//! trades are matched in time order, each trade once.
//!
//! **The gap of a matched pair**, paper PnL − backtest PnL (closed PnL: gross − fees −
//! funding), splits exactly into (`d` = +1 long, −1 short; `q` quantities, `p` prices, `o`
//! the opens of the bars they filled in; paper `P`, backtest `B`):
//! - size: `d·(exit_B − entry_B)·(q_P − q_B)`;
//! - entry slippage, when both entries filled in the same bar: `−d·(entry_P − entry_B)·q_P`
//!   (each fill's distance from that bar's open, in ticks, is reported beside);
//! - entry delay, when the paper entry filled in a later bar: the same difference, all of
//!   it (the backtest's fill was at its bar's open; the paper one came later, wherever the
//!   price had gone by then);
//! - exit slippage and exit delay, the same for the exits with the sign turned;
//! - fees: `−(fees_P − fees_B)`; funding: `−(funding_P − funding_B)`.
//!
//! Their sum is the gap to the last digit; the largest in size is the pair's cause (of
//! equal ones, the first listed).
//!
//! **Unmatched trades** say why where the journal knows: a backtest entry the risk rules
//! refused live, one whose paper trade was still open at the window's end, one the stack
//! placed without a trade following, one the stack sent no intent for (a worker or the stack down at that bar, or a different decision); a paper
//! trade the backtest did not make while it held a position of its own on that symbol (an
//! earlier difference carried over), or did not signal.

pub mod sources;

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use serde::Serialize;
use shardbot_protocol::Side;

/// A closed round trip, either side's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoundTrip {
    pub symbol: String,
    /// The position's side: `Buy` long, `Sell` short.
    pub side: Side,
    pub qty: Decimal,
    pub entry_time_ms: i64,
    pub exit_time_ms: i64,
    pub entry_price: Decimal,
    pub exit_price: Decimal,
    /// Opening and closing fees.
    pub fees: Decimal,
    /// Funding paid (negative: received).
    pub funding: Decimal,
    /// Closed PnL: gross − fees − funding.
    pub pnl: Decimal,
}

/// A refusal the journal holds for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub symbol: String,
    /// The open time of the bar whose close signalled it.
    pub signal_bar_ms: i64,
    pub code: String,
    pub reason: String,
}

/// What the journal and the stored bars say beyond the trades.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The bars' length.
    pub bar_ms: i64,
    /// How many bars late a paper entry may fill and still match (0: its own bar only).
    pub max_delay_bars: i64,
    /// Each bar's open price, by symbol and open time.
    pub opens: HashMap<(String, i64), Decimal>,
    /// Each symbol's tick size.
    pub ticks: HashMap<String, Decimal>,
    /// Entries the risk rules refused live.
    pub refused: Vec<Refused>,
    /// `(symbol, bar close)` of every entry the stack placed (its stages).
    pub placed: HashSet<(String, i64)>,
    /// `(symbol, entry bar)` of the paper trades entered in the window and not closed in
    /// it (still open at its end, or closed after).
    pub open_at_end: HashSet<(String, i64)>,
}

/// What explains a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Size,
    EntrySlippage,
    EntryDelay,
    ExitSlippage,
    ExitDelay,
    Fees,
    Funding,
}

impl Cause {
    pub const ALL: [Cause; 7] = [
        Cause::Size,
        Cause::EntrySlippage,
        Cause::EntryDelay,
        Cause::ExitSlippage,
        Cause::ExitDelay,
        Cause::Fees,
        Cause::Funding,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cause::Size => "size",
            Cause::EntrySlippage => "entry slippage",
            Cause::EntryDelay => "entry delay",
            Cause::ExitSlippage => "exit slippage",
            Cause::ExitDelay => "exit delay",
            Cause::Fees => "fees",
            Cause::Funding => "funding",
        }
    }
}

/// A matched pair and its gap.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matched {
    pub paper: RoundTrip,
    pub backtest: RoundTrip,
    pub entry_delay_ms: i64,
    pub exit_delay_ms: i64,
    /// How far each fill was from its bar's open against the trader, in ticks (None
    /// without the open or the tick): paper entry, backtest entry, paper exit, backtest
    /// exit.
    pub slippage_ticks: [Option<Decimal>; 4],
    /// Paper PnL − backtest PnL.
    pub gap: Decimal,
    /// The gap's parts, in [`Cause::ALL`]'s order; with `residual` they sum to `gap`.
    pub parts: [Decimal; 7],
    /// What the parts leave of the gap: zero when both sides' PnL is gross − fees −
    /// funding to the digit (an exchange rounding its closed PnL otherwise shows here).
    pub residual: Decimal,
    /// The largest part (None when the gap is zero).
    pub cause: Option<Cause>,
}

/// Why a trade has no counterpart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Unmatched {
    /// The risk rules refused the entry live: its code and reason.
    Refused(String),
    /// The stack's trade of that entry was still open at the window's end (or closed
    /// after it), where the backtest's had closed.
    OpenAtEnd,
    /// The stack placed the entry at that close, and no trade followed in the journal.
    PlacedNoTrade,
    /// The stack sent no intent at that close: a worker or the stack down, or another
    /// decision.
    NoIntent,
    /// The backtest held its own position on the symbol then (an earlier difference
    /// carried over).
    BacktestHeld,
    /// The backtest's strategy did not enter then.
    NoSignal,
}

impl Unmatched {
    pub fn describe(&self) -> String {
        match self {
            Unmatched::Refused(why) => format!("refused live by the risk rules: {why}"),
            Unmatched::OpenAtEnd => {
                "in paper still open at the window's end (the backtest's closed within it)".into()
            }
            Unmatched::PlacedNoTrade => "placed at that close; no trade in the journal".into(),
            Unmatched::NoIntent => {
                "no intent from the stack at that close (a worker or the stack down, or another decision)".into()
            }
            Unmatched::BacktestHeld => {
                "the backtest held its own position on the symbol then".into()
            }
            Unmatched::NoSignal => "the backtest did not enter then".into(),
        }
    }
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub matched: Vec<Matched>,
    pub only_paper: Vec<(RoundTrip, Unmatched)>,
    pub only_backtest: Vec<(RoundTrip, Unmatched)>,
    pub paper_pnl: Decimal,
    pub backtest_pnl: Decimal,
    /// The matched pairs' gaps by cause, in [`Cause::ALL`]'s order.
    pub gap_by_cause: [Decimal; 7],
}

impl Drift {
    /// Paper PnL − backtest PnL, all trades.
    pub fn gap(&self) -> Decimal {
        self.paper_pnl - self.backtest_pnl
    }

    /// What the unmatched trades make of the gap: paper-only PnL − backtest-only PnL.
    pub fn unmatched_gap(&self) -> Decimal {
        self.only_paper.iter().map(|(t, _)| t.pnl).sum::<Decimal>()
            - self
                .only_backtest
                .iter()
                .map(|(t, _)| t.pnl)
                .sum::<Decimal>()
    }
}

fn dir(side: Side) -> Decimal {
    match side {
        Side::Buy => Decimal::ONE,
        Side::Sell => Decimal::NEGATIVE_ONE,
    }
}

fn bar_of(t: i64, bar_ms: i64) -> i64 {
    if bar_ms <= 0 {
        t
    } else {
        t.div_euclid(bar_ms) * bar_ms
    }
}

/// Compares `paper` with `backtest` (each any order).
pub fn compare(paper: &[RoundTrip], backtest: &[RoundTrip], ev: &Evidence) -> Drift {
    let mut paper: Vec<&RoundTrip> = paper.iter().collect();
    let mut backtest: Vec<&RoundTrip> = backtest.iter().collect();
    let order = |t: &&RoundTrip| (t.symbol.clone(), t.entry_time_ms);
    paper.sort_by_key(order);
    backtest.sort_by_key(order);
    let mut used = vec![false; paper.len()];
    let mut matched = Vec::new();
    let mut only_backtest = Vec::new();
    for b in &backtest {
        let from = bar_of(b.entry_time_ms, ev.bar_ms);
        let to = from + ev.max_delay_bars.max(0) * ev.bar_ms;
        let found = paper.iter().enumerate().position(|(i, p)| {
            !used[i]
                && p.symbol == b.symbol
                && p.side == b.side
                && (from..=to).contains(&bar_of(p.entry_time_ms, ev.bar_ms))
        });
        match found {
            Some(i) => {
                used[i] = true;
                matched.push(pair(paper[i], b, ev));
            }
            None => only_backtest.push(((*b).clone(), why_not_paper(b, ev))),
        }
    }
    let only_paper: Vec<(RoundTrip, Unmatched)> = paper
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(p, _)| {
            let held = backtest.iter().any(|b| {
                b.symbol == p.symbol
                    && b.entry_time_ms <= p.entry_time_ms
                    && p.entry_time_ms < b.exit_time_ms
            });
            let why = if held {
                Unmatched::BacktestHeld
            } else {
                Unmatched::NoSignal
            };
            ((*p).clone(), why)
        })
        .collect();
    let mut gap_by_cause = [Decimal::ZERO; 7];
    for m in &matched {
        for (total, part) in gap_by_cause.iter_mut().zip(m.parts) {
            *total += part;
        }
    }
    Drift {
        paper_pnl: paper.iter().map(|t| t.pnl).sum(),
        backtest_pnl: backtest.iter().map(|t| t.pnl).sum(),
        matched,
        only_paper,
        only_backtest,
        gap_by_cause,
    }
}

fn why_not_paper(b: &RoundTrip, ev: &Evidence) -> Unmatched {
    // The fill bar's open is the signal bar's close.
    let close = bar_of(b.entry_time_ms, ev.bar_ms);
    let signal_bar = close - ev.bar_ms;
    if let Some(r) = ev
        .refused
        .iter()
        .find(|r| r.symbol == b.symbol && r.signal_bar_ms == signal_bar)
    {
        return Unmatched::Refused(format!("{} ({})", r.code, r.reason));
    }
    // The paper entry may have come as late as a matched one may.
    if (0..=ev.max_delay_bars.max(0)).any(|k| {
        ev.open_at_end
            .contains(&(b.symbol.clone(), close + k * ev.bar_ms))
    }) {
        Unmatched::OpenAtEnd
    } else if ev.placed.contains(&(b.symbol.clone(), close)) {
        Unmatched::PlacedNoTrade
    } else {
        Unmatched::NoIntent
    }
}

fn pair(p: &RoundTrip, b: &RoundTrip, ev: &Evidence) -> Matched {
    let d = dir(b.side);
    let open = |t: i64| {
        ev.opens
            .get(&(b.symbol.clone(), bar_of(t, ev.bar_ms)))
            .copied()
    };
    let tick = ev.ticks.get(&b.symbol).copied().filter(|t| !t.is_zero());
    // A fill's distance from its bar's open, against the trader: an entry paying above
    // the open of a long, an exit selling below it.
    let against = |price: Decimal, t: i64, entry: bool| -> Option<Decimal> {
        let o = open(t)?;
        let sign = if entry { d } else { -d };
        Some(sign * (price - o))
    };
    let ticks = |x: Option<Decimal>| Some((x? / tick?).round_dp(4));
    // A price difference is slippage in the same bar, delay in another.
    let split = |price_p: Decimal, price_b: Decimal, t_p: i64, t_b: i64| {
        if bar_of(t_p, ev.bar_ms) == bar_of(t_b, ev.bar_ms) {
            (price_p - price_b, Decimal::ZERO)
        } else {
            (Decimal::ZERO, price_p - price_b)
        }
    };
    let (entry_slip, entry_delay) = split(
        p.entry_price,
        b.entry_price,
        p.entry_time_ms,
        b.entry_time_ms,
    );
    let (exit_slip, exit_delay) = split(p.exit_price, b.exit_price, p.exit_time_ms, b.exit_time_ms);
    let parts = [
        d * (b.exit_price - b.entry_price) * (p.qty - b.qty),
        -d * entry_slip * p.qty,
        -d * entry_delay * p.qty,
        d * exit_slip * p.qty,
        d * exit_delay * p.qty,
        -(p.fees - b.fees),
        -(p.funding - b.funding),
    ];
    let gap = p.pnl - b.pnl;
    // The largest part; of equal ones, the first in `Cause::ALL`'s order.
    let cause = Cause::ALL
        .iter()
        .zip(parts)
        .rev()
        .filter(|(_, x)| !x.is_zero())
        .max_by(|a, b| a.1.abs().cmp(&b.1.abs()))
        .map(|(c, _)| *c);
    Matched {
        entry_delay_ms: p.entry_time_ms - b.entry_time_ms,
        exit_delay_ms: p.exit_time_ms - b.exit_time_ms,
        slippage_ticks: [
            ticks(against(p.entry_price, p.entry_time_ms, true)),
            ticks(against(b.entry_price, b.entry_time_ms, true)),
            ticks(against(p.exit_price, p.exit_time_ms, false)),
            ticks(against(b.exit_price, b.exit_time_ms, false)),
        ],
        paper: p.clone(),
        backtest: b.clone(),
        gap,
        residual: gap - parts.iter().copied().sum::<Decimal>(),
        parts,
        cause,
    }
}

#[cfg(test)]
mod tests;

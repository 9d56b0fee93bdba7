//! Hand-computed drifts: each case one deliberate difference between the two sides.

#![allow(clippy::unwrap_used)]

use rstest::rstest;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::*;

const BAR: i64 = 300_000;
/// The taker fee of both sides.
const FEE: Decimal = dec!(0.00055);

/// A round trip whose PnL is its gross less fees (at [`FEE`]) and funding.
#[allow(clippy::too_many_arguments)]
fn trip(
    symbol: &str,
    side: Side,
    qty: Decimal,
    entry_ms: i64,
    entry: Decimal,
    exit_ms: i64,
    exit: Decimal,
    funding: Decimal,
) -> RoundTrip {
    let fees = ((entry + exit) * qty * FEE).round_dp(8);
    let gross = dir(side) * (exit - entry) * qty;
    RoundTrip {
        symbol: symbol.into(),
        side,
        qty,
        entry_time_ms: entry_ms,
        exit_time_ms: exit_ms,
        entry_price: entry,
        exit_price: exit,
        fees,
        funding,
        pnl: gross - fees - funding,
    }
}

/// Bars of BTCUSDT opening at 100, 101, 102, ... (bar k at k·BAR), tick 0.1.
fn evidence(max_delay_bars: i64) -> Evidence {
    Evidence {
        bar_ms: BAR,
        max_delay_bars,
        opens: (0..20)
            .map(|k| {
                (
                    ("BTCUSDT".to_owned(), k * BAR),
                    dec!(100) + Decimal::from(k),
                )
            })
            .collect(),
        ticks: [("BTCUSDT".to_owned(), dec!(0.1))].into_iter().collect(),
        ..Evidence::default()
    }
}

/// The backtest's long: in at bar 2's open (102) one tick through, out at bar 6's (106).
fn backtest_long() -> RoundTrip {
    trip(
        "BTCUSDT",
        Side::Buy,
        dec!(1),
        2 * BAR,
        dec!(102.1),
        6 * BAR,
        dec!(105.9),
        dec!(0),
    )
}

#[rstest]
#[case::identical(
    trip("BTCUSDT", Side::Buy, dec!(1), 2 * BAR + 40, dec!(102.1), 6 * BAR + 40, dec!(105.9), dec!(0)),
    None, [dec!(0), dec!(0), dec!(0), dec!(0), dec!(0), dec!(0), dec!(0)], [1, 1, 1, 1])]
#[case::one_tick_more_spread(
    trip("BTCUSDT", Side::Buy, dec!(1), 2 * BAR + 40, dec!(102.2), 6 * BAR + 40, dec!(105.8), dec!(0)),
    Some(Cause::EntrySlippage),
    [dec!(0), dec!(-0.1), dec!(0), dec!(-0.1), dec!(0), dec!(0), dec!(0)], [2, 1, 2, 1])]
#[case::an_entry_a_bar_late(
    trip("BTCUSDT", Side::Buy, dec!(1), 3 * BAR + 40, dec!(103.1), 6 * BAR + 40, dec!(105.9), dec!(0)),
    Some(Cause::EntryDelay),
    [dec!(0), dec!(0), dec!(-1), dec!(0), dec!(0), dec!(0), dec!(0)], [1, 1, 1, 1])]
#[case::an_entry_a_bar_late_and_mid_bar(
    trip("BTCUSDT", Side::Buy, dec!(1), 3 * BAR + 150_000, dec!(103.4), 6 * BAR + 40, dec!(105.9), dec!(0)),
    Some(Cause::EntryDelay),
    [dec!(0), dec!(0), dec!(-1.3), dec!(0), dec!(0), dec!(0), dec!(0)], [4, 1, 1, 1])]
#[case::an_exit_a_bar_early(
    trip("BTCUSDT", Side::Buy, dec!(1), 2 * BAR + 40, dec!(102.1), 5 * BAR + 40, dec!(104.9), dec!(0)),
    Some(Cause::ExitDelay),
    [dec!(0), dec!(0), dec!(0), dec!(0), dec!(-1), dec!(0), dec!(0)], [1, 1, 1, 1])]
#[case::twice_the_size(
    trip("BTCUSDT", Side::Buy, dec!(2), 2 * BAR + 40, dec!(102.1), 6 * BAR + 40, dec!(105.9), dec!(0)),
    Some(Cause::Size),
    [dec!(3.8), dec!(0), dec!(0), dec!(0), dec!(0), dec!(0), dec!(0)], [1, 1, 1, 1])]
#[case::funding_paid(
    trip("BTCUSDT", Side::Buy, dec!(1), 2 * BAR + 40, dec!(102.1), 6 * BAR + 40, dec!(105.9), dec!(0.3)),
    Some(Cause::Funding),
    [dec!(0), dec!(0), dec!(0), dec!(0), dec!(0), dec!(0), dec!(-0.3)], [1, 1, 1, 1])]
fn a_matched_pairs_gap_and_its_cause(
    #[case] paper: RoundTrip,
    #[case] cause: Option<Cause>,
    // The parts but fees, which follow from the prices.
    #[case] parts: [Decimal; 7],
    // Each fill's ticks from its bar's open, against the trader: paper entry, backtest
    // entry, paper exit, backtest exit.
    #[case] ticks: [i64; 4],
) {
    let b = backtest_long();
    let d = compare(
        std::slice::from_ref(&paper),
        std::slice::from_ref(&b),
        &evidence(1),
    );
    assert_eq!((d.only_paper.len(), d.only_backtest.len()), (0, 0));
    let m = &d.matched[0];
    assert_eq!(m.gap, paper.pnl - b.pnl);
    assert_eq!(m.residual, Decimal::ZERO, "the parts are the whole gap");
    let fees = -(paper.fees - b.fees);
    let mut want = parts;
    want[5] = fees;
    assert_eq!(m.parts, want);
    assert_eq!(m.cause, cause);
    assert_eq!(m.entry_delay_ms, paper.entry_time_ms - b.entry_time_ms);
    assert_eq!(m.slippage_ticks, ticks.map(|t| Some(Decimal::from(t))));
    assert_eq!(d.gap_by_cause, m.parts);
    assert_eq!(d.gap(), m.gap);
}

/// A short pays slippage by selling below the open and buying back above it.
#[test]
fn a_shorts_slippage_is_against_it_below_the_open() {
    let b = trip(
        "BTCUSDT",
        Side::Sell,
        dec!(1),
        2 * BAR,
        dec!(101.9),
        6 * BAR,
        dec!(106.1),
        dec!(0),
    );
    let p = trip(
        "BTCUSDT",
        Side::Sell,
        dec!(1),
        2 * BAR + 9,
        dec!(101.8),
        6 * BAR + 9,
        dec!(106.2),
        dec!(0),
    );
    let d = compare(&[p], &[b], &evidence(0));
    let m = &d.matched[0];
    assert_eq!(
        m.slippage_ticks,
        [Some(dec!(2)), Some(dec!(1)), Some(dec!(2)), Some(dec!(1))]
    );
    assert_eq!((m.parts[1], m.parts[3]), (dec!(-0.1), dec!(-0.1)));
    assert_eq!(m.residual, Decimal::ZERO);
}

/// A paper entry beyond the delay allowed matches nothing: both sides are unmatched.
#[test]
fn an_entry_later_than_allowed_is_unmatched_on_both_sides() {
    let p = trip(
        "BTCUSDT",
        Side::Buy,
        dec!(1),
        3 * BAR + 40,
        dec!(103.1),
        6 * BAR,
        dec!(105.9),
        dec!(0),
    );
    let d = compare(std::slice::from_ref(&p), &[backtest_long()], &evidence(0));
    assert!(d.matched.is_empty());
    assert_eq!(d.only_paper, vec![(p.clone(), Unmatched::BacktestHeld)]);
    assert_eq!(
        d.only_backtest,
        vec![(backtest_long(), Unmatched::NoIntent)]
    );
    assert_eq!(d.unmatched_gap(), p.pnl - backtest_long().pnl);
    // Another side does not match either.
    let short = RoundTrip {
        side: Side::Sell,
        ..backtest_long()
    };
    assert!(
        compare(&[short], &[backtest_long()], &evidence(1))
            .matched
            .is_empty()
    );
}

#[rstest]
#[case::refused_live(
    vec![Refused { symbol: "BTCUSDT".into(), signal_bar_ms: BAR, code: "max_open_positions".into(), reason: "10 open".into() }],
    vec![],
    Unmatched::Refused("max_open_positions (10 open)".into()))]
#[case::refused_another_bar(
    vec![Refused { symbol: "BTCUSDT".into(), signal_bar_ms: 2 * BAR, code: "cooldown".into(), reason: "x".into() }],
    vec![],
    Unmatched::NoIntent)]
#[case::placed_without_a_trade(vec![], vec![("BTCUSDT", 2 * BAR)], Unmatched::PlacedNoTrade)]
#[case::still_open_in_paper(vec![], vec![("BTCUSDT", 2 * BAR), ("OPEN", 3 * BAR)], Unmatched::OpenAtEnd)]
#[case::nothing_from_the_stack(vec![], vec![("BTCUSDT", 3 * BAR)], Unmatched::NoIntent)]
fn why_a_backtest_trade_is_not_in_paper(
    #[case] refused: Vec<Refused>,
    #[case] placed: Vec<(&str, i64)>,
    #[case] want: Unmatched,
) {
    // ("OPEN", t): the paper trade entered in bar t is still open at the window's end.
    let (open, placed): (Vec<_>, Vec<_>) = placed.into_iter().partition(|(s, _)| *s == "OPEN");
    let ev = Evidence {
        refused,
        placed: placed.into_iter().map(|(s, t)| (s.to_owned(), t)).collect(),
        open_at_end: open
            .into_iter()
            .map(|(_, t)| ("BTCUSDT".to_owned(), t))
            .collect(),
        ..evidence(1)
    };
    let d = compare(&[], &[backtest_long()], &ev);
    assert_eq!(d.only_backtest, vec![(backtest_long(), want)]);
    assert_eq!(d.gap(), -backtest_long().pnl);
}

/// Two trades on a symbol: each pairs with its own, in time order, once.
#[test]
fn trades_pair_in_time_order_once() {
    let b1 = backtest_long();
    let b2 = trip(
        "BTCUSDT",
        Side::Buy,
        dec!(1),
        8 * BAR,
        dec!(108.1),
        9 * BAR,
        dec!(108.9),
        dec!(0),
    );
    let p1 = trip(
        "BTCUSDT",
        Side::Buy,
        dec!(1),
        2 * BAR + 5,
        dec!(102.1),
        6 * BAR + 5,
        dec!(105.9),
        dec!(0),
    );
    let p2 = trip(
        "BTCUSDT",
        Side::Buy,
        dec!(1),
        8 * BAR + 5,
        dec!(108.2),
        9 * BAR + 5,
        dec!(108.9),
        dec!(0),
    );
    let d = compare(
        &[p2.clone(), p1.clone()],
        &[b2.clone(), b1.clone()],
        &evidence(1),
    );
    let pairs: Vec<(i64, i64)> = d
        .matched
        .iter()
        .map(|m| (m.paper.entry_time_ms, m.backtest.entry_time_ms))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (p1.entry_time_ms, b1.entry_time_ms),
            (p2.entry_time_ms, b2.entry_time_ms)
        ]
    );
    assert_eq!(d.gap_by_cause[1], dec!(-0.1), "p2's entry slippage");
    assert_eq!(d.gap(), p1.pnl + p2.pnl - b1.pnl - b2.pnl);
}

//! Hand-computed cases of the fill model and the risk rules.

#![allow(clippy::unwrap_used)]

use rstest::rstest;
use rust_decimal_macros::dec;

use std::str::FromStr;

use proptest::strategy::Strategy as _;
use rust_decimal::{Decimal, prelude::ToPrimitive};
use shardbot_protocol::Side;
use shardbot_strategy::{Candle, Direction, Holding, Params, Signal, Signals, Strategy};

use super::*;
use crate::{
    account::Account,
    fixed::{dec, units},
    run_loop::STAGE_ABOVE_MARKETS,
};

/// Plays back fixed signals: `script[i]` after bar `i`.
struct Scripted {
    script: Vec<Vec<Signal>>,
    bar: usize,
    name: &'static str,
}

impl Strategy for Scripted {
    fn name(&self) -> &'static str {
        self.name
    }
    fn warmup_bars(&self) -> usize {
        0
    }
    fn on_bar(&mut self, _c: &Candle, _p: Holding) -> Signals {
        let s = self.script.get(self.bar).cloned().unwrap_or_default();
        self.bar += 1;
        s.into()
    }
    fn reset(&mut self) {}
}

fn bar(i: i64, o: f64, h: f64, l: f64, c: f64) -> Candle {
    Candle {
        open_time_ms: 1_700_000_000_000 + i * 300_000,
        open: o,
        high: h,
        low: l,
        close: c,
        volume: 1.0,
    }
}

fn market(sym: &str, bars: Vec<Candle>) -> Market {
    Market::unrestricted(Series {
        symbol: sym.into(),
        candles: bars,
        price_decimals: 2,
    })
    .unwrap()
}

fn long(sl: Option<f64>, tp: Option<f64>) -> Signal {
    Signal::Enter {
        direction: Direction::Long,
        stop_loss: sl,
        take_profit: tp,
    }
}

fn short() -> Signal {
    Signal::Enter {
        direction: Direction::Short,
        stop_loss: None,
        take_profit: None,
    }
}

fn scripted(script: Vec<Vec<Signal>>) -> Box<dyn Strategy> {
    Box::new(Scripted {
        script,
        bar: 0,
        name: "scripted",
    })
}

/// One position, one owner, as the workers and the risk manager apply it: the owner's
/// signals act, the other strategy's are dropped while it holds; on a flat market the
/// first in the roster's order that enters takes it. Each trade names its strategy.
#[test]
fn two_strategies_share_one_position_first_come() {
    let m = market(
        "BTCUSDT",
        (0..6).map(|i| bar(i, 10.0, 10.0, 10.0, 10.0)).collect(),
    );
    let first = Box::new(Scripted {
        // Its entries at bars 1 and 2 are dropped: `second` holds the position.
        script: vec![
            vec![],
            vec![long(None, None)],
            vec![long(None, None)],
            vec![long(None, None)],
            vec![],
        ],
        bar: 0,
        name: "first",
    });
    let second = Box::new(Scripted {
        // Its exit at bar 4 is dropped: `first` holds the position then.
        script: vec![
            vec![long(None, None)],
            vec![],
            vec![Signal::Exit],
            vec![long(None, None)],
            vec![Signal::Exit],
        ],
        bar: 0,
        name: "second",
    });
    let r = run_roster(&[m], &cfg(), vec![vec![first, second]]).unwrap();
    let got: Vec<(&str, i64, i64, ExitReason)> = r
        .trades
        .iter()
        .map(|t| (t.strategy, t.entry_time_ms, t.exit_time_ms, t.exit_reason))
        .collect();
    let t = |i: i64| bar(i, 0.0, 0.0, 0.0, 0.0).open_time_ms;
    assert_eq!(
        got,
        vec![
            ("second", t(1), t(3), ExitReason::Signal),
            // At bar 3's close both enter a flat market: the first in the roster's order.
            ("first", t(4), t(5), ExitReason::EndOfData),
        ]
    );
}

#[test]
fn one_strategy_rosters_trade_as_before() {
    let bars: Vec<Candle> = (0..40)
        .map(|i| {
            let p = 10.0 + (i as f64 / 3.0).sin();
            bar(i, p, p + 0.2, p - 0.2, p)
        })
        .collect();
    let script = || {
        (0..40)
            .map(|i| match i % 7 {
                0 => vec![long(None, None)],
                3 => vec![Signal::Exit, short()],
                5 => vec![Signal::Exit],
                _ => vec![],
            })
            .collect::<Vec<_>>()
    };
    let a = run_with(
        &[market("ETHUSDT", bars.clone())],
        &cfg(),
        vec![scripted(script())],
    )
    .unwrap();
    let b = run_roster(
        &[market("ETHUSDT", bars)],
        &cfg(),
        vec![vec![scripted(script())]],
    )
    .unwrap();
    assert!(!a.trades.is_empty());
    assert_eq!(a.trades, b.trades);
    assert!(a.trades.iter().all(|t| t.strategy == "scripted"));
}

/// All in, 0.055 % fee charged; the sizing reserves no fee, so quantities come out round
/// (the reserve has its own test).
fn cfg() -> BacktestConfig {
    let mut c = BacktestConfig::all_in("scripted", Params::new(), dec!(1000));
    c.settings.fee_rate = dec!(0);
    c
}

#[test]
fn an_entry_is_sized_with_its_fee_reserved() {
    let m = market(
        "BTCUSDT",
        vec![
            bar(0, 99.0, 101.0, 98.0, 100.0),
            bar(1, 100.0, 103.0, 100.0, 102.0),
            bar(2, 102.0, 111.0, 101.0, 109.0),
        ],
    );
    let c = BacktestConfig::all_in("scripted", Params::new(), dec!(1000));
    let r = run_with(&[m], &c, vec![scripted(vec![vec![long(None, None)]])]).unwrap();
    // 1000 / (100 × 1.00055), to the 1e-8 step: margin + fee = 999.99999... ≤ 1000.
    assert_eq!(r.trades[0].qty, dec!(9.99450302));
}

/// A reversal's entry is sized from the balance its exit's fill left, not from the one
/// before it (the exit lost 200 here: 8 contracts, not 10).
#[test]
fn a_reversal_is_sized_from_the_balance_its_exit_left() {
    let m = market(
        "BTCUSDT",
        vec![
            bar(0, 100.0, 100.0, 100.0, 100.0),
            bar(1, 100.0, 100.0, 80.0, 80.0),
            bar(2, 80.0, 80.0, 80.0, 80.0),
            bar(3, 80.0, 80.0, 80.0, 80.0),
        ],
    );
    let mut c = cfg();
    c.fee_rate = dec!(0);
    let script = vec![vec![long(None, None)], vec![Signal::Exit, short()]];
    let r = run_with(&[m], &c, vec![scripted(script)]).unwrap();
    assert_eq!(r.trades.len(), 2, "{:?}", r.trades);
    // Long 10 at 100, out at 80 (bar 2's open): −200, 800 left; the short is sized at the
    // signal bar's close (80) from those 800: 10 contracts.
    assert_eq!(r.trades[0].pnl, dec!(-200));
    assert_eq!(r.trades[1].qty, dec!(10));
    assert_eq!(r.trades[1].entry_price, dec!(80));
    // Before the rule it was sized from 1,000: 12.5 contracts, 125 % of the equity.
}

#[test]
fn a_signal_fills_at_the_next_open_paying_the_taker_fee() {
    let m = market(
        "BTCUSDT",
        vec![
            bar(0, 99.0, 101.0, 98.0, 100.0),
            bar(1, 101.0, 103.0, 100.0, 102.0),
            bar(2, 102.0, 111.0, 101.0, 109.0),
            bar(3, 110.0, 112.0, 108.0, 111.0),
        ],
    );
    let script = vec![vec![long(None, None)], vec![], vec![Signal::Exit]];
    let r = run_with(&[m], &cfg(), vec![scripted(script)]).unwrap();
    assert_eq!(r.trades.len(), 1);
    let t = &r.trades[0];
    // All in at bar 0's close: 1000 / 100 = 10; fills at bar 1's open 101, out at bar
    // 3's open 110.
    assert_eq!(
        (t.qty, t.entry_price, t.exit_price),
        (dec!(10), dec!(101), dec!(110))
    );
    assert_eq!(t.fees, dec!(0.5555) + dec!(0.605));
    assert_eq!(t.pnl, dec!(90) - dec!(1.1605));
    assert_eq!(t.exit_reason, ExitReason::Signal);
    assert_eq!(
        (t.entry_time_ms, t.exit_time_ms),
        (
            bar(1, 0., 0., 0., 0.).open_time_ms,
            bar(3, 0., 0., 0., 0.).open_time_ms
        )
    );
    assert_eq!(r.summary.final_balance, dec!(1000) + t.pnl);
    assert_eq!(r.equity.last().unwrap().1, 1000.0 + 88.8395);
    assert_eq!(r.equity.len(), 4);
}

#[rstest]
// Long, stop 95, target 110. Bar inside: nothing; low 94: stop at 95; opens at 93: at the open.
#[case::stop_inside_the_bar(bar(2, 100.0, 101.0, 94.0, 96.0), Intrabar::StopFirst, ExitReason::StopLoss, dec!(95))]
#[case::gap_through_the_stop(bar(2, 93.0, 96.0, 92.0, 95.5), Intrabar::StopFirst, ExitReason::StopLoss, dec!(93))]
#[case::target_inside_the_bar(bar(2, 100.0, 111.0, 99.0, 109.0), Intrabar::StopFirst, ExitReason::TakeProfit, dec!(110))]
#[case::both_conservative(bar(2, 100.0, 111.0, 94.0, 96.0), Intrabar::StopFirst, ExitReason::StopLoss, dec!(95))]
#[case::both_rising_bar_path_low_first(bar(2, 100.0, 111.0, 94.0, 105.0), Intrabar::Path, ExitReason::StopLoss, dec!(95))]
#[case::both_falling_bar_path_high_first(bar(2, 100.0, 111.0, 94.0, 96.0), Intrabar::Path, ExitReason::TakeProfit, dec!(110))]
fn exchange_side_stops_inside_a_bar(
    #[case] b2: Candle,
    #[case] rule: Intrabar,
    #[case] why: ExitReason,
    #[case] price: Decimal,
) {
    let m = market(
        "BTCUSDT",
        vec![
            bar(0, 100.0, 100.0, 100.0, 100.0),
            bar(1, 100.0, 101.0, 99.0, 100.0),
            b2,
        ],
    );
    let mut c = cfg();
    c.intrabar = rule;
    let r = run_with(
        &[m],
        &c,
        vec![scripted(vec![vec![long(Some(95.0), Some(110.0))]])],
    )
    .unwrap();
    assert_eq!(r.trades.len(), 1);
    assert_eq!(
        (r.trades[0].exit_reason, r.trades[0].exit_price),
        (why, price)
    );
    assert_eq!(r.trades[0].exit_time_ms, b2.open_time_ms);
}

#[test]
fn stop_and_reverse_exits_and_enters_at_the_same_open_with_slippage() {
    let mut m = market(
        "ETHUSDT",
        vec![
            bar(0, 10.0, 10.0, 10.0, 10.0),
            bar(1, 10.0, 10.5, 9.5, 10.0),
            bar(2, 12.0, 12.0, 12.0, 12.0),
            bar(3, 11.0, 11.0, 11.0, 11.0),
        ],
    );
    m.instrument.tick_size = dec!(0.01);
    let mut c = cfg();
    c.slippage = Slippage::Ticks(2);
    let script = vec![vec![long(None, None)], vec![Signal::Exit, short()]];
    let r = run_with(&[m], &c, vec![scripted(script)]).unwrap();
    assert_eq!(r.trades.len(), 2, "{:?}", r.trades);
    let (a, b) = (&r.trades[0], &r.trades[1]);
    // Bought at 10 + 2 ticks, sold at 12 − 2 ticks; the short opens at that same open
    // (sold, − 2 ticks) and ends with the data at the last close (bought, + 2 ticks).
    assert_eq!((a.entry_price, a.exit_price), (dec!(10.02), dec!(11.98)));
    assert_eq!(
        (b.side, b.entry_price, b.entry_time_ms),
        (Side::Sell, dec!(11.98), a.exit_time_ms)
    );
    assert_eq!(
        (b.exit_price, b.exit_reason),
        (dec!(11.02), ExitReason::EndOfData)
    );
    assert_eq!(r.summary.final_balance, dec!(1000) + a.pnl + b.pnl);
}

#[test]
fn bars_before_trade_from_only_warm_the_strategy() {
    let bars: Vec<Candle> = (0..5)
        .map(|i| bar(i, 10.0 + i as f64, 20.0, 5.0, 10.5 + i as f64))
        .collect();
    let mut c = cfg();
    c.trade_from_ms = Some(bars[2].open_time_ms);
    // Signals on bars 0 (dropped: warming up) and 2 (traded).
    let script = vec![vec![long(None, None)], vec![], vec![long(None, None)]];
    let r = run_with(
        &[market("BTCUSDT", bars.clone())],
        &c,
        vec![scripted(script)],
    )
    .unwrap();
    assert_eq!(r.trades.len(), 1, "{:?}", r.trades);
    assert_eq!(
        (r.trades[0].entry_time_ms, r.trades[0].entry_price),
        (bars[3].open_time_ms, dec!(13))
    );
}

/// AAA and BBB flat at 10 for three bars; AAA signals an entry at its first bar, BBB at
/// its second.
fn aaa_then_bbb(c: &BacktestConfig) -> crate::BacktestResult {
    let bars = || (0..3).map(|i| bar(i, 10.0, 10.0, 10.0, 10.0)).collect();
    run_with(
        &[market("AAAUSDT", bars()), market("BBBUSDT", bars())],
        c,
        vec![
            scripted(vec![vec![long(None, None)]]),
            scripted(vec![vec![], vec![long(None, None)]]),
        ],
    )
    .unwrap()
}

#[test]
fn the_risk_rules_refuse_as_the_risk_manager_does() {
    let mut c = cfg();
    c.settings.sizing = shardbot_risk::Sizing::Percent(dec!(10));
    c.settings.max_margin_use_pct = dec!(90);
    c.settings.max_open_positions = 1;
    let r = aaa_then_bbb(&c);
    // AAA opens at bar 1; BBB's entry after bar 1 is refused: one position at most.
    assert_eq!(r.trades.len(), 1);
    assert_eq!(&*r.trades[0].symbol, "AAAUSDT");
    assert_eq!(r.trades[0].qty, dec!(10), "10 % of 1000 at 1x, at 10");
    assert_eq!(r.summary.refused.get("MaxOpenPositions"), Some(&1));
}

/// Today's loss counts what the open positions paid (their entry fees), as the risk
/// manager counts Bybit's curRealisedPnl: an entry fee alone past the daily loss limit
/// refuses the next entry, before any trade has closed.
#[test]
fn the_daily_loss_counts_the_open_positions_entry_fees() {
    let mut c = cfg();
    c.settings.sizing = shardbot_risk::Sizing::Percent(dec!(10));
    c.settings.max_margin_use_pct = dec!(90);
    c.settings.max_open_positions = 10;
    // 1 % fee: AAA's entry of about 100 USDT pays about 1 USDT, past a 0.5 USDT limit.
    c.fee_rate = dec!(0.01);
    c.settings.daily_loss_limit = dec!(0.5);
    let r = aaa_then_bbb(&c);
    assert_eq!(
        r.summary.refused.get("DailyLossLimit"),
        Some(&1),
        "{:?}",
        r.summary.refused
    );
    assert_eq!(r.trades.len(), 1);
    assert_eq!(&*r.trades[0].symbol, "AAAUSDT");
    // Below the limit, the same entry goes through.
    c.settings.daily_loss_limit = dec!(2);
    let r = aaa_then_bbb(&c);
    assert_eq!(r.trades.len(), 2, "{:?}", r.summary.refused);
}

#[test]
fn margin_use_counts_the_open_positions_and_frees_with_their_exits() {
    let bars = || {
        (0..5)
            .map(|i| bar(i, 10.0, 10.0, 10.0, 10.0))
            .collect::<Vec<_>>()
    };
    let mut c = cfg();
    c.settings.sizing = shardbot_risk::Sizing::Percent(dec!(40));
    c.settings.max_margin_use_pct = dec!(90);
    c.settings.max_open_positions = 10;
    let r = run_with(
        &[
            market("AAAUSDT", bars()),
            market("BBBUSDT", bars()),
            market("CCCUSDT", bars()),
        ],
        &c,
        vec![
            // AAA opens at bar 1 and exits at bar 3.
            scripted(vec![vec![long(None, None)], vec![], vec![Signal::Exit]]),
            scripted(vec![vec![long(None, None)]]),
            // CCC: refused after bar 0 (80 % used + 40 % > 90 %), approved after bar 3.
            scripted(vec![
                vec![long(None, None)],
                vec![],
                vec![],
                vec![long(None, None)],
            ]),
        ],
    )
    .unwrap();
    assert_eq!(r.summary.refused.get("MaxMarginUse"), Some(&1));
    let entries: Vec<(&str, i64)> = r
        .trades
        .iter()
        .map(|t| (&*t.symbol, (t.entry_time_ms - 1_700_000_000_000) / 300_000))
        .collect();
    assert_eq!(entries, [("AAAUSDT", 1), ("BBBUSDT", 1), ("CCCUSDT", 4)]);
}

#[test]
fn funding_is_charged_while_open_and_is_part_of_the_pnl() {
    // 4 h bars: a settlement at every second bar's open.
    let t0 = 1_700_006_400_000; // a multiple of 8 h
    let b = |i: i64, p: f64| Candle {
        open_time_ms: t0 + i * 4 * 3_600_000,
        open: p,
        high: p,
        low: p,
        close: p,
        volume: 1.0,
    };
    let m = market(
        "BTCUSDT",
        vec![
            b(0, 100.0),
            b(1, 100.0),
            b(2, 100.0),
            b(3, 100.0),
            b(4, 100.0),
        ],
    );
    let mut c = cfg();
    c.funding_rate = Some(dec!(0.0001));
    let script = vec![vec![long(None, None)], vec![], vec![], vec![Signal::Exit]];
    let r = run_with(&[m], &c, vec![scripted(script)]).unwrap();
    let t = &r.trades[0];
    // Open from bar 1 to bar 4: settlements at bars 2 and 4 (8 h, 16 h), 10 × 100 × 0.0001.
    assert_eq!(t.funding, dec!(0.2));
    assert_eq!(t.pnl, -t.fees - dec!(0.2));
    assert_eq!(r.summary.final_balance, dec!(1000) + t.pnl);
}

proptest::proptest! {
    /// Whatever the prices: the balance is the start plus every trade's PnL, the equity
    /// curve ends there, and a symbol's trades never overlap.
    #[test]
    fn money_adds_up(steps in proptest::collection::vec(-300i32..300, 50..400), sl in 0.0f64..5.0) {
        let mut p = 1000.0f64;
        let bars: Vec<Candle> = steps.iter().enumerate().map(|(i, s)| {
            let o = p;
            p = (p * (1.0 + f64::from(*s) / 10_000.0) * 100.0).round() / 100.0;
            bar(i as i64, o, o.max(p) + 0.5, o.min(p) - 0.5, p)
        }).collect();
        let params = Params::new()
            .with("fast", shardbot_strategy::Value::Int(3))
            .with("slow", shardbot_strategy::Value::Int(8))
            .with("sl_pct", shardbot_strategy::Value::Float(sl));
        let mut c = BacktestConfig::all_in("trend_following", params, dec!(1000));
        c.intrabar = Intrabar::Path;
        let r = run(&[market("BTCUSDT", bars)], &c).unwrap();
        let sum: Decimal = r.trades.iter().map(|t| t.pnl).sum();
        proptest::prop_assert_eq!(r.summary.final_balance, dec!(1000) + sum);
        proptest::prop_assert!((r.equity.last().unwrap().1 - (1000.0 + sum.to_f64().unwrap())).abs() < 1e-6);
        for w in r.trades.windows(2) {
            proptest::prop_assert!(w[0].exit_time_ms <= w[1].entry_time_ms);
        }
    }
}

proptest::proptest! {
    /// A price read from f64 is the decimal it was written as, as text parsing gives it.
    #[test]
    fn prices_read_from_f64_are_the_written_decimals(cents in 0i64..100_000_000) {
        let x = cents as f64 / 100.0;
        let d = dec(x);
        let want = Decimal::from_str(&format!("{x}")).unwrap().normalize();
        proptest::prop_assert_eq!((d, d.scale()), (want, want.scale()));
    }
}

proptest::proptest! {
    /// The integer shortcut of the fee equals `Decimal`'s arithmetic (the margin sums'
    /// is `shardbot_risk`'s tally's, tested there).
    #[test]
    fn integer_fees_equal_decimal_arithmetic(
        q in 0i64..10_000_000_000, qs in 0u32..10,
        p in 1i64..10_000_000_000, ps in 0u32..10,
    ) {
        let mut c = cfg();
        c.fee_rate = dec!(0.00055);
        let eng = Account::new(&c);
        let (qty, price) = (Decimal::new(q, qs), Decimal::new(p, ps));
        let want = (qty * price * c.fee_rate).round_dp(8);
        let got = eng.fee(qty, price);
        proptest::prop_assert_eq!((got, got.scale()), (want, want.scale()));
    }
}

proptest::proptest! {
    /// Marking in units of 10^-8 rounds as `f64::round` does, halves away from zero.
    #[test]
    fn units_round_half_away_from_zero(
        x in proptest::prop_oneof![
            proptest::num::f64::ANY,
            -1e11f64..1e11,
            (-1_000_000_000i64..1_000_000_000).prop_map(|n| n as f64 * 5e-9),
        ],
    ) {
        let want = if x.is_finite() && x.abs() < 9.0e10 { (x * 1e8).round() as i64 } else { 0 };
        proptest::prop_assert_eq!(units(x), want);
    }
}

/// Records every bar it is given, with its market, in a log shared by all markets.
struct Recorder {
    market: usize,
    log: std::sync::Arc<std::sync::Mutex<Vec<(usize, Candle)>>>,
}

impl Strategy for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn warmup_bars(&self) -> usize {
        0
    }
    fn on_bar(&mut self, c: &Candle, _p: Holding) -> Signals {
        self.log.lock().unwrap().push((self.market, *c));
        Signals::new()
    }
    fn reset(&mut self) {}
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// A few markets, and more than the engine stages the bars of, of any lengths (past
    /// a stage of bars, or none), starting, pausing and ending at different times: every
    /// bar reaches its market's strategy once, unchanged, in time order and, within one
    /// time, in the markets' order; the equity curve has a point for each time.
    #[test]
    fn every_bar_of_every_market_is_run_once_in_time_order(
        shapes in proptest::prop_oneof![1usize..6, STAGE_ABOVE_MARKETS + 1..STAGE_ABOVE_MARKETS + 8]
            .prop_flat_map(|n| proptest::collection::vec(
                (0i64..50, proptest::collection::vec(1i64..4, 0..80)),
                n,
            )),
    ) {
        let markets: Vec<Market> = shapes.iter().enumerate().map(|(k, (start, gaps))| {
            let mut at = *start;
            let bars = gaps.iter().map(|g| {
                at += g;
                let p = 100.0 + (at % 7) as f64;
                bar(at, p, p + 1.0, p - 1.0, p + 0.5)
            }).collect();
            market(&format!("M{k}USDT"), bars)
        }).collect();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let strategies: Vec<Box<dyn Strategy>> = (0..markets.len())
            .map(|market| Box::new(Recorder { market, log: log.clone() }) as Box<dyn Strategy>)
            .collect();
        let Ok(r) = run_with(&markets, &cfg(), strategies) else {
            // Only when no market has a bar.
            proptest::prop_assert!(markets.iter().all(|m| m.series.candles.is_empty()));
            return Ok(());
        };
        let mut want: Vec<(usize, Candle)> = markets.iter().enumerate()
            .flat_map(|(k, m)| m.series.candles.iter().map(move |c| (k, *c)))
            .collect();
        want.sort_by_key(|(k, c)| (c.open_time_ms, *k));
        let got = log.lock().unwrap().clone();
        proptest::prop_assert_eq!(&got, &want);
        let mut times: Vec<i64> = want.iter().map(|(_, c)| c.open_time_ms).collect();
        times.dedup();
        let curve: Vec<i64> = r.equity.iter().map(|e| e.0).collect();
        proptest::prop_assert_eq!(curve, times);
    }
}

//! Parity: the backtest of a data file equals, trade for trade, a paper run of the same
//! file replayed through bybit-sim by the whole stack (`scripts/stack up`).
//!
//! The stack paper trades `trend_following` (with exchange-side stop-loss and
//! take-profit, stop-and-reverse) on the eight real 5-minute series of
//! `../shared/data/klines/bybit_linear_5m`, replayed at 150×. What makes the two
//! comparable, each a setting a user has too:
//! - bybit-sim holds each bar's price at its open and at its close for 95 sim seconds
//!   (`sim.replay_hold_ms`), so an order sent on a bar's close fills at the next bar's
//!   open, as the backtest assumes, and a stop hit inside a bar is known to the worker
//!   before that bar closes. Its path inside a bar is open → low → high → close on a
//!   rising bar (→ high → low on a falling one): the backtest's `Intrabar::Path`.
//! - Fills are one tick through the price (`spread_ticks = 1`, the backtest's
//!   `Slippage::Ticks(1)`), taker fee 0.055 % on both, funding off on both.
//! - Sizing is a fixed margin, so it does not depend on when the stack read its balance.
//! - The stack starts halted (`risk.start_halted`) and is started mid-bar. Bars before
//!   that only warmed the worker's strategy; the backtest is told the same bar
//!   (`trade_from_ms`).
//!
//! Every closed trade of the stack (the exchange's numbers: the reconciler verified each
//! one) must then equal the backtest's: symbol, side, quantity, entry and exit bar,
//! entry and exit price, fees and closed PnL. Fill times are compared by bar: the stack's
//! entry fills a few milliseconds into the bar, a stop fills where the price reached it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use rust_decimal::Decimal;
use shardbot_backtest::{BacktestConfig, ExitReason, Intrabar, Market, Slippage, run_with};
use shardbot_e2e::{ScriptStack, block_on, replay_config_with};
use shardbot_journal::Journal;
use shardbot_protocol::Side;
use shardbot_risk::TradingSettings;
use shardbot_strategy::OptimizedFile;

const BAR_MS: i64 = 300_000;
/// Bars traded after the start before the comparison.
const BARS: i64 = 45;
/// 2 s of real time per bar: the price holds each open (and close) for 95 sim seconds,
/// 630 ms, several times what the stack takes from a bar's close to its order's fill on
/// this machine (60-260 ms measured).
const CLOCK_SPEED: f64 = 150.0;

const PARAMS: &str = r#"{
  "trend_following": {"optimized_at": "2026-11-22T00:00:00Z", "objective": "parity",
                      "params": {"fast": 3, "slow": 8, "stop_and_reverse": true,
                                 "sl_pct": 0.4, "tp_pct": 0.8}}
}"#;

const SETTINGS: &str = r#"{"simulated_balance": 10000, "sizing": {"fixed": 100}, "leverage": 5,
  "daily_loss_limit": 1000000, "max_open_positions": 20, "max_margin_use_pct": 100,
  "cooldown_after_stop_min": 0}"#;

/// What both sides must agree on, per trade.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    symbol: String,
    entry_bar: i64,
    side: String,
    qty: Decimal,
    exit_bar: i64,
    entry_price: Decimal,
    exit_price: Decimal,
    fees: Decimal,
    pnl: Decimal,
}

fn bar_of(t: i64) -> i64 {
    t.div_euclid(BAR_MS) * BAR_MS
}

fn side(s: Side) -> String {
    format!("{s:?}")
}

/// The sim's clock (Unix ms).
fn sim_now(stack: &ScriptStack) -> i64 {
    let client = stack.client();
    block_on(async move { client.raw().market_time().await })
        .map(|t| t.time_nano / 1_000_000)
        .unwrap()
}

/// Every log file of the stack, concatenated.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&logs(&p));
        } else if p.extension().is_some_and(|x| x == "log") {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    out
}

/// The dashboard's Start button: the risk manager leaves its halted mode.
fn start_trading(stack: &ScriptStack) {
    let token = std::fs::read_to_string(stack.path("run/sim/dashboard.token")).unwrap();
    let url = format!("http://127.0.0.1:{}/api/control", stack.dashboard_port);
    let (status, body) = block_on(async move {
        let r = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token.trim())
            .json(&serde_json::json!({"command": "start"}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 200, "start: {body}");
}

/// The backtest of the replayed files with the stack's parameters, settings and
/// instruments (read from bybit-sim, as the router reads them).
fn backtest(stack: &ScriptStack, trade_from_ms: i64) -> Vec<shardbot_backtest::Trade> {
    let client = stack.client();
    let instruments = block_on(async move { client.instruments().await }).unwrap();
    let series =
        shardbot_backtest::data::load_path(&shardbot_testdata::klines("bybit_linear_5m")).unwrap();
    let params = OptimizedFile::load(&stack.path("optimized_parameters.json")).unwrap();
    let mut markets = Vec::new();
    let mut strategies = Vec::new();
    for s in series {
        let instrument = instruments
            .iter()
            .find(|i| i.symbol == s.symbol)
            .and_then(|i| i.to_instrument())
            .unwrap_or_else(|| panic!("bybit-sim does not list {}", s.symbol));
        let (p, _) = params.params_for("trend_following", &s.symbol);
        strategies.push(shardbot_strategy::build("trend_following", &p).unwrap());
        markets.push(Market {
            series: s,
            instrument,
        });
    }
    let mut cfg = BacktestConfig::all_in(
        "trend_following",
        shardbot_strategy::Params::new(),
        Decimal::from(10_000),
    );
    cfg.settings = TradingSettings::load(&stack.path("run/sim/trading_settings.json")).unwrap();
    cfg.slippage = Slippage::Ticks(1);
    cfg.intrabar = Intrabar::Path;
    cfg.funding_rate = None;
    cfg.trade_from_ms = Some(trade_from_ms);
    run_with(&markets, &cfg, strategies).unwrap().trades
}

/// One stack at a time: the tests of this file each replay at 150×, with margins measured
/// on a machine running one of them.
static ONE_STACK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The paper stack, warm and started in the middle of a bar (far from the closes whose
/// intents are judged: the bar under way is the first whose signal may trade, on both
/// sides), its fills `spread_ticks` through the price; and that bar's open.
fn trading_stack(spread_ticks: u32) -> (ScriptStack, i64) {
    let stack = ScriptStack::new(&replay_config_with(
        CLOCK_SPEED,
        &format!(
            "replay_hold_ms = 95000\nfunding_rate = \"0\"\nspread_ticks = {spread_ticks}\nip_limit_per_5s = 5000"
        ),
        "enabled = [\"trend_following\"]",
        "start_halted = true\nip_requests_per_5s = 300",
        "[dashboard]\nrefresh_ms = 500",
    ));
    std::fs::write(stack.path("optimized_parameters.json"), PARAMS).unwrap();
    std::fs::create_dir_all(stack.path("run/sim")).unwrap();
    std::fs::write(stack.path("run/sim/trading_settings.json"), SETTINGS).unwrap();
    stack.up(&["--workers", "1"]);

    // Warm (the worker has every symbol's history) before it may trade.
    stack.wait("the worker warm", Duration::from_secs(60), || {
        logs(&stack.path("run/log"))
            .contains("every owned symbol is warm")
            .then_some(())
    });
    let started = stack.wait("the middle of a bar", Duration::from_secs(10), || {
        let t = sim_now(&stack);
        (BAR_MS / 3..BAR_MS / 2)
            .contains(&t.rem_euclid(BAR_MS))
            .then_some(t)
    });
    start_trading(&stack);
    let after = sim_now(&stack);
    assert_eq!(
        bar_of(started),
        bar_of(after),
        "the start took longer than expected: it straddles a bar close"
    );
    (stack, bar_of(started))
}

#[test]
fn a_backtest_equals_the_paper_run_of_the_same_data_trade_for_trade() {
    let _one = ONE_STACK.lock().unwrap_or_else(|p| p.into_inner());
    let (stack, trade_from) = trading_stack(1);

    // Let it trade; then compare every trade that ended before the bar before now.
    stack.wait(
        "bars to trade on",
        Duration::from_secs(BARS as u64 * 3),
        || (sim_now(&stack) >= trade_from + BARS * BAR_MS).then_some(()),
    );
    let cut = bar_of(sim_now(&stack)) - BAR_MS;
    let expected: Vec<shardbot_backtest::Trade> = backtest(&stack, trade_from)
        .into_iter()
        .filter(|t| t.exit_reason != ExitReason::EndOfData && t.exit_time_ms < cut)
        .collect();
    let mut want: Vec<Row> = expected
        .iter()
        .map(|t| Row {
            symbol: t.symbol.to_string(),
            entry_bar: t.entry_time_ms,
            side: side(t.side),
            qty: t.qty.normalize(),
            exit_bar: t.exit_time_ms,
            entry_price: t.entry_price.normalize(),
            exit_price: t.exit_price.normalize(),
            fees: t.fees.normalize(),
            pnl: t.pnl.normalize(),
        })
        .collect();
    want.sort();

    // The stack's closed trades, each verified by the reconciler against the exchange's
    // closed-PnL records (their numbers are the exchange's).
    let journal = Journal::open(&stack.path("run/sim/journal.sqlite")).unwrap();
    let stack_rows = || -> (Vec<Row>, usize) {
        let trades: Vec<_> = journal
            .trades()
            .unwrap()
            .into_iter()
            .filter(|t| t.calc.exit_time_ms.is_some_and(|x| bar_of(x) < cut))
            .collect();
        let unverified = trades.iter().filter(|t| !t.verified()).count();
        let mut rows: Vec<Row> = trades
            .iter()
            .map(|t| Row {
                symbol: t.calc.symbol.clone(),
                entry_bar: bar_of(t.calc.entry_time_ms),
                side: side(t.calc.side),
                qty: t.qty().normalize(),
                exit_bar: bar_of(t.calc.exit_time_ms.unwrap_or_default()),
                entry_price: t.entry_price().normalize(),
                exit_price: t.exit_price().unwrap_or_default().normalize(),
                fees: t.fees().normalize(),
                pnl: t.pnl().unwrap_or_default().normalize(),
            })
            .collect();
        rows.sort();
        (rows, unverified)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (got, unverified) = loop {
        let (rows, unverified) = stack_rows();
        if (rows.len() >= want.len() && unverified == 0) || Instant::now() > deadline {
            break (rows, unverified);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let missing: Vec<&Row> = want.iter().filter(|r| !got.contains(r)).collect();
    let extra: Vec<&Row> = got.iter().filter(|r| !want.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} backtest trades, {} paper trades ({unverified} unverified) from bar {trade_from} \
         to {cut}\nonly in the backtest:\n{missing:#?}\nonly in the paper run:\n{extra:#?}",
        want.len(),
        got.len(),
    );
    assert_eq!(
        unverified, 0,
        "every paper trade verified against the exchange"
    );

    // The comparison covered what it claims to: enough trades, and every way out.
    let count = |why: ExitReason| expected.iter().filter(|t| t.exit_reason == why).count();
    let reversals = expected
        .iter()
        .filter(|a| {
            expected.iter().any(|b| {
                b.symbol == a.symbol && b.entry_time_ms == a.exit_time_ms && b.side != a.side
            })
        })
        .count();
    eprintln!(
        "parity: {} trades equal ({} by signal, {} reversals, {} stop-loss, {} take-profit) \
         over {} bars",
        want.len(),
        count(ExitReason::Signal),
        reversals,
        count(ExitReason::StopLoss),
        count(ExitReason::TakeProfit),
        (cut - trade_from) / BAR_MS
    );
    assert!(
        want.len() >= 20,
        "too few trades to compare: {}",
        want.len()
    );
    for why in [
        ExitReason::Signal,
        ExitReason::StopLoss,
        ExitReason::TakeProfit,
    ] {
        assert!(count(why) > 0, "no {why:?} exit in the compared window");
    }
    assert!(reversals > 0, "no stop-and-reverse in the compared window");
}

/// The drift report (`shardbot drift`) on a paper run with two deliberate differences from
/// the backtest it is compared with: bybit-sim fills two ticks through the price where the
/// backtest assumes one, and the worker is stopped before a bar close at which the
/// backtest enters and started again three bars later (a restarted worker trades the newest
/// `worker.late_bars + 1` = 2 closes it missed, late: the two older ones are lost). The
/// report must find the lost closes' entries on the backtest's side only, saying the stack
/// sent no intent (or matched to a later entry of the restarted worker, by the delay), and
/// explain the gap of every trade the outage did not touch by slippage alone: one tick on
/// each fill.
#[test]
fn the_drift_report_finds_one_more_tick_of_spread_and_a_workers_outage() {
    let _one = ONE_STACK.lock().unwrap_or_else(|p| p.into_inner());
    let (stack, trade_from) = trading_stack(2);
    let worker = stack
        .supervisor()
        .into_keys()
        .find(|p| p.contains("worker"))
        .expect("a worker program");

    // The outage: across the close of the first bar, at least three bars on, at which the
    // backtest (one tick) enters.
    let plan = backtest(&stack, trade_from);
    let target = plan
        .iter()
        .map(|t| t.entry_time_ms)
        .filter(|t| *t >= trade_from + 3 * BAR_MS && *t <= trade_from + (BARS - 15) * BAR_MS)
        .min()
        .expect("an entry to miss");
    stack.wait(
        "the bar before the target close",
        Duration::from_secs(BARS as u64 * 3),
        || (sim_now(&stack) >= target - BAR_MS / 2).then_some(()),
    );
    let warm_before = logs(&stack.path("run/log"))
        .matches("every owned symbol is warm")
        .count();
    assert!(stack.ctl("stop", &worker), "stop {worker}");
    let stopped_at = sim_now(&stack);
    assert!(
        stopped_at < target,
        "the worker stopped after the close it should miss"
    );
    // Started again in the middle of the bar after three more closes: the gateway has long
    // published the newest bar, the worker trades it and the one before (late), and the
    // target close and the one after are lost.
    stack.wait("three more closes passed", Duration::from_secs(30), || {
        (sim_now(&stack) >= target + 3 * BAR_MS + BAR_MS / 2).then_some(())
    });
    let restarted_at = sim_now(&stack);
    assert!(stack.ctl("start", &worker), "start {worker}");
    stack.wait("the worker warm again", Duration::from_secs(60), || {
        (logs(&stack.path("run/log"))
            .matches("every owned symbol is warm")
            .count()
            > warm_before)
            .then_some(())
    });
    let warm_at = sim_now(&stack);
    // The closes surely lost: after the stop, older than the two newest when the worker
    // was started again (it reads the newest bars some time before it is warm).
    let lost = |close: i64| close > stopped_at && close < bar_of(restarted_at) - BAR_MS;

    stack.wait(
        "bars to trade on",
        Duration::from_secs(BARS as u64 * 3),
        || (sim_now(&stack) >= trade_from + BARS * BAR_MS).then_some(()),
    );
    let cut = bar_of(sim_now(&stack)) - BAR_MS;
    // Every fill of the window built into the journal's trades by the reconciler, and
    // every trade closed in it verified, before the comparison.
    let journal = Journal::open(&stack.path("run/sim/journal.sqlite")).unwrap();
    let newest_fill = journal
        .fills_from(trade_from)
        .unwrap()
        .iter()
        .filter(|f| f.fill.exec_time_ms < cut)
        .map(|f| f.rowid)
        .max()
        .unwrap_or(0);
    stack.wait(
        "every trade built and verified",
        Duration::from_secs(30),
        || {
            let built = journal
                .runs(1)
                .unwrap()
                .first()
                .is_some_and(|r| r.fills_watermark >= newest_fill);
            (built
                && journal
                    .trades()
                    .unwrap()
                    .iter()
                    .filter(|t| t.calc.exit_time_ms.is_some_and(|x| x < cut))
                    .all(|t| t.verified()))
            .then_some(())
        },
    );

    let csv = stack.path("drift.csv");
    let out = std::process::Command::new(shardbot_e2e::bin("shardbot"))
        .args(["drift", "--config"])
        .arg(&stack.config)
        .arg("--journal")
        .arg(stack.path("run/sim/journal.sqlite"))
        .arg("--data")
        .arg(shardbot_testdata::klines("bybit_linear_5m"))
        .args(["--from", &trade_from.to_string(), "--to", &cut.to_string()])
        .args(["--slippage-ticks", "1", "--intrabar", "path"])
        .arg("--settings")
        .arg(stack.path("run/sim/trading_settings.json"))
        .arg("--csv")
        .arg(&csv)
        .env(
            "SHARDBOT__EXCHANGE__SIM_BASE_URL",
            format!("http://127.0.0.1:{}", stack.port),
        )
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{report}{said}");
    // The strategies and parameters the worker announced at its start, journalled by the
    // router: the restarted worker announced the same set again, which adds nothing.
    assert!(
        said.contains("strategies: trend_following; parameters: the journal's, in force from"),
        "{said}"
    );
    assert!(
        !said.contains("warning: workers started with other parameters"),
        "{said}"
    );
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let get = |r: &Vec<String>, name: &str| r[col(name)].clone();
    let ms = |r: &Vec<String>, name: &str| get(r, name).parse::<i64>().ok();

    // The symbols the outage touched: a backtest trade of theirs entered at a close from
    // the bar before the stop (an intent then may still be on its way: a reversal's entry
    // waits for its exit's fill) to the restart, or was open across that time.
    let touched_from = stopped_at - BAR_MS;
    let touched: std::collections::HashSet<String> = plan
        .iter()
        .filter(|t| t.entry_time_ms <= warm_at && t.exit_time_ms > touched_from)
        .map(|t| t.symbol.to_string())
        .collect();
    // The lost close's entries: never matched in their own bar. Each is on the backtest's
    // side only, the stack having sent no intent, or, where the restarted worker entered
    // the same way at a later close, matched with the delay as its cause.
    let lost_entries: Vec<&shardbot_backtest::Trade> = plan
        .iter()
        .filter(|t| {
            lost(t.entry_time_ms) && t.exit_reason != ExitReason::EndOfData && t.exit_time_ms < cut
        })
        .collect();
    assert!(
        !lost_entries.is_empty(),
        "the outage lost no backtest entry"
    );
    for t in &lost_entries {
        let row = rows
            .iter()
            .find(|r| {
                get(r, "symbol") == t.symbol.as_ref()
                    && ms(r, "backtest_entry_ms") == Some(t.entry_time_ms)
            })
            .unwrap_or_else(|| {
                panic!(
                    "{} entering at {}: not in the report\n{report}",
                    t.symbol, t.entry_time_ms
                )
            });
        let why = get(row, "cause_or_reason");
        match get(row, "kind").as_str() {
            "only_backtest" => assert!(
                why.starts_with("no intent from the stack at that close"),
                "{row:?}"
            ),
            "matched" => {
                assert!(
                    ms(row, "entry_delay_ms").is_some_and(|d| d >= BAR_MS - 60_000),
                    "{row:?}"
                );
                assert!(why == "entry delay" || why == "exit delay", "{row:?}");
            }
            kind => panic!("{kind}: {row:?}"),
        }
    }
    // Only the outage's symbols have trades on one side only (after a lost entry the two
    // sides of a symbol may part for a while: a reversal's exit without its entry, ...).
    let one_sided: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| get(r, "kind") != "matched")
        .collect();
    assert!(
        !one_sided.is_empty(),
        "the outage left no trade on one side\n{report}"
    );
    for r in &one_sided {
        assert!(touched.contains(&get(r, "symbol")), "{r:?}\n{report}");
    }
    // Every other trade: matched, its gap one tick of slippage on each fill.
    let mut matched = 0;
    for r in &rows {
        if touched.contains(&get(r, "symbol")) {
            continue;
        }
        assert_eq!(get(r, "kind"), "matched", "{r:?}\n{report}");
        matched += 1;
        for part in ["size", "entry_delay", "exit_delay", "funding"] {
            assert_eq!(
                Decimal::from_str_exact(&get(r, part)).unwrap(),
                Decimal::ZERO,
                "{part}: {r:?}"
            );
        }
        assert_eq!(ms(r, "entry_delay_ms").map(bar_of_delay), Some(0), "{r:?}");
        let ticks = |name: &str| Decimal::from_str_exact(&get(r, name)).unwrap();
        assert_eq!(
            ticks("paper_entry_slip_ticks") - ticks("backtest_entry_slip_ticks"),
            Decimal::ONE,
            "{r:?}"
        );
        let cause = get(r, "cause_or_reason");
        assert!(
            cause == "entry slippage" || cause == "exit slippage",
            "{cause}: {r:?}"
        );
        let (entry, exit) = (
            Decimal::from_str_exact(&get(r, "entry_slippage")).unwrap(),
            Decimal::from_str_exact(&get(r, "exit_slippage")).unwrap(),
        );
        assert!(
            entry < Decimal::ZERO && exit < Decimal::ZERO,
            "both fills one tick worse: {r:?}"
        );
    }
    assert!(
        matched >= 10,
        "too few trades untouched by the outage: {matched}\n{report}"
    );
    eprintln!(
        "drift: {matched} trades untouched by the outage, matched, one tick of slippage \
         each; {} entries at the lost closes; {} trades on one side only, of the outage's {} \
         symbols",
        lost_entries.len(),
        one_sided.len(),
        touched.len()
    );
}

/// An entry delay in whole bars (a fill a few ms into its bar is in bar 0).
fn bar_of_delay(ms: i64) -> i64 {
    ms.div_euclid(BAR_MS)
}

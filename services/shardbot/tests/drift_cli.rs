//! `shardbot drift` on a journal written as the services write it: the paper trades are
//! the backtest's own (from `shardbot backtest` on the repository's real 4-hour candles)
//! with deliberate differences, one each, and the report must find exactly those and
//! name the right cause or reason:
//! - one entry filled a tick worse (the exchange's spread): matched, its gap the entry
//!   slippage, to the digit;
//! - one entry refused live by a risk limit, one never sent (a worker down at that bar),
//!   one placed without a trade following: only in the backtest, each with its reason;
//! - one extra paper trade the backtest did not make while it held that symbol: only in
//!   paper.
//!
//! Every other trade matches with a gap of zero.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, process::Command, str::FromStr};

use rust_decimal::Decimal;
use shardbot_journal::{ExchangeNumbers, IntentStages, Journal, TradeRecord};
use shardbot_protocol::{IntentAction, Interval, OrderIntent, Refusal, RefusalCode, Side, Symbol};
use shardbot_strategy::ParametersInForce;

const BAR: i64 = 4 * 3_600_000;

const PARAMS: &str = r#"{"trend_following": {"optimized_at": "2026-12-01", "objective": "test",
  "params": {"fast": 3, "slow": 8, "stop_and_reverse": true, "sl_pct": 2.0, "tp_pct": 4.0}}}"#;

const SETTINGS: &str = r#"{"simulated_balance": 10000, "sizing": {"fixed": 100}, "leverage": 5,
  "daily_loss_limit": 1000000, "max_open_positions": 20, "max_margin_use_pct": 100,
  "cooldown_after_stop_min": 0}"#;

fn shardbot(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_shardbot"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A trade of `shardbot backtest`'s trades.csv.
#[derive(Debug, Clone)]
struct Bt {
    symbol: String,
    side: Side,
    qty: Decimal,
    entry_ms: i64,
    exit_ms: i64,
    entry: Decimal,
    exit: Decimal,
    fees: Decimal,
    pnl: Decimal,
    end_of_data: bool,
}

fn read_trades(path: &Path) -> Vec<Bt> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let d = |i: usize| Decimal::from_str(f[i]).unwrap();
            Bt {
                symbol: f[0].into(),
                side: if f[1] == "long" {
                    Side::Buy
                } else {
                    Side::Sell
                },
                qty: d(2),
                entry_ms: f[3].parse().unwrap(),
                exit_ms: f[4].parse().unwrap(),
                entry: d(5),
                exit: d(6),
                fees: d(7),
                pnl: d(9),
                end_of_data: f[10] == "EndOfData",
            }
        })
        .collect()
}

/// The journal's trade (verified, the exchange's numbers equal to ours) of `t`.
fn record(j: &Journal, key: &str, t: &Bt, entry: Decimal, pnl: Decimal) {
    let r = TradeRecord {
        trade_key: key.into(),
        symbol: t.symbol.clone(),
        side: t.side,
        strategy: Some("trend_following".into()),
        source: "shardbot".into(),
        // The exchange fills a few milliseconds into the bar.
        entry_time_ms: t.entry_ms + 37,
        exit_time_ms: Some(t.exit_ms + 41),
        entry_order_ids: vec![format!("{key}-in")],
        exit_order_ids: vec![format!("{key}-out")],
        last_fill_rowid: 1,
        qty: t.qty,
        entry_price: entry,
        exit_price: Some(t.exit),
        fees: t.fees,
        funding: Decimal::ZERO,
        pnl: Some(pnl),
        exit_reason: None,
    };
    j.upsert_trade(&r, "").unwrap();
    j.mark_verified(
        key,
        &ExchangeNumbers {
            qty: t.qty,
            entry_price: entry,
            exit_price: t.exit,
            fees: t.fees,
            funding: Decimal::ZERO,
            pnl,
        },
        t.exit_ms + 60_000,
        None,
    )
    .unwrap();
}

fn intent(t: &Bt) -> OrderIntent {
    OrderIntent::new(
        "trend_following",
        Symbol::new(&t.symbol).unwrap(),
        Interval::H4,
        t.entry_ms - BAR,
        IntentAction::Enter { side: t.side },
        t.entry,
        None,
        None,
        0,
    )
}

#[test]
fn the_report_finds_each_deliberate_difference_and_names_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("params.json"), PARAMS).unwrap();
    std::fs::write(p("settings.json"), SETTINGS).unwrap();
    let data = shardbot_testdata::klines("bybit_linear_4h");
    let first = std::fs::read_to_string(data.join("BTCUSDT.csv")).unwrap();
    let first: i64 = first
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // 100 bars of warm-up, then every trade.
    let from = first + 100 * BAR;
    let (ok, _, err) = shardbot(&[
        "backtest",
        "--strategy",
        "trend_following",
        "--data",
        data.to_str().unwrap(),
        "--params-file",
        p("params.json").to_str().unwrap(),
        "--settings",
        p("settings.json").to_str().unwrap(),
        "--slippage-ticks",
        "1",
        "--intrabar",
        "path",
        "--trade-from",
        &from.to_string(),
        "--out",
        p("bt").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let trades: Vec<Bt> = read_trades(&p("bt/trades.csv"))
        .into_iter()
        .filter(|t| !t.end_of_data)
        .collect();
    assert!(trades.len() > 20, "{} trades", trades.len());

    let journal = Journal::open(&p("journal.sqlite")).unwrap();
    let (slipped, refused, down, placed) = (3, 7, 11, 15);
    for (i, t) in trades.iter().enumerate() {
        match i {
            i if i == slipped => {
                // A tick worse: the data's ticks are the prices' decimals.
                let tick = Decimal::new(1, t.entry.scale().max(1));
                let worse = match t.side {
                    Side::Buy => t.entry + tick,
                    Side::Sell => t.entry - tick,
                };
                record(&journal, "slipped", t, worse, t.pnl - tick * t.qty);
            }
            i if i == refused => journal
                .record_refusal(
                    &intent(t),
                    &Refusal {
                        code: RefusalCode::MaxOpenPositions,
                        reason: "20 positions open".into(),
                    },
                    t.entry_ms + 5,
                )
                .unwrap(),
            i if i == down => {}
            i if i == placed => journal
                .record_stages(&IntentStages {
                    intent_id: intent(t).intent_id.to_string(),
                    order_link_id: "sb-x".into(),
                    symbol: t.symbol.clone(),
                    action: "enter-buy".into(),
                    bar_close_ms: t.entry_ms,
                    exchange_ms: None,
                    received_ms: None,
                    published_ms: None,
                    decided_ms: t.entry_ms + 1,
                    router_ms: t.entry_ms + 2,
                    approved_ms: t.entry_ms + 3,
                    sent_ms: t.entry_ms + 4,
                    acked_ms: t.entry_ms + 5,
                    filled_ms: None,
                })
                .unwrap(),
            i => record(&journal, &format!("t{i}"), t, t.entry, t.pnl),
        }
    }
    // An extra paper trade, the other way, a bar into a backtest trade that lasts longer.
    let held = trades
        .iter()
        .enumerate()
        .find(|(i, t)| {
            ![slipped, refused, down, placed].contains(i) && t.exit_ms - t.entry_ms > 2 * BAR
        })
        .map(|(_, t)| t)
        .unwrap();
    let extra = Bt {
        side: held.side.opposite(),
        entry_ms: held.entry_ms + BAR,
        ..held.clone()
    };
    record(&journal, "extra", &extra, extra.entry, Decimal::ONE);
    // The trading settings in force, as the risk manager records them, and the strategies
    // and parameters, as the router records a worker's: the report judges with these, not
    // with the configuration's (its settings file does not exist here, its strategy and
    // parameters would trade otherwise).
    journal.record_trading_settings(first, SETTINGS).unwrap();
    let in_force = ParametersInForce {
        strategies: vec!["trend_following".into()],
        parameters: serde_json::from_str(PARAMS).unwrap(),
    };
    journal
        .record_parameters(first, &in_force.to_json())
        .unwrap();
    // A worker started with other parameters inside the window: said, not used.
    let later = ParametersInForce {
        strategies: vec!["mean_reversion".into()],
        parameters: Default::default(),
    };
    journal
        .record_parameters(from + 50 * BAR, &later.to_json())
        .unwrap();
    drop(journal);
    std::fs::write(
        p("other-params.json"),
        PARAMS.replace(r#""fast": 3, "slow": 8"#, r#""fast": 5, "slow": 13"#),
    )
    .unwrap();

    std::fs::write(
        p("shardbot.toml"),
        format!(
            "[strategy]\nenabled = [\"mean_reversion\"]\ninterval = \"240\"\nparameters_file = \"{}\"\n\n[risk]\ntrading_settings_file = \"{}\"\n",
            p("other-params.json").display(),
            p("no-such-settings.json").display()
        ),
    )
    .unwrap();
    let (ok, out, err) = shardbot(&[
        "drift",
        "--config",
        p("shardbot.toml").to_str().unwrap(),
        "--journal",
        p("journal.sqlite").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--from",
        &from.to_string(),
        "--to",
        "2100-01-01",
        "--slippage-ticks",
        "1",
        "--instruments",
        "data",
        "--csv",
        p("drift.csv").to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("trading settings: the journal's, in force from"),
        "{err}"
    );
    assert!(
        err.contains("strategies: trend_following; parameters: the journal's, in force from"),
        "{err}"
    );
    assert!(
        err.contains("warning: workers started with other parameters 1 time(s) inside the window"),
        "{err}"
    );
    assert!(
        out.contains(&format!(
            "{} matched, 1 only in paper, 3 only in the backtest",
            trades.len() - 3
        )),
        "{out}"
    );
    let mut reader = csv::Reader::from_path(p("drift.csv")).unwrap();
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
    let (kind, gap, cause, entry_ms) = (
        col("kind"),
        col("gap"),
        col("cause_or_reason"),
        col("backtest_entry_ms"),
    );
    let slip = &trades[slipped];
    for r in rows.iter().filter(|r| r[kind] == "matched") {
        let g = Decimal::from_str(&r[gap]).unwrap();
        if r[entry_ms] == slip.entry_ms.to_string() && r[1] == slip.symbol {
            let tick = Decimal::new(1, slip.entry.scale().max(1));
            assert_eq!(g, -tick * slip.qty, "{r:?}");
            assert_eq!(r[cause], "entry slippage", "{r:?}");
            assert_eq!(Decimal::from_str(&r[col("entry_slippage")]).unwrap(), g);
            assert_eq!(r[col("paper_entry_slip_ticks")], "2", "{r:?}");
            assert_eq!(r[col("backtest_entry_slip_ticks")], "1", "{r:?}");
        } else {
            assert_eq!(g, Decimal::ZERO, "{r:?}");
            assert_eq!(r[cause], "", "{r:?}");
        }
    }
    let only_backtest: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r[kind] == "only_backtest")
        .map(|r| (r[entry_ms].as_str(), r[cause].as_str()))
        .collect();
    let at = |i: usize| trades[i].entry_ms.to_string();
    assert_eq!(only_backtest.len(), 3, "{only_backtest:?}");
    for (i, says) in [
        (
            refused,
            "refused live by the risk rules: max_open_positions (20 positions open)",
        ),
        (down, "no intent from the stack at that close"),
        (placed, "placed at that close; no trade in the journal"),
    ] {
        assert!(
            only_backtest
                .iter()
                .any(|(t, why)| *t == at(i) && why.starts_with(says)),
            "trade {i}: {only_backtest:?}"
        );
    }
    let only_paper: Vec<&Vec<String>> = rows.iter().filter(|r| r[kind] == "only_paper").collect();
    assert_eq!(only_paper.len(), 1);
    assert_eq!(
        only_paper[0][cause],
        "the backtest held its own position on the symbol then"
    );
}

#[test]
fn a_bad_window_is_refused_with_its_reason() {
    let (ok, _, err) = shardbot(&["drift", "--from", "yesterday", "--journal", "x.sqlite"]);
    assert!(!ok && err.contains("not a time"), "{err}");
    let (ok, _, err) = shardbot(&[
        "drift",
        "--from",
        "2026-12-02",
        "--to",
        "2026-12-01",
        "--journal",
        "x.sqlite",
    ]);
    assert!(!ok && err.contains("is not after --from"), "{err}");
}

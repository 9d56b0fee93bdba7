//! `shardbot report` and `shardbot trades --csv` measure every balance and percentage on
//! the simulated balance, never the exchange's wallet, and keep the figures of before and
//! after a new simulated balance each on its own base.
//!
//! The journal is written here as the services write it: the risk manager's simulated
//! balances, the reconciler's trades and balance snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, str::FromStr};

use rust_decimal::Decimal;
use shardbot_journal::{BalanceSnapshot, Journal, SimulatedBalance, TradeRecord};
use shardbot_protocol::Side;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn trade(key: &str, entry: i64, exit: i64, pnl: &str) -> TradeRecord {
    TradeRecord {
        trade_key: key.into(),
        symbol: "BTCUSDT".into(),
        side: Side::Buy,
        strategy: Some("trend_following".into()),
        source: "shardbot".into(),
        entry_time_ms: entry,
        exit_time_ms: Some(exit),
        entry_order_ids: vec![format!("{key}-in")],
        exit_order_ids: vec![format!("{key}-out")],
        last_fill_rowid: 1,
        qty: d("0.01"),
        entry_price: d("100000"),
        exit_price: Some(d("100000")),
        fees: d("1"),
        funding: Decimal::ZERO,
        pnl: Some(d(pnl)),
        exit_reason: None,
    }
}

fn shardbot(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shardbot"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const DAY: i64 = 86_400_000;
const T0: i64 = 1_790_000_000_000;

#[test]
fn figures_are_on_the_simulated_balance_in_force_before_and_after_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let j = Journal::open(&path).unwrap();
    // The sim's wallet holds 100,000 USDT; the stack trades it as 1,000.
    j.record_simulated_balance(&SimulatedBalance {
        set_at_ms: T0,
        simulated_balance: d("1000"),
        exchange_balance: d("100000"),
        offset: d("99000"),
    })
    .unwrap();
    j.upsert_trade(&trade("a", T0 + DAY, T0 + DAY + 3_600_000, "-117"), "")
        .unwrap();
    j.upsert_trade(
        &trade("b", T0 + 2 * DAY, T0 + 2 * DAY + 3_600_000, "17"),
        "",
    )
    .unwrap();
    // Flat, the user sets 500 USDT: the wallet is then 99,900.
    j.record_simulated_balance(&SimulatedBalance {
        set_at_ms: T0 + 3 * DAY,
        simulated_balance: d("500"),
        exchange_balance: d("99900"),
        offset: d("99400"),
    })
    .unwrap();
    j.upsert_trade(
        &trade("c", T0 + 4 * DAY, T0 + 4 * DAY + 3_600_000, "25"),
        "",
    )
    .unwrap();
    j.record_snapshot(&BalanceSnapshot {
        at_ms: T0 + 5 * DAY,
        kind: "check".into(),
        expected: d("99925"),
        actual: d("99925"),
        difference: Decimal::ZERO,
        status: "ok".into(),
        note: String::new(),
    })
    .unwrap();
    drop(j);
    let journal = path.to_str().unwrap();

    let report = shardbot(&["report", "--journal", journal]);
    // The balance in force now: 500, and its one trade: +25 = +5 %.
    assert!(
        report.contains("starting balance    500 USDT (simulated, set 2026-09-24 14:13 UTC)"),
        "{report}"
    );
    assert!(
        report.contains("total PnL           25 USDT (5.00%)"),
        "{report}"
    );
    assert!(report.contains("closed trades       1 "), "{report}");
    assert!(
        report.contains("balance (simulated) expected 525 USDT, wallet 525 USDT: ok"),
        "{report}"
    );
    // The earlier balance keeps its own base: -100 of 1,000 is -10 %.
    let line = |start: &str| {
        report
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start}: {report}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        line("2026-09-21").ends_with("1000 2 -100 -10.00%"),
        "{report}"
    );
    assert!(
        line("2026-09-24").ends_with("now 500 1 25 5.00%"),
        "{report}"
    );
    assert!(
        !report.contains("100000"),
        "no exchange balance shown: {report}"
    );

    // The CSV: each trade's simulated balance before it and its return on it.
    let csv = shardbot(&["trades", "--journal", journal, "--csv", "-"]);
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = rows.map(|l| l.split(',').collect()).collect();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|f| {
            (
                f[col("trade_key")].into(),
                f[col("balance_before")].into(),
                f[col("return_pct")].into(),
            )
        })
        .collect();
    // Each time also in ISO 8601 UTC, beside its epoch milliseconds.
    for f in &rows {
        for (ms, iso) in [
            ("entry_time_ms", "entry_time"),
            ("exit_time_ms", "exit_time"),
        ] {
            let ms: i64 = f[col(ms)].parse().unwrap();
            let t = chrono::DateTime::parse_from_rfc3339(f[col(iso)]).unwrap();
            assert_eq!(t.timestamp_millis(), ms, "{csv}");
            assert!(f[col(iso)].ends_with('Z'), "{csv}");
        }
    }
    let want = |k: &str, b: &str, r: &str| (k.to_string(), b.to_string(), r.to_string());
    assert!(got.contains(&want("a", "1000", "-11.7")), "{csv}");
    assert!(got.contains(&want("b", "883", "1.9253")), "{csv}");
    assert!(got.contains(&want("c", "500", "5")), "{csv}");
}

/// `shardbot stages`: each span's p50/p99 over the newest closes, chosen by the bar's close.
#[test]
fn stages_summarise_the_newest_closes_of_the_journal() {
    use shardbot_journal::{IntentStages, RouterStamps};
    use shardbot_protocol::{BarStamps, IntentAction, Interval, OrderIntent, Symbol};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    let j = Journal::open(&path).unwrap();
    // Two closes 5 minutes apart; the newer has two intents, whose router → approved
    // takes 3 and 7 ms; the older one's takes 500 ms.
    let close0 = 1_700_000_400_000;
    for (symbol, k, approve_ms) in [("ETHUSDT", 0, 500), ("BTCUSDT", 1, 3), ("SOLUSDT", 1, 7)] {
        let open = close0 - 300_000 + k * 300_000;
        let close = open + 300_000;
        let intent = OrderIntent::new(
            "trend_following",
            Symbol::new(symbol).unwrap(),
            Interval::M5,
            open,
            IntentAction::Enter { side: Side::Buy },
            d("100"),
            None,
            None,
            close + 40,
        )
        .with_bar_stamps(BarStamps {
            exchange_ms: Some(close + 20),
            received_ms: Some(close + 30),
            published_ms: Some(close + 31),
        });
        let router_ms = close + 45;
        let s = IntentStages::of(
            &intent,
            RouterStamps {
                router_ms,
                approved_ms: router_ms + approve_ms,
                sent_ms: router_ms + approve_ms + 1,
                acked_ms: router_ms + approve_ms + 6,
            },
        );
        j.record_stages(&s).unwrap();
    }
    let p = path.display().to_string();
    let out = shardbot(&["stages", "--journal", &p, "--closes", "1"]);
    assert!(out.contains("2 intents placed at 1 bar closes"), "{out}");
    let line = |name: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // "router → approved": 2 intents, p50 3 (nearest rank), p99 7.
    assert_eq!(line("router → approved")[3..], ["2", "3", "7"]);
    assert_eq!(line("bar close → gateway")[4..], ["2", "30", "30"]);
    let all = shardbot(&["stages", "--journal", &p]);
    assert!(all.contains("3 intents placed at 2 bar closes"), "{all}");
    assert_eq!(
        all.lines()
            .find(|l| l.starts_with("router → approved"))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()[3..],
        ["3", "7", "500"]
    );
    // The first order acknowledged at each close: the newer close's is BTCUSDT (approved
    // after 3 ms), 24 ms from the gateway's receipt to the acknowledgement; the older
    // close's, 521 ms.
    let firsts = |out: &str, name: &str| -> Vec<String> {
        out.lines()
            .skip_while(|l| !l.starts_with("the first order acknowledged at each close"))
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no first-order {name} in {out}"))
            .split_whitespace()
            .skip(3)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(firsts(&out, "gateway → acknowledged"), ["1", "24", "24"]);
    assert_eq!(firsts(&all, "gateway → acknowledged"), ["2", "24", "521"]);
    assert_eq!(firsts(&all, "router → approved"), ["2", "3", "500"]);
}

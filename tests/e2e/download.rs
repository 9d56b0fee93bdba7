//! `shardbot download` against bybit-sim: every bar of the range lands in the history
//! store equal to the exchange's klines, a second run resumes (adds only what is new), an
//! older range is merged in front, and a backtest reads the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use shardbot_e2e::Stack;
use shardbot_protocol::{Interval, Symbol};

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 5
symbols = 6
universe_file = ""
universe_price_dir = ""

[market_data]
store_dir = "store"
"#;

fn cli(stack: &Stack, args: &[&str]) -> (bool, String) {
    stack.cli(args)
}

#[test]
fn download_fills_the_store_resumably_and_backtests_read_it() {
    let mut stack = Stack::new(CONFIG);
    let (rt, sim) = stack.start_sim();
    let symbols: Vec<String> = rt
        .block_on(sim.usdt_perpetuals())
        .unwrap()
        .into_iter()
        .map(|i| i.symbol)
        .take(2)
        .collect();
    let now = sim.raw().clock().now_ms();
    let len = 300_000;
    let day_ago = (now - 86_400_000) / len * len;
    let list = symbols.join(",");
    let (ok, out) = cli(
        &stack,
        &[
            "download",
            "--interval",
            "5",
            "--symbols",
            &list,
            "--from",
            &day_ago.to_string(),
        ],
    );
    assert!(ok, "{out}");
    let store = shardbot_history::HistoryStore::open(stack.path("store")).unwrap();
    let last_closed = (now - len) / len * len;
    for s in &symbols {
        let stored = store
            .read(&Symbol::new(s).unwrap(), Interval::M5, None, None, None)
            .unwrap();
        let rest = rt
            .block_on(sim.klines(s, Interval::M5, day_ago, last_closed))
            .unwrap();
        assert!(stored.len() >= 288, "{s}: {} bars", stored.len());
        for (b, k) in stored.iter().zip(&rest) {
            assert_eq!(
                (b.open_time_ms, b.open, b.high, b.low, b.close),
                (k.start_ms, k.open, k.high, k.low, k.close)
            );
        }
    }
    // Again: only bars closed since (if any) are new.
    let (ok, out) = cli(
        &stack,
        &[
            "download",
            "--interval",
            "5",
            "--symbols",
            &list,
            "--from",
            &day_ago.to_string(),
        ],
    );
    assert!(ok, "{out}");
    let new: usize = out
        .split(" new bars")
        .next()
        .unwrap()
        .rsplit('\n')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(new <= 2 * 2, "a second run resumes: {out}");
    // An older range goes in front of what is stored.
    let two_days = day_ago - 86_400_000;
    let (ok, out) = cli(
        &stack,
        &[
            "download",
            "--interval",
            "5",
            "--symbols",
            &symbols[0],
            "--from",
            &two_days.to_string(),
        ],
    );
    assert!(ok, "{out}");
    let s0 = store
        .read(
            &Symbol::new(&symbols[0]).unwrap(),
            Interval::M5,
            None,
            None,
            None,
        )
        .unwrap();
    assert_eq!(s0.first().unwrap().open_time_ms, two_days);
    assert!(
        s0.windows(2)
            .all(|w| w[1].open_time_ms - w[0].open_time_ms == len),
        "no holes, no repeats"
    );
    // A backtest of the store.
    let (ok, out) = cli(
        &stack,
        &[
            "backtest",
            "--strategy",
            "trend_following",
            "--data",
            &format!("store:5:{list}"),
            "--out",
            "bt",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "symbols / bars             2 / {}",
            s0.len()
                + store
                    .read(
                        &Symbol::new(&symbols[1]).unwrap(),
                        Interval::M5,
                        None,
                        None,
                        None
                    )
                    .unwrap()
                    .len()
        )),
        "{out}"
    );
    // Bad input says what to fix.
    let (ok, out) = cli(
        &stack,
        &[
            "download",
            "--interval",
            "7",
            "--symbols",
            &list,
            "--from",
            "2025-01-01",
        ],
    );
    assert!(!ok && out.contains("--interval 7"), "{out}");
    let (ok, out) = cli(
        &stack,
        &[
            "download",
            "--interval",
            "5",
            "--symbols",
            &list,
            "--from",
            "yesterday",
        ],
    );
    assert!(
        !ok && out.contains("is not a time: write YYYY-MM-DD"),
        "{out}"
    );
}

//! The dashboard in a real browser: Debian's headless Chromium, driven over WebDriver,
//! against the whole stack (`scripts/stack up`) paper trading on bybit-sim, which replays
//! real Bybit 5-minute series at 300×.
//!
//! A user logs in (a wrong token first), picks the sim's demo account, sets the simulated
//! balance and a risk limit (and is refused an invalid one), starts trading (the stack
//! starts halted: `risk.start_halted`), sees trades appear with the ✓ of the exchange's
//! verification, exports the trades as CSV (whose rows must equal the journal's), and pulls
//! the kill switch (every position closed on the exchange). Screenshots of every page are
//! saved to `target/dashboard-screenshots/`. Then every log line and every HTTP response
//! of the run is scanned for the account's API secret and the dashboard token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, time::Duration};

use shardbot_e2e::{FAST_PARAMS, ScriptStack, block_on, replay_config, webdriver::Browser};
use shardbot_journal::Journal;

const SIM_SECRET: &str = "sim-demo-secret";
const BROWSER_TZ: &str = "Asia/Tokyo";
/// Its offset from UTC, in ms (no summer time).
const BROWSER_TZ_OFFSET_MS: i64 = 9 * 3_600_000;

/// A time as the page writes it (`2026-12-05 04:47:23`), `offset_ms` from UTC.
fn page_time(ms: i64, offset_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms + offset_ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The cells' text of every row of `tbody`, as shown.
/// The keys of a table's rows as shown (each row's `data-key`, column 0 of [`table_rows`]).
fn row_keys(b: &Browser, tbody: &str) -> Vec<String> {
    table_rows(b, tbody)
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
}

/// Shows `n` rows a page in the grid whose page-size select is `{grid}-size`.
fn page_size(b: &Browser, grid: &str, n: u32) {
    b.js(
        "const s = document.getElementById(arguments[0] + '-size'); s.value = String(arguments[1]); \
         s.dispatchEvent(new Event('change'));",
        serde_json::json!([grid, n]),
    );
}

fn table_rows(b: &Browser, tbody: &str) -> Vec<Vec<String>> {
    let v = b.js(
        "return [...document.getElementById(arguments[0]).rows].map((r) => \
         [r.dataset.key || '', ...[...r.cells].map((c) => c.textContent)]);",
        serde_json::json!([tbody]),
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// A number as the page writes it (`1,234.5678`, `–` for none).
fn shown_number(s: &str) -> Option<f64> {
    s.replace(',', "").parse().ok()
}

/// `target/dashboard-screenshots/NAME.png`.
fn screenshot_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    target
        .join("dashboard-screenshots")
        .join(format!("{name}.png"))
}

/// GET with the browser's session cookie (what a click on a link fetches).
fn get(url: &str, cookie: Option<&str>, bearer: Option<&str>) -> (u16, String) {
    let (url, cookie, bearer) = (
        url.to_owned(),
        cookie.map(str::to_owned),
        bearer.map(str::to_owned),
    );
    block_on(async move {
        let mut r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(&url);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        if let Some(b) = bearer {
            r = r.header("authorization", format!("Bearer {b}"));
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    })
}

fn count(b: &Browser, css: &str) -> u64 {
    b.js(
        "return document.querySelectorAll(arguments[0]).length;",
        serde_json::json!([css]),
    )
    .as_u64()
    .unwrap()
}

#[test]
fn a_user_trades_from_the_dashboard_and_pulls_the_kill_switch() {
    // Notifications go to this webhook (its path is a token: never in a log).
    let (hook, hook_rx) = shardbot_e2e::webhook();
    let stack = ScriptStack::new(&replay_config(
        "start_halted = true",
        &format!(
            "[dashboard]\nrefresh_ms = 500\nbacktests = [\"{{dir}}/backtests\"]\ndrift_every_s = 10\n\n\
             [alerts]\nwebhook_url = \"{hook}\"\ntimeout_ms = 5000"
        ),
    ));
    std::fs::write(stack.path("optimized_parameters.json"), FAST_PARAMS).unwrap();
    let out = stack.up(&["--workers", "1"]);
    let base = format!("http://127.0.0.1:{}", stack.dashboard_port);
    assert!(out.contains(&format!("dashboard: {base}/")), "{out}");
    let token_file = stack.path("run/sim/dashboard.token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token file is private");
    }
    let mut responses: Vec<String> = Vec::new();

    // Nothing without the token.
    for path in [
        "/api/state",
        "/api/events",
        "/metrics",
        "/api/trades.csv",
        "/api/flatten/k1",
    ] {
        let (status, body) = get(&format!("{base}{path}"), None, None);
        assert_eq!(status, 401, "{path} without a token: {body}");
        let (status, _) = get(&format!("{base}{path}"), None, Some("not-the-token"));
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let (status, _) = get(&format!("{base}/"), None, None);
    assert_eq!(status, 303, "the page sends strangers to /login");

    // The browser's own zone is not UTC (UTC+9, no summer time): the page shows UTC
    // until switched to the browser's zone.
    let b = Browser::start_in_zone(BROWSER_TZ);
    b.goto(&format!("{base}/"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.fill("#token", "wrong-token-0000000000");
    b.click("#login");
    let refused = b.wait(
        "the refusal of a wrong token",
        Duration::from_secs(10),
        |b| Some(b.text_content("#login-error")).filter(|t| !t.is_empty()),
    );
    assert!(refused.contains("Wrong token"), "{refused}");
    b.screenshot(&screenshot_path("login"));
    b.fill("#token", &token);
    b.click("#login");
    b.wait(
        "the dashboard after logging in",
        Duration::from_secs(10),
        |b| (!b.url().ends_with("/login")).then_some(()),
    );

    // The demo account of bybit-sim, paper trading, halted until the user starts it.
    b.wait("the halted mode", Duration::from_secs(60), |b| {
        (b.text_content("#mode") == "halted").then_some(())
    });
    b.click("#account-select option[value='sim']");
    let selected = b.js(
        "return document.getElementById('account-select').value;",
        serde_json::json!([]),
    );
    assert_eq!(selected, "sim");
    assert!(
        b.text_content("#env-badge").contains("paper"),
        "{}",
        b.text_content("#env-badge")
    );
    assert_eq!(b.text_content("#trading-title"), "Paper Trading");
    assert!(
        b.text_content("#strategies")
            .contains("optimized ✓ 2026-11-22T00:00:00Z")
    );

    // The simulated balance (the account is flat: nothing traded yet).
    b.fill("#sim-balance", "2500");
    b.click("#save-balance");
    b.wait("the new simulated balance", Duration::from_secs(20), |b| {
        b.text_content("#sim-equity")
            .starts_with("2,500")
            .then_some(())
    });
    assert_eq!(b.text_content("#balance-message"), "saved and applied");

    // Risk settings: an invalid leverage is refused with the reason, a valid limit applied.
    b.goto(&format!("{base}/#risk"));
    b.wait("the risk form", Duration::from_secs(10), |b| {
        let v = b.js(
            "return document.getElementById('max-positions').value;",
            serde_json::json!([]),
        );
        (v.as_str().is_some_and(|s| !s.is_empty())).then_some(())
    });
    b.fill("#leverage", "500");
    b.click("#save-risk");
    let refusal = b.wait(
        "the refusal of leverage 500",
        Duration::from_secs(10),
        |b| Some(b.text_content("#risk-message")).filter(|t| !t.is_empty()),
    );
    assert!(refusal.contains("leverage"), "{refusal}");
    b.fill("#leverage", "2");
    b.fill("#max-positions", "6");
    b.click("#save-risk");
    b.wait("the saved risk settings", Duration::from_secs(10), |b| {
        (b.text_content("#risk-message") == "saved and applied").then_some(())
    });
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(stack.path("run/sim/trading_settings.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["max_open_positions"], 6, "{saved}");
    assert_eq!(saved["simulated_balance"], "2500", "{saved}");
    // The form says what the limits imply together: the positions the margin cap allows
    // at this sizing, and which limit refuses entries first.
    let num = |v: &serde_json::Value| -> f64 {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap()
    };
    let per = match saved["sizing"].get("percent") {
        Some(p) => num(p),
        None => num(&saved["sizing"]["fixed"]) / 2500.0 * 100.0,
    };
    let fit = (num(&saved["max_margin_use_pct"]) / per + 1e-9).floor() as u64;
    let said = b.text_content("#risk-implied");
    assert!(
        said.contains(&format!("allows about {fit} position")),
        "{said} (expected {fit})"
    );
    assert_eq!(
        said.contains("can never be reached"),
        fit < 6,
        "{said} (fit {fit}, max 6)"
    );
    b.screenshot(&screenshot_path("risk"));

    // Start, and watch verified trades arrive.
    b.goto(&format!("{base}/#paper"));
    b.click("#start");
    b.wait("the normal mode", Duration::from_secs(20), |b| {
        (b.text_content("#mode") == "normal").then_some(())
    });
    // The buttons show the mode: Start is marked and cannot be pressed again; Stop asks
    // first, and cancelled it changes nothing.
    let disabled = |b: &Browser, id: &str| {
        b.js(
            "return document.getElementById(arguments[0]).disabled;",
            serde_json::json!([id]),
        )
        .as_bool()
        .unwrap()
    };
    b.wait("Start marked as in force", Duration::from_secs(5), |b| {
        (b.text_content("#start") == "Trading ✓" && disabled(b, "start") && !disabled(b, "stop"))
            .then_some(())
    });
    b.click("#stop");
    b.dismiss_dialog();
    assert_eq!(
        b.text_content("#mode"),
        "normal",
        "a cancelled Stop changes nothing"
    );
    // An unknown section in the address shows the trading tab, not a blank page.
    b.goto(&format!("{base}/#no-such-section"));
    b.wait(
        "the trading tab for an unknown section",
        Duration::from_secs(10),
        |b| {
            let shown = b.js(
                "return !document.getElementById('sec-trading').hidden;",
                serde_json::json!([]),
            );
            (shown.as_bool() == Some(true) && b.text_content("#trading-title") == "Paper Trading")
                .then_some(())
        },
    );
    b.wait(
        "three trades with the verified mark",
        Duration::from_secs(300),
        |b| (count(b, "#trades tr[data-verified='1']") >= 3).then_some(()),
    );
    assert!(count(&b, "#max-open") == 1 && b.text_content("#max-open") == "6");
    b.screenshot(&screenshot_path("paper-trading"));

    // The CSV the page links to has the journal's rows (read while the journal is still;
    // a trade closing in between means one more try).
    let href = b
        .js(
            "return document.getElementById('export-csv').href;",
            serde_json::json!([]),
        )
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = b.cookie_header();
    let journal = Journal::open(&stack.path("run/sim/journal.sqlite")).unwrap();
    let csv = b.wait(
        "a CSV export equal to the journal",
        Duration::from_secs(60),
        |_| {
            let (status, page_csv) = get(&href, Some(&cookie), None);
            assert_eq!(status, 200, "{page_csv}");
            let closed: Vec<_> = journal
                .trades()
                .unwrap()
                .into_iter()
                .filter(|t| t.is_closed())
                .collect();
            let mut ours = Vec::new();
            let balances = journal.simulated_balances().unwrap();
            shardbot_journal::write_trades_csv(&closed, &balances, &mut ours).unwrap();
            (page_csv == String::from_utf8(ours).unwrap()).then_some(page_csv)
        },
    );
    let rows = csv.lines().count() - 1;
    assert!(rows >= 3, "{csv}");
    assert!(csv.contains(",verified,"), "{csv}");
    responses.push(csv);

    // The kill switch: with positions open, every one is closed on the exchange.
    b.wait("an open position", Duration::from_secs(120), |b| {
        (count(b, "#positions tr") > 0).then_some(())
    });
    // Prices and sizes at each instrument's own precision (its tick and quantity step),
    // once the dashboard has read the instruments (everything starts at once: a read
    // before bybit-sim listens is tried again 5 s later).
    let v = b.wait(
        "the instruments' precision in the view",
        Duration::from_secs(20),
        |_| {
            let (_, state) = get(&format!("{base}/api/state"), Some(&cookie), None);
            let v: serde_json::Value = serde_json::from_str(&state).ok()?;
            let known = v["positions"]
                .as_array()?
                .iter()
                .filter_map(|p| p["symbol"].as_str())
                .any(|s| v["precision"].get(s).is_some());
            known.then_some(v)
        },
    );
    let rows = b.js(
        "return [...document.querySelectorAll('#positions tr')].map((r) => \
         [...r.cells].map((c) => c.textContent));",
        serde_json::json!([]),
    );
    let decimals = |s: &str| s.split_once('.').map_or(0, |(_, d)| d.len());
    let mut checked = 0;
    for r in rows.as_array().unwrap() {
        let cell = |i: usize| r[i].as_str().unwrap().to_owned();
        let Some(p) = v["precision"][cell(0)].as_array() else {
            continue;
        };
        let (price_dp, qty_dp) = (p[0].as_u64().unwrap(), p[1].as_u64().unwrap());
        assert_eq!(decimals(&cell(2)) as u64, qty_dp, "size of {r}");
        assert_eq!(decimals(&cell(3)) as u64, price_dp, "entry of {r}");
        // Its strategy, margin (size × entry ÷ leverage) and when it was opened.
        // (The page may show a newer view than the one read: a position it does not
        // hold yet is left out.)
        let Some(pos) = v["positions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["symbol"].as_str() == Some(cell(0).as_str()))
        else {
            continue;
        };
        // From the row's own size and entry (one view), at the position's leverage.
        let n = |i: usize| -> f64 { cell(i).replace(',', "").parse().unwrap() };
        let leverage: f64 = pos["leverage"].as_str().unwrap().parse().unwrap();
        let margin = n(2) * n(3) / leverage;
        assert!(
            (n(10) - margin).abs() <= 0.01 + margin * 1e-4,
            "margin of {r}: {margin}"
        );
        assert_eq!(
            cell(8),
            pos["strategy"].as_str().unwrap_or("(by hand)"),
            "strategy of {r}"
        );
        // The exchange's liquidation price: bybit-sim gives none ("–"); Bybit's figure is
        // carried as written (common/bybit's fixture test).
        assert_eq!(pos["liq_price"], serde_json::Value::Null, "{pos}");
        assert_eq!(cell(13), "–", "liquidation price of {r}");
        checked += 1;
    }
    assert!(
        checked > 0,
        "no position with its precision: {}",
        v["precision"]
    );
    // A sub-cent coin's price at its instrument's 7 decimals (1000BTTUSDT's tick: the
    // replay has no such coin; collect.rs checks the decimals of every real instrument),
    // as the page writes it: 0.0012345, not cut to 6 decimals.
    let written = b.js(
        "view.precision['1000BTTUSDT'] = [7, 0]; \
         const p = [price('0.0012345', '1000BTTUSDT'), qty('1500', '1000BTTUSDT')]; \
         delete view.precision['1000BTTUSDT']; return p;",
        serde_json::json!([]),
    );
    assert_eq!(written, serde_json::json!(["0.0012345", "1,500"]));
    // An open trade says so instead of "≈" (not verified yet): it has nothing to verify.
    let trades = b.js(
        "return [...document.querySelectorAll('#trades tr')].map((r) => \
         [...r.cells].map((c) => c.textContent));",
        serde_json::json!([]),
    );
    for r in trades.as_array().unwrap() {
        let open = r[6].as_str() == Some("open");
        assert_eq!(r[0].as_str() == Some("open"), open, "{r}");
        // How long it was held, and its PnL in % of its value, for a closed trade.
        assert_eq!(r[12].as_str() == Some(""), open, "{r}");
        if !open {
            assert!(
                r[11]
                    .as_str()
                    .unwrap()
                    .ends_with(|c: char| c.is_ascii_digit()),
                "{r}"
            );
        }
    }
    // One position closed by hand with its row's Close (asked first): the router closes it
    // with reduce-only orders, trading goes on (the mode stays normal), and its trade says
    // it was closed by hand. (At 300x a strategy may close it first: then another.)
    let mut closed_by_hand = None;
    for _ in 0..5 {
        let symbol = b.wait("an open position to close", Duration::from_secs(60), |b| {
            let s = b.js(
                "const r = document.querySelector('#positions tr'); return r ? r.dataset.symbol : null;",
                serde_json::json!([]),
            );
            s.as_str().map(str::to_owned)
        });
        // The button is the same element across new views (the row is re-drawn with each
        // view; a button re-made with it lost clicks: "stale element" in suite runs).
        let seen_at = b.view_generated();
        b.js(
            "window.heldButton = document.querySelector(arguments[0]);",
            serde_json::json!([format!("#positions button[data-close='{symbol}']")]),
        );
        b.wait("two newer views", Duration::from_secs(10), |b| {
            (b.view_generated() >= seen_at + 1000).then_some(())
        });
        let kept = b.js(
            "return window.heldButton !== null && document.body.contains(window.heldButton);",
            serde_json::json!([]),
        );
        if kept != true {
            let still_open = count(&b, &format!("#positions tr[data-symbol='{symbol}']")) > 0;
            assert!(
                !still_open,
                "{symbol}'s Close button was made anew with its row: a click in between is lost"
            );
            // Closed meanwhile by its strategy (300x): another position.
            continue;
        }
        b.click(&format!("#positions button[data-close='{symbol}']"));
        b.accept_dialog();
        let said = b.wait("the close's end", Duration::from_secs(60), |b| {
            let m = b.text_content("#close-message");
            let failed = b.js(
                "return document.getElementById('close-message').classList.contains('error');",
                serde_json::json!([]),
            );
            assert_eq!(failed, false, "{m}");
            m.contains("FLAT after").then_some(m)
        });
        assert!(said.starts_with(&format!("close {symbol} (c")), "{said}");
        assert_eq!(
            b.text_content("#mode"),
            "normal",
            "a close leaves the mode alone"
        );
        if !said.ends_with(" 0 orders") {
            closed_by_hand = Some(symbol);
            break;
        }
    }
    let symbol = closed_by_hand.expect("no position lasted long enough to be closed by hand");
    b.wait(
        "the trade closed by hand in the journal",
        Duration::from_secs(60),
        |_| {
            journal
                .trades()
                .unwrap()
                .iter()
                .any(|t| {
                    t.calc.symbol == symbol && t.calc.exit_reason.as_deref() == Some("manual_close")
                })
                .then_some(())
        },
    );
    // A new simulated balance is taken only while flat: the button says so.
    b.wait(
        "Set balance refused while positions are open",
        Duration::from_secs(5),
        |b| (disabled(b, "save-balance") && b.text_content("#open-count") != "0").then_some(()),
    );
    b.click("#kill");
    b.accept_dialog();
    b.wait(
        "the halted mode after the kill switch",
        Duration::from_secs(20),
        |b| (b.text_content("#mode") == "halted").then_some(()),
    );
    b.wait("Stop marked as in force", Duration::from_secs(5), |b| {
        (disabled(b, "stop") && !disabled(b, "start") && b.text_content("#start") == "Start")
            .then_some(())
    });
    let sim = stack.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The page follows the flatten to its end and says FLAT only once the exchange shows
    // no position.
    b.wait(
        "the flatten's end on the page",
        Duration::from_secs(90),
        |b| {
            let m = b.text_content("#control-message");
            assert!(!m.contains("NOT FLAT"), "{m}");
            m.contains("FLAT after").then_some(())
        },
    );
    let on_exchange = rt
        .block_on(sim.positions())
        .unwrap()
        .into_iter()
        .filter(|p| !p.size.is_zero())
        .count();
    assert_eq!(on_exchange, 0, "FLAT was shown with positions open");
    b.wait(
        "every position gone from the page",
        Duration::from_secs(30),
        |b| (count(b, "#positions tr") == 0).then_some(()),
    );

    // The trades table is re-drawn only when a trade changed (a table re-built every second
    // cannot be selected): across new views with the same trades, its rows stay the same
    // elements.
    b.goto(&format!("{base}/#paper"));
    b.wait("the trades table", Duration::from_secs(10), |b| {
        (count(b, "#trades tr") > 0).then_some(())
    });
    let generation = |b: &Browser| {
        b.js(
            "return [document.body.dataset.generated, document.getElementById('trades').dataset.sig, \
             document.querySelector('#trades tr').dataset.kept === '1'];",
            serde_json::json!([]),
        )
    };
    b.js(
        "document.querySelector('#trades tr').dataset.kept = '1';",
        serde_json::json!([]),
    );
    let before = generation(&b);
    let after = b.wait("two newer views", Duration::from_secs(10), |b| {
        let now = generation(b);
        let newer = now[0].as_str()?.parse::<i64>().ok()?
            >= before[0].as_str()?.parse::<i64>().ok()? + 1500;
        newer.then_some(now)
    });
    if after[1] == before[1] {
        assert_eq!(after[2], true, "the same trades were re-drawn: {after}");
    }

    // How each trade closed, as the journal has it (the reconciler's, from the fill that
    // closed it): those the kill switch closed say so. (Row: key, then the cells.)
    let shown = b.wait(
        "each closed trade's exit reason on the page",
        Duration::from_secs(60),
        |b| {
            let rows = table_rows(b, "trades");
            let journal_trades = journal.trades().unwrap();
            let mut by_kill_switch = 0;
            for r in &rows {
                let t = journal_trades.iter().find(|t| t.calc.trade_key == r[0])?;
                let want = match &t.calc.exit_reason {
                    _ if !t.is_closed() => String::new(),
                    Some(why) => why.replace('_', " "),
                    None => return None,
                };
                if r[14] != want {
                    return None;
                }
                by_kill_switch += usize::from(want == "kill switch");
            }
            (by_kill_switch > 0).then_some(rows)
        },
    );
    println!(
        "exit reasons: {:?}",
        shown.iter().map(|r| r[14].as_str()).collect::<Vec<_>>()
    );
    // A symbol's price chart: the gateway's bars of the traded interval, the exchange's
    // own (the sim's klines), with its trades' entries and exits marked on their bars.
    let chart_symbol = shown[0][2].clone();
    b.click(&format!("#trades button[data-chart='{chart_symbol}']"));
    let marks = b.wait("the symbol's price chart", Duration::from_secs(20), |b| {
        let v = b.js(
            "const e = document.getElementById('symbol-chart-box'); \
             return e.hidden || !document.querySelector('#symbol-chart canvas') ? null : \
             [e.dataset.symbol, e.dataset.bars, e.dataset.entries, e.dataset.exits];",
            serde_json::json!([]),
        );
        let v = v.as_array()?.clone();
        (v[0].as_str() == Some(chart_symbol.as_str())).then_some(v)
    });
    let (_, bars) = get(
        &format!("{base}/api/bars/{chart_symbol}?limit=300"),
        Some(&cookie),
        None,
    );
    let bars: serde_json::Value = serde_json::from_str(&bars).unwrap();
    let bars = bars["bars"].as_array().unwrap();
    assert!(!bars.is_empty());
    assert_eq!(marks[1].as_str().unwrap(), bars.len().to_string());
    let open_of = |b: &serde_json::Value| b[0].as_i64().unwrap();
    let (first, last) = (open_of(&bars[0]), open_of(bars.last().unwrap()));
    let klines = rt
        .block_on(sim.klines(&chart_symbol, shardbot_protocol::Interval::M5, first, last))
        .unwrap();
    let mut compared = 0;
    for k in &klines {
        if let Some(bar) = bars.iter().find(|b| open_of(b) == k.start_ms) {
            let close: rust_decimal::Decimal = bar[4].as_str().unwrap().parse().unwrap();
            assert_eq!(close, k.close, "{chart_symbol} at {}", k.start_ms);
            compared += 1;
        }
    }
    assert!(
        compared * 10 >= bars.len() * 9,
        "{compared} of {} bars",
        bars.len()
    );
    // Each bar with an entry (exit) of the symbol's trades is marked once.
    let (_, state) = get(&format!("{base}/api/state"), Some(&cookie), None);
    let chart_view: serde_json::Value = serde_json::from_str(&state).unwrap();
    let bar_of_fill = |ms: i64| {
        bars.iter()
            .position(|b| ms >= open_of(b) && ms < open_of(b) + 300_000)
    };
    let (mut entry_bars, mut exit_bars) = (Vec::new(), Vec::new());
    for t in chart_view["trades"].as_array().unwrap() {
        if t["symbol"].as_str() != Some(chart_symbol.as_str()) {
            continue;
        }
        entry_bars.extend(bar_of_fill(t["entry_time_ms"].as_i64().unwrap()));
        if let Some(x) = t["exit_time_ms"].as_i64() {
            exit_bars.extend(bar_of_fill(x));
        }
    }
    for v in [&mut entry_bars, &mut exit_bars] {
        v.sort_unstable();
        v.dedup();
    }
    assert!(
        !entry_bars.is_empty(),
        "a trade of {chart_symbol} on its chart"
    );
    assert_eq!(marks[2].as_str().unwrap(), entry_bars.len().to_string());
    assert_eq!(marks[3].as_str().unwrap(), exit_bars.len().to_string());
    b.screenshot(&screenshot_path("symbol-chart"));
    b.click("#symbol-chart-close");

    // Paged: 10 rows a page, the next page the view's next 10.
    let (_, state) = get(&format!("{base}/api/state"), Some(&cookie), None);
    let view: serde_json::Value = serde_json::from_str(&state).unwrap();
    let keys: Vec<String> = view["trades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trade_key"].as_str().unwrap().to_owned())
        .collect();
    page_size(&b, "trades", 10);
    let page = |b: &Browser| row_keys(b, "trades");
    assert_eq!(page(&b), keys[..keys.len().min(10)], "page 1 of {keys:?}");
    assert_eq!(
        b.text_content("#trades-pages"),
        format!("rows 1–{} of {}", keys.len().min(10), keys.len())
    );
    if keys.len() > 10 {
        b.click("#trades-next");
        assert_eq!(page(&b), keys[10..keys.len().min(20)], "page 2");
        b.click("#trades-prev");
    } else {
        assert_eq!(
            b.js(
                "return document.getElementById('trades-next').disabled;",
                serde_json::json!([])
            ),
            true
        );
    }
    println!("trades paged: {} trades", keys.len());
    page_size(&b, "trades", 500);
    // Sorted by PnL with a click on its header, the other way with a second; trades
    // without a PnL (open) last either way.
    let pnl_header =
        "document.getElementById('trades').closest('table').tHead.rows[0].cells[10].click();";
    let pnls = |b: &Browser| -> Vec<Option<f64>> {
        table_rows(b, "trades")
            .iter()
            .map(|r| shown_number(&r[11]))
            .collect()
    };
    b.js(pnl_header, serde_json::json!([]));
    let up = pnls(&b);
    b.js(pnl_header, serde_json::json!([]));
    let down = pnls(&b);
    for (list, ascending) in [(&up, true), (&down, false)] {
        let known: Vec<f64> = list
            .iter()
            .take_while(|x| x.is_some())
            .flatten()
            .copied()
            .collect();
        assert!(
            list[known.len()..].iter().all(Option::is_none),
            "no PnL last: {list:?}"
        );
        assert!(
            known.windows(2).all(|w| if ascending {
                w[0] <= w[1]
            } else {
                w[0] >= w[1]
            }),
            "sorted {}: {list:?}",
            if ascending { "up" } else { "down" }
        );
    }
    assert_eq!(up.len(), keys.len());
    // Filtered: a symbol typed keeps its trades only.
    let symbol = shown[0][2].clone();
    let of_symbol = view["trades"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["symbol"].as_str() == Some(symbol.as_str()))
        .count();
    b.fill("#trades-filter", &symbol);
    let filtered = table_rows(&b, "trades");
    assert!(
        !filtered.is_empty() && filtered.iter().all(|r| r[2] == symbol),
        "{symbol}: {filtered:?}"
    );
    assert_eq!(filtered.len(), of_symbol, "{symbol}");
    b.fill("#trades-filter", "");
    assert_eq!(table_rows(&b, "trades").len(), keys.len());

    // Times in UTC, labelled, until switched to the browser's zone (kept in the browser).
    let entry_ms = view["trades"][0]["entry_time_ms"].as_i64().unwrap();
    let first_entry = |b: &Browser| {
        let key = &keys[0];
        table_rows(b, "trades")
            .into_iter()
            .find(|r| &r[0] == key)
            .map(|r| r[6].clone())
            .unwrap()
    };
    assert_eq!(first_entry(&b), page_time(entry_ms, 0));
    assert_eq!(b.text_content("#sec-trading .tz"), "UTC");
    b.js(
        "const s = document.getElementById('tz-select'); s.value = 'local'; \
         s.dispatchEvent(new Event('change'));",
        serde_json::json!([]),
    );
    assert_eq!(first_entry(&b), page_time(entry_ms, BROWSER_TZ_OFFSET_MS));
    assert_eq!(b.text_content("#sec-trading .tz"), BROWSER_TZ);
    b.screenshot(&screenshot_path("trades-local-time"));
    b.js("location.reload();", serde_json::json!([]));
    b.wait(
        "the zone kept after a reload",
        Duration::from_secs(10),
        |b| {
            (b.text_content("#sec-trading .tz") == BROWSER_TZ && count(b, "#trades tr") > 0)
                .then_some(())
        },
    );
    b.js(
        "const s = document.getElementById('tz-select'); s.value = 'utc'; \
         s.dispatchEvent(new Event('change'));",
        serde_json::json!([]),
    );
    assert_eq!(first_entry(&b), page_time(entry_ms, 0));

    // Activity: the journal's newest orders, fills and refusals, each refusal with its
    // reason, and the refusals counted by reason.
    b.goto(&format!("{base}/#activity"));
    // Read in one go with the journal (halted, the workers' intents are still refused as
    // they come: the page and the journal are compared until they agree).
    let (orders, refused, summary) = b.wait(
        "the journal's orders, fills and refusals on the Activity page",
        Duration::from_secs(20),
        |b| {
            let refused = journal.refusals(100).unwrap();
            let orders = journal.recent_orders(100).unwrap().len() as u64;
            if count(b, "#orders tr") != orders
                || count(b, "#fills tr") == 0
                || count(b, "#refusals tr") != refused.len() as u64
            {
                return None;
            }
            let summary = b.text_content("#refusal-summary");
            match refused.first() {
                None => (summary == "No intent refused.").then_some(()),
                Some(newest) => {
                    let first = b.js(
                        "const r = document.querySelector('#refusals tr'); \
                         return [...r.cells].map((c) => c.textContent);",
                        serde_json::json!([]),
                    );
                    (first[5].as_str() == Some(newest.code.as_str())
                        && first[6].as_str() == Some(newest.reason.as_str())
                        && summary.contains(&newest.code)
                        && count(b, "#refusals-by-close tr") > 0)
                        .then_some(())
                }
            }?;
            Some((orders, refused.len(), summary))
        },
    );
    println!("activity: {orders} orders, {refused} refusals ({summary})");
    // Paged at 5 rows (a phone's choice): the next page is the journal's next 5 fills
    // (at least 8: 3 trades closed before the kill switch, and one it closed, each
    // entered and left).
    let execs: Vec<String> = journal
        .recent_fills(100)
        .unwrap()
        .into_iter()
        .map(|f| f.fill.exec_id)
        .collect();
    assert!(execs.len() >= 8, "{execs:?}");
    page_size(&b, "fills", 5);
    let fill_page = |b: &Browser| row_keys(b, "fills");
    assert_eq!(fill_page(&b), execs[..5]);
    b.click("#fills-next");
    assert_eq!(fill_page(&b), execs[5..execs.len().min(10)]);
    assert_eq!(
        b.text_content("#fills-pages"),
        format!("rows 6–{} of {}", execs.len().min(10), execs.len())
    );
    b.click("#fills-prev");
    assert_eq!(fill_page(&b), execs[..5]);
    // The services' warnings and errors, from their log files, filterable: the router
    // warned about the kill switch's flatten ("flatten: entries stopped").
    b.fill("#log-filter", "flatten: entries stopped");
    b.wait(
        "the router's flatten warning in the log tail",
        Duration::from_secs(20),
        |b| {
            let rows = count(b, "#log-lines tr[data-file='order-router.log']");
            (rows > 0 && rows == count(b, "#log-lines tr[data-file]")).then_some(())
        },
    );
    b.fill("#log-filter", "");
    b.screenshot(&screenshot_path("activity"));

    // Notifications: the dashboard told the webhook of fills and of the kill switch's
    // mode change, lists them on the Activity page, and sends a test on request.
    let mut heard: Vec<serde_json::Value> = Vec::new();
    let from_dashboard = |heard: &[serde_json::Value], event: &str| {
        heard
            .iter()
            .any(|m| m["service"] == "dashboard" && m["event"] == event)
    };
    b.click("#notify-test");
    b.wait(
        "the webhook's notifications",
        Duration::from_secs(20),
        |_| {
            while let Ok(m) = hook_rx.try_recv() {
                heard.push(m);
            }
            (from_dashboard(&heard, "fill")
                && from_dashboard(&heard, "mode")
                && from_dashboard(&heard, "test"))
            .then_some(())
        },
    );
    assert_eq!(b.text_content("#notify-message"), "sent to the webhook");
    assert!(
        heard
            .iter()
            .any(|m| m["event"] == "mode" && m["text"] == "trading mode: normal → halted"),
        "{heard:?}"
    );
    assert!(count(&b, "#notifications tr[data-kind='fill']") > 0);

    // Errors piling up in a service's log: the navigation's badge counts them, the Activity
    // page says so, and the webhook hears of it once. (The lines are appended as the
    // router's tracing writes them: a service's real errors cannot be ordered up on cue.)
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(stack.path("run/log/sim/order-router.log"))
            .unwrap();
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let now = chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ");
        for i in 0..5 {
            writeln!(
                f,
                "{now} ERROR order_router: e2e: an error the test wrote ({i})"
            )
            .unwrap();
        }
    }
    b.wait("the errors badge", Duration::from_secs(20), |b| {
        let shown = b.js(
            "const e = document.getElementById('errors-badge'); \
             return e.hidden ? null : parseInt(e.textContent, 10);",
            serde_json::json!([]),
        );
        (shown.as_u64()? >= 5
            && b.text_content("#activity-alerts")
                .contains("order-router.log"))
        .then_some(())
    });
    let told = b.wait(
        "the webhook's errors notification",
        Duration::from_secs(20),
        |_| {
            while let Ok(m) = hook_rx.try_recv() {
                heard.push(m);
            }
            heard
                .iter()
                .find(|m| m["event"] == "errors")
                .map(|m| m["text"].as_str().unwrap().to_owned())
        },
    );
    assert!(
        told.contains("errors in the last 5 minutes (order-router.log")
            && told.contains("an error the test wrote"),
        "{told}"
    );
    for m in &heard {
        assert!(!m.to_string().contains(SIM_SECRET), "{m}");
    }

    // The other pages.
    b.goto(&format!("{base}/#performance"));
    b.wait(
        "the performance figures and charts",
        Duration::from_secs(20),
        |b| {
            (count(b, "#perf-stats dd[data-stat='win rate']") == 1
                && count(b, "#equity-chart canvas") == 1
                && count(b, "#drawdown-chart canvas") == 1
                && count(b, "#by-symbol tr") > 0)
                .then_some(())
        },
    );
    // The equity curve is marked to market (the risk manager's samples, open positions
    // included) and, the account flat since the kill switch, ends at the headline equity.
    let v = b.wait(
        "the marked equity curve at the headline equity",
        Duration::from_secs(30),
        |b| {
            let (_, state) = get(&format!("{base}/api/state"), Some(&cookie), None);
            let v: serde_json::Value = serde_json::from_str(&state).ok()?;
            let last = v["performance"]["marked"].as_array()?.last()?[1].as_f64()?;
            let headline: f64 = v["balance"]["simulated_equity"].as_str()?.parse().ok()?;
            ((last - headline).abs() < 0.005
                && count(b, "#equity-basis[data-marked='1']") == 1
                && v["positions"].as_array()?.is_empty())
            .then_some(v)
        },
    );
    let marked = v["performance"]["marked"].as_array().unwrap();
    let samples = journal.equity_since(i64::MIN, 500).unwrap();
    assert!(marked.len() >= 2, "{marked:?}");
    assert!(
        marked.len() <= samples.len(),
        "the samples of the balance in force"
    );
    // The most active symbol is the one with the most trades, with its count, or a tie
    // said as one: the same count as the by-symbol table's largest.
    let p = &v["performance"];
    // Day by day: the days' net PnL adds up to the total, each day's trades to the count.
    let daily = p["daily"].as_array().unwrap();
    let dec =
        |x: &serde_json::Value| -> rust_decimal::Decimal { x.as_str().unwrap().parse().unwrap() };
    assert_eq!(
        daily
            .iter()
            .map(|d| dec(&d["net"]))
            .sum::<rust_decimal::Decimal>(),
        dec(&p["report"]["overall"]["total_pnl"]),
        "{daily:?}"
    );
    assert_eq!(
        daily
            .iter()
            .map(|d| d["trades"].as_u64().unwrap())
            .sum::<u64>(),
        p["report"]["overall"]["trades"].as_u64().unwrap()
    );
    assert_eq!(count(&b, "#daily tr"), daily.len() as u64);
    for stat in ["Sortino", "expectancy", "fees paid", "best / worst trade"] {
        assert_eq!(
            count(&b, &format!("#perf-stats dd[data-stat='{stat}']")),
            1,
            "{stat}"
        );
    }
    let most = p["most_active_trades"].as_u64().unwrap();
    let by_symbol = p["report"]["by_symbol"].as_object().unwrap();
    assert_eq!(
        Some(most),
        by_symbol
            .values()
            .filter_map(|s| s["trades"].as_u64())
            .max()
    );
    let shown = b.text_content("#perf-stats dd[data-stat='most active symbol']");
    let tied = p["most_active"].as_array().unwrap().len();
    assert!(
        if tied == 1 {
            shown.ends_with(&format!(
                "({most} trade{})",
                if most == 1 { "" } else { "s" }
            ))
        } else {
            shown.contains("a tie")
        },
        "{shown} ({tied} symbols at {most})"
    );
    // The paper-against-backtest section: the journal's trades against a backtest of the
    // stored bars, worked out again every 10 s here. Flat and halted, every closed trade of
    // the journal is on its paper side, matched or not.
    b.wait(
        "the paper-against-backtest section, with every closed trade",
        Duration::from_secs(40),
        |b| {
            let (_, state) = get(&format!("{base}/api/state"), Some(&cookie), None);
            let v: serde_json::Value = serde_json::from_str(&state).ok()?;
            let d = &v["drift"];
            let paper = d["matched"].as_u64()? + d["only_paper"].as_u64()?;
            (count(b, "#drift-stats dd[data-drift='matched']") == 1
                && count(b, "#drift-causes tr") == 7
                && b.text_content("#drift-basis")
                    .starts_with("Closed trades from")
                && b.text_content("#drift-basis").contains(
                    "run with the strategies and parameters the journal records in force then; \
                     the trading settings the journal records in force then",
                )
                && paper == v["closed_trades"].as_u64()?
                && paper > 0)
                .then_some(())
        },
    );
    b.screenshot(&screenshot_path("performance"));
    // A backtest run by the user shows up on the Backtests page.
    let data = shardbot_testdata::klines("bybit_linear_5m/BTCUSDT.csv");
    let run_dir = stack.path("backtests/btc-trend");
    let bt = std::process::Command::new(shardbot_e2e::bin("shardbot"))
        .args(["backtest", "--strategy", "trend_following", "--params-file"])
        .arg(stack.path("optimized_parameters.json"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(
        bt.status.success(),
        "{}",
        String::from_utf8_lossy(&bt.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    b.goto(&format!("{base}/#backtests"));
    assert!(b.text_content("#optimizations").contains("trend_following"));
    let folder = run_dir.display().to_string();
    let cells = b.wait("the backtest run", Duration::from_secs(20), |b| {
        let t = b.text_content(&format!(
            "#backtests tr[data-folder='{folder}'] td:nth-child(5)"
        ));
        (!t.is_empty()).then_some(t)
    });
    assert_eq!(
        cells,
        summary["trades"].to_string(),
        "the run's trade count"
    );
    b.screenshot(&screenshot_path("backtests"));
    b.goto(&format!("{base}/#health"));
    b.wait_explained(
        "every process running",
        Duration::from_secs(20),
        |b| {
            let running = |p: &str| {
                b.text_content(&format!("#health tr[data-process='{p}'] td:nth-child(3)"))
                    == "running"
            };
            (running("order-router/main")
                && running("risk-manager/main")
                && running("reconciler/main")
                && running("market-data/main")
                && running("strategy-worker/0-1")
                && running("dashboard/main"))
            .then_some(())
        },
        |b| {
            b.js(
                "const e = document.querySelector('#health'); return e ? e.innerText : null;",
                serde_json::json!([]),
            )
            .as_str()
            .unwrap_or("(no health table)")
            .to_owned()
        },
    );
    // Everything starts at once, bybit-sim too: a service that finds the exchange not
    // up yet waits for it rather than dying, so the supervisor restarted nothing and
    // the page says so.
    let supervisor = std::fs::read_to_string(stack.path("run/log/supervisord.log")).unwrap();
    let unexpected: Vec<&str> = supervisor
        .lines()
        .filter(|l| l.contains("not expected"))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    for p in [
        "order-router/main",
        "risk-manager/main",
        "reconciler/main",
        "market-data/main",
        "strategy-worker/0-1",
    ] {
        let restarts = b.text_content(&format!("#health tr[data-process='{p}'] td:nth-child(6)"));
        assert_eq!(restarts, "0", "{p} was restarted");
    }
    // Figures in words with their units, not raw metric names.
    let health = b.text_content("#health");
    assert!(
        health.contains("requests / 5 s") && !health.contains("ratelimit_ip_headroom"),
        "{health}"
    );
    b.screenshot(&screenshot_path("health"));
    // A phone's width: nothing wider than the window on any page, the navigation wrapped.
    b.set_window_size(430, 900);
    for section in ["paper", "performance", "risk", "backtests", "health"] {
        b.goto(&format!("{base}/#{section}"));
        b.wait(
            &format!("the {section} page within 430 px"),
            Duration::from_secs(10),
            |b| {
                let fits = b.js(
                    "return document.body.dataset.generated !== undefined && \
                     document.documentElement.scrollWidth <= window.innerWidth;",
                    serde_json::json!([]),
                );
                (fits.as_bool() == Some(true)).then_some(())
            },
        );
    }
    b.goto(&format!("{base}/#paper"));
    b.wait("the paper page rendered", Duration::from_secs(10), |b| {
        (count(b, "#positions") == 1).then_some(())
    });
    b.screenshot(&screenshot_path("phone"));
    b.set_window_size(1400, 900);
    // The Live tab of a paper stack: how to start a live one, and none of this stack's
    // data or controls.
    b.goto(&format!("{base}/#live"));
    b.wait(
        "the live tab of a paper stack",
        Duration::from_secs(10),
        |b| {
            let body_hidden = b.js(
                "return document.getElementById('trading-body').hidden;",
                serde_json::json!([]),
            );
            (b.text_content("#wrong-kind").contains("no real money")
                && b.text_content("#wrong-kind").contains("--confirm-live")
                && body_hidden.as_bool() == Some(true))
            .then_some(())
        },
    );
    responses.push(
        b.js(
            "return document.documentElement.outerHTML;",
            serde_json::json!([]),
        )
        .as_str()
        .unwrap()
        .to_owned(),
    );

    // Metrics for Prometheus (with the token as a Bearer header): the fills counted are the
    // journal's (flat and halted now: nothing changes them).
    let metrics = b.wait(
        "the journal's fills in /metrics",
        Duration::from_secs(20),
        |_| {
            let (status, metrics) = get(&format!("{base}/metrics"), None, Some(&token));
            assert_eq!(status, 200);
            let fills = journal
                .fills_since(0)
                .unwrap()
                .iter()
                .filter(|f| !f.is_funding())
                .count();
            metrics
                .contains(&format!("shardbot_fills_total {fills}\n"))
                .then_some(metrics)
        },
    );
    assert!(
        metrics.contains("shardbot_trading_mode{mode=\"halted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shardbot_process_up{service=\"order-router\",instance=\"main\"} 1"),
        "{metrics}"
    );
    // The processes' own figures, from their heartbeats.
    for series in [
        "shardbot_ratelimit_ip_headroom{service=\"order-router\",instance=\"main\"} ",
        "shardbot_ratelimit_ip_headroom{service=\"market-data\",instance=\"main\"} ",
        "shardbot_ws_reconnects_total{service=\"market-data\",instance=\"main\"} ",
        "shardbot_bus_lag_max_us{service=\"strategy-worker\",instance=\"0-1\"} ",
        "shardbot_drift_trades{kind=\"matched\"} ",
        "shardbot_drift_gap_usdt{cause=\"entry_slippage\"} ",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    responses.push(metrics);
    let (_, state) = get(&format!("{base}/api/state"), Some(&cookie), None);
    responses.push(state);

    // No secret anywhere: not the account's API secret, not the dashboard token.
    for r in &responses {
        assert!(
            !r.contains(SIM_SECRET),
            "an HTTP response carries the API secret"
        );
        assert!(
            !r.contains(&token),
            "an HTTP response carries the dashboard token"
        );
    }
    let mut logs = 0;
    for dir in ["run/log/sim", "run/log/market"] {
        for e in std::fs::read_dir(stack.path(dir)).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(
                !text.contains(SIM_SECRET),
                "{} carries the API secret",
                p.display()
            );
            assert!(
                !text.contains(&token),
                "{} carries the dashboard token",
                p.display()
            );
            assert!(
                !text.contains("T0KEN-SECRET"),
                "{} carries the webhook's token",
                p.display()
            );
            logs += 1;
        }
    }
    assert!(logs >= 6, "the logs were scanned ({logs} files)");
    eprintln!(
        "screenshots: {}",
        screenshot_path("x").parent().unwrap().display()
    );
}

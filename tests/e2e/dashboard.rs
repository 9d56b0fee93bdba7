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

fn text_of(b: &Browser, css: &str) -> String {
    b.js(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        serde_json::json!([css]),
    )
    .as_str()
    .unwrap_or_default()
    .to_owned()
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

    let b = Browser::start();
    b.goto(&format!("{base}/"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.fill("#token", "wrong-token-0000000000");
    b.click("#login");
    let refused = b.wait(
        "the refusal of a wrong token",
        Duration::from_secs(10),
        |b| Some(text_of(b, "#login-error")).filter(|t| !t.is_empty()),
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
        (text_of(b, "#mode") == "halted").then_some(())
    });
    b.click("#account-select option[value='sim']");
    let selected = b.js(
        "return document.getElementById('account-select').value;",
        serde_json::json!([]),
    );
    assert_eq!(selected, "sim");
    assert!(
        text_of(&b, "#env-badge").contains("paper"),
        "{}",
        text_of(&b, "#env-badge")
    );
    assert_eq!(text_of(&b, "#trading-title"), "Paper Trading");
    assert!(text_of(&b, "#strategies").contains("optimized ✓ 2026-11-22T00:00:00Z"));

    // The simulated balance (the account is flat: nothing traded yet).
    b.fill("#sim-balance", "2500");
    b.click("#save-balance");
    b.wait("the new simulated balance", Duration::from_secs(20), |b| {
        text_of(b, "#sim-equity").starts_with("2,500").then_some(())
    });
    assert_eq!(text_of(&b, "#balance-message"), "saved and applied");

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
        |b| Some(text_of(b, "#risk-message")).filter(|t| !t.is_empty()),
    );
    assert!(refusal.contains("leverage"), "{refusal}");
    b.fill("#leverage", "2");
    b.fill("#max-positions", "6");
    b.click("#save-risk");
    b.wait("the saved risk settings", Duration::from_secs(10), |b| {
        (text_of(b, "#risk-message") == "saved and applied").then_some(())
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
    let said = text_of(&b, "#risk-implied");
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
        (text_of(b, "#mode") == "normal").then_some(())
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
        (text_of(b, "#start") == "Trading ✓" && disabled(b, "start") && !disabled(b, "stop"))
            .then_some(())
    });
    b.click("#stop");
    b.dismiss_dialog();
    assert_eq!(
        text_of(&b, "#mode"),
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
            (shown.as_bool() == Some(true) && text_of(b, "#trading-title") == "Paper Trading")
                .then_some(())
        },
    );
    b.wait(
        "three trades with the verified mark",
        Duration::from_secs(300),
        |b| (count(b, "#trades tr[data-verified='1']") >= 3).then_some(()),
    );
    assert!(count(&b, "#max-open") == 1 && text_of(&b, "#max-open") == "6");
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
        checked += 1;
    }
    assert!(
        checked > 0,
        "no position with its precision: {}",
        v["precision"]
    );
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
    // A new simulated balance is taken only while flat: the button says so.
    b.wait(
        "Set balance refused while positions are open",
        Duration::from_secs(5),
        |b| (disabled(b, "save-balance") && text_of(b, "#open-count") != "0").then_some(()),
    );
    b.click("#kill");
    b.accept_dialog();
    b.wait(
        "the halted mode after the kill switch",
        Duration::from_secs(20),
        |b| (text_of(b, "#mode") == "halted").then_some(()),
    );
    b.wait("Stop marked as in force", Duration::from_secs(5), |b| {
        (disabled(b, "stop") && !disabled(b, "start") && text_of(b, "#start") == "Start")
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
            let m = text_of(b, "#control-message");
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
            let summary = text_of(b, "#refusal-summary");
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
    assert_eq!(text_of(&b, "#notify-message"), "sent to the webhook");
    assert!(
        heard
            .iter()
            .any(|m| m["event"] == "mode" && m["text"] == "trading mode: normal → halted"),
        "{heard:?}"
    );
    assert!(count(&b, "#notifications tr[data-kind='fill']") > 0);
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
    // The most active symbol is the one with the most trades, with its count, or a tie
    // said as one: the same count as the by-symbol table's largest.
    let (_, state) = get(&format!("{base}/api/state"), Some(&cookie), None);
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
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
    let shown = text_of(&b, "#perf-stats dd[data-stat='most active symbol']");
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
                && text_of(b, "#drift-basis").starts_with("Closed trades from")
                && text_of(b, "#drift-basis").contains(
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
    assert!(text_of(&b, "#optimizations").contains("trend_following"));
    let folder = run_dir.display().to_string();
    let cells = b.wait("the backtest run", Duration::from_secs(20), |b| {
        let t = text_of(
            b,
            &format!("#backtests tr[data-folder='{folder}'] td:nth-child(5)"),
        );
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
                text_of(
                    b,
                    &format!("#health tr[data-process='{p}'] td:nth-child(3)"),
                ) == "running"
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
        let restarts = text_of(
            &b,
            &format!("#health tr[data-process='{p}'] td:nth-child(6)"),
        );
        assert_eq!(restarts, "0", "{p} was restarted");
    }
    // Figures in words with their units, not raw metric names.
    let health = text_of(&b, "#health");
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
            (text_of(b, "#wrong-kind").contains("no real money")
                && text_of(b, "#wrong-kind").contains("--confirm-live")
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

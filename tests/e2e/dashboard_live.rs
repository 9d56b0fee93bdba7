//! The dashboard of a LIVE account stack, in headless Chromium: live is its own world.
//! The risk manager and the dashboard run with `exchange.environment = "live"`, a named
//! account of the accounts file and `confirm_live` naming it, their exchange URLs pointed
//! at bybit-sim (holding its demo keys) instead of api.bybit.com. The header says LIVE in
//! red, the Paper tab shows none of this stack's data or controls, and Stop and the kill
//! switch go on only once the account's name is typed: a wrong name or a cancel changes
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{os::unix::fs::PermissionsExt, time::Duration};

use shardbot_e2e::{Stack, free_port, webdriver::Browser};

const ACCOUNT: &str = "mylive";

fn hidden(b: &Browser, id: &str) -> bool {
    b.js(
        "return document.getElementById(arguments[0]).hidden;",
        serde_json::json!([id]),
    )
    .as_bool()
    .unwrap()
}

/// Waits for two newer views pushed to the page: a command that went through shows by then.
fn two_views(b: &Browser) {
    let mut seen = vec![b.view_generated()];
    b.wait("two newer views", Duration::from_secs(10), |b| {
        let g = b.view_generated();
        if seen.last() != Some(&g) {
            seen.push(g);
        }
        (seen.len() >= 3).then_some(())
    });
}

#[test]
fn a_live_stacks_dashboard_is_red_alone_and_asks_for_the_accounts_name() {
    let port = free_port();
    let mut stack = Stack::new(&format!(
        "[sim]\nlisten = \"{{sim_listen}}\"\nsymbols = 10\nuniverse_file = \"\"\nuniverse_price_dir = \"\"\n\n\
         [risk]\nstate_file = \"risk-state.json\"\nsync_interval_ms = 500\n\n\
         [dashboard]\nbind = \"127.0.0.1:{port}\"\ntoken_file = \"{{dir}}/dashboard.token\"\nrefresh_ms = 500\n"
    ));
    stack.write(
        "trading_settings.json",
        r#"{"simulated_balance": 1000, "sizing": {"percent": 10}, "leverage": 2,
          "daily_loss_limit": 50, "max_open_positions": 5, "max_margin_use_pct": 50,
          "cooldown_after_stop_min": 30}"#,
    );
    // The live account's keys are the sim's demo ones: the sim stands in for api.bybit.com.
    let accounts = stack.path("api_accounts.json");
    std::fs::write(
        &accounts,
        format!(
            r#"{{"accounts": [{{"name": "{ACCOUNT}", "environment": "live",
                "api_key": "sim-demo-key", "api_secret": "sim-demo-secret"}}]}}"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&accounts, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_rt, _sim) = stack.start_sim();
    let ws = stack.sim_url.replace("http://", "ws://");
    let (public_ws, private_ws) = (format!("{ws}/v5/public/linear"), format!("{ws}/v5/private"));
    let accounts = accounts.display().to_string();
    let sim_url = stack.sim_url.clone();
    let env = [
        ("SHARDBOT__EXCHANGE__ENVIRONMENT", "live"),
        ("SHARDBOT__EXCHANGE__ACCOUNT", ACCOUNT),
        ("SHARDBOT__EXCHANGE__CONFIRM_LIVE", ACCOUNT),
        ("SHARDBOT__EXCHANGE__ACCOUNTS_FILE", accounts.as_str()),
        ("SHARDBOT__EXCHANGE__REST_URL", sim_url.as_str()),
        ("SHARDBOT__EXCHANGE__PUBLIC_WS_URL", public_ws.as_str()),
        ("SHARDBOT__EXCHANGE__PRIVATE_WS_URL", private_ws.as_str()),
    ];
    stack.spawn("risk-manager", "risk-manager", &[], &env);
    stack.spawn("dashboard", "dashboard", &[], &env);
    stack.wait_output("dashboard", "dashboard", Duration::from_secs(30));
    let token_file = stack.path("dashboard.token");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !token_file.exists() {
        stack.assert_alive();
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stack.output("dashboard")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();

    let base = format!("http://127.0.0.1:{port}");
    let b = Browser::start();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Until the dashboard listens (the browser shows its own error page before).
        b.goto(&format!("{base}/login"));
        if b.js(
            "return !!document.getElementById('token');",
            serde_json::json!([]),
        ) == true
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stack.output("dashboard")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    b.fill("#token", &token);
    b.click("#login");
    // LIVE in red, everywhere: the badge, the header.
    b.wait("the live account's mode", Duration::from_secs(30), |b| {
        (b.text_content("#mode") == "normal").then_some(())
    });
    assert_eq!(b.text_content("#env-badge"), "LIVE · real money");
    assert_eq!(
        b.js(
            "return [document.body.classList.contains('live'), document.getElementById('env-badge').className];",
            serde_json::json!([]),
        ),
        serde_json::json!([true, "badge live"])
    );
    // The Paper tab is another world: none of this stack's data or controls.
    b.goto(&format!("{base}/#paper"));
    b.wait(
        "the paper tab of a live stack",
        Duration::from_secs(10),
        |b| (!hidden(b, "wrong-kind") && hidden(b, "trading-body")).then_some(()),
    );
    let said = b.text_content("#wrong-kind");
    assert!(
        said.contains(&format!("LIVE account “{ACCOUNT}”")) && said.contains("real money"),
        "{said}"
    );
    // Its own tab, in full.
    b.goto(&format!("{base}/#live"));
    b.wait("the live tab", Duration::from_secs(10), |b| {
        (hidden(b, "wrong-kind")
            && !hidden(b, "trading-body")
            && b.text_content("#trading-title") == "Live Trading")
            .then_some(())
    });
    b.screenshot(
        &std::env::current_exe()
            .unwrap()
            .ancestors()
            .nth(3)
            .unwrap()
            .join("dashboard-screenshots/live.png"),
    );
    // Stop asks for the account's name: a wrong one changes nothing, the right one halts.
    b.click("#stop");
    b.answer_prompt("mylive-not");
    two_views(&b);
    assert_eq!(
        b.text_content("#mode"),
        "normal",
        "a wrong name stopped trading"
    );
    b.click("#stop");
    b.answer_prompt(ACCOUNT);
    b.wait("the halted mode", Duration::from_secs(10), |b| {
        (b.text_content("#mode") == "halted").then_some(())
    });
    // The kill switch asks too; cancelled, nothing is flattened.
    b.click("#kill");
    b.dismiss_dialog();
    two_views(&b);
    assert!(
        !b.text_content("#control-message").contains("flatten"),
        "a cancelled kill switch started a flatten"
    );
    let log = stack.output("dashboard");
    assert!(
        log.contains("command=\"stop\"") && !log.contains("command=\"kill\""),
        "{log}"
    );
    stack.assert_alive();
}

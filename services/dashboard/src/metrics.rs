//! `/metrics` in Prometheus's text format (version 0.0.4), rendered from the collector's
//! latest view: what the journal counted, the risk manager's figures, and each process's
//! heartbeat. The metric names and their meaning are listed in docs/metrics.md.

use std::fmt::Write;

use rust_decimal::prelude::ToPrimitive;

use crate::collect::Published;

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn help(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Type and help of the figures the services publish (docs/metrics.md lists them).
fn describe(name: &str) -> (&'static str, &'static str) {
    match name {
        "ws_reconnects_total" => (
            "counter",
            "WebSocket connections of the process that went down and were reconnected.",
        ),
        "ratelimit_ip_headroom" => (
            "gauge",
            "Requests the process's share of Bybit's IP limit still allows in the current 5 s window.",
        ),
        "bus_lag_max_us" => (
            "gauge",
            "Largest publish-to-receive lag of a bar on the bus since the previous heartbeat, in µs.",
        ),
        "last_close_ms" => (
            "gauge",
            "Close time of the newest bar the worker has seen (exchange clock), Unix ms.",
        ),
        "next_close_ms" => (
            "gauge",
            "When the worker's next bar closes (exchange clock), Unix ms.",
        ),
        "last_close_signals" => ("gauge", "Intents the worker sent at the newest bar close."),
        "last_close_placed" => (
            "gauge",
            "Intents of the newest bar close the router placed.",
        ),
        "last_close_refused" => (
            "gauge",
            "Intents of the newest bar close refused (by the risk manager or the router) or not delivered.",
        ),
        _ if name.ends_with("_total") => ("counter", "A count the process publishes."),
        _ => ("gauge", "A figure the process publishes."),
    }
}

fn f(d: rust_decimal::Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

pub fn render(p: &Published) -> String {
    let mut o = Out(String::new());
    let c = &p.counts;
    o.help(
        "shardbot_orders",
        "gauge",
        "Orders in the journal by their last known status.",
    );
    for (status, n) in &c.orders_by_status {
        o.sample("shardbot_orders", &[("status", status)], *n as f64);
    }
    o.help(
        "shardbot_fills_total",
        "counter",
        "Executions of orders recorded in the journal (funding payments excluded).",
    );
    o.sample("shardbot_fills_total", &[], c.fills as f64);
    o.help(
        "shardbot_refusals_total",
        "counter",
        "Intents refused (by the risk manager or the router), by refusal code.",
    );
    for (code, n) in &c.refusals_by_code {
        o.sample("shardbot_refusals_total", &[("code", code)], *n as f64);
    }
    let Some(v) = &p.view else {
        return o.0;
    };
    o.help(
        "shardbot_trades_closed",
        "gauge",
        "Closed round-trip trades in the journal.",
    );
    o.sample("shardbot_trades_closed", &[], v.closed_trades as f64);
    o.help(
        "shardbot_trades_verified",
        "gauge",
        "Closed trades verified against the exchange's own records.",
    );
    o.sample("shardbot_trades_verified", &[], v.verified_trades as f64);
    o.help(
        "shardbot_open_positions",
        "gauge",
        "Open positions as the risk manager holds them.",
    );
    o.sample("shardbot_open_positions", &[], v.positions.len() as f64);
    o.help(
        "shardbot_unrealised_pnl_usdt",
        "gauge",
        "Unrealised PnL of the open positions.",
    );
    o.sample("shardbot_unrealised_pnl_usdt", &[], f(v.unrealised_pnl));
    if let Some(b) = &v.balance {
        o.help(
            "shardbot_simulated_equity_usdt",
            "gauge",
            "Simulated equity (exchange equity minus the simulated-balance offset).",
        );
        o.sample("shardbot_simulated_equity_usdt", &[], f(b.simulated_equity));
        o.help(
            "shardbot_exchange_equity_usdt",
            "gauge",
            "The exchange account's equity.",
        );
        o.sample("shardbot_exchange_equity_usdt", &[], f(b.exchange_equity));
    }
    if let Some(r) = &v.risk {
        o.help(
            "shardbot_daily_pnl_usdt",
            "gauge",
            "Today's realised + unrealised PnL, as the daily loss limit sees it.",
        );
        o.sample("shardbot_daily_pnl_usdt", &[], f(r.daily_pnl));
        o.help(
            "shardbot_margin_use_pct",
            "gauge",
            "Margin of the open positions in % of simulated equity.",
        );
        o.sample("shardbot_margin_use_pct", &[], f(r.margin_use_pct));
        o.help(
            "shardbot_trading_mode",
            "gauge",
            "1 for the kill switch's current mode (normal, halted, reduce_only).",
        );
        for (mode, name) in [
            (shardbot_protocol::TradingMode::Normal, "normal"),
            (shardbot_protocol::TradingMode::Halted, "halted"),
            (shardbot_protocol::TradingMode::ReduceOnly, "reduce_only"),
        ] {
            let on = if r.mode == mode { 1.0 } else { 0.0 };
            o.sample("shardbot_trading_mode", &[("mode", name)], on);
        }
    }
    o.help(
        "shardbot_process_up",
        "gauge",
        "1 when the process's heartbeat is recent and not stopping.",
    );
    for h in &v.health {
        let up = matches!(h.state.as_str(), "running" | "degraded" | "starting");
        o.sample(
            "shardbot_process_up",
            &[("service", &h.service), ("instance", &h.instance)],
            if up { 1.0 } else { 0.0 },
        );
    }
    o.help(
        "shardbot_process_heartbeat_age_seconds",
        "gauge",
        "Seconds since the process's last heartbeat.",
    );
    for h in &v.health {
        o.sample(
            "shardbot_process_heartbeat_age_seconds",
            &[("service", &h.service), ("instance", &h.instance)],
            h.heartbeat_age_ms as f64 / 1000.0,
        );
    }
    o.help(
        "shardbot_process_restarts_total",
        "counter",
        "Restarts of the process seen by the dashboard since it started.",
    );
    for h in &v.health {
        o.sample(
            "shardbot_process_restarts_total",
            &[("service", &h.service), ("instance", &h.instance)],
            h.restarts as f64,
        );
    }
    // Each process's own figures (from its heartbeat), one metric per name.
    let mut names: Vec<&str> = v
        .health
        .iter()
        .flat_map(|h| h.metrics.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let metric = format!("shardbot_{name}");
        let (kind, help) = describe(name);
        o.help(&metric, kind, help);
        for h in &v.health {
            if let Some(x) = h.metrics.get(name) {
                o.sample(
                    &metric,
                    &[("service", &h.service), ("instance", &h.instance)],
                    *x as f64,
                );
            }
        }
    }
    if let Some(d) = &v.drift {
        drift(&mut o, d);
    }
    o.help(
        "shardbot_dashboard_problems",
        "gauge",
        "Sources the dashboard could not read in its last round (risk manager, journal, ...).",
    );
    o.sample("shardbot_dashboard_problems", &[], v.problems.len() as f64);
    o.0
}

/// The paper-against-backtest figures (the Performance page's section).
fn drift(o: &mut Out, d: &crate::drift::DriftView) {
    o.help(
        "shardbot_drift_trades",
        "gauge",
        "Closed trades of the last dashboard.drift_days days against a backtest of the same bars: matched, only in paper, only in the backtest.",
    );
    for (kind, n) in [
        ("matched", d.matched),
        ("only_paper", d.only_paper),
        ("only_backtest", d.only_backtest),
    ] {
        o.sample("shardbot_drift_trades", &[("kind", kind)], n as f64);
    }
    o.help(
        "shardbot_drift_gap_usdt",
        "gauge",
        "Paper PnL minus backtest PnL over that window: the matched trades' gap by cause, and the unmatched trades' (cause=\"unmatched\").",
    );
    for c in &d.causes {
        o.sample(
            "shardbot_drift_gap_usdt",
            &[("cause", &c.cause.replace(' ', "_"))],
            f(c.usdt),
        );
    }
    o.sample(
        "shardbot_drift_gap_usdt",
        &[("cause", "unmatched")],
        f(d.unmatched_gap),
    );
    o.help(
        "shardbot_drift_pnl_usdt",
        "gauge",
        "Closed PnL over that window, of the paper trades and of the backtest.",
    );
    o.sample(
        "shardbot_drift_pnl_usdt",
        &[("side", "paper")],
        f(d.paper_pnl),
    );
    o.sample(
        "shardbot_drift_pnl_usdt",
        &[("side", "backtest")],
        f(d.backtest_pnl),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardbot_journal::JournalCounts;

    #[test]
    fn counts_render_with_escaped_labels() {
        let p = Published {
            json: "null".into(),
            view: None,
            counts: JournalCounts {
                orders_by_status: vec![("Filled".into(), 7)],
                fills: 9,
                refusals_by_code: vec![("max_\"positions\"".into(), 2)],
            },
            built: None,
        };
        let text = render(&p);
        assert!(
            text.contains("shardbot_orders{status=\"Filled\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("shardbot_fills_total 9\n"), "{text}");
        assert!(
            text.contains("shardbot_refusals_total{code=\"max_\\\"positions\\\"\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE shardbot_fills_total counter\n"));
    }

    /// The drift section's figures: trades by kind, the gap by cause and unmatched (which
    /// together are the whole gap), both sides' PnL.
    #[test]
    fn drift_figures_render_by_kind_and_cause() {
        use rust_decimal::Decimal;
        use rust_decimal_macros::dec;
        use shardbot_drift::{Evidence, RoundTrip, sources::Report};
        use shardbot_protocol::Side;
        let t = |entry: Decimal, pnl: Decimal| RoundTrip {
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            qty: dec!(1),
            entry_time_ms: 300_000,
            exit_time_ms: 900_000,
            entry_price: entry,
            exit_price: dec!(105),
            fees: dec!(0),
            funding: dec!(0),
            pnl,
        };
        let ev = Evidence {
            bar_ms: 300_000,
            opens: [(("BTCUSDT".to_owned(), 300_000), dec!(100))]
                .into_iter()
                .collect(),
            ..Evidence::default()
        };
        let alone = RoundTrip {
            symbol: "ETHUSDT".into(),
            ..t(dec!(100), dec!(-2))
        };
        let d = shardbot_drift::compare(
            &[t(dec!(101), dec!(4))],
            &[t(dec!(100), dec!(5)), alone],
            &ev,
        );
        let view = crate::drift::DriftView::of(&Report {
            from_ms: 0,
            to_ms: 1_000_000,
            drift: d,
            unverified: 0,
        });
        let mut o = Out(String::new());
        drift(&mut o, &view);
        let text = o.0;
        for line in [
            "shardbot_drift_trades{kind=\"matched\"} 1\n",
            "shardbot_drift_trades{kind=\"only_backtest\"} 1\n",
            "shardbot_drift_gap_usdt{cause=\"entry_slippage\"} -1\n",
            "shardbot_drift_gap_usdt{cause=\"unmatched\"} 2\n",
            "shardbot_drift_pnl_usdt{side=\"paper\"} 4\n",
            "shardbot_drift_pnl_usdt{side=\"backtest\"} 3\n",
            "# TYPE shardbot_drift_gap_usdt gauge\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(view.gap, dec!(1));
        assert_eq!(view.rows.len(), 2);
        assert_eq!(
            view.rows.iter().find(|r| r.kind == "matched").unwrap().why,
            "entry slippage"
        );
    }
}

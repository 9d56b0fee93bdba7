//! Notifications: what changed between two views that a trader wants to hear about at once
//! (a fill, a stop-loss or take-profit filled, the trading mode changed by Start, Stop or
//! the kill switch, the daily loss limit reached, a process no longer running, a bar close
//! with many more refusals than usual, errors piling up in the services' logs). Pure: the
//! collector sends each to the `[alerts]` webhook and lists them for the page, which shows
//! them as browser notifications. No message carries a secret: symbols, sides, sizes,
//! prices, modes, process names, refusal reasons, and the newest error's log line (logs
//! redact secrets by type).

use std::collections::{BTreeMap, HashSet};

use rust_decimal::Decimal;
use serde::Serialize;

use crate::{
    collect::{FillRow, View},
    spikes::{ERROR_SPIKE, RecentErrors, RefusalSpike},
};

/// One notification.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Note {
    /// The view's time (ms) it was noticed at.
    pub at_ms: i64,
    /// `fill`, `stop_fill`, `mode`, `daily_loss_limit`, `degraded`, `refusal_spike`,
    /// `errors`.
    pub kind: &'static str,
    pub text: String,
}

/// What a view says that notifications are about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub at_ms: i64,
    /// The newest fills, newest first.
    pub fills: Vec<FillRow>,
    /// The trading mode (`normal`, `halted`, ...), when the risk manager answered.
    pub mode: Option<String>,
    /// Today's PnL and the daily loss limit (0: none), when the risk manager answered.
    pub daily: Option<(Decimal, Decimal)>,
    /// Each process not running (`service/instance`) with its state and detail.
    pub not_running: BTreeMap<String, String>,
    pub refusal_spike: Option<RefusalSpike>,
    pub recent_errors: Option<RecentErrors>,
}

impl Facts {
    pub fn of(v: &View) -> Facts {
        Facts {
            at_ms: v.generated_ms,
            fills: v.activity.fills.clone(),
            mode: v.risk.as_ref().map(|r| mode_name(&r.mode)),
            daily: v.risk.as_ref().map(|r| (r.daily_pnl, r.daily_loss_limit)),
            not_running: v
                .health
                .iter()
                .filter(|p| p.state != "running" && p.state != "starting")
                .map(|p| {
                    (
                        format!("{}/{}", p.service, p.instance),
                        format!("{}: {}", p.state, p.detail),
                    )
                })
                .collect(),
            refusal_spike: v.activity.refusal_spike.clone(),
            recent_errors: v.activity.recent_errors.clone(),
        }
    }
}

/// A process degraded for this long is told of (a worker warming up after its start is
/// degraded for a few seconds: no news); silent or stopping at once.
pub const DEGRADED_GRACE_MS: i64 = 60_000;

/// What the previous view showed, to tell what is new.
#[derive(Debug, Default)]
pub struct Watch {
    seen: Option<Seen>,
    /// Each process not running: since when, and whether it was told of.
    down: BTreeMap<String, (i64, bool)>,
}

#[derive(Debug)]
struct Seen {
    fills: HashSet<String>,
    mode: Option<String>,
    loss_limit_hit: bool,
    /// The bar of the newest refusal spike told of (each close's spike once).
    spike_bar: Option<i64>,
    error_spike: bool,
}

fn seen(f: &Facts) -> Seen {
    Seen {
        fills: f.fills.iter().map(|f| f.exec_id.clone()).collect(),
        mode: f.mode.clone(),
        loss_limit_hit: f
            .daily
            .is_some_and(|(pnl, limit)| limit > Decimal::ZERO && -pnl >= limit),
        spike_bar: f.refusal_spike.as_ref().map(|s| s.bar_open_ms),
        error_spike: f
            .recent_errors
            .as_ref()
            .is_some_and(|e| e.count >= ERROR_SPIKE),
    }
}

fn mode_name(m: &shardbot_protocol::TradingMode) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{m:?}"))
}

impl Watch {
    /// What is new in `v` since the previous view (nothing for the first one: what was
    /// already there when the dashboard started is not news).
    pub fn step(&mut self, v: &View) -> Vec<Note> {
        self.step_facts(&Facts::of(v))
    }

    pub fn step_facts(&mut self, f: &Facts) -> Vec<Note> {
        let mut now = seen(f);
        let first = self.seen.is_none();
        // Processes down: what was down when the dashboard started is not news.
        self.down.retain(|p, _| f.not_running.contains_key(p));
        let mut down_notes = Vec::new();
        for (p, detail) in &f.not_running {
            let (since, told) = self.down.entry(p.clone()).or_insert((f.at_ms, first));
            let due = !detail.starts_with("degraded") || f.at_ms - *since >= DEGRADED_GRACE_MS;
            if !*told && due {
                *told = true;
                down_notes.push(Note {
                    at_ms: f.at_ms,
                    kind: "degraded",
                    text: format!("{p} is not running ({detail})"),
                });
            }
        }
        let Some(prev) = self.seen.take() else {
            self.seen = Some(now);
            return Vec::new();
        };
        // A view without fills (the journal unreadable for a moment) forgets none: the
        // next one would otherwise announce every fill it lists again.
        if now.fills.is_empty() {
            now.fills = prev.fills.clone();
        }
        // A spike told of stays told of while it is the newest close's.
        if now.spike_bar.is_none() {
            now.spike_bar = prev.spike_bar;
        }
        let mut notes = news(&prev, &now, f);
        notes.extend(down_notes);
        self.seen = Some(now);
        notes
    }
}

fn news(prev: &Seen, now: &Seen, f: &Facts) -> Vec<Note> {
    let at_ms = f.at_ms;
    let mut notes = Vec::new();
    // Oldest first, as they happened.
    for fill in f.fills.iter().rev() {
        if prev.fills.contains(&fill.exec_id) || fill.exec_type != "Trade" {
            continue;
        }
        let by_exchange = fill.order_link_id.is_empty();
        notes.push(Note {
            at_ms,
            kind: if by_exchange { "stop_fill" } else { "fill" },
            text: format!(
                "{}{} {} {} at {}{}",
                if by_exchange {
                    "stop-loss or take-profit filled: "
                } else {
                    "fill: "
                },
                fill.symbol,
                fill.side,
                fill.qty.normalize(),
                fill.price.normalize(),
                fill.strategy
                    .as_ref()
                    .map_or_else(String::new, |s| format!(" ({s})"))
            ),
        });
    }
    if let (Some(before), Some(after)) = (&prev.mode, &now.mode)
        && before != after
    {
        notes.push(Note {
            at_ms,
            kind: "mode",
            text: format!("trading mode: {before} → {after}"),
        });
    }
    if now.loss_limit_hit
        && !prev.loss_limit_hit
        && let Some((pnl, limit)) = f.daily
    {
        notes.push(Note {
            at_ms,
            kind: "daily_loss_limit",
            text: format!(
                "daily loss limit reached: {} USDT today, the limit is {} USDT: no new entries today",
                pnl.round_dp(2),
                limit.normalize()
            ),
        });
    }
    if let Some(s) = &f.refusal_spike
        && prev.spike_bar != Some(s.bar_open_ms)
    {
        notes.push(Note {
            at_ms,
            kind: "refusal_spike",
            text: format!(
                "refusals spiked: {} intents refused at one bar close (mostly {}), the usual is {}",
                s.refused, s.top_reason, s.usual
            ),
        });
    }
    if now.error_spike
        && !prev.error_spike
        && let Some(e) = &f.recent_errors
    {
        notes.push(Note {
            at_ms,
            kind: "errors",
            text: format!(
                "{} errors in the last 5 minutes ({}); the newest: {}",
                e.count,
                e.files.join(", "),
                e.newest.chars().take(300).collect::<String>()
            ),
        });
    }
    notes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;

    fn fill(id: &str, link: &str, exec_type: &str) -> FillRow {
        FillRow {
            exec_id: id.into(),
            exec_time_ms: 1,
            symbol: "1000PEPEUSDT".into(),
            side: "Buy",
            qty: dec!(1500.0),
            price: dec!(0.0136374),
            fee: dec!(0.011),
            exec_type: exec_type.into(),
            strategy: (!link.is_empty()).then(|| "trend_following".into()),
            order_link_id: link.into(),
        }
    }

    fn facts() -> Facts {
        Facts {
            at_ms: 100,
            fills: vec![fill("e1", "sb-1", "Trade")],
            mode: Some("normal".into()),
            daily: Some((dec!(-10), dec!(50))),
            ..Facts::default()
        }
    }

    fn spike(bar: i64) -> RefusalSpike {
        RefusalSpike {
            bar_open_ms: bar,
            refused: 40,
            usual: 2,
            top_reason: "max_margin_use".into(),
        }
    }

    fn errors(count: u32) -> RecentErrors {
        RecentErrors {
            count,
            files: vec!["order-router.log".into()],
            newest: "2026-12-05T08:07:00Z ERROR order_router: batch failed".into(),
        }
    }

    /// Each change of the second view against the first, and the notes it gives.
    #[rstest::rstest]
    #[case::nothing_new(|_: &mut Facts| {}, &[])]
    #[case::a_fill(|f: &mut Facts| f.fills.insert(0, fill("e2", "sb-2", "Trade")),
        &[("fill", "fill: 1000PEPEUSDT Buy 1500 at 0.0136374 (trend_following)")])]
    #[case::a_stop_fill(|f: &mut Facts| f.fills.insert(0, fill("e2", "", "Trade")),
        &[("stop_fill", "stop-loss or take-profit filled: 1000PEPEUSDT Buy 1500 at 0.0136374")])]
    #[case::funding_is_no_fill(|f: &mut Facts| f.fills.insert(0, fill("e2", "", "Funding")), &[])]
    #[case::two_fills_oldest_first(|f: &mut Facts| {
            f.fills.insert(0, fill("e2", "sb-2", "Trade"));
            f.fills.insert(0, fill("e3", "", "Trade"));
        }, &[("fill", "fill: 1000PEPEUSDT Buy 1500 at 0.0136374 (trend_following)"),
             ("stop_fill", "stop-loss or take-profit filled: 1000PEPEUSDT Buy 1500 at 0.0136374")])]
    #[case::a_journal_unreadable_for_a_moment(|f: &mut Facts| f.fills.clear(), &[])]
    #[case::the_kill_switch(|f: &mut Facts| f.mode = Some("halted".into()),
        &[("mode", "trading mode: normal → halted")])]
    #[case::the_risk_manager_unanswered(|f: &mut Facts| f.mode = None, &[])]
    #[case::the_daily_loss_limit(|f: &mut Facts| f.daily = Some((dec!(-50.004), dec!(50))),
        &[("daily_loss_limit", "daily loss limit reached: -50.00 USDT today, the limit is 50 USDT: no new entries today")])]
    #[case::no_limit_set(|f: &mut Facts| f.daily = Some((dec!(-500), dec!(0))), &[])]
    #[case::a_process_stopped(|f: &mut Facts| {
            f.not_running.insert("order-router/0".into(), "silent: no heartbeat for 6 s".into());
        }, &[("degraded", "order-router/0 is not running (silent: no heartbeat for 6 s)")])]
    #[case::a_refusal_spike(|f: &mut Facts| f.refusal_spike = Some(spike(300)),
        &[("refusal_spike", "refusals spiked: 40 intents refused at one bar close (mostly max_margin_use), the usual is 2")])]
    #[case::a_few_errors(|f: &mut Facts| f.recent_errors = Some(errors(ERROR_SPIKE - 1)), &[])]
    #[case::errors_pile_up(|f: &mut Facts| f.recent_errors = Some(errors(ERROR_SPIKE)),
        &[("errors", "5 errors in the last 5 minutes (order-router.log); the newest: 2026-12-05T08:07:00Z ERROR order_router: batch failed")])]
    fn what_changed_is_told_once(#[case] change: fn(&mut Facts), #[case] want: &[(&str, &str)]) {
        let mut w = Watch::default();
        let first = facts();
        assert_eq!(w.step_facts(&first), [], "the first view is no news");
        let mut second = first.clone();
        second.at_ms = 200;
        change(&mut second);
        let got = w.step_facts(&second);
        assert_eq!(
            got.iter()
                .map(|n| (n.kind, n.text.as_str()))
                .collect::<Vec<_>>(),
            want
        );
        assert!(got.iter().all(|n| n.at_ms == 200));
        // The same view again: told once.
        second.at_ms = 300;
        assert_eq!(w.step_facts(&second), []);
    }

    #[test]
    fn a_new_spike_is_told_and_one_seen_before_is_not_again() {
        let mut w = Watch::default();
        let mut f = facts();
        f.refusal_spike = Some(spike(300));
        w.step_facts(&f);
        // A spike already there when the dashboard started, then gone, then back at the
        // same close (the newest rows moved): not news. A later close's spike is.
        f.refusal_spike = None;
        assert_eq!(w.step_facts(&f), []);
        f.refusal_spike = Some(spike(300));
        assert_eq!(w.step_facts(&f), []);
        f.refusal_spike = Some(spike(600));
        assert_eq!(w.step_facts(&f).len(), 1);
        // Errors: told when they reach the spike, again only after they fell below it.
        f.recent_errors = Some(errors(ERROR_SPIKE));
        assert_eq!(w.step_facts(&f).len(), 1);
        f.recent_errors = Some(errors(ERROR_SPIKE + 3));
        assert_eq!(w.step_facts(&f), []);
        f.recent_errors = None;
        assert_eq!(w.step_facts(&f), []);
        f.recent_errors = Some(errors(ERROR_SPIKE));
        assert_eq!(w.step_facts(&f).len(), 1);
    }

    #[test]
    fn a_degraded_process_is_told_of_after_a_minute_and_one_down_at_the_start_never() {
        let mut w = Watch::default();
        let mut f = facts();
        f.not_running
            .insert("market-data/0".into(), "silent: no heartbeat".into());
        assert_eq!(w.step_facts(&f), [], "down before the dashboard started");
        f.not_running.insert(
            "strategy-worker/0-1".into(),
            "degraded: warming 3 of 8 symbols".into(),
        );
        assert_eq!(w.step_facts(&f), [], "a worker warming up");
        f.at_ms += DEGRADED_GRACE_MS - 1;
        assert_eq!(w.step_facts(&f), []);
        f.at_ms += 1;
        let got = w.step_facts(&f);
        assert_eq!(
            got.iter().map(|n| n.text.as_str()).collect::<Vec<_>>(),
            ["strategy-worker/0-1 is not running (degraded: warming 3 of 8 symbols)"]
        );
        assert_eq!(w.step_facts(&f), []);
    }

    #[test]
    fn a_process_that_stays_down_is_told_once_and_again_after_it_came_back() {
        let mut w = Watch::default();
        let mut f = facts();
        w.step_facts(&f);
        f.not_running
            .insert("risk-manager/0".into(), "silent: x".into());
        assert_eq!(w.step_facts(&f).len(), 1);
        assert_eq!(w.step_facts(&f), []);
        f.not_running.clear();
        assert_eq!(w.step_facts(&f), []);
        f.not_running
            .insert("risk-manager/0".into(), "silent: x".into());
        assert_eq!(w.step_facts(&f).len(), 1);
    }
}

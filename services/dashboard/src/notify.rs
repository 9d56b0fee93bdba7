//! Notifications: what changed between two views that a trader wants to hear about at once
//! (a fill, a stop-loss or take-profit filled, the trading mode changed by Start, Stop or
//! the kill switch, the daily loss limit reached, a process no longer running). Pure: the
//! collector sends each to the `[alerts]` webhook and lists them for the page, which shows
//! them as browser notifications. No message carries a secret: symbols, sides, sizes,
//! prices, modes and process names only.

use std::collections::{BTreeSet, HashSet};

use rust_decimal::Decimal;
use serde::Serialize;

use crate::collect::View;

/// One notification.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Note {
    /// The view's time (ms) it was noticed at.
    pub at_ms: i64,
    /// `fill`, `stop_fill`, `mode`, `daily_loss_limit`, `degraded`.
    pub kind: &'static str,
    pub text: String,
}

/// What the previous view showed, to tell what is new.
#[derive(Debug, Default)]
pub struct Watch {
    seen: Option<Seen>,
}

#[derive(Debug)]
struct Seen {
    fills: HashSet<String>,
    mode: Option<String>,
    loss_limit_hit: bool,
    not_running: BTreeSet<String>,
}

fn seen(v: &View) -> Seen {
    Seen {
        fills: v.activity.fills.iter().map(|f| f.exec_id.clone()).collect(),
        mode: v.risk.as_ref().map(|r| mode_name(&r.mode)),
        loss_limit_hit: v.risk.as_ref().is_some_and(|r| {
            r.daily_loss_limit > Decimal::ZERO && -r.daily_pnl >= r.daily_loss_limit
        }),
        not_running: v
            .health
            .iter()
            .filter(|p| p.state != "running" && p.state != "starting")
            .map(|p| format!("{}/{}", p.service, p.instance))
            .collect(),
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
        let mut now = seen(v);
        let Some(prev) = self.seen.take() else {
            self.seen = Some(now);
            return Vec::new();
        };
        // A view without fills (the journal unreadable for a moment) forgets none: the
        // next one would otherwise announce every fill it lists again.
        if now.fills.is_empty() {
            now.fills = prev.fills.clone();
        }
        let notes = news(&prev, &now, v);
        self.seen = Some(now);
        notes
    }
}

fn news(prev: &Seen, now: &Seen, v: &View) -> Vec<Note> {
    let at_ms = v.generated_ms;
    let mut notes = Vec::new();
    // Oldest first, as they happened.
    for f in v.activity.fills.iter().rev() {
        if prev.fills.contains(&f.exec_id) || f.exec_type != "Trade" {
            continue;
        }
        let by_exchange = f.order_link_id.is_empty();
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
                f.symbol,
                f.side,
                f.qty.normalize(),
                f.price.normalize(),
                f.strategy
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
        && let Some(r) = &v.risk
    {
        notes.push(Note {
                at_ms,
                kind: "daily_loss_limit",
                text: format!(
                    "daily loss limit reached: {} USDT today, the limit is {} USDT: no new entries today",
                    r.daily_pnl.round_dp(2),
                    r.daily_loss_limit.normalize()
                ),
            });
    }
    for p in now.not_running.difference(&prev.not_running) {
        let detail = v
            .health
            .iter()
            .find(|h| format!("{}/{}", h.service, h.instance) == *p)
            .map(|h| format!("{}: {}", h.state, h.detail))
            .unwrap_or_default();
        notes.push(Note {
            at_ms,
            kind: "degraded",
            text: format!("{p} is not running ({detail})"),
        });
    }
    notes
}

//! What must hold of an account stack after anything (a fault, a restart, a network cut):
//! no intent became two orders on the exchange, the journal holds exactly the exchange's
//! executions, and the risk manager's positions come to the exchange's. Shared by the
//! stack test (`scripts/stack` with every fault) and the test of a stack split over two
//! hosts.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use rust_decimal::Decimal;
use shardbot_bus::{BusOptions, Requester};
use shardbot_bybit::rest::BybitClient;
use shardbot_journal::Journal;
use shardbot_protocol::{ControlCommand, RiskReply, RiskRequest, Side, TradingMode};

/// An account stack's books: the exchange's (through `sim`), the journal's and the risk
/// manager's (asked at `risk_url`).
#[derive(Debug)]
pub struct Books<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub sim: &'a BybitClient,
    pub journal: &'a Journal,
    pub risk_url: String,
    pub symbols: &'a [&'a str],
    /// Exchange time from which executions belong to this run.
    pub start_ms: i64,
}

/// Polls `f` every 200 ms until it gives a value, or `None` after `within`.
pub fn poll_or<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200)); // polling the books
    }
}

impl Books<'_> {
    pub fn fills(&self) -> usize {
        self.journal.fills_since(0).unwrap().len()
    }

    pub fn verified(&self) -> usize {
        self.journal
            .trades()
            .unwrap()
            .iter()
            .filter(|t| t.is_closed() && t.verified())
            .count()
    }

    /// Every invariant, after `after`; returns the number of orders the stack placed.
    pub fn invariants(&self, after: &str) -> usize {
        let orders = self.no_intent_twice(after);
        self.no_lost_fill(after);
        self.positions_agree(after);
        orders
    }

    pub fn no_intent_twice(&self, after: &str) -> usize {
        let mut orders: BTreeMap<String, usize> = BTreeMap::new();
        for symbol in self.symbols {
            let history = self
                .rt
                .block_on(self.sim.order_history(symbol))
                .unwrap_or_else(|e| panic!("{symbol}'s order history: {e}"));
            for o in &history {
                if o.order_link_id.starts_with("sb-") {
                    *orders.entry(o.order_link_id.clone()).or_default() += 1;
                }
            }
        }
        let doubled: Vec<_> = orders.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            doubled.is_empty(),
            "after {after}: intents placed twice: {doubled:?}"
        );
        orders.len()
    }

    pub fn no_lost_fill(&self, after: &str) {
        let mut mismatch = String::new();
        let exact = poll_or(Duration::from_secs(30), || {
            let now = self.sim.raw().clock().now_ms();
            let exchange: BTreeMap<String, (Decimal, Decimal, Decimal)> = self
                .rt
                .block_on(self.sim.executions(None, self.start_ms, now + 1000))
                .unwrap()
                .into_iter()
                .map(|e| (e.exec_id, (e.exec_qty, e.exec_price, e.exec_fee)))
                .collect();
            let ours: BTreeMap<String, (Decimal, Decimal, Decimal)> = self
                .journal
                .fills_since(0)
                .unwrap()
                .into_iter()
                .map(|f| (f.exec_id, (f.exec_qty, f.exec_price, f.exec_fee)))
                .collect();
            if ours == exchange {
                return Some(());
            }
            let only_ours: Vec<_> = ours.keys().filter(|k| !exchange.contains_key(*k)).collect();
            let only_exchange: Vec<_> =
                exchange.keys().filter(|k| !ours.contains_key(*k)).collect();
            let differ: Vec<_> = ours
                .iter()
                .filter(|(k, v)| exchange.get(*k).is_some_and(|e| e != *v))
                .collect();
            mismatch = format!(
                "{} journal fills, {} executions; only in the journal {only_ours:?}; only on \
                     the exchange {only_exchange:?}; different {differ:?}",
                ours.len(),
                exchange.len()
            );
            None
        });
        assert!(exact.is_some(), "after {after}: no lost fill: {mismatch}");
    }

    /// New entries are halted while the books are compared (exits go on), then trading
    /// resumes if it was on: with a stop-and-reverse strategy trading every second at 300×, moments
    /// with no order in flight were too rare to be caught reliably on a busy machine (CI
    /// timed out once with both books moving). What must hold is that the risk
    /// manager's book comes to the exchange's once orders stop coming.
    pub fn positions_agree(&self, after: &str) {
        let risk = Requester::dial(&self.risk_url, &BusOptions::default()).unwrap();
        let control = |command: ControlCommand| {
            let reply = risk.request_within::<_, RiskReply>(
                &RiskRequest::Control(command),
                Duration::from_secs(5),
            );
            assert!(
                matches!(reply, Ok(RiskReply::Control(_))),
                "{command:?} after {after}: {reply:?}"
            );
        };
        let trading = matches!(
            risk.request_within::<_, RiskReply>(&RiskRequest::Status, Duration::from_secs(5)),
            Ok(RiskReply::Status(s)) if s.mode == TradingMode::Normal
        );
        if trading {
            control(ControlCommand::Halt);
        }
        let mut mismatch = String::new();
        let agreed = poll_or(
            // An approved order that never filled (refused, or lost to the faults) stays
            // in the risk manager's book for 15 s, to be safe: then the next read.
            Duration::from_secs(45),
            || {
                let exchange: HashMap<String, Decimal> = self
                    .rt
                    .block_on(self.sim.positions())
                    .unwrap()
                    .into_iter()
                    .filter(|p| !p.size.is_zero())
                    .map(|p| {
                        let signed = if p.side == "Sell" { -p.size } else { p.size };
                        (p.symbol, signed)
                    })
                    .collect();
                let Ok(RiskReply::Positions(snap)) = risk.request_within::<_, RiskReply>(
                    &RiskRequest::Positions,
                    Duration::from_secs(5),
                ) else {
                    return None;
                };
                let ours: HashMap<String, Decimal> = snap
                    .positions
                    .into_iter()
                    .filter(|p| !p.size.is_zero())
                    .map(|p| {
                        let signed = if p.side == Side::Sell {
                            -p.size
                        } else {
                            p.size
                        };
                        (p.symbol.to_string(), signed)
                    })
                    .collect();
                mismatch = format!("risk manager {ours:?}, exchange {exchange:?}");
                (ours == exchange).then_some(())
            },
        );
        assert!(
            agreed.is_some(),
            "after {after}: the risk manager's positions never equalled the exchange's within \
             45 s: {mismatch}"
        );
        if trading {
            control(ControlCommand::Resume);
        }
    }
}

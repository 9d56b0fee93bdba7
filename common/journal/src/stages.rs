//! The `intent_stages` table (written by the order router): for every intent the router
//! placed an order for, when it passed each stage of the order path, from the exchange's
//! close of its bar to its first fill. [`StageSummary`] summarises them (`shardbot bench
//! burst` prints it).
//!
//! Every stamp but `exchange_ms` is a local clock of the process that took it (the gateway,
//! the worker, the router): on one host they compare directly. `exchange_ms` is the
//! exchange's own stamp on the push that closed the bar; `bar_close_ms` the bar's nominal
//! close (open time + interval), also exchange time.

use rusqlite::{OptionalExtension, params};
use shardbot_protocol::{OrderIntent, TimestampMs};

use crate::{Journal, JournalError};

/// One intent's way through the order path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentStages {
    pub intent_id: String,
    pub order_link_id: String,
    pub symbol: String,
    /// `enter-buy`, `enter-sell` or `exit`.
    pub action: String,
    /// The bar's nominal close (exchange time).
    pub bar_close_ms: TimestampMs,
    /// The exchange's stamp on the push that closed the bar.
    pub exchange_ms: Option<TimestampMs>,
    /// The gateway's receipt of that push.
    pub received_ms: Option<TimestampMs>,
    /// The gateway's publication of the bar.
    pub published_ms: Option<TimestampMs>,
    /// The worker's decision.
    pub decided_ms: TimestampMs,
    /// The router's receipt of the intent.
    pub router_ms: TimestampMs,
    /// The risk manager's approval, as the router received it.
    pub approved_ms: TimestampMs,
    /// The order's call to the exchange began (after any wait for the order budgets).
    pub sent_ms: TimestampMs,
    /// The exchange's acknowledgement, as the router received it.
    pub acked_ms: TimestampMs,
    /// The router's receipt of the order's first fill.
    pub filled_ms: Option<TimestampMs>,
}

/// The router's own stamps of one order (see [`IntentStages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterStamps {
    pub router_ms: TimestampMs,
    pub approved_ms: TimestampMs,
    pub sent_ms: TimestampMs,
    pub acked_ms: TimestampMs,
}

impl IntentStages {
    /// The stages of `intent`, placed with the router's `stamps`.
    pub fn of(intent: &OrderIntent, stamps: RouterStamps) -> IntentStages {
        let b = intent.bar_stamps;
        IntentStages {
            intent_id: intent.intent_id.to_string(),
            order_link_id: intent.intent_id.order_link_id(),
            symbol: intent.symbol.as_str().to_owned(),
            action: intent.action.id_tag().to_owned(),
            bar_close_ms: intent.bar_open_time_ms
                + intent.interval.duration_ms().unwrap_or_default(),
            exchange_ms: b.exchange_ms,
            received_ms: b.received_ms,
            published_ms: b.published_ms,
            decided_ms: intent.created_ms,
            router_ms: stamps.router_ms,
            approved_ms: stamps.approved_ms,
            sent_ms: stamps.sent_ms,
            acked_ms: stamps.acked_ms,
            filled_ms: None,
        }
    }
}

/// How long a fill heard before its intent's stages waits for them.
const EARLY_FILL_KEPT_MS: TimestampMs = 86_400_000;

/// The spans between an intent's stages, in order, each named.
pub const SPANS: [&str; 9] = [
    "bar close → gateway",
    "gateway → published",
    "published → decided",
    "decided → router",
    "router → approved",
    "approved → sent",
    "sent → acknowledged",
    "acknowledged → filled",
    "bar close → acknowledged",
];

impl IntentStages {
    /// The spans of [`SPANS`] in ms, where both ends are known. The first and the last
    /// compare the exchange's time with a local clock (exact on one host at the sim's
    /// real-time clock; against Bybit they include the clocks' offset). A fill heard
    /// before its acknowledgement gives a negative "acknowledged → filled".
    pub fn spans(&self) -> [Option<i64>; 9] {
        let d = |from: Option<TimestampMs>, to: Option<TimestampMs>| Some(to? - from?);
        [
            d(Some(self.bar_close_ms), self.received_ms),
            d(self.received_ms, self.published_ms),
            d(self.published_ms, Some(self.decided_ms)),
            d(Some(self.decided_ms), Some(self.router_ms)),
            d(Some(self.router_ms), Some(self.approved_ms)),
            d(Some(self.approved_ms), Some(self.sent_ms)),
            d(Some(self.sent_ms), Some(self.acked_ms)),
            d(Some(self.acked_ms), self.filled_ms),
            d(Some(self.bar_close_ms), Some(self.acked_ms)),
        ]
    }
}

/// One span over many intents: how many had it, its median and 99th percentile (ms,
/// nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanSummary {
    pub name: &'static str,
    pub count: usize,
    pub p50: Option<i64>,
    pub p99: Option<i64>,
}

impl SpanSummary {
    /// The span `name` over `values` (ms, any order).
    pub fn of(name: &'static str, values: impl IntoIterator<Item = i64>) -> SpanSummary {
        let mut v: Vec<i64> = values.into_iter().collect();
        v.sort_unstable();
        SpanSummary {
            name,
            count: v.len(),
            p50: nearest_rank(&v, 50),
            p99: nearest_rank(&v, 99),
        }
    }
}

/// Every span of [`SPANS`] over a set of intents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSummary {
    pub spans: Vec<SpanSummary>,
}

impl StageSummary {
    pub fn of(stages: &[IntentStages]) -> StageSummary {
        let all: Vec<[Option<i64>; 9]> = stages.iter().map(IntentStages::spans).collect();
        let spans = SPANS
            .iter()
            .enumerate()
            .map(|(i, name)| SpanSummary::of(name, all.iter().filter_map(|s| s[i])))
            .collect();
        StageSummary { spans }
    }
}

/// The first order acknowledged at each bar close (ties by the router's receipt), in the
/// order of their closes: where the first order of a close spent its time.
pub fn first_acknowledged_per_close(stages: &[IntentStages]) -> Vec<IntentStages> {
    let mut first: std::collections::BTreeMap<TimestampMs, &IntentStages> =
        std::collections::BTreeMap::new();
    for s in stages {
        let slot = first.entry(s.bar_close_ms).or_insert(s);
        if (s.acked_ms, s.router_ms) < (slot.acked_ms, slot.router_ms) {
            *slot = s;
        }
    }
    first.into_values().cloned().collect()
}

/// The `pct`th percentile of sorted values by the nearest-rank method (the method of every
/// stage figure).
fn nearest_rank(sorted: &[i64], pct: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

const COLUMNS: &str = "intent_id, order_link_id, symbol, action, bar_close_ms, exchange_ms,
    received_ms, published_ms, decided_ms, router_ms, approved_ms, sent_ms, acked_ms, filled_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IntentStages> {
    Ok(IntentStages {
        intent_id: r.get(0)?,
        order_link_id: r.get(1)?,
        symbol: r.get(2)?,
        action: r.get(3)?,
        bar_close_ms: r.get(4)?,
        exchange_ms: r.get(5)?,
        received_ms: r.get(6)?,
        published_ms: r.get(7)?,
        decided_ms: r.get(8)?,
        router_ms: r.get(9)?,
        approved_ms: r.get(10)?,
        sent_ms: r.get(11)?,
        acked_ms: r.get(12)?,
        filled_ms: r.get(13)?,
    })
}

impl Journal {
    /// Records a placed intent's stages; its first record stands (an order found again
    /// after a restart keeps the stamps of the attempt that placed it). A fill heard before
    /// the acknowledgement (the private stream can be faster) is kept.
    pub fn record_stages(&self, s: &IntentStages) -> Result<(), JournalError> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO intent_stages ({COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,
                        (SELECT at_ms FROM early_fills WHERE order_link_id = ?2))
                     ON CONFLICT(intent_id) DO NOTHING"
                ),
                params![
                    s.intent_id,
                    s.order_link_id,
                    s.symbol,
                    s.action,
                    s.bar_close_ms,
                    s.exchange_ms,
                    s.received_ms,
                    s.published_ms,
                    s.decided_ms,
                    s.router_ms,
                    s.approved_ms,
                    s.sent_ms,
                    s.acked_ms,
                ],
            )
            .map_err(|e| self.sql(e))?;
        self.conn
            .execute(
                "DELETE FROM early_fills WHERE order_link_id = ?1",
                [&s.order_link_id],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// The router heard a fill of `order_link_id` at `at_ms`: the first one is its
    /// intent's `filled_ms` (kept aside until the intent's stages are recorded, if the
    /// fill came first).
    pub fn record_first_fill(
        &self,
        order_link_id: &str,
        at_ms: TimestampMs,
    ) -> Result<(), JournalError> {
        let updated = self
            .conn
            .execute(
                "UPDATE intent_stages SET filled_ms = ?2
                 WHERE order_link_id = ?1 AND filled_ms IS NULL",
                params![order_link_id, at_ms],
            )
            .map_err(|e| self.sql(e))?;
        let recorded = updated > 0
            || self
                .conn
                .query_row(
                    "SELECT 1 FROM intent_stages WHERE order_link_id = ?1",
                    [order_link_id],
                    |_| Ok(()),
                )
                .optional()
                .map_err(|e| self.sql(e))?
                .is_some();
        if !recorded && order_link_id.starts_with(shardbot_protocol::IntentId::LINK_PREFIX) {
            // An order whose stages never come (found again after a restart, placed by a
            // flatten) leaves its row: a day later it is dropped.
            self.conn
                .execute(
                    "DELETE FROM early_fills WHERE at_ms < ?1",
                    [at_ms - EARLY_FILL_KEPT_MS],
                )
                .map_err(|e| self.sql(e))?;
            self.conn
                .execute(
                    "INSERT INTO early_fills (order_link_id, at_ms) VALUES (?1, ?2)
                     ON CONFLICT(order_link_id) DO NOTHING",
                    params![order_link_id, at_ms],
                )
                .map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    /// The stages of the intents the router received at or after `from_ms`, oldest first.
    pub fn stages_since(&self, from_ms: TimestampMs) -> Result<Vec<IntentStages>, JournalError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM intent_stages WHERE router_ms >= ?1 ORDER BY router_ms"
            ))
            .map_err(|e| self.sql(e))?;
        st.query_map([from_ms], row)
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))
    }

    /// The stages of the intents of the newest `closes` bar closes that placed an order
    /// (by the bar's nominal close), oldest first.
    pub fn stages_of_last_closes(&self, closes: u32) -> Result<Vec<IntentStages>, JournalError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM intent_stages WHERE bar_close_ms IN
                   (SELECT DISTINCT bar_close_ms FROM intent_stages
                    ORDER BY bar_close_ms DESC LIMIT ?1)
                 ORDER BY bar_close_ms, router_ms"
            ))
            .map_err(|e| self.sql(e))?;
        st.query_map([closes], row)
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rust_decimal_macros::dec;
    use shardbot_protocol::{BarStamps, IntentAction, Interval, OrderIntent, Side, Symbol};

    use super::*;

    fn intent(symbol: &str, decided_ms: TimestampMs) -> OrderIntent {
        OrderIntent::new(
            "trend_following",
            Symbol::new(symbol).unwrap(),
            Interval::M5,
            1_700_000_100_000,
            IntentAction::Enter { side: Side::Buy },
            dec!(1.5),
            None,
            None,
            decided_ms,
        )
        .with_bar_stamps(BarStamps {
            exchange_ms: Some(1_700_000_400_020),
            received_ms: Some(1_700_000_400_031),
            published_ms: Some(1_700_000_400_033),
        })
    }

    fn stamps(router_ms: TimestampMs) -> RouterStamps {
        RouterStamps {
            router_ms,
            approved_ms: router_ms + 1,
            sent_ms: router_ms + 2,
            acked_ms: router_ms + 9,
        }
    }

    #[test]
    fn every_stage_is_kept_and_the_first_fill_is_the_one_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal.sqlite")).unwrap();
        let a = intent("BTCUSDT", 1_700_000_400_040);
        let s = IntentStages::of(&a, stamps(1_700_000_400_045));
        assert_eq!(s.bar_close_ms, 1_700_000_400_000, "open + 5 minutes");
        j.record_stages(&s).unwrap();
        j.record_first_fill(&s.order_link_id, 1_700_000_400_060)
            .unwrap();
        j.record_first_fill(&s.order_link_id, 1_700_000_400_090)
            .unwrap();
        // A second record of the same intent (found again after a restart) changes nothing.
        j.record_stages(&IntentStages::of(&a, stamps(1_700_000_500_000)))
            .unwrap();
        let got = j.stages_since(0).unwrap();
        assert_eq!(
            got,
            vec![IntentStages {
                filled_ms: Some(1_700_000_400_060),
                ..s
            }]
        );
    }

    #[test]
    fn spans_follow_the_stages_and_are_summarised_by_nearest_rank() {
        let mut s = IntentStages::of(
            &intent("BTCUSDT", 1_700_000_400_040),
            stamps(1_700_000_400_045),
        );
        s.filled_ms = Some(1_700_000_400_050);
        assert_eq!(
            s.spans(),
            [
                Some(31),
                Some(2),
                Some(7),
                Some(5),
                Some(1),
                Some(1),
                Some(7),
                Some(-4),
                Some(54)
            ]
        );
        // A hundred intents whose router → approved is 1..=100 ms; one without bar stamps.
        let mut many: Vec<IntentStages> = (1..=100)
            .map(|i| {
                let mut t = s.clone();
                t.approved_ms = t.router_ms + i;
                t
            })
            .collect();
        many[0].received_ms = None;
        let sum = StageSummary::of(&many);
        let span = |name: &str| *sum.spans.iter().find(|x| x.name == name).unwrap();
        let approved = span("router → approved");
        assert_eq!(
            (approved.count, approved.p50, approved.p99),
            (100, Some(50), Some(99))
        );
        let gateway = span("bar close → gateway");
        assert_eq!((gateway.count, gateway.p50), (99, Some(31)));
        assert_eq!(StageSummary::of(&[]).spans[0].p50, None);
    }

    #[test]
    fn the_first_order_of_each_close_is_its_first_acknowledged() {
        let base = IntentStages::of(
            &intent("BTCUSDT", 1_700_000_400_040),
            stamps(1_700_000_400_045),
        );
        let at =
            |close: TimestampMs, symbol: &str, router_ms: TimestampMs, acked_ms| IntentStages {
                symbol: symbol.into(),
                bar_close_ms: close,
                router_ms,
                acked_ms,
                ..base.clone()
            };
        let stages = [
            // The second close first: its first to reach the router is not its first ack.
            at(600_000, "A", 10, 40),
            at(600_000, "B", 12, 30),
            at(300_000, "C", 5, 20),
            // A tie on the ack goes to the first one the router received.
            at(300_000, "D", 4, 20),
            at(300_000, "E", 1, 25),
        ];
        let firsts: Vec<(TimestampMs, String)> = first_acknowledged_per_close(&stages)
            .into_iter()
            .map(|s| (s.bar_close_ms, s.symbol))
            .collect();
        assert_eq!(
            firsts,
            vec![(300_000, "D".to_owned()), (600_000, "B".to_owned())]
        );
        assert!(first_acknowledged_per_close(&[]).is_empty());
    }

    #[test]
    fn the_last_closes_are_chosen_by_their_bars_close() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal.sqlite")).unwrap();
        // Three closes (bar opens 0, 1, 2 steps after the first), two intents in the
        // middle one; the newest close's intent reached the router first.
        let step = 300_000;
        for (symbol, k, router_ms) in [("A", 0, 30), ("B", 1, 20), ("C", 1, 21), ("D", 2, 10)] {
            let mut i = intent(&format!("{symbol}USDT"), 5);
            i.bar_open_time_ms += k * step;
            i.intent_id = shardbot_protocol::IntentId::derive(
                &i.strategy,
                &i.symbol,
                i.interval,
                i.bar_open_time_ms,
                i.action,
            );
            j.record_stages(&IntentStages::of(&i, stamps(router_ms)))
                .unwrap();
        }
        let symbols = |n| -> Vec<String> {
            j.stages_of_last_closes(n)
                .unwrap()
                .into_iter()
                .map(|s| s.symbol)
                .collect()
        };
        assert_eq!(symbols(1), ["DUSDT"]);
        assert_eq!(symbols(2), ["BUSDT", "CUSDT", "DUSDT"]);
        assert_eq!(symbols(30).len(), 4);
    }

    #[test]
    fn a_fill_heard_before_the_acknowledgement_is_kept_for_its_stages() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal.sqlite")).unwrap();
        let s = IntentStages::of(&intent("ETHUSDT", 10), stamps(20));
        j.record_first_fill(&s.order_link_id, 27).unwrap();
        j.record_first_fill(&s.order_link_id, 28).unwrap();
        // An order that is not shardbot's is not kept aside.
        j.record_first_fill("by-hand-1", 27).unwrap();
        j.record_stages(&s).unwrap();
        let got = j.stages_since(20).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].filled_ms, Some(27));
        assert!(j.stages_since(21).unwrap().is_empty(), "received before 21");
        let kept: i64 = j
            .conn
            .query_row("SELECT COUNT(*) FROM early_fills", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 0, "used, then dropped");
    }
}

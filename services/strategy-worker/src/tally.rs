//! What the newest bar close gave: its signals (intents sent) and what became of them
//! (placed, refused), and when the next close comes. Published in the worker's heartbeat
//! (gauges named by `shardbot_protocol::Heartbeat::close_summary`), which `scripts/stack
//! status` and the dashboard show: a newcomer sees when the next close is, and after it
//! how many signals it gave and why they did or did not trade. Pure; the worker feeds it.

use shardbot_protocol::TimestampMs;

/// The counts of the newest close.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseTally {
    /// The open time of the newest bar seen (its close is one interval later).
    bar_open_ms: Option<TimestampMs>,
    interval_ms: i64,
    signals: i64,
    placed: i64,
    refused: i64,
}

impl CloseTally {
    pub fn new(interval_ms: i64) -> CloseTally {
        CloseTally {
            interval_ms,
            ..CloseTally::default()
        }
    }

    /// A bar arrived: a newer one starts the counts of its close.
    pub fn bar(&mut self, open_ms: TimestampMs) {
        if self.bar_open_ms.is_none_or(|b| open_ms > b) {
            self.bar_open_ms = Some(open_ms);
            self.signals = 0;
            self.placed = 0;
            self.refused = 0;
        }
    }

    /// Intents sent for the bar of `open_ms` (a refill's older bars do not count).
    pub fn signals(&mut self, open_ms: TimestampMs, n: usize) {
        if self.bar_open_ms == Some(open_ms) {
            self.signals += i64::try_from(n).unwrap_or(i64::MAX);
        }
    }

    /// The router's answer to an intent for the bar of `open_ms`.
    pub fn outcome(&mut self, open_ms: TimestampMs, placed: bool) {
        if self.bar_open_ms == Some(open_ms) {
            if placed {
                self.placed += 1;
            } else {
                self.refused += 1;
            }
        }
    }

    /// The gauges' names, in the order of [`gauges`](Self::gauges).
    pub const NAMES: [&'static str; 5] = [
        "last_close_ms",
        "next_close_ms",
        "last_close_signals",
        "last_close_placed",
        "last_close_refused",
    ];

    /// One gauge by name; 0 before the first bar.
    pub fn gauge(&self, name: &str) -> i64 {
        self.gauges()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| v)
    }

    /// The heartbeat gauges: `last_close_ms`, `next_close_ms`, `last_close_signals`,
    /// `last_close_placed`, `last_close_refused` (none before the first bar).
    pub fn gauges(&self) -> Vec<(&'static str, i64)> {
        let Some(open) = self.bar_open_ms else {
            return Vec::new();
        };
        vec![
            ("last_close_ms", open + self.interval_ms),
            ("next_close_ms", open + 2 * self.interval_ms),
            ("last_close_signals", self.signals),
            ("last_close_placed", self.placed),
            ("last_close_refused", self.refused),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M5: i64 = 300_000;

    fn gauge(t: &CloseTally, name: &str) -> Option<i64> {
        t.gauges()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    #[test]
    fn nothing_before_the_first_bar() {
        assert!(CloseTally::new(M5).gauges().is_empty());
    }

    #[test]
    fn a_close_counts_its_signals_and_their_outcomes_and_a_newer_bar_starts_over() {
        let mut t = CloseTally::new(M5);
        t.bar(0);
        t.bar(0); // the same bar of another symbol
        t.signals(0, 3);
        t.outcome(0, true);
        t.outcome(0, false);
        t.outcome(0, true);
        assert_eq!(gauge(&t, "last_close_ms"), Some(M5));
        assert_eq!(gauge(&t, "next_close_ms"), Some(2 * M5));
        assert_eq!(
            [
                gauge(&t, "last_close_signals"),
                gauge(&t, "last_close_placed"),
                gauge(&t, "last_close_refused")
            ],
            [Some(3), Some(2), Some(1)]
        );
        t.bar(M5);
        assert_eq!(gauge(&t, "last_close_signals"), Some(0));
        assert_eq!(gauge(&t, "next_close_ms"), Some(3 * M5));
        // A refill's older bar, and answers about the previous close, change nothing.
        t.bar(0);
        t.signals(0, 5);
        t.outcome(0, false);
        assert_eq!(gauge(&t, "last_close_signals"), Some(0));
        assert_eq!(gauge(&t, "last_close_refused"), Some(0));
        assert_eq!(gauge(&t, "last_close_ms"), Some(2 * M5));
    }
}
